"""A loan's state as compact bytes, for the RocksDB-backed table and its changelog.

Positional JSON arrays (orjson) with instants as UTC epoch microseconds and dates as
ordinals: a typical 12-instalment loan with a few payments is well under a kilobyte,
decodes in microseconds, and the first element versions the layout so a stored state
from an older release can still be read.

A state may carry a summary header (``dumps(state, summary)``): the loan's wake-up instant
and book-gauge figures, readable without decoding the state (``peek``). A restart indexes a
whole partition's loans from it — decoding a million states would take minutes, reading a
million headers takes seconds. Layout: byte 0x02, a 2-byte big-endian header length, the
header (an orjson array), then the state exactly as without a header.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from .compiled import picklable
from .config import EngineConfig
from .loan import LoanState, Sealed, gauge_figures
from .records import Contact, Installment, LoanSchedule, Repayment
from .timeline import Carry

VERSION = 2  # 2: retracted ids with their instants, and the sealed history (bounded state)
_HEADED = 0x02  # first byte of a state with a summary header (a bare state starts with "[")
_HEAD_MARK = bytes((_HEADED,))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def micros(t: datetime) -> int:
    """An instant as UTC epoch microseconds (how stored states keep instants)."""
    return (t - _EPOCH) // _MICRO


def instant(us: int) -> datetime:
    """The UTC instant of ``micros``' epoch microseconds."""
    return _EPOCH + timedelta(microseconds=us)


def _schedule(s: LoanSchedule) -> list[Any]:
    return [
        s.borrower_id,
        s.revision,
        micros(s.effective_at),
        s.currency,
        s.timezone,
        s.status,
        [[i.seq, i.due_date.toordinal(), i.principal, i.interest, i.fee] for i in s.installments],
        s.grace_days,
        s.tolerance,
        s.penalty_rate_bps,
        s.late_fee,
        s.business_day_convention,
        s.calendar,
        list(s.partners),
        s.contact.locale,
        list(s.contact.channels),
    ]


def _stored(value: LoanSchedule | Repayment | Carry, encode: Callable[[Any], list[Any]]) -> orjson.Fragment:
    """``value``'s stored form, encoded once: a state is written after every record, and its
    schedules, earlier repayments and often its carry are the same objects each time
    (``stored_form`` memo)."""
    form = value.stored_form
    if form is None:
        # A copy of exactly its size: orjson's output keeps the ~4 KB block it was written into,
        # which held for the life of a cached state came to ~20 KB a loan.
        form = orjson.Fragment(memoryview(orjson.dumps(encode(value))).tobytes())
        object.__setattr__(value, "stored_form", form)
    stored: orjson.Fragment = form
    return stored


def _unschedule(loan_id: str, a: list[Any]) -> LoanSchedule:
    return LoanSchedule(
        loan_id=loan_id,
        borrower_id=a[0],
        revision=a[1],
        effective_at=instant(a[2]),
        currency=a[3],
        timezone=a[4],
        status=a[5],
        installments=tuple(Installment(i[0], date.fromordinal(i[1]), i[2], i[3], i[4]) for i in a[6]),
        grace_days=a[7],
        tolerance=a[8],
        penalty_rate_bps=a[9],
        late_fee=a[10],
        business_day_convention=a[11],
        calendar=a[12],
        partners=tuple(a[13]),
        contact=Contact(a[14], tuple(a[15])),
    )


def _repayment(r: Repayment) -> list[Any]:
    return [r.payment_id, r.amount, r.currency, micros(r.paid_at), r.channel, r.kind, r.reverses]


def _unrepayment(loan_id: str, a: list[Any]) -> Repayment:
    return Repayment(a[0], loan_id, a[1], a[2], instant(a[3]), a[4], a[5], a[6])


def _carry(c: Carry) -> list[Any]:
    return [
        None if c.cursor is None else micros(c.cursor),
        c.status,
        c.open,
        c.bucket,
        None if c.first_delinquency_date is None else c.first_delinquency_date.toordinal(),
        c.penalty,
        c.late_fees,
        sorted(c.fee_seqs),
        c.daily_penalty,
        c.terminal,
        None if c.timed_next is None else micros(c.timed_next),
        c.total_overdue,
    ]


def _uncarry(a: list[Any]) -> Carry:
    return Carry(
        cursor=None if a[0] is None else instant(a[0]),
        status=a[1],
        open=a[2],
        bucket=a[3],
        first_delinquency_date=None if a[4] is None else date.fromordinal(a[4]),
        penalty=a[5],
        late_fees=a[6],
        fee_seqs=frozenset(a[7]),
        daily_penalty=a[8],
        terminal=a[9],
        timed_next=None if a[10] is None else instant(a[10]),
        total_overdue=a[11] if len(a) > 11 else 0,
    )


@dataclass(frozen=True, slots=True)
class Summary:
    """What a restart needs of a stored state: when the loan next wants a tick and what it adds
    to the book gauges. ``wake_at`` depends on the engine's settle and hold, so they are kept
    with it: a worker started with other settings decodes the state instead."""

    wake_at: datetime | None
    settle: timedelta
    hold: timedelta
    bucket: str | None  # the open episode's bucket; None when the loan is not overdue
    currency: str | None
    overdue: int  # minor units overdue in the open episode
    held: bool  # repayments wait for a schedule

    def __init__(
        self,
        wake_at: datetime | None,
        settle: timedelta,
        hold: timedelta,
        bucket: str | None,
        currency: str | None,
        overdue: int,
        held: bool,
    ) -> None:
        # Written out rather than generated: mypyc compiles this one (streams/core/compiled.py).
        object.__setattr__(self, "wake_at", wake_at)
        object.__setattr__(self, "settle", settle)
        object.__setattr__(self, "hold", hold)
        object.__setattr__(self, "bucket", bucket)
        object.__setattr__(self, "currency", currency)
        object.__setattr__(self, "overdue", overdue)
        object.__setattr__(self, "held", held)

    @classmethod
    def of(cls, state: LoanState, wake_at: datetime | None, cfg: EngineConfig) -> Summary:
        """The summary of ``state`` whose next wake-up under ``cfg`` is ``wake_at``."""
        bucket, currency, overdue, held = gauge_figures(state)
        return cls(wake_at, cfg.settle, cfg.hold, bucket, currency, overdue, held)

    def fits(self, cfg: EngineConfig) -> bool:
        """Whether ``wake_at`` holds under ``cfg`` (it was computed with the same settle and hold)."""
        return self.settle == cfg.settle and self.hold == cfg.hold


def dumps(state: LoanState, summary: Summary | None = None) -> bytes:
    """Serialise a loan's state, with ``summary`` as a header when given."""
    body = _body(state)
    if summary is None:
        return body
    head = orjson.dumps(
        [
            None if summary.wake_at is None else micros(summary.wake_at), summary.settle // _MICRO,
            summary.hold // _MICRO, summary.bucket, summary.currency, summary.overdue, summary.held,
        ]
    )  # fmt: skip
    return b"".join((_HEAD_MARK, len(head).to_bytes(2, "big"), head, body))


def peek(data: bytes) -> Summary | None:
    """The summary header of stored state bytes, without decoding the state (None: it has none)."""
    if not data or data[0] != _HEADED:
        return None
    size = int.from_bytes(data[1:3], "big")
    a = orjson.loads(data[3 : 3 + size])
    return Summary(
        wake_at=None if a[0] is None else instant(a[0]), settle=timedelta(microseconds=a[1]),
        hold=timedelta(microseconds=a[2]), bucket=a[3], currency=a[4], overdue=a[5], held=a[6],
    )  # fmt: skip


def _sealed(sealed: Sealed | None) -> list[Any] | None:
    if sealed is None:
        return None
    return [
        _stored(sealed.carry, _carry),
        sealed.paid,
        sealed.gross,
        [list(pair) for pair in sealed.revisions],
    ]


def _unsealed(a: list[Any] | None) -> Sealed | None:
    if a is None:
        return None
    return Sealed(_uncarry(a[0]), a[1], a[2], tuple((revision, digest) for revision, digest in a[3]))


def _body(state: LoanState) -> bytes:
    return orjson.dumps(
        [
            VERSION, state.loan_id, [_stored(s, _schedule) for s in state.schedules],
            [_stored(r, _repayment) for r in state.repayments], _stored(state.carry, _carry),
            sorted([event_id, micros(at)] for event_id, at in state.retracted), _sealed(state.sealed),
        ]
    )  # fmt: skip


# A retracted id stored by layout 1, without its instant: kept for as long as the loan lives.
_UNDATED = instant(micros(datetime(2200, 1, 1, tzinfo=UTC)))


def loads(data: bytes) -> LoanState:
    """Deserialise what ``dumps`` wrote (any released layout version, with or without a header)."""
    if data and data[0] == _HEADED:
        data = data[3 + int.from_bytes(data[1:3], "big") :]
    a = orjson.loads(data)
    if a[0] == 1:
        retracted = frozenset((event_id, _UNDATED) for event_id in a[5])
        sealed = None
    elif a[0] == VERSION:
        retracted = frozenset((event_id, instant(us)) for event_id, us in a[5])
        sealed = _unsealed(a[6])
    else:
        raise ValueError(f"unknown loan state layout {a[0]}")
    loan_id = a[1]
    return LoanState(
        loan_id=loan_id,
        schedules=tuple(_unschedule(loan_id, s) for s in a[2]),
        repayments=tuple(_unrepayment(loan_id, r) for r in a[3]),
        carry=_uncarry(a[4]),
        retracted=retracted,
        sealed=sealed,
    )


# Every dataclass above pickles field by field, in either form (a compiled frozen one could not
# unpickle otherwise: compiled.picklable).
picklable(globals())
