"""Hostile input for the fuzz suite: records at and beyond every bound of SPEC §2, and bytes
no producer should send, each with the reason the DLQ must give it.

Every bad record is built from a good one by one change, so exactly one rule refuses it and
its reason is known. Records at a bound (64-character ids, 1,200 instalments, grace of 3,650
days, amounts summing to exactly 10^15, a due date on 2199-12-31) are valid: they belong to
the good book, where they must be decided like any other loan.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from hypothesis import strategies as st

from streams.contracts import codec
from streams.core import bounds, errors

SCHEDULES, REPAYMENTS, TICKS = "loan.schedules", "loan.repayments", "clock.ticks"


@dataclass(frozen=True)
class Bad:
    """One record that must reach the DLQ with ``reason``: JSON (replay and stream) or raw bytes."""

    topic: str
    key: str | None
    reason: str
    value: dict[str, Any] | None = None  # the JSON form
    raw: bytes | None = None  # bytes no JSON form can give (the stream only)

    def as_line(self) -> dict[str, Any]:
        return {"topic": self.topic, "key": self.key, "value": self.value}

    def as_bytes(self) -> bytes:
        if self.raw is not None:
            return self.raw
        record_type = codec.TOPIC_RECORD[self.topic]
        return codec.encode(record_type, codec.from_json(record_type, self.value))


def base_schedule(loan_id: str) -> dict[str, Any]:
    """A valid schedule to break."""
    return {
        "loan_id": loan_id, "borrower_id": "B-" + loan_id, "revision": 1,
        "effective_at": "2026-03-01T10:00:00+08:00", "currency": "CNY", "timezone": "Asia/Shanghai",
        "status": "ACTIVE",
        "installments": [
            {"seq": 1, "due_date": "2026-04-15", "principal": 100_000, "interest": 5_000, "fee": 100},
            {"seq": 2, "due_date": "2026-05-15", "principal": 100_000, "interest": 5_000, "fee": 100},
        ],
        "grace_days": 3, "tolerance": 0, "penalty_rate_bps": 1800, "late_fee": 500,
        "business_day_convention": "NONE", "calendar": None, "partners": ["P1"],
        "contact": {"locale": "zh-CN", "channels": ["push", "sms"]},
    }  # fmt: skip


def base_repayment(loan_id: str, payment_id: str) -> dict[str, Any]:
    """A valid repayment to break."""
    return {
        "payment_id": payment_id, "loan_id": loan_id, "amount": 50_000, "currency": "CNY",
        "paid_at": "2026-04-10T12:00:00+08:00", "channel": "app", "kind": "PAYMENT", "reverses": None,
    }  # fmt: skip


def _many(count: int) -> list[dict[str, Any]]:
    start = date(2026, 4, 15)
    return [{"seq": k + 1, "due_date": (start + timedelta(days=k)).isoformat(), "principal": 10, "interest": 0,
             "fee": 0} for k in range(count)]  # fmt: skip


# (what changes, expected reason): each applied to a fresh base schedule. The first five are the
# chaos run's poison schedules, which once silenced whole partitions.
SCHEDULE_BREAKS: list[tuple[str, Any, str]] = [
    ("sum past 2^63-1", lambda s: s["installments"][0].update(principal=2**62) or s["installments"][1].update(principal=2**62), errors.OUT_OF_RANGE),
    ("penalty rate that overflows", lambda s: s.update(penalty_rate_bps=2**31 - 1), errors.OUT_OF_RANGE),
    ("due date 9999-12-31", lambda s: s["installments"][1].update(due_date="9999-12-31"), errors.OUT_OF_RANGE),
    ("due date 0001-01-01", lambda s: s["installments"][0].update(due_date="0001-01-01"), errors.OUT_OF_RANGE),
    ("grace of 2^31-1 days", lambda s: s.update(grace_days=2**31 - 1), errors.OUT_OF_RANGE),
    ("instalment over 10^15", lambda s: s["installments"][0].update(fee=bounds.MAX_AMOUNT + 1), errors.OUT_OF_RANGE),
    ("instalments summing past 10^15", lambda s: [i.update(principal=bounds.MAX_AMOUNT // 2 + 1) for i in s["installments"]], errors.OUT_OF_RANGE),
    ("late fees summing past 10^15", lambda s: s.update(late_fee=bounds.MAX_AMOUNT // 2 + 1), errors.OUT_OF_RANGE),
    ("tolerance over 10^15", lambda s: s.update(tolerance=bounds.MAX_AMOUNT + 1), errors.OUT_OF_RANGE),
    ("grace of 3,651 days", lambda s: s.update(grace_days=3651), errors.OUT_OF_RANGE),
    ("penalty of 100,001 bps", lambda s: s.update(penalty_rate_bps=100_001), errors.OUT_OF_RANGE),
    ("due date 2200-01-01", lambda s: s["installments"][1].update(due_date="2200-01-01"), errors.OUT_OF_RANGE),
    ("due date 1899-12-31", lambda s: s["installments"][0].update(due_date="1899-12-31"), errors.OUT_OF_RANGE),
    ("effective in 1899", lambda s: s.update(effective_at="1899-12-31T23:00:00+00:00"), errors.OUT_OF_RANGE),
    ("effective in 2200", lambda s: s.update(effective_at="2200-01-01T00:00:00+00:00"), errors.OUT_OF_RANGE),
    ("1,201 instalments", lambda s: s.update(installments=_many(1201)), errors.OUT_OF_RANGE),
    ("65 partners", lambda s: s.update(partners=[f"P{k}" for k in range(65)]), errors.OUT_OF_RANGE),
    ("a loan id of 65 characters", lambda s: s.update(loan_id="L" * 65), errors.INVALID_ID),
    ("a borrower id with a newline", lambda s: s.update(borrower_id="B\n1"), errors.INVALID_ID),
    ("a borrower id with a C1 control", lambda s: s.update(borrower_id="B\u00851"), errors.INVALID_ID),
    ("an empty partner id", lambda s: s.update(partners=[""]), errors.INVALID_ID),
    ("a time zone of 900 characters", lambda s: s.update(timezone="Asia/" + "x" * 900), errors.INVALID_TIMEZONE),
    ("a time zone that does not exist", lambda s: s.update(timezone="Mars/Olympus_Mons"), errors.INVALID_TIMEZONE),
    ("a channel twice", lambda s: s["contact"].update(channels=["sms", "sms"]), errors.INVALID_FIELD),
    ("revision 0", lambda s: s.update(revision=0), errors.INVALID_FIELD),
    ("a currency of 4 letters", lambda s: s.update(currency="CNYX"), errors.UNKNOWN_CURRENCY),
]  # fmt: skip

REPAYMENT_BREAKS: list[tuple[str, Any, str]] = [
    ("amount over 10^15", lambda r: r.update(amount=bounds.MAX_AMOUNT + 1), errors.OUT_OF_RANGE),
    ("amount 0", lambda r: r.update(amount=0), errors.NON_POSITIVE_AMOUNT),
    ("paid in 2200", lambda r: r.update(paid_at="2200-01-01T00:00:00+00:00"), errors.OUT_OF_RANGE),
    ("paid in 1899", lambda r: r.update(paid_at="1899-06-01T00:00:00+00:00"), errors.OUT_OF_RANGE),
    ("a payment id of 65 characters", lambda r: r.update(payment_id="p" * 65), errors.INVALID_ID),
    ("a payment id with a tab", lambda r: r.update(payment_id="p\t1"), errors.INVALID_ID),
    ("a channel of 65 characters", lambda r: r.update(channel="c" * 65), errors.OUT_OF_RANGE),
    ("a reversal of an unknown payment", lambda r: r.update(kind="REVERSAL", reverses="nope"), errors.UNKNOWN_PAYMENT),
]  # fmt: skip


def broken_schedule(index: int, loan_id: str) -> Bad:
    _, change, reason = SCHEDULE_BREAKS[index]
    value = base_schedule(loan_id)
    change(value)
    return Bad(SCHEDULES, value["loan_id"], reason, value)


def broken_repayment(index: int, loan_id: str, payment_id: str) -> Bad:
    _, change, reason = REPAYMENT_BREAKS[index]
    value = base_repayment(loan_id, payment_id)
    change(value)
    return Bad(REPAYMENTS, loan_id, reason, value)


def too_large(loan_id: str, size: int = 900 * 1024) -> Bad:
    """A schedule whose borrower id alone is ``size`` characters: over the record bound."""
    value = base_schedule(loan_id)
    value["borrower_id"] = "b" * size
    return Bad(SCHEDULES, loan_id, errors.TOO_LARGE, value)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def overlong_amount(loan_id: str, payment_id: str) -> Bad:
    """A repayment whose amount is 2^64 + 1000 in eleven bytes: fastavro alone reads 1000."""
    good = base_repayment(loan_id, payment_id)
    head = codec.encode("Repayment", codec.from_json("Repayment", good))
    amount = _varint(good["amount"] << 1)
    at = head.index(amount, 1 + len(payment_id) + 1 + len(loan_id))
    raw = head[:at] + _varint((2**64 + 1000) << 1) + head[at + len(amount) :]
    return Bad(REPAYMENTS, loan_id, errors.UNDECODABLE, raw=raw)


def truncated(loan_id: str, cut: int) -> Bad:
    good = codec.encode("LoanSchedule", codec.from_json("LoanSchedule", base_schedule(loan_id)))
    return Bad(SCHEDULES, loan_id, errors.UNDECODABLE, raw=good[: max(1, min(cut, len(good) - 1))])


def trailing(loan_id: str, extra: bytes) -> Bad:
    good = codec.encode("Repayment", codec.from_json("Repayment", base_repayment(loan_id, "p-trail")))
    return Bad(REPAYMENTS, loan_id, errors.UNDECODABLE, raw=good + (extra or b"\x00"))


@st.composite
def bad_records(draw, good_loans: list[str]) -> list[Bad]:
    """A handful of bad records: schema-valid ones beyond a bound (JSON), and hostile bytes.
    Some name a loan of the good book: refusing them must not disturb it."""
    out: list[Bad] = []
    n = draw(st.integers(1, 6))
    for k in range(n):
        target = draw(st.sampled_from([f"BAD-{k}", *good_loans])) if good_loans else f"BAD-{k}"
        kind = draw(st.sampled_from(["schedule", "repayment", "large", "overlong", "truncated", "trailing"]))
        if kind == "schedule":
            bad = broken_schedule(draw(st.integers(0, len(SCHEDULE_BREAKS) - 1)), f"BAD-{k}")
            # a changed loan id is itself the break; keep it
        elif kind == "repayment":
            bad = broken_repayment(draw(st.integers(0, len(REPAYMENT_BREAKS) - 1)), target, f"bad-{k}")
        elif kind == "large":
            bad = too_large(
                f"BAD-{k}", draw(st.integers(bounds.MAX_RECORD_BYTES + 1, 2 * bounds.MAX_RECORD_BYTES))
            )
        elif kind == "overlong":
            bad = overlong_amount(target, f"long-{k}")
        elif kind == "truncated":
            bad = truncated(target, draw(st.integers(1, 400)))
        else:
            bad = trailing(target, draw(st.binary(min_size=1, max_size=8)))
        out.append(bad)
    return out


def at_bounds(loan_id: str) -> dict[str, Any]:
    """A valid schedule with every field at its bound: a good loan like any other."""
    value = copy.deepcopy(base_schedule(loan_id))
    value["borrower_id"] = "B" * bounds.MAX_ID_CHARS
    value["grace_days"] = bounds.MAX_GRACE_DAYS
    value["penalty_rate_bps"] = bounds.MAX_PENALTY_RATE_BPS
    value["installments"][0].update(principal=bounds.MAX_AMOUNT // 2, interest=0, fee=0)
    value["installments"][1].update(
        due_date="2199-12-31", principal=bounds.MAX_AMOUNT // 2, interest=0, fee=0
    )
    value["late_fee"] = bounds.MAX_AMOUNT // 2
    value["partners"] = [f"{k:02d}" + "p" * 62 for k in range(bounds.MAX_PARTNERS)]
    return value
