"""A book played with late data and bad records: what the chaos run (``streams.dev.chaos``) sends,
at which instant of its simulated clock.

The good book is :func:`streams.dev.book.generate`. A share of its loans gets one repayment that
upstream delivers late: it is sent only when the clock is 1 to 10 days past its ``paid_at``, and
the loan's later records wait behind it (one upstream system keeps a loan's records in order).
So ticks have already passed its event time: the worker has emitted transitions it must now
retract and emit again (SPEC §4, late data). Bad records (:mod:`streams.dev.badrecords`) are
mixed in. Replay gets the good book alone and sorts it by event time itself: the stream must end
with exactly replay's outputs, and every bad record in the DLQ.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..contracts import codec
from ..contracts import topics as names
from .badrecords import BadRecord, bad_records
from .book import BookRecord

LATE_DAYS = (1, 10)  # how late a late repayment is sent, in days of event time


@dataclass(frozen=True, slots=True)
class Send:
    """One record to produce once the simulated clock reaches ``at``."""

    at: datetime  # when it is sent (its event time, or later for late data)
    topic: str  # logical input topic
    key: str
    value: bytes
    event_time: datetime  # what the record says (equal to ``at`` unless it is late)
    reason: str | None = None  # the DLQ reason a bad record must get; None for the good book

    @property
    def late(self) -> bool:
        return self.at > self.event_time


def _encoded(record: BookRecord) -> bytes:
    record_type = names.TOPIC_RECORD[record.topic]
    return codec.encode(record_type, codec.from_json(record_type, record.value))


def late_book(
    records: Sequence[BookRecord], share: float, rng: random.Random, after: datetime
) -> tuple[list[Send], dict[str, Any]]:
    """The good book as sends, a ``share`` of its loans with one repayment paid after ``after``
    delivered late; returns the sends in sending order and a summary (late loans and records)."""
    by_loan: dict[str, list[BookRecord]] = {}
    for record in records:
        by_loan.setdefault(record.key, []).append(record)
    sends: list[Send] = []
    late_loans = late_records = 0
    for loan, own in by_loan.items():
        candidates = [
            n for n, r in enumerate(own) if r.topic == names.REPAYMENTS and r.event_time >= after and n > 0
        ]
        chosen = rng.choice(candidates) if candidates and rng.random() < share else None
        release = None
        if chosen is not None:
            late_loans += 1
            release = own[chosen].event_time + timedelta(days=rng.uniform(*LATE_DAYS))
        at = None
        for n, record in enumerate(own):
            at = record.event_time if at is None else max(at, record.event_time)
            if chosen is not None and release is not None and n >= chosen and record.event_time < release:
                at = max(at, release)  # the late one and whatever of the loan follows it meanwhile
            late_records += at > record.event_time
            sends.append(Send(at, record.topic, loan, _encoded(record), record.event_time))
    sends.sort(key=lambda s: s.at)  # stable: a loan's records keep their order
    return sends, {"late_loans": late_loans, "late_records": late_records}


def with_bad_records(
    sends: Sequence[Send], records: Sequence[BookRecord], count: int, span: tuple[datetime, datetime],
    rng: random.Random,
) -> tuple[list[Send], list[BadRecord]]:  # fmt: skip
    """``sends`` with ``count`` bad records mixed in at their instants (in sending order)."""
    good = sorted((r.event_time, r.key) for r in records if r.topic == names.SCHEDULES)
    bad = bad_records(count, good, span, rng)
    mixed = [*sends, *(Send(b.at, b.topic, b.key, b.value, b.at, b.reason) for b in bad)]
    mixed.sort(key=lambda s: s.at)
    return mixed, bad


__all__ = ["LATE_DAYS", "Send", "late_book", "with_bad_records"]
