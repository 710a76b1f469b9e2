"""The input records of SPEC §2 as small immutable values, and their validation.

Parsing accepts the JSON form of SPEC §1 (ISO strings) and the Avro-decoded form (aware
datetimes and dates) alike, so the command line and the stream share one validator. A
record that breaks a rule raises ``InvalidRecord`` with a reason from a closed set: the
stream sends it to the dead-letter topic and carries on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from . import bounds, errors
from .dates import CONVENTIONS, is_calendar, is_zone, parse_date, parse_instant
from .money import is_currency

ACTIVE = "ACTIVE"
CLOSED = "CLOSED"
WRITTEN_OFF = "WRITTEN_OFF"
STATUSES = frozenset({ACTIVE, CLOSED, WRITTEN_OFF})

PAYMENT = "PAYMENT"
REVERSAL = "REVERSAL"
KINDS = frozenset({PAYMENT, REVERSAL})

LOCALES = frozenset({"zh-CN", "en"})
CHANNELS = frozenset({"push", "sms"})
DISPUTE_STATUSES = frozenset({"OPEN", "RESOLVED"})

DEFAULT_TIMEZONE = "Asia/Shanghai"


@dataclass(frozen=True, slots=True)
class Installment:
    """One instalment of a schedule: what is due on ``due_date``, in minor units."""

    seq: int
    due_date: date
    principal: int
    interest: int
    fee: int

    @property
    def amount_due(self) -> int:
        """Principal + interest + fee (SPEC §3)."""
        return self.principal + self.interest + self.fee


@dataclass(frozen=True, slots=True)
class Contact:
    """How the borrower agreed to be reached: a locale and consented channels in preference order."""

    locale: str
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LoanSchedule:
    """A loan's whole contract as of ``effective_at``; a higher revision replaces lower ones from then on."""

    loan_id: str
    borrower_id: str
    revision: int
    effective_at: datetime
    currency: str
    timezone: str
    status: str
    installments: tuple[Installment, ...]
    grace_days: int = 0
    tolerance: int = 0
    penalty_rate_bps: int = 0
    late_fee: int = 0
    business_day_convention: str = "NONE"
    calendar: str | None = None
    partners: tuple[str, ...] = ()
    contact: Contact = Contact("zh-CN", ())  # no consented channel unless the schedule says so
    # Its stored form once encoded (``statecodec``), kept because a loan's state is written again
    # after every record while its schedule rarely changes. A memo: not part of the value.
    stored_form: Any = field(default=None, init=False, repr=False, compare=False)
    # Its calendar plan once computed (``delinquency.plan_for``), kept because every tick of the
    # loan needs it and building the plan cache's key alone costs a pass over the instalments.
    plan_memo: Any = field(default=None, init=False, repr=False, compare=False)
    # Its instalments' amounts due and running totals (``delinquency.amounts``): a memo.
    amounts_memo: Any = field(default=None, init=False, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Repayment:
    """Money received (PAYMENT) or taken back (REVERSAL of ``reverses``) at ``paid_at``."""

    payment_id: str
    loan_id: str
    amount: int
    currency: str
    paid_at: datetime
    channel: str
    kind: str
    reverses: str | None = None
    # Its stored form once encoded (``statecodec``): a loan's state is written again after every
    # record, its earlier repayments unchanged. A memo: not part of the value.
    stored_form: Any = field(default=None, init=False, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Tick:
    """The event-time clock: time has reached ``as_of``."""

    as_of: datetime


@dataclass(frozen=True, slots=True)
class Dispute:
    """A borrower's dispute of the loan's credit reporting (SPEC §2), OPEN or RESOLVED at ``at``."""

    dispute_id: str
    loan_id: str
    status: str
    at: datetime
    note: str | None = None


# --- validation helpers -------------------------------------------------------------------

_MISSING = object()


def _get(m: Mapping[str, Any], name: str, default: Any = _MISSING) -> Any:
    value = m.get(name, _MISSING)
    if value is _MISSING or (value is None and default is _MISSING):
        if default is _MISSING:
            raise errors.InvalidRecord(errors.MISSING_FIELD, name)
        return default
    return value


def _text(m: Mapping[str, Any], name: str, default: Any = _MISSING) -> str:
    value = _get(m, name, default)
    if value is None and default is None:
        return None  # type: ignore[return-value]
    if not isinstance(value, str) or not value:
        raise errors.InvalidRecord(errors.INVALID_FIELD, f"{name} must be a non-empty string")
    return value


def _id(m: Mapping[str, Any], name: str) -> str:
    """An id field: a non-empty string of at most 64 characters, no control characters."""
    return bounds.check_id(_text(m, name), name)


def _int(
    m: Mapping[str, Any],
    name: str,
    default: Any = _MISSING,
    *,
    minimum: int | None = None,
    maximum: int = bounds.MAX_INT32,
) -> int:
    value = _get(m, name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise errors.InvalidRecord(errors.INVALID_FIELD, f"{name} must be an integer")
    if minimum is not None and value < minimum:
        reason = errors.NEGATIVE_AMOUNT if minimum == 0 else errors.INVALID_FIELD
        raise errors.InvalidRecord(reason, f"{name} must be ≥ {minimum}")
    return bounds.check_at_most(value, maximum, name)


def _amount(m: Mapping[str, Any], name: str, default: Any = _MISSING) -> int:
    """An amount in minor units: 0 to 10^15."""
    return _int(m, name, default, minimum=0, maximum=bounds.MAX_AMOUNT)


def _instant(m: Mapping[str, Any], name: str) -> datetime:
    value = _get(m, name)
    try:
        instant = parse_instant(value)
    except (ValueError, OverflowError):
        raise errors.InvalidRecord(
            errors.INVALID_FIELD, f"{name} must be an ISO-8601 instant with an offset"
        ) from None
    return bounds.check_instant(instant, name)


def _date(value: Any, name: str) -> date:
    try:
        day = parse_date(value)
    except (ValueError, OverflowError):
        raise errors.InvalidRecord(errors.INVALID_FIELD, f"{name} must be a date YYYY-MM-DD") from None
    return bounds.check_date(day, name)


def _enum(m: Mapping[str, Any], name: str, allowed: frozenset[str], default: Any = _MISSING) -> str:
    value = _get(m, name, default)
    if value not in allowed:
        raise errors.InvalidRecord(errors.UNKNOWN_ENUM, f"{name} must be one of {sorted(allowed)}")
    return str(value)


def _currency(m: Mapping[str, Any]) -> str:
    value = _text(m, "currency")
    if len(value) != 3 or not is_currency(value):
        raise errors.InvalidRecord(errors.UNKNOWN_CURRENCY, "currency is not an ISO 4217 code")
    return value


# --- parsers -----------------------------------------------------------------------------


_MAX = bounds.MAX_AMOUNT
_FIRST, _LAST = bounds.MIN_DATE, bounds.MAX_DATE
_INT_MIN, _INT_MAX = -bounds.MAX_INT32 - 1, bounds.MAX_INT32
_FIRST_INSTANT, _END_INSTANT = bounds.MIN_INSTANT, bounds.END_INSTANT


def _installment(raw: Any) -> Installment:
    """One validated instalment. What Avro decoding gives (a dict of exact ints and a date) is
    checked in one expression; anything else, or anything out of bounds, goes field by field,
    which names what is wrong. Half of a schedule's validation was these per-field checks."""
    if type(raw) is dict:
        seq, due_date = raw.get("seq"), raw.get("due_date")
        principal, interest, fee = raw.get("principal"), raw.get("interest"), raw.get("fee")
        if (
            type(seq) is int and type(due_date) is date and type(principal) is int and type(interest) is int
            and type(fee) is int and 0 <= principal <= _MAX and 0 <= interest <= _MAX and 0 <= fee <= _MAX
            and _INT_MIN <= seq <= _INT_MAX and _FIRST <= due_date <= _LAST
        ):  # fmt: skip
            return Installment(seq, due_date, principal, interest, fee)
    if not isinstance(raw, Mapping):
        raise errors.InvalidRecord(errors.INVALID_FIELD, "an installment must be an object")
    return Installment(
        seq=_int(raw, "seq", minimum=_INT_MIN),
        due_date=_date(_get(raw, "due_date"), "due_date"),
        principal=_amount(raw, "principal"),
        interest=_amount(raw, "interest"),
        fee=_amount(raw, "fee"),
    )


def parse_schedule(m: Mapping[str, Any]) -> LoanSchedule:
    """Validate a LoanSchedule (SPEC §2): types, bounds, enums, zone, calendar, seq and due dates
    strictly increasing."""
    if not isinstance(m, Mapping):
        raise errors.InvalidRecord(errors.INVALID_FIELD, "a LoanSchedule must be an object")
    loan_id = _id(m, "loan_id")
    borrower_id = _id(m, "borrower_id")
    timezone = _timezone(m)
    calendar = _calendar(m)
    installments = _installments(m)
    late_fee = _amount(m, "late_fee", 0)
    if late_fee * len(installments) > bounds.MAX_AMOUNT:
        raise errors.InvalidRecord(
            errors.OUT_OF_RANGE, f"late_fee times installments exceeds {bounds.MAX_AMOUNT}"
        )
    contact = _contact(m)
    partners = _partners(m)
    return LoanSchedule(
        loan_id=loan_id,
        borrower_id=borrower_id,
        revision=_int(m, "revision", minimum=1),
        effective_at=_instant(m, "effective_at"),
        currency=_currency(m),
        timezone=timezone,
        status=_enum(m, "status", STATUSES),
        installments=installments,
        grace_days=_int(m, "grace_days", 0, minimum=0, maximum=bounds.MAX_GRACE_DAYS),
        tolerance=_amount(m, "tolerance", 0),
        penalty_rate_bps=_int(m, "penalty_rate_bps", 0, minimum=0, maximum=bounds.MAX_PENALTY_RATE_BPS),
        late_fee=late_fee,
        business_day_convention=_enum(m, "business_day_convention", CONVENTIONS, "NONE"),
        calendar=calendar,
        partners=partners,
        contact=contact,
    )


def _timezone(m: Mapping[str, Any]) -> str:
    """An IANA zone name this machine knows, bounded before any lookup that caches it."""
    timezone = _text(m, "timezone", DEFAULT_TIMEZONE)
    if len(timezone) > bounds.MAX_TIMEZONE_CHARS:
        raise errors.InvalidRecord(
            errors.INVALID_TIMEZONE, f"timezone must have at most {bounds.MAX_TIMEZONE_CHARS} characters"
        )
    if not is_zone(timezone):
        raise errors.InvalidRecord(errors.INVALID_TIMEZONE, "timezone is not an IANA zone")
    return timezone


def _calendar(m: Mapping[str, Any]) -> str | None:
    calendar = _get(m, "calendar", None)
    if calendar is not None and (
        not isinstance(calendar, str) or len(calendar) > bounds.MAX_CODE_CHARS or not is_calendar(calendar)
    ):
        raise errors.InvalidRecord(errors.INVALID_CALENDAR, "calendar is not a supported country code")
    return calendar


def _installments(m: Mapping[str, Any]) -> tuple[Installment, ...]:
    raw_installments = _get(m, "installments")
    if not isinstance(raw_installments, list | tuple) or not raw_installments:
        raise errors.InvalidRecord(errors.INVALID_FIELD, "installments must be a non-empty list")
    if len(raw_installments) > bounds.MAX_INSTALMENTS:
        raise errors.InvalidRecord(
            errors.OUT_OF_RANGE, f"installments exceeds {bounds.MAX_INSTALMENTS} entries"
        )
    installments = [_installment(raw) for raw in raw_installments]
    for before, after in zip(installments, installments[1:], strict=False):
        if after.seq <= before.seq or after.due_date <= before.due_date:
            raise errors.InvalidRecord(errors.SCHEDULE_ORDER, "seq and due_date must strictly increase")
    if sum(i.principal + i.interest + i.fee for i in installments) > bounds.MAX_AMOUNT:
        raise errors.InvalidRecord(errors.OUT_OF_RANGE, f"installments sum to more than {bounds.MAX_AMOUNT}")
    return tuple(installments)


def _contact(m: Mapping[str, Any]) -> Contact:
    """Contact carries the borrower's consent to be messaged, so it is required: a default would
    assume consent to SMS that nobody gave (the Avro schema agrees)."""
    raw_contact = _get(m, "contact")
    if not isinstance(raw_contact, Mapping):
        raise errors.InvalidRecord(errors.INVALID_FIELD, "contact must be an object")
    channels = _get(raw_contact, "channels", [])
    if not isinstance(channels, list | tuple) or any(c not in CHANNELS for c in channels):
        raise errors.InvalidRecord(errors.UNKNOWN_ENUM, f"contact.channels must be from {sorted(CHANNELS)}")
    if len(set(channels)) != len(channels):
        raise errors.InvalidRecord(errors.INVALID_FIELD, "contact.channels must not repeat a channel")
    return Contact(_enum(raw_contact, "locale", LOCALES), tuple(channels))


def _partners(m: Mapping[str, Any]) -> tuple[str, ...]:
    partners = _get(m, "partners", [])
    if not isinstance(partners, list | tuple) or any(not isinstance(p, str) for p in partners):
        raise errors.InvalidRecord(errors.INVALID_FIELD, "partners must be a list of ids")
    if len(partners) > bounds.MAX_PARTNERS:
        raise errors.InvalidRecord(errors.OUT_OF_RANGE, f"partners exceeds {bounds.MAX_PARTNERS} entries")
    for partner in partners:
        bounds.check_id(partner, "partners")
    return tuple(partners)


def _plain_id(value: object) -> bool:
    """An id of 1–64 printable ASCII characters: valid, and the common case checked in one step."""
    return (
        type(value) is str
        and 0 < len(value) <= bounds.MAX_ID_CHARS
        and value.isascii()
        and value.isprintable()
    )


def _plain_repayment(m: dict[str, Any]) -> Repayment | None:
    """The repayment in ``m`` when every field has the exact type Avro decoding gives and is
    within bounds (checked in one expression: a repayment is most of the input); None sends it
    field by field, which names what is wrong. Accepts nothing ``parse_repayment`` refuses."""
    amount, paid_at, kind, reverses = m.get("amount"), m.get("paid_at"), m.get("kind"), m.get("reverses")
    payment_id, loan_id, currency = m.get("payment_id"), m.get("loan_id"), m.get("currency")
    channel = m.get("channel", "unknown")
    if (
        type(amount) is int and 0 < amount <= _MAX
        and type(paid_at) is datetime and paid_at.tzinfo is UTC and _FIRST_INSTANT <= paid_at < _END_INSTANT
        and (kind == PAYMENT and reverses is None or kind == REVERSAL and _plain_id(reverses))
        and _plain_id(payment_id) and _plain_id(loan_id)
        and type(currency) is str and is_currency(currency)
        and type(channel) is str and 0 < len(channel) <= bounds.MAX_CODE_CHARS
    ):  # fmt: skip
        return Repayment(payment_id, loan_id, amount, currency, paid_at, channel, kind, reverses)  # type: ignore[arg-type]
    return None


def parse_repayment(m: Mapping[str, Any]) -> Repayment:
    """Validate a Repayment on its own (SPEC §2); checks against the loan come in ``loan``."""
    if type(m) is dict:
        plain = _plain_repayment(m)
        if plain is not None:
            return plain
    if not isinstance(m, Mapping):
        raise errors.InvalidRecord(errors.INVALID_FIELD, "a Repayment must be an object")
    amount = _int(m, "amount", maximum=bounds.MAX_AMOUNT)
    if amount <= 0:
        raise errors.InvalidRecord(errors.NON_POSITIVE_AMOUNT, "amount must be > 0")
    kind = _enum(m, "kind", KINDS)
    reverses = _get(m, "reverses", None)
    if kind == REVERSAL and (not isinstance(reverses, str) or not reverses):
        raise errors.InvalidRecord(errors.MISSING_FIELD, "reverses")
    if kind == PAYMENT and reverses is not None:
        raise errors.InvalidRecord(errors.INVALID_FIELD, "a PAYMENT does not reverse anything")
    if reverses is not None:
        bounds.check_id(reverses, "reverses")
    channel = _text(m, "channel", "unknown")
    if len(channel) > bounds.MAX_CODE_CHARS:
        raise errors.InvalidRecord(errors.OUT_OF_RANGE, f"channel exceeds {bounds.MAX_CODE_CHARS} characters")
    return Repayment(
        payment_id=_id(m, "payment_id"),
        loan_id=_id(m, "loan_id"),
        amount=amount,
        currency=_currency(m),
        paid_at=_instant(m, "paid_at"),
        channel=channel,
        kind=kind,
        reverses=reverses,
    )


def parse_tick(m: Mapping[str, Any]) -> Tick:
    """Validate a Tick: an instant with an offset."""
    if not isinstance(m, Mapping):
        raise errors.InvalidRecord(errors.INVALID_FIELD, "a Tick must be an object")
    return Tick(as_of=_instant(m, "as_of"))


def parse_dispute(m: Mapping[str, Any]) -> Dispute:
    """Validate a Dispute (SPEC §2)."""
    if not isinstance(m, Mapping):
        raise errors.InvalidRecord(errors.INVALID_FIELD, "a Dispute must be an object")
    note = m.get("note")
    return Dispute(
        dispute_id=_id(m, "dispute_id"),
        loan_id=_id(m, "loan_id"),
        status=_enum(m, "status", DISPUTE_STATUSES),
        at=_instant(m, "at"),
        note=note if isinstance(note, str) else None,
    )


def schedule_to_dict(s: LoanSchedule) -> dict[str, Any]:
    """The native (Avro-ready) form of a schedule: aware datetimes, dates, ints."""
    return {
        "loan_id": s.loan_id,
        "borrower_id": s.borrower_id,
        "revision": s.revision,
        "effective_at": s.effective_at,
        "currency": s.currency,
        "timezone": s.timezone,
        "status": s.status,
        "installments": [
            {
                "seq": i.seq,
                "due_date": i.due_date,
                "principal": i.principal,
                "interest": i.interest,
                "fee": i.fee,
            }
            for i in s.installments
        ],
        "grace_days": s.grace_days,
        "tolerance": s.tolerance,
        "penalty_rate_bps": s.penalty_rate_bps,
        "late_fee": s.late_fee,
        "business_day_convention": s.business_day_convention,
        "calendar": s.calendar,
        "partners": list(s.partners),
        "contact": {"locale": s.contact.locale, "channels": list(s.contact.channels)},
    }


def repayment_to_dict(r: Repayment) -> dict[str, Any]:
    """The native (Avro-ready) form of a repayment."""
    return {
        "payment_id": r.payment_id,
        "loan_id": r.loan_id,
        "amount": r.amount,
        "currency": r.currency,
        "paid_at": r.paid_at,
        "channel": r.channel,
        "kind": r.kind,
        "reverses": r.reverses,
    }
