"""The per-loan state machine the stream drives: apply a schedule, a repayment, a tick.

Each operation takes the loan's state, one input and the partition's tick clock ``now``,
and returns the new state, the OverdueEvents to send and the records to dead-letter.
The state keeps the loan's accepted records (so late data can be recomputed from any
instant of its open history), the walk's ``Carry`` (so a tick continues where the last one
stopped) and the ids it has retracted (so a re-emitted event gets a fresh id).

Late data: a record whose event time is at or before the last processed instant changes
history that was already emitted. The loan is then walked again from its fold point with and
without the record; every emitted event that no longer holds is retracted and every new
one is emitted. "The stream equals the replay" holds after applying retractions.

Bounded state (SPEC §2): a record more than ``late_window`` behind the loan's clock is
refused, and so is a reversal more than ``reversal_window`` after its payment. Nothing older
than both windows together can change any more, so it is folded (``Sealed``): the walk's
carry at that instant, the total paid by then, and a digest of each dropped revision. A loan
with years of daily repayments keeps a few hundred of them, not all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from . import bounds, errors
from .config import EngineConfig
from .dates import local_date, zone
from .events import OverdueEvent
from .records import PAYMENT, REVERSAL, LoanSchedule, Repayment
from .timeline import Carry, Ledger, next_instant, walk

#: Most repayments a loan keeps record by record (the rest is folded): with every field at its
#: bound a kept repayment is ~200 bytes, so this stays well under Kafka's 1 MB record.
MAX_KEPT_REPAYMENTS = 2000
#: Most instalments over the schedule revisions a loan keeps (three revisions of the longest).
MAX_KEPT_INSTALMENTS = 3 * bounds.MAX_INSTALMENTS
#: Most retracted event ids a loan remembers within its open history.
MAX_RETRACTED = 2000


@dataclass(frozen=True, slots=True)
class Sealed:
    """A loan's history up to ``carry.cursor`` (its fold point), folded: what no record may
    change any more, kept as the walk's carry there, the total paid by then, and what
    recognises a repeat of a revision that was dropped."""

    carry: Carry
    paid: int  # payments in effect at the fold point, net of reversals
    gross: int  # every folded PAYMENT's amount added up (SPEC §2's bound on sums)
    revisions: tuple[tuple[int, str], ...] = ()  # dropped revisions: (revision, content digest)

    @property
    def at(self) -> datetime:
        """The fold point: nothing at or before it is kept record by record."""
        assert self.carry.cursor is not None
        return self.carry.cursor


@dataclass(frozen=True, slots=True)
class LoanState:
    """Everything duewatch keeps about one loan."""

    loan_id: str
    schedules: tuple[LoanSchedule, ...] = ()
    repayments: tuple[Repayment, ...] = ()
    carry: Carry = Carry()
    # (event id, as_of) of every event retracted within the open history: a re-emitted event
    # must not reuse a retracted id; the instant says when the id can be forgotten.
    retracted: frozenset[tuple[str, datetime]] = frozenset()
    sealed: Sealed | None = None
    # Its records indexed (``timeline.Ledger``), once built: a memo, not part of the value; a
    # state made by adding one repayment gets its ledger extended instead of rebuilt.
    ledger_memo: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def held(self) -> bool:
        """Repayments are waiting for the loan's first schedule."""
        return not self.schedules and bool(self.repayments)

    @property
    def origin(self) -> Carry:
        """Where a walk of the loan's open history starts: its fold point, or the beginning."""
        return self.sealed.carry if self.sealed is not None else _START

    def ledger(self) -> Ledger:
        """The loan's kept records, indexed (on the total folded before them)."""
        memo: Ledger | None = self.ledger_memo
        if memo is None:
            memo = Ledger(self.schedules, self.repayments, self.sealed.paid if self.sealed is not None else 0)
            object.__setattr__(self, "ledger_memo", memo)
        return memo

    def retracted_ids(self) -> Collection[str]:
        """The ids an event must not take again."""
        return {event_id for event_id, _ in self.retracted} if self.retracted else _NONE


_NONE: frozenset[str] = frozenset()
_START = Carry()  # a walk from the beginning (one value: building a carry is not free)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record the loan refused after accepting it for a while (held too long, wrong currency)."""

    record: Repayment
    error: errors.InvalidRecord


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one operation: new state, events to send (in order), records to dead-letter."""

    state: LoanState
    events: tuple[OverdueEvent, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    duplicate: bool = False
    wake_at: datetime | None = None


def new_loan(loan_id: str) -> LoanState:
    """An empty loan."""
    return LoanState(loan_id=loan_id)


def _ready(cfg: EngineConfig, now: datetime | None) -> Callable[[datetime, bool], bool]:
    """The emission rule of SPEC §4: record instants once the clock reaches them, timed ones after settle."""
    if now is None:
        return lambda at, timed: False
    settle = cfg.settle

    def may_process(at: datetime, timed: bool) -> bool:
        return at + settle <= now if timed else at <= now

    return may_process


def gauge_figures(state: LoanState) -> tuple[str | None, str | None, int, bool]:
    """What a loan adds to the book gauges: its bucket and currency and the amount overdue while
    an episode is open (None, None, 0 otherwise), and whether it holds repayments."""
    carry = state.carry
    if carry.open and state.schedules:
        return carry.bucket, state.schedules[0].currency, carry.total_overdue, state.held
    return None, None, 0, state.held


def wake_at(state: LoanState, cfg: EngineConfig) -> datetime | None:
    """The earliest tick-clock instant at which ``tick`` can do something for this loan (None: never)."""
    return _wake(state, cfg, None)


def _wake(state: LoanState, cfg: EngineConfig, ledger: Ledger | None) -> datetime | None:
    if not state.schedules:
        if not state.repayments:
            return None
        return min(r.paid_at for r in state.repayments) + cfg.hold
    at, timed = next_instant(ledger or state.ledger(), state.carry)
    if at is None:
        return None
    return at + cfg.settle if timed else at


def _finish(
    state: LoanState,
    cfg: EngineConfig,
    events: tuple[OverdueEvent, ...] = (),
    rejected: tuple[Rejection, ...] = (),
    ledger: Ledger | None = None,
) -> Outcome:
    folded = fold(state, cfg)
    if folded is not state:
        state, ledger = folded, None
    return Outcome(state=state, events=events, rejected=rejected, wake_at=_wake(state, cfg, ledger))


def _moved(
    state: LoanState, carry: Carry, retracted: frozenset[tuple[str, datetime]] | None = None
) -> LoanState:
    """``state`` walked on to ``carry`` (its records, so its ledger, unchanged)."""
    moved = LoanState(
        state.loan_id, state.schedules, state.repayments, carry,
        state.retracted if retracted is None else retracted, state.sealed,
    )  # fmt: skip
    object.__setattr__(moved, "ledger_memo", state.ledger_memo)
    return moved


def _advance(
    state: LoanState, now: datetime | None, cfg: EngineConfig, rejected: tuple[Rejection, ...] = ()
) -> Outcome:
    ledger = state.ledger()
    carry, produced = walk(ledger, state.carry, cfg, _ready(cfg, now), state.retracted_ids())
    if carry is not state.carry:
        state = _moved(state, carry)
    return _finish(state, cfg, tuple(produced), rejected, ledger)


def _recompute(
    old: LoanState,
    new: LoanState,
    now: datetime | None,
    cfg: EngineConfig,
    rejected: tuple[Rejection, ...] = (),
) -> Outcome:
    """Walk the loan's open history again after a record landed in already-emitted history."""
    horizon = old.carry.cursor
    assert horizon is not None
    ready = _ready(cfg, now)
    ids = old.retracted_ids()
    _, before = walk(old.ledger(), old.origin, cfg, lambda at, timed: at <= horizon, ids)
    ledger = new.ledger()
    carry, after = walk(ledger, new.origin, cfg, lambda at, timed: at <= horizon or ready(at, timed), ids)
    kept = {e.event_id for e in after}
    already = {e.event_id for e in before}
    issued_at = horizon if now is None or now < horizon else now
    schedule = ledger.schedule_at(issued_at) or new.schedules[0]
    issued_date = local_date(issued_at, zone(schedule.timezone))
    withdrawn = [e for e in before if e.event_id not in kept]
    retracted = old.retracted | {(e.event_id, e.as_of) for e in withdrawn}
    if len(retracted) > MAX_RETRACTED:
        raise errors.InvalidRecord(
            errors.OUT_OF_RANGE, f"the loan would remember more than {MAX_RETRACTED} retracted events"
        )
    retractions = tuple(e.retraction(issued_at, issued_date) for e in withdrawn)
    fresh = tuple(e for e in after if e.event_id not in already)
    state = _moved(new, carry, retracted)
    return _finish(state, cfg, retractions + fresh, rejected, ledger)


def _settle_record(
    old: LoanState,
    new: LoanState,
    event_time: datetime,
    now: datetime | None,
    cfg: EngineConfig,
    rejected: tuple[Rejection, ...] = (),
) -> Outcome:
    cursor = old.carry.cursor
    if cursor is not None and event_time <= cursor:
        return _recompute(old, new, now, cfg, rejected)
    return _advance(new, now, cfg, rejected)


def _not_too_late(state: LoanState, event_time: datetime, name: str, cfg: EngineConfig) -> None:
    """Refuse a record more than ``late_window`` behind the loan's processed instant: the history
    it would change may already be folded (``Sealed``)."""
    cursor = state.carry.cursor
    if cursor is not None and event_time < cursor - cfg.late_window:
        raise errors.InvalidRecord(
            errors.OUT_OF_RANGE, f"{name} is more than {cfg.late_window.days} days behind the loan's clock"
        )


def schedule_digest(schedule: LoanSchedule) -> str:
    """A short digest of a revision's content: how a repeat of a folded revision is recognised."""
    return hashlib.blake2b(repr(schedule).encode(), digest_size=8).hexdigest()


def apply_schedule(
    state: LoanState, schedule: LoanSchedule, now: datetime | None, cfg: EngineConfig
) -> Outcome:
    """Accept a schedule revision (or refuse it with ``InvalidRecord``) and emit what follows from it."""
    if schedule.loan_id != state.loan_id:
        raise errors.InvalidRecord(errors.KEY_MISMATCH, "schedule for another loan")
    for existing in state.schedules:
        if existing.revision == schedule.revision:
            if existing == schedule:
                return replace(_advance(state, now, cfg), duplicate=True)
            raise errors.InvalidRecord(errors.CONFLICTING_DUPLICATE, f"revision {schedule.revision} differs")
    if state.sealed is not None:
        for revision, digest in state.sealed.revisions:
            if revision == schedule.revision:
                if digest == schedule_digest(schedule):
                    return replace(_advance(state, now, cfg), duplicate=True)
                raise errors.InvalidRecord(
                    errors.CONFLICTING_DUPLICATE, f"revision {schedule.revision} differs"
                )
    _not_too_late(state, schedule.effective_at, "effective_at", cfg)
    if state.schedules and state.schedules[0].currency != schedule.currency:
        raise errors.InvalidRecord(errors.CURRENCY_CHANGED, "a revision cannot change the loan's currency")
    if sum(len(s.installments) for s in state.schedules) + len(schedule.installments) > MAX_KEPT_INSTALMENTS:
        raise errors.InvalidRecord(
            errors.OUT_OF_RANGE,
            f"the loan's open revisions would hold more than {MAX_KEPT_INSTALMENTS} installments",
        )
    rejected: list[Rejection] = []
    repayments = state.repayments
    if not state.schedules and repayments:
        wrong = [r for r in repayments if r.currency != schedule.currency]
        if wrong:
            gone = {r.payment_id for r in wrong}
            # A reversal of a refused payment has nothing left to reverse.
            wrong += [r for r in repayments if r.kind == REVERSAL and r.reverses in gone and r not in wrong]
            rejected = [
                Rejection(
                    r, errors.InvalidRecord(errors.CURRENCY_MISMATCH, "currency differs from the loan's")
                )
                for r in wrong
            ]
            repayments = tuple(r for r in repayments if r not in wrong)
    schedules = tuple(sorted((*state.schedules, schedule), key=lambda s: s.revision))
    new = replace(state, schedules=schedules, repayments=repayments)
    return _settle_record(state, new, schedule.effective_at, now, cfg, tuple(rejected))


def apply_repayment(
    state: LoanState, repayment: Repayment, now: datetime | None, cfg: EngineConfig
) -> Outcome:
    """Accept a payment or reversal (or refuse it with ``InvalidRecord``) and emit what follows from it."""
    if repayment.loan_id != state.loan_id:
        raise errors.InvalidRecord(errors.KEY_MISMATCH, "repayment for another loan")
    ledger = state.ledger()
    existing = ledger.payments.get(repayment.payment_id)
    if existing is not None:
        if existing == repayment:
            return replace(_advance(state, now, cfg), duplicate=True)
        raise errors.InvalidRecord(errors.CONFLICTING_DUPLICATE, "payment_id seen with different content")
    _not_too_late(state, repayment.paid_at, "paid_at", cfg)
    if state.schedules and repayment.currency != state.schedules[0].currency:
        raise errors.InvalidRecord(errors.CURRENCY_MISMATCH, "currency differs from the loan's")
    if repayment.kind == REVERSAL:
        target = ledger.payments.get(repayment.reverses or "")
        if target is None or target.kind != PAYMENT:
            raise errors.InvalidRecord(errors.UNKNOWN_PAYMENT, "reversal of an unknown payment")
        if any(r.kind == REVERSAL and r.reverses == target.payment_id for r in state.repayments):
            raise errors.InvalidRecord(errors.ALREADY_REVERSED, "payment already reversed")
        if repayment.paid_at < target.paid_at:
            raise errors.InvalidRecord(errors.REVERSAL_BEFORE_PAYMENT, "reversal dated before the payment")
        if repayment.amount != target.amount:
            raise errors.InvalidRecord(
                errors.REVERSAL_AMOUNT_MISMATCH, "reversal amount differs from the payment's"
            )
        if repayment.paid_at - target.paid_at > cfg.reversal_window:
            raise errors.InvalidRecord(
                errors.OUT_OF_RANGE,
                f"paid_at is more than {cfg.reversal_window.days} days after the reversed payment",
            )
    else:
        gross = ledger.gross + repayment.amount + (state.sealed.gross if state.sealed is not None else 0)
        if gross > bounds.MAX_AMOUNT:
            raise errors.InvalidRecord(
                errors.OUT_OF_RANGE, f"the loan's payments would exceed {bounds.MAX_AMOUNT}"
            )
    if len(state.repayments) >= MAX_KEPT_REPAYMENTS:
        raise errors.InvalidRecord(
            errors.OUT_OF_RANGE,
            f"the loan already keeps {MAX_KEPT_REPAYMENTS} repayments of its open history",
        )
    new = LoanState(
        state.loan_id,
        state.schedules,
        (*state.repayments, repayment),
        state.carry,
        state.retracted,
        state.sealed,
    )
    object.__setattr__(new, "ledger_memo", ledger.plus(repayment))
    return _settle_record(state, new, repayment.paid_at, now, cfg)


def tick(state: LoanState, now: datetime, cfg: EngineConfig) -> Outcome:
    """Time has reached ``now``: emit every transition due by then; expire repayments held too long."""
    if not state.schedules:
        if not state.repayments:
            return Outcome(state=state)
        expired = [r for r in state.repayments if r.paid_at + cfg.hold <= now]
        if not expired:
            return _finish(state, cfg)
        gone = {r.payment_id for r in expired}
        expired += [
            r for r in state.repayments if r.kind == REVERSAL and r.reverses in gone and r not in expired
        ]
        rejected = tuple(
            Rejection(
                r, errors.InvalidRecord(errors.NO_SCHEDULE, "no schedule arrived within the hold period")
            )
            for r in expired
        )
        state = replace(state, repayments=tuple(r for r in state.repayments if r not in expired))
        return _finish(state, cfg, rejected=rejected)
    return _advance(state, now, cfg)


def fold(state: LoanState, cfg: EngineConfig) -> LoanState:
    """Fold what no record may change any more into the loan's sealed history (``Sealed``).

    Anything at or before ``cursor − late_window − reversal_window`` is beyond reach: a record
    that old is refused, and a reversal within its window names a payment after that instant.
    Folding walks from the previous fold point to that instant (the events it passes were
    emitted long ago and are not emitted again) and keeps the carry there. It runs when the
    oldest kept repayment, or a superseded revision, has fallen behind that instant, so a loan
    pays for it once per fold, not per record."""
    cursor = state.carry.cursor
    if cursor is None or not state.schedules:
        return state
    horizon = cursor - cfg.late_window - cfg.reversal_window
    origin = state.origin
    if origin.cursor is not None and origin.cursor >= horizon:
        return state
    old_payment = bool(state.repayments) and state.repayments[0].paid_at <= horizon
    old_revision = len(state.schedules) > 1 and sorted(s.effective_at for s in state.schedules)[1] <= horizon
    if not (old_payment or old_revision or state.retracted and min(t for _, t in state.retracted) <= horizon):
        return state
    ledger = state.ledger()
    carry, _ = walk(ledger, origin, cfg, lambda at, timed: at <= horizon, state.retracted_ids())
    point = carry.cursor
    if point is None or (origin.cursor is not None and point <= origin.cursor):
        return state
    in_effect = ledger.schedule_at(point)
    assert in_effect is not None
    kept = tuple(
        s
        for s in state.schedules
        if s is in_effect or (s.effective_at > point and s.revision > in_effect.revision)
    )
    dropped = tuple((s.revision, schedule_digest(s)) for s in state.schedules if s not in kept)
    folded = [r for r in state.repayments if r.paid_at <= point]
    sealed = state.sealed
    gross = (sealed.gross if sealed is not None else 0) + sum(r.amount for r in folded if r.kind == PAYMENT)
    revisions = (sealed.revisions if sealed is not None else ()) + dropped
    return replace(
        state,
        schedules=kept,
        repayments=tuple(r for r in state.repayments if r.paid_at > point),
        retracted=frozenset(pair for pair in state.retracted if pair[1] > point),
        sealed=Sealed(carry, ledger.paid_at(point), gross, revisions),
    )
