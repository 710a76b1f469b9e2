"""Bad records for the chaos run (``streams.dev.chaos``): each with the reason the DLQ must give it.

Every kind of SPEC §2's bad input that a producer can send by mistake, built from a good record
by one change so that exactly one rule refuses it: bytes that are no Avro at all, a truncated
record, an amount of 0, an unknown currency, a currency other than the loan's, a reversal of a
payment nobody made, a loan id over 64 characters, an unknown time zone, a penalty rate beyond
its bound, a record over 256 KiB. Some name a loan of the good book: refusing them must leave
that loan exactly as replay has it. (The fuzz suite's many more live in tests/support/hostile.py,
which the runtime and this tool do not import.)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..contracts import codec
from ..contracts import topics as names
from ..core import errors


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A record the worker must send to the DLQ with ``reason``, and when the chaos run sends it."""

    topic: str  # logical input topic
    key: str
    reason: str
    value: bytes
    at: datetime  # event time of the step it is produced in

    @property
    def what(self) -> str:
        """What is wrong with it, for the report (the reason is enough to tell them apart)."""
        return f"{self.topic} {self.reason}"


def _schedule(loan_id: str, at: datetime) -> dict[str, Any]:
    due = (at + timedelta(days=30)).date()
    return {
        "loan_id": loan_id, "borrower_id": "B-" + loan_id[-12:], "revision": 1, "effective_at": at,
        "currency": "CNY", "timezone": "Asia/Shanghai", "status": "ACTIVE",
        "installments": [{"seq": 1, "due_date": due, "principal": 100_000, "interest": 5_000, "fee": 0}],
        "grace_days": 0, "tolerance": 0, "penalty_rate_bps": 1800, "late_fee": 0,
        "business_day_convention": "NONE", "calendar": None, "partners": [],
        "contact": {"locale": "zh-CN", "channels": ["push", "sms"]},
    }  # fmt: skip


def _repayment(loan_id: str, payment_id: str, at: datetime) -> dict[str, Any]:
    return {
        "payment_id": payment_id, "loan_id": loan_id, "amount": 50_000, "currency": "CNY", "paid_at": at,
        "channel": "app", "kind": "PAYMENT", "reverses": None,
    }  # fmt: skip


def _encoded(topic: str, value: Mapping[str, Any]) -> bytes:
    record_type = names.TOPIC_RECORD[topic]
    return codec.encode(record_type, dict(value))


#: (name, topic, reason, build(loan id of the good book, a fresh id, event time) -> (key, value bytes))
KINDS: list[tuple[str, str, str, Callable[[str, str, datetime], tuple[str, bytes]]]] = [
    ("bytes that are no Avro", names.REPAYMENTS, errors.UNDECODABLE,
     lambda loan, fresh, at: (loan, b"\x00\x01not avro at all")),
    ("a truncated schedule", names.SCHEDULES, errors.UNDECODABLE,
     lambda loan, fresh, at: (fresh, _encoded(names.SCHEDULES, _schedule(fresh, at))[:23])),
    ("an amount of 0", names.REPAYMENTS, errors.NON_POSITIVE_AMOUNT,
     lambda loan, fresh, at: (loan, _encoded(names.REPAYMENTS, {**_repayment(loan, fresh, at), "amount": 0}))),
    ("a currency that does not exist", names.REPAYMENTS, errors.UNKNOWN_CURRENCY,
     lambda loan, fresh, at: (loan, _encoded(names.REPAYMENTS, {**_repayment(loan, fresh, at), "currency": "XYZ"}))),
    ("a currency other than the loan's", names.REPAYMENTS, errors.CURRENCY_MISMATCH,
     lambda loan, fresh, at: (loan, _encoded(names.REPAYMENTS, {**_repayment(loan, fresh, at), "currency": "USD"}))),
    ("a reversal of an unknown payment", names.REPAYMENTS, errors.UNKNOWN_PAYMENT,
     lambda loan, fresh, at: (loan, _encoded(names.REPAYMENTS, {**_repayment(loan, fresh, at), "kind": "REVERSAL",
                                                              "reverses": "never-paid-" + fresh}))),
    ("a loan id of 65 characters", names.SCHEDULES, errors.INVALID_ID,
     lambda loan, fresh, at: ("L" * 65, _encoded(names.SCHEDULES, _schedule("L" * 65, at)))),
    ("a time zone that does not exist", names.SCHEDULES, errors.INVALID_TIMEZONE,
     lambda loan, fresh, at: (fresh, _encoded(names.SCHEDULES, {**_schedule(fresh, at), "timezone": "Mars/Olympus"}))),
    ("a penalty rate of 100,001 bps", names.SCHEDULES, errors.OUT_OF_RANGE,
     lambda loan, fresh, at: (fresh, _encoded(names.SCHEDULES, {**_schedule(fresh, at), "penalty_rate_bps": 100_001}))),
    ("a schedule of 300 KiB", names.SCHEDULES, errors.TOO_LARGE,
     lambda loan, fresh, at: (fresh, _encoded(names.SCHEDULES, {**_schedule(fresh, at), "borrower_id": "b" * 300 * 1024}))),
]  # fmt: skip


def bad_records(count: int, good_loans: list[tuple[datetime, str]], span: tuple[datetime, datetime],
                rng: random.Random) -> list[BadRecord]:  # fmt: skip
    """``count`` bad records (every kind before any repeats), spread over the event-time ``span``.

    A bad record that names a loan of the good book (``good_loans``: its schedule's event time and
    id) is sent a day or more after that schedule, so the loan is known when it arrives: a
    currency mismatch can only be judged against the loan's currency. Ordered by event time."""
    start, end = span
    out: list[BadRecord] = []
    for n in range(count):
        _, topic, reason, build = KINDS[n % len(KINDS)]
        at = start + (end - start) * rng.random()
        known = [loan for effective, loan in good_loans if effective <= at - timedelta(days=1)]
        loan = rng.choice(known) if known else good_loans[0][1]
        at = max(at, next(e for e, lid in good_loans if lid == loan) + timedelta(days=1))
        key, value = build(loan, f"BAD-{n:04d}", at)
        out.append(BadRecord(topic, key, reason, value, at))
    return sorted(out, key=lambda b: b.at)


__all__ = ["KINDS", "BadRecord", "bad_records"]
