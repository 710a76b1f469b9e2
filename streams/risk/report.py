"""`duewatch report` (SPEC §7.4): the risk report of a book, from a replay file or from the topics.

Either source gives the same two things — the overdue events after retractions and the
schedules — and :mod:`.figures` and :mod:`.charts` do the rest, so the report of a replay
file and the report read from ``overdue.events`` and ``loan.schedules`` of the stream that
processed the same records are the same pictures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ..contracts.topics import OVERDUE, SCHEDULES
from ..core import errors
from ..core.buckets import DEFAULT_BUCKETS, BucketTable
from ..core.config import REPLAY_CONFIG
from ..core.dates import parse_instant
from ..core.records import LoanSchedule, parse_schedule
from .charts import report_page
from .figures import RiskFigures, compute
from .retractions import standing


def schedules_of(records: Iterable[Mapping[str, Any]]) -> list[LoanSchedule]:
    """The valid LoanSchedules among replay input records (or topic values wrapped as records).

    A schedule the detector would dead-letter is not part of the book, so it is left out here too.
    """
    out: list[LoanSchedule] = []
    for record in records:
        if not str(record.get("topic", "")).endswith(SCHEDULES):
            continue
        try:
            out.append(parse_schedule(record["value"]))
        except (errors.InvalidRecord, KeyError, TypeError, ValueError):
            continue
    return out


def figures_from_records(
    records: Sequence[Mapping[str, Any]],
    until: datetime | None = None,
    buckets: BucketTable = DEFAULT_BUCKETS,
) -> RiskFigures:
    """Replay ``records`` (the detector alone: the report needs no routed records) and compute the figures."""
    from ..replay import latest_event_time, replay

    if until is None:
        until = latest_event_time(records)
    if until is None:
        raise ValueError("the input has no record with an event time: nothing to report")
    outputs = replay(records, until, cfg=REPLAY_CONFIG)
    events = standing(o.value for o in outputs if o.topic == OVERDUE)
    return compute(events, schedules_of(records), until, buckets)


def figures_from_topics(
    events: Sequence[Mapping[str, Any]], schedules: Sequence[Mapping[str, Any]], as_of: datetime | None = None
) -> RiskFigures:
    """The figures from what was read off ``overdue.events`` and ``loan.schedules`` (JSON-form values).

    ``as_of`` defaults to the latest instant the events report: the furthest the detector's
    clock is known to have gone (a report must not extrapolate DPD past what was processed).
    """
    kept = standing(events)
    if as_of is None:
        instants = [parse_instant(e["as_of"]) for e in kept]
        instants += [
            parse_instant(s["effective_at"])
            for s in schedules
            if isinstance(s, Mapping) and s.get("effective_at")
        ]
        if not instants:
            raise ValueError("overdue.events and loan.schedules are empty: nothing to report")
        as_of = max(instants)
    return compute(kept, schedules_of({"topic": SCHEDULES, "value": s} for s in schedules), as_of)


def write_report(figures: RiskFigures, out: str | Path, title: str = "duewatch — risk report") -> Path:
    """Write the self-contained HTML report; returns its absolute path."""
    path = Path(out)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_page(figures, title), encoding="utf-8")
    return path.resolve()


__all__ = ["figures_from_records", "figures_from_topics", "schedules_of", "write_report"]
