"""A loan's outcome in one run, and the loans whose outcome a policy change alters (SPEC §7.3).

A loan's *outcome* is its sequence of (type, as_of) over the transitions that change how the
bank treats it — OVERDUE_OPENED, BUCKET_CHANGED, OVERDUE_CURED, WRITTEN_OFF — so a what-if
names exactly the loans a consumer of ``overdue.events`` would have seen differently.
Reminders (DUE_SOON) are left out: they follow the due dates, not the delinquency.

Beside it the what-if shows, per changed loan, the episodes opened and the worst DPD and
bucket the loan reached. The events cannot give the worst DPD — a cure reports DPD 0, and DPD
grows a day at a time between events — so it is read from the loan's records with the core's
own ``position``: DPD only grows between the instants at which a record takes effect, so its
highest value is reached just before one of them, or at the end of the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..core.config import EngineConfig
from ..core.dates import MICROSECOND, parse_instant
from ..core.delinquency import plan_for, position
from ..core.loan import LoanState
from ..core.records import ACTIVE
from ..core.timeline import Ledger

TRANSITIONS = ("OVERDUE_OPENED", "BUCKET_CHANGED", "OVERDUE_CURED", "WRITTEN_OFF")

Transitions = tuple[tuple[str, datetime], ...]


@dataclass(frozen=True, slots=True)
class LoanOutcome:
    """One loan in one run: its transitions, the episodes it opened, the worst DPD and bucket it reached."""

    transitions: Transitions = ()
    episodes_opened: int = 0
    worst_dpd: int = 0
    worst_bucket: str = "M0"

    def summary(self) -> dict[str, Any]:
        """The per-side fields of a changed loan in the what-if's JSON."""
        return {
            "episodes_opened": self.episodes_opened,
            "worst_dpd": self.worst_dpd,
            "worst_bucket": self.worst_bucket,
        }


def transitions_by_loan(events: Iterable[Mapping[str, Any]]) -> dict[str, Transitions]:
    """Each loan's (type, as_of in UTC) sequence over the four transition types, in event order.

    ``events`` are standing OverdueEvents in the detector's order (replay's output order);
    instants are compared as instants, whatever offset they were written in.
    """
    out: dict[str, list[tuple[str, datetime]]] = {}
    for e in events:
        if e["type"] in TRANSITIONS:
            out.setdefault(e["loan_id"], []).append((e["type"], parse_instant(e["as_of"]).astimezone(UTC)))
    return {loan: tuple(seq) for loan, seq in out.items()}


def worst_delinquency(state: LoanState, until: datetime, cfg: EngineConfig) -> tuple[int, str]:
    """The highest DPD the loan reached up to ``until`` (SPEC §3's DPD, grace or not), and its bucket.

    Between two instants at which a record takes effect the payments and the schedule are
    fixed, so the oldest past-due instalment stays the same once there is one and DPD only
    grows: its maximum is at the instant just before the next record, or at ``until``. The
    walk stops where the loan stops (SPEC §4: nothing after CLOSED or WRITTEN_OFF), counting
    the DPD at that instant, which the WRITTEN_OFF event reports.
    """
    if not state.schedules:
        return 0, cfg.buckets.of(0)
    ledger = Ledger.of(state.schedules, state.repayments)
    first = ledger.first_effective
    if first is None or first > until:
        return 0, cfg.buckets.of(0)
    candidates = [r - MICROSECOND for r in ledger.record_instants if first < r <= until]
    ends = [
        r
        for r in ledger.record_instants
        if r <= until and (s := ledger.schedule_at(r)) and s.status != ACTIVE
    ]
    stop = ends[0] if ends else until
    worst = 0
    for at in sorted({*(c for c in candidates if c < stop), stop}):
        schedule = ledger.schedule_at(at)
        if schedule is None:
            continue
        plan = plan_for(schedule, cfg.reminder_days, cfg.reminder_time)
        worst = max(worst, position(schedule, plan, ledger.paid_at(at), at, cfg.buckets).dpd)
    return worst, cfg.buckets.of(worst)


def loan_outcomes(
    events: Iterable[Mapping[str, Any]], loans: Mapping[str, LoanState], until: datetime, cfg: EngineConfig
) -> dict[str, LoanOutcome]:
    """Every loan's outcome in one run: ``events`` standing, ``loans`` the run's final states."""
    sequences = transitions_by_loan(events)
    out: dict[str, LoanOutcome] = {}
    for loan_id in sorted(set(loans) | set(sequences)):
        seq = sequences.get(loan_id, ())
        state = loans.get(loan_id)
        dpd, bucket = worst_delinquency(state, until, cfg) if state is not None else (0, cfg.buckets.of(0))
        out[loan_id] = LoanOutcome(seq, sum(1 for t, _ in seq if t == "OVERDUE_OPENED"), dpd, bucket)
    return out


def changed_loans(baseline: Mapping[str, LoanOutcome], scenario: Mapping[str, LoanOutcome]) -> list[str]:
    """Loan ids, sorted, whose transition sequence differs between the two runs."""
    empty = LoanOutcome()
    return sorted(
        loan for loan in set(baseline) | set(scenario)
        if baseline.get(loan, empty).transitions != scenario.get(loan, empty).transitions
    )  # fmt: skip


__all__ = [
    "LoanOutcome",
    "TRANSITIONS",
    "changed_loans",
    "loan_outcomes",
    "transitions_by_loan",
    "worst_delinquency",
]
