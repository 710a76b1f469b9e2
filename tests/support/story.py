"""Drive one loan through the core as the stream would: records and ticks in arrival order; and
``loan_story``, hypothesis' generator of one loan's records (the core's property tests)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from streams.core import errors
from streams.core.config import EngineConfig
from streams.core.dates import zone
from streams.core.loan import LoanState, apply_repayment, apply_schedule, new_loan, tick
from streams.core.records import LoanSchedule, Repayment


class Stream:
    """A loan fed record by record with a tick clock, collecting every event and refusal."""

    def __init__(self, loan_id: str = "L1", cfg: EngineConfig | None = None) -> None:
        self.cfg = cfg or EngineConfig()
        self.state: LoanState = new_loan(loan_id)
        self.now: datetime | None = None
        self.events: list[dict[str, Any]] = []
        self.refused: list[str] = []

    def _take(self, outcome) -> None:
        self.state = outcome.state
        self.events.extend(e.to_dict() for e in outcome.events)
        self.refused.extend(r.error.reason for r in outcome.rejected)

    def feed(self, record: LoanSchedule | Repayment) -> None:
        try:
            if isinstance(record, LoanSchedule):
                self._take(apply_schedule(self.state, record, self.now, self.cfg))
            else:
                self._take(apply_repayment(self.state, record, self.now, self.cfg))
        except errors.InvalidRecord as exc:
            self.refused.append(exc.reason)

    def tick(self, now: datetime) -> None:
        self.now = now if self.now is None or now > self.now else self.now
        self._take(tick(self.state, self.now, self.cfg))

    def run(self, items: Iterable[LoanSchedule | Repayment | datetime]) -> Stream:
        for item in items:
            if isinstance(item, datetime):
                self.tick(item)
            else:
                self.feed(item)
        return self

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


ZONES = ["Asia/Shanghai", "America/New_York", "UTC", "Europe/London"]


@st.composite
def loan_story(draw) -> dict[str, Any]:
    tz = draw(st.sampled_from(ZONES))
    first_due = date(2026, 3, 1) + timedelta(days=draw(st.integers(0, 60)))
    dues = [first_due]
    for _ in range(draw(st.integers(0, 3))):
        dues.append(dues[-1] + timedelta(days=draw(st.integers(1, 45))))
    amounts = [draw(st.integers(1, 100_000)) for _ in dues]
    effective = datetime.combine(
        first_due - timedelta(days=draw(st.integers(-20, 40))), datetime.min.time(), zone(tz)
    )
    effective += timedelta(minutes=draw(st.integers(0, 24 * 60 - 1)))

    def schedule(revision: int, eff: datetime, status: str, shift: int) -> dict[str, Any]:
        return {
            "loan_id": "L",
            "borrower_id": "B",
            "revision": revision,
            "effective_at": eff.isoformat(),
            "currency": "CNY",
            "timezone": tz,
            "status": status,
            "installments": [
                {
                    "seq": i + 1,
                    "due_date": (d + timedelta(days=shift)).isoformat(),
                    "principal": a,
                    "interest": a // 10,
                    "fee": 0,
                }
                for i, (d, a) in enumerate(zip(dues, amounts, strict=True))
            ],
            "grace_days": grace,
            "tolerance": tolerance,
            "penalty_rate_bps": penalty,
            "late_fee": late_fee,
            "business_day_convention": convention,
            "calendar": "CN",
            "partners": [],
            "contact": {"locale": "en", "channels": ["sms"]},
        }

    grace = draw(st.integers(0, 4))
    tolerance = draw(st.sampled_from([0, 0, 50]))
    penalty = draw(st.sampled_from([0, 1825, 3650]))
    late_fee = draw(st.sampled_from([0, 500]))
    convention = draw(st.sampled_from(["NONE", "FOLLOWING"]))
    records = [("loan.schedules", schedule(1, effective, "ACTIVE", 0))]
    horizon = datetime.combine(dues[-1], datetime.min.time(), zone(tz)) + timedelta(days=100)
    span = int((horizon - effective).total_seconds() // 60)
    if draw(st.booleans()):
        eff2 = effective + timedelta(minutes=draw(st.integers(1, span)))
        status = draw(st.sampled_from(["ACTIVE", "ACTIVE", "CLOSED", "WRITTEN_OFF"]))
        records.append(("loan.schedules", schedule(2, eff2, status, draw(st.integers(0, 40)))))
    total = sum(a + a // 10 for a in amounts)
    for n in range(draw(st.integers(0, 4))):
        paid_at = effective + timedelta(minutes=draw(st.integers(-3 * 24 * 60, span)))
        amount = draw(st.integers(1, total))
        pid = f"p{n}"
        records.append(
            (
                "loan.repayments",
                {
                    "payment_id": pid,
                    "loan_id": "L",
                    "amount": amount,
                    "currency": "CNY",
                    "paid_at": paid_at.isoformat(),
                    "channel": "app",
                    "kind": "PAYMENT",
                    "reverses": None,
                },
            )
        )
        if draw(st.integers(0, 3)) == 0:
            reversed_at = paid_at + timedelta(minutes=draw(st.integers(0, 40 * 24 * 60)))
            records.append(
                (
                    "loan.repayments",
                    {
                        "payment_id": f"r{n}",
                        "loan_id": "L",
                        "amount": amount,
                        "currency": "CNY",
                        "paid_at": reversed_at.isoformat(),
                        "channel": "app",
                        "kind": "REVERSAL",
                        "reverses": pid,
                    },
                )
            )
    return {"records": records, "until": horizon, "start": effective - timedelta(days=3)}
