"""A synthetic but realistic loan book: the input of benchmarks, stream tests and the demo.

Consumer and small-business instalment loans in Asia/Shanghai, monthly instalments,
half of them on the CN holiday calendar with the FOLLOWING convention, and a mix of
behaviours a bank sees: good payers, late payers who cure, partial payers, defaulters,
reversed payments and reschedules. Everything is drawn from ``random.Random(seed)``, so
a seed names a book exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")
BEHAVIOURS = ("good", "late_cure", "partial", "default", "reversal", "reschedule")
WEIGHTS = (70, 13, 6, 5, 3, 3)
PARTNERS = ("P-ANTFIN", "P-CITYBANK")


@dataclass(frozen=True, slots=True)
class BookRecord:
    """One input record with the event time it is produced at."""

    event_time: datetime
    topic: str
    key: str
    value: dict[str, Any]

    def as_line(self) -> dict[str, Any]:
        """The replay/produce JSON-lines form ``{"topic", "key", "value"}``."""
        return {"topic": self.topic, "key": self.key, "value": self.value}


def _add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    return date(day.year + month // 12, month % 12 + 1, min(day.day, 28))


def _local(day: date, rng: random.Random, start_hour: int = 8, end_hour: int = 22) -> datetime:
    moment = time(rng.randrange(start_hour, end_hour), rng.randrange(60), rng.randrange(60))
    return datetime.combine(day, moment, tzinfo=SHANGHAI)


def _installments(principal: int, count: int, monthly_bps: int, first_due: date) -> list[dict[str, Any]]:
    """Equal principal, interest on the declining balance, a small service fee on the first."""
    part, remainder = divmod(principal, count)
    balance = principal
    out = []
    for seq in range(1, count + 1):
        p = part + (remainder if seq == count else 0)
        interest = balance * monthly_bps // 10_000
        out.append(
            {
                "seq": seq,
                "due_date": _add_months(first_due, seq - 1).isoformat(),
                "principal": p,
                "interest": interest,
                "fee": 500 if seq == 1 else 0,
            }
        )
        balance -= p
    return out


def generate(loans: int, start: date, days: int, seed: int = 7) -> list[BookRecord]:
    """The records of a ``loans``-loan book whose event times fall before ``start + days``, in event-time order."""
    rng = random.Random(seed)
    end = datetime.combine(start + timedelta(days=days), time(0), tzinfo=SHANGHAI)
    records: list[BookRecord] = []
    for n in range(loans):
        loan_id = f"L{n:07d}"
        borrower = f"B{(n if rng.random() > 0.05 else max(0, n - 1)):07d}"  # a few borrowers hold two loans
        business = rng.random() < 0.25
        count = rng.choice((6, 12, 18, 24)) if business else rng.choice((3, 6, 9, 12))
        principal = (
            rng.randrange(50_000_00, 500_000_00, 100) if business else rng.randrange(1_000_00, 50_000_00, 100)
        )
        disbursed = (
            start - timedelta(days=rng.randrange(0, 240)) + timedelta(days=rng.randrange(0, max(1, days)))
        )
        first_due = _add_months(disbursed, 1)
        following = rng.random() < 0.5
        schedule = {
            "loan_id": loan_id,
            "borrower_id": borrower,
            "revision": 1,
            "effective_at": _local(disbursed, rng).isoformat(),
            "currency": "CNY",
            "timezone": "Asia/Shanghai",
            "status": "ACTIVE",
            "installments": _installments(principal, count, rng.choice((50, 80, 120)), first_due),
            "grace_days": rng.choice((0, 0, 1, 3)),
            "tolerance": rng.choice((0, 100)),
            "penalty_rate_bps": 1825,
            "late_fee": rng.choice((0, 2000)),
            "business_day_convention": "FOLLOWING" if following else "NONE",
            "calendar": "CN",
            "partners": [rng.choice(PARTNERS)] if rng.random() < 0.3 else [],
            "contact": {
                "locale": "en" if rng.random() < 0.1 else "zh-CN",
                "channels": ["push", "sms"] if rng.random() < 0.8 else ["sms"],
            },
        }
        eff = datetime.fromisoformat(str(schedule["effective_at"]))
        if eff >= end:
            continue
        records.append(BookRecord(eff, "loan.schedules", loan_id, schedule))
        behaviour = rng.choices(BEHAVIOURS, WEIGHTS)[0]
        records.extend(_repayments(rng, loan_id, schedule, behaviour, end))
    records.sort(key=lambda r: r.event_time)
    return records


def _payment(loan_id: str, pid: str, amount: int, paid_at: datetime, kind: str = "PAYMENT", reverses=None):
    return {
        "payment_id": pid,
        "loan_id": loan_id,
        "amount": amount,
        "currency": "CNY",
        "paid_at": paid_at.isoformat(),
        "channel": "app",
        "kind": kind,
        "reverses": reverses,
    }


def _repayments(
    rng: random.Random, loan_id: str, schedule: dict, behaviour: str, end: datetime
) -> list[BookRecord]:
    out: list[BookRecord] = []
    stop_after = rng.randrange(0, len(schedule["installments"])) if behaviour == "default" else None
    rescheduled = False

    def pay(amount: int, when: datetime, suffix: str, kind: str = "PAYMENT", reverses=None) -> None:
        if when < end:
            pid = f"{loan_id}-{suffix}"
            out.append(
                BookRecord(
                    when, "loan.repayments", loan_id, _payment(loan_id, pid, amount, when, kind, reverses)
                )
            )

    for inst in schedule["installments"]:
        seq = inst["seq"]
        due = date.fromisoformat(inst["due_date"])
        amount = inst["principal"] + inst["interest"] + inst["fee"]
        if stop_after is not None and seq > stop_after:
            break
        if behaviour == "good" or (behaviour in ("reversal", "partial", "reschedule") and seq % 3 != 2):
            pay(amount, _local(due - timedelta(days=rng.randrange(0, 4)), rng), f"{seq}")
        elif behaviour == "late_cure":
            pay(amount, _local(due + timedelta(days=rng.choice((1, 2, 5, 12, 25, 40))), rng), f"{seq}")
        elif behaviour == "partial":
            part = amount * rng.randrange(60, 95) // 100
            pay(part, _local(due, rng), f"{seq}a")
            pay(amount - part, _local(due + timedelta(days=rng.randrange(3, 35)), rng), f"{seq}b")
        elif behaviour == "reversal":
            paid = _local(due - timedelta(days=1), rng)
            pay(amount, paid, f"{seq}")
            pay(
                amount, paid + timedelta(days=rng.randrange(1, 10)), f"{seq}r", "REVERSAL", f"{loan_id}-{seq}"
            )
            pay(amount, paid + timedelta(days=rng.randrange(10, 30)), f"{seq}again")
        elif behaviour == "reschedule" and not rescheduled:
            rescheduled = True
            moved = datetime.combine(due + timedelta(days=rng.randrange(5, 25)), time(10), tzinfo=SHANGHAI)
            if moved < end:
                revision = dict(schedule, revision=2, effective_at=moved.isoformat())
                revision["installments"] = [
                    dict(i, due_date=_add_months(date.fromisoformat(i["due_date"]), 2).isoformat())
                    for i in schedule["installments"]
                ]
                revision["installments"] = [
                    i
                    for i in revision["installments"]
                    if i["seq"] >= seq or date.fromisoformat(i["due_date"]) < due
                ] or revision["installments"]
                out.append(BookRecord(moved, "loan.schedules", loan_id, revision))
            break
        elif behaviour == "default":
            pay(amount, _local(due, rng), f"{seq}")
    return out


def to_utc(t: datetime) -> datetime:
    """``t`` in UTC (helper for callers that compare instants)."""
    return t.astimezone(UTC)
