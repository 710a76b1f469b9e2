"""Small builders for loan records in tests: readable stories instead of JSON walls."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from streams.core.records import LoanSchedule, Repayment, parse_repayment, parse_schedule
from streams.dev.compare import standing as standing  # re-exported for the unit tests

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(text: str, tz: ZoneInfo = SHANGHAI) -> datetime:
    """A local wall time ``YYYY-MM-DD[THH:MM[:SS]]`` in ``tz`` as an aware datetime."""
    if "T" not in text:
        text += "T00:00"
    return datetime.fromisoformat(text).replace(tzinfo=tz)


def schedule_dict(
    loan_id: str = "L1",
    dues: list[tuple[str, int]] | None = None,
    *,
    revision: int = 1,
    effective_at: datetime | str = "2026-02-15T10:00",
    status: str = "ACTIVE",
    timezone: str = "Asia/Shanghai",
    currency: str = "CNY",
    **extra: Any,
) -> dict[str, Any]:
    """A LoanSchedule in JSON form; ``dues`` is [(due_date, principal)] (interest and fee 0 unless given)."""
    dues = dues or [("2026-03-15", 100_000)]
    if isinstance(effective_at, str):
        effective_at = at(effective_at, ZoneInfo(timezone))
    installments = []
    for seq, due in enumerate(dues, 1):
        d, principal, *rest = due
        interest = rest[0] if len(rest) > 0 else 0
        fee = rest[1] if len(rest) > 1 else 0
        installments.append(
            {"seq": seq, "due_date": d, "principal": principal, "interest": interest, "fee": fee}
        )
    value = {
        "loan_id": loan_id,
        "borrower_id": "B-" + loan_id,
        "revision": revision,
        "effective_at": effective_at.isoformat(),
        "currency": currency,
        "timezone": timezone,
        "status": status,
        "installments": installments,
        "grace_days": 0,
        "tolerance": 0,
        "penalty_rate_bps": 0,
        "late_fee": 0,
        "business_day_convention": "NONE",
        "calendar": "CN",
        "partners": [],
        "contact": {"locale": "zh-CN", "channels": ["push", "sms"]},
    }
    value.update(extra)
    return value


def schedule(*args: Any, **kwargs: Any) -> LoanSchedule:
    """A validated LoanSchedule."""
    return parse_schedule(schedule_dict(*args, **kwargs))


def payment_dict(
    payment_id: str,
    amount: int,
    paid_at: datetime | str,
    loan_id: str = "L1",
    *,
    kind: str = "PAYMENT",
    reverses: str | None = None,
    currency: str = "CNY",
) -> dict[str, Any]:
    """A Repayment in JSON form."""
    if isinstance(paid_at, str):
        paid_at = at(paid_at)
    return {
        "payment_id": payment_id,
        "loan_id": loan_id,
        "amount": amount,
        "currency": currency,
        "paid_at": paid_at.isoformat(),
        "channel": "app",
        "kind": kind,
        "reverses": reverses,
    }


def payment(*args: Any, **kwargs: Any) -> Repayment:
    """A validated Repayment."""
    return parse_repayment(payment_dict(*args, **kwargs))


def record(topic: str, value: dict[str, Any]) -> dict[str, Any]:
    """A replay input line."""
    return {"topic": topic, "key": value["loan_id"], "value": value}


def utc(*args: int) -> datetime:
    """An aware UTC datetime."""
    return datetime(*args, tzinfo=UTC)


def days(n: int) -> timedelta:
    """``n`` days."""
    return timedelta(days=n)


def d(text: str) -> date:
    """A date from ``YYYY-MM-DD``."""
    return date.fromisoformat(text)
