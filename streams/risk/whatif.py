"""`duewatch whatif` (SPEC §7.3): the same book replayed under two policies, and what changed.

The baseline is the records as given under the baseline policy (SPEC §5's defaults unless a
file is named); the scenario is the same records under the new policy, with each ``--set``
term written into every schedule revision. Both run through ``streams.replay`` — the very
code that decides in the stream — up to the same ``until``, so every difference comes from
the policy and nothing else. The figures of each run come from :mod:`.metrics` and
:mod:`.outcomes`; the answer is the same at every run (no clock, no randomness, sorted names).

The two replays are independent, so on a machine with more than one core a large book runs
them in two processes side by side: the demo's 10,000-loan book takes about as long as one.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing import get_context
from typing import Any

from ..contracts.topics import BUREAU, COLLECTIONS, NOTIFY, OVERDUE, PARTNER
from ..core.config import REPLAY_CONFIG, EngineConfig
from ..core.loan import LoanState
from ..core.routing import Policy
from ..replay import Replay, latest_event_time
from .figures import RiskFigures, compute
from .metrics import Metrics, align, book_metrics, difference, rows
from .outcomes import LoanOutcome, changed_loans, loan_outcomes
from .overrides import apply_overrides
from .report import schedules_of
from .retractions import standing

#: Changed loans listed by id in the report (SPEC §7.3: "the first 20 by loan id").
FIRST = 20
#: Books with at least this many records replay their two runs in two processes (when there are two cores).
PARALLEL_FROM = 20_000


@dataclass(frozen=True)
class Side:
    """How one run is made: the routing policy and the schedule terms set on every revision."""

    policy: Policy
    overrides: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SideResult:
    """What one run produced, reduced to what the what-if reports."""

    metrics: Metrics
    outcomes: Mapping[str, LoanOutcome]
    figures: RiskFigures | None = None


def final_charges(loans: Mapping[str, LoanState]) -> dict[str, tuple[str, int, int]]:
    """Each loan's ``(currency, penalty_accrued, late_fees)`` as the run left it (at ``until``)."""
    return {
        loan_id: (state.schedules[0].currency, state.carry.penalty, state.carry.late_fees)
        for loan_id, state in loans.items()
        if state.schedules
    }


def run_side(
    records: Sequence[Mapping[str, Any]],
    until: datetime,
    side: Side,
    cfg: EngineConfig = REPLAY_CONFIG,
    with_figures: bool = False,
) -> SideResult:
    """Replay ``records`` (with ``side``'s overrides) under ``side``'s policy and reduce the outputs."""
    records = list(apply_overrides(records, side.overrides))
    run = Replay(cfg=cfg)
    outputs = run.run(records, until, policy=side.policy)
    by_topic: dict[str, list[Mapping[str, Any]]] = {}
    for o in outputs:
        by_topic.setdefault(o.topic, []).append(o.value)
    events = standing(by_topic.get(OVERDUE, ()))
    metrics = book_metrics(
        events,
        notifications=by_topic.get(NOTIFY, ()),
        bureau_records=by_topic.get(BUREAU, ()),
        collections_tasks=by_topic.get(COLLECTIONS, ()),
        partner_shares=by_topic.get(PARTNER, ()),
        charges=final_charges(run.loans),
        buckets=cfg.buckets,
    )
    outcomes = loan_outcomes(events, run.loans, until, cfg)
    figures = compute(events, schedules_of(records), until, cfg.buckets) if with_figures else None
    return SideResult(metrics, outcomes, figures)


@dataclass(frozen=True)
class WhatIf:
    """Both runs and what differs between them."""

    until: datetime
    baseline: SideResult
    scenario: SideResult

    @property
    def changed(self) -> list[str]:
        """Every loan whose outcome differs, by loan id."""
        return changed_loans(self.baseline.outcomes, self.scenario.outcomes)

    def to_json(self) -> dict[str, Any]:
        """SPEC §7.3's ``--json`` document: the three metric objects and the changed loans."""
        baseline, scenario = align(self.baseline.metrics, self.scenario.metrics)
        changed = self.changed
        empty = LoanOutcome()
        first = [
            {
                "loan_id": loan_id,
                "baseline": self.baseline.outcomes.get(loan_id, empty).summary(),
                "scenario": self.scenario.outcomes.get(loan_id, empty).summary(),
            }
            for loan_id in changed[:FIRST]
        ]
        return {
            "baseline": baseline,
            "scenario": scenario,
            "difference": difference(baseline, scenario),
            "changed_loans": {"count": len(changed), "first": first},
        }


def run_whatif(
    records: Sequence[Mapping[str, Any]],
    baseline: Side,
    scenario: Side,
    until: datetime | None = None,
    cfg: EngineConfig = REPLAY_CONFIG,
    with_figures: bool = False,
    parallel: bool | None = None,
) -> WhatIf:
    """Replay ``records`` as the baseline and as the scenario up to ``until`` (default: the latest event time).

    ``parallel``: run the two replays in two processes (default: for books of
    :data:`PARALLEL_FROM` records or more, on a machine with more than one core). The answer
    is the same either way.
    """
    records = list(records)
    if until is None:
        until = latest_event_time(records)
    if until is None:
        raise ValueError("the input has no record with an event time: nothing to replay")
    if parallel is None:
        parallel = len(records) >= PARALLEL_FROM and (os.cpu_count() or 1) > 1
    if not parallel:
        return WhatIf(until, run_side(records, until, baseline, cfg, with_figures),
                      run_side(records, until, scenario, cfg, with_figures))  # fmt: skip
    # spawn, not fork: a fresh interpreter holds no locks or threads of the parent's.
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(run_side, records, until, side, cfg, with_figures) for side in (baseline, scenario)
        ]
        base, scen = (f.result() for f in futures)
    return WhatIf(until, base, scen)


# --------------------------------------------------------------------------- presentation


def _signed(n: int) -> str:
    return f"+{n:,}" if n > 0 else (f"−{-n:,}" if n < 0 else "0")


def metric_rows(result: WhatIf) -> list[tuple[str, int, int, int]]:
    """``(name, baseline, scenario, difference)`` for every metric, in the JSON's order."""
    doc = result.to_json()
    base, scen, diff = rows(doc["baseline"]), rows(doc["scenario"]), rows(doc["difference"])
    return [(name, b, s, d) for (name, b), (_, s), (_, d) in zip(base, scen, diff, strict=True)]


def tables(result: WhatIf) -> list[Any]:
    """The terminal's view: the metrics table and the changed loans, as rich renderables."""
    from rich.table import Table

    doc = result.to_json()
    metrics = Table(
        title=f"What-if up to {result.until.isoformat()} (amounts in minor units)", title_justify="left"
    )
    metrics.add_column("metric")
    for name in ("baseline", "scenario", "difference"):
        metrics.add_column(name, justify="right")
    for name, b, s, d in metric_rows(result):
        style = None if d == 0 else "bold"
        metrics.add_row(name, f"{b:,}", f"{s:,}", _signed(d), style=style)
    changed = doc["changed_loans"]
    loans = Table(title=f"Loans whose outcome changed: {changed['count']:,}"
                        + (f" (the first {FIRST} by loan id)" if changed["count"] > FIRST else ""),
                  title_justify="left")  # fmt: skip
    for name in ("loan", "episodes opened", "worst DPD", "worst bucket"):
        loans.add_column(name, justify="left" if name == "loan" else "right")
    for loan in changed["first"]:
        b, s = loan["baseline"], loan["scenario"]
        loans.add_row(loan["loan_id"], f"{b['episodes_opened']} → {s['episodes_opened']}",
                      f"{b['worst_dpd']} → {s['worst_dpd']}", f"{b['worst_bucket']} → {s['worst_bucket']}")  # fmt: skip
    return [metrics, loans]


def summary_html(result: WhatIf, description: str) -> str:
    """The same tables as the terminal's, for the top of ``whatif --html``."""
    doc = result.to_json()
    body = "".join(
        f'<tr><td>{html.escape(name)}</td><td class="num">{b:,}</td><td class="num">{s:,}</td>'
        f'<td class="num{" changed" if d else ""}">{html.escape(_signed(d))}</td></tr>'
        for name, b, s, d in metric_rows(result)
    )
    changed = doc["changed_loans"]
    loans = "".join(
        f"<tr><td>{html.escape(x['loan_id'])}</td>"
        + "".join(f"<td class=\"num\">{html.escape(str(x['baseline'][k]))} → {html.escape(str(x['scenario'][k]))}</td>"
                  for k in ("episodes_opened", "worst_dpd", "worst_bucket"))
        + "</tr>"
        for x in changed["first"]
    )  # fmt: skip
    more = f" (the first {FIRST} by loan id)" if changed["count"] > FIRST else ""
    return (
        f'<p class="headline">{html.escape(description)}</p>'
        '<div class="grid2"><div><h2>Figures (amounts in minor units)</h2><table class="grid"><thead><tr>'
        '<th>metric</th><th class="num">baseline</th><th class="num">scenario</th><th class="num">difference</th>'
        f"</tr></thead><tbody>{body}</tbody></table></div>"
        f"<div><h2>Loans whose outcome changed: {changed['count']:,}{more}</h2>"
        '<table class="grid"><thead><tr><th>loan</th><th class="num">episodes opened</th>'
        '<th class="num">worst DPD</th><th class="num">worst bucket</th></tr></thead>'
        f"<tbody>{loans}</tbody></table></div></div>"
    )


__all__ = [
    "FIRST",
    "Side",
    "SideResult",
    "WhatIf",
    "final_charges",
    "run_side",
    "run_whatif",
    "summary_html",
    "tables",
]
