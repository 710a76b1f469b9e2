"""The book-level figures of a what-if (SPEC §7.3), from what one replay produced.

Each figure is counted on the records a downstream consumer would hold: overdue events after
retractions, and the routed records (notifications, bureau records, collections tasks, partner
shares) as written. Penalty interest and late fees are running totals that move every day
without an event, so they come from each loan's charges at the end of the run instead of
from its latest event. The result is a nested mapping whose leaves are integers, so the
baseline, the scenario and their difference share one shape and one set of names.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from ..core.buckets import DEFAULT_BUCKETS, BucketTable

OPENED, CHANGED, CURED, WRITTEN_OFF = "OVERDUE_OPENED", "BUCKET_CHANGED", "OVERDUE_CURED", "WRITTEN_OFF"
DUE_SOON, RETRACTED = "DUE_SOON", "OVERDUE_RETRACTED"
EVENT_TYPES = (OPENED, CHANGED, CURED, WRITTEN_OFF, DUE_SOON, RETRACTED)
NOTIFICATION_KINDS = ("REMINDER", "COLLECTION", "CONFIRMATION", "NOTICE", "CORRECTION")
DISPOSITIONS = ("SEND", "DROPPED")
PARTNER_MODES = ("REALTIME", "DIGEST")
#: PBOC statuses that report a delinquency (SPEC §5): open by bucket, or written off.
NEGATIVE_PBOC = frozenset({"1", "2", "3", "4", "5", "6", "7", "B"})

Metrics = dict[str, Any]


def loans_ever(
    events: Iterable[Mapping[str, Any]], min_rank: int, buckets: BucketTable = DEFAULT_BUCKETS
) -> set[str]:
    """Loans that were ever open in the ``min_rank``-th bucket or worse (M1 is rank 1).

    A loan is in a bucket "while open": the buckets its OVERDUE_OPENED and BUCKET_CHANGED
    events report. A loan past due but within its grace days is not counted: grace is
    exactly the policy lever that keeps it out.
    """
    names = buckets.names
    worse = set(names[min_rank:])
    return {e["loan_id"] for e in events if e["type"] in (OPENED, CHANGED) and e["bucket"] in worse}


def book_metrics(
    events: Iterable[Mapping[str, Any]],
    notifications: Iterable[Mapping[str, Any]] = (),
    bureau_records: Iterable[Mapping[str, Any]] = (),
    collections_tasks: Iterable[Mapping[str, Any]] = (),
    partner_shares: Iterable[Mapping[str, Any]] = (),
    charges: Mapping[str, tuple[str, int, int]] | None = None,
    buckets: BucketTable = DEFAULT_BUCKETS,
) -> Metrics:
    """Every figure SPEC §7.3 lists, for one run.

    ``events`` are the standing OverdueEvents (retractions applied); ``charges`` maps a loan to
    ``(currency, penalty_accrued, late_fees)`` at the end of the run. An episode is written off
    when its WRITTEN_OFF event still reports the episode's first delinquency date (SPEC §3: it
    does on the event that ends an open episode, and a write-off of a current loan ends none).
    """
    events = list(events)
    types = Counter(e["type"] for e in events)
    notify: dict[str, Counter[str]] = {kind: Counter() for kind in NOTIFICATION_KINDS}
    for n in notifications:
        notify.setdefault(n["kind"], Counter())[n["disposition"]] += 1
    bureau = Counter(r["pboc_status"] for r in bureau_records)
    actions = Counter(t["action"] for t in collections_tasks)
    modes = Counter(s["mode"] for s in partner_shares)
    penalty: Counter[str] = Counter()
    fees: Counter[str] = Counter()
    for currency, accrued, late in (charges or {}).values():
        penalty[currency] += accrued
        fees[currency] += late
    return {
        "events": {t: types[t] for t in sorted(set(EVENT_TYPES) | set(types))},
        "episodes": {
            "opened": types[OPENED],
            "cured": types[CURED],
            "written_off": sum(
                1 for e in events if e["type"] == WRITTEN_OFF and e.get("first_delinquency_date")
            ),
        },
        "loans_ever": {
            "M1+": len(loans_ever(events, 1, buckets)),
            "M3+": len(loans_ever(events, 3, buckets)),
        },
        "penalty_accrued": dict(sorted(penalty.items())),
        "late_fees": dict(sorted(fees.items())),
        "notifications": {
            kind: {d: counts[d] for d in sorted(set(DISPOSITIONS) | set(counts))}
            for kind, counts in sorted(notify.items())
        },  # fmt: skip
        "bureau_records": {
            "released": sum(bureau.values()),
            "negative_released": sum(n for status, n in bureau.items() if status in NEGATIVE_PBOC),
        },
        "collections_tasks": dict(sorted(actions.items())),
        "partner_shares": {m: modes[m] for m in sorted(set(PARTNER_MODES) | set(modes))},
    }


def align(a: Metrics, b: Metrics) -> tuple[Metrics, Metrics]:
    """Both with the union of their names, a name missing on one side being 0 (or empty) there.

    A currency or collections action may occur in one run only; the table and the JSON still
    show it on both sides.
    """

    def fill(x: Mapping[str, Any], y: Mapping[str, Any], top: bool) -> dict[str, Any]:
        # The top level keeps SPEC's order of figures; inner names (types, currencies, actions) sort.
        keys = [*x, *(k for k in y if k not in x)] if top else sorted(set(x) | set(y))
        out: dict[str, Any] = {}
        for key in keys:
            mine, theirs = x.get(key), y.get(key)
            if isinstance(mine, Mapping) or isinstance(theirs, Mapping):
                out[key] = fill(mine or {}, theirs or {}, False)
            else:
                out[key] = mine or 0
        return out

    return fill(a, b, True), fill(b, a, True)


def difference(baseline: Metrics, scenario: Metrics) -> Metrics:
    """``scenario − baseline``, name by name (after :func:`align`)."""
    a, b = align(baseline, scenario)

    def minus(x: Mapping[str, Any], y: Mapping[str, Any]) -> dict[str, Any]:
        return {k: minus(x[k], y[k]) if isinstance(x[k], Mapping) else y[k] - x[k] for k in x}

    return minus(a, b)


def rows(metrics: Mapping[str, Any], prefix: str = "") -> list[tuple[str, int]]:
    """The leaves as ``("notifications · COLLECTION · DROPPED", n)`` pairs, in order (for tables)."""
    out: list[tuple[str, int]] = []
    for key, value in metrics.items():
        name = f"{prefix} · {key}" if prefix else key
        if isinstance(value, Mapping):
            out += rows(value, name)
        else:
            out.append((name, value))
    return out


__all__ = ["EVENT_TYPES", "Metrics", "align", "book_metrics", "difference", "loans_ever", "rows"]
