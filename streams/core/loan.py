"""The per-loan state machine the stream drives: apply a schedule, a repayment, a tick.

Each operation takes the loan's state, one input and the partition's tick clock ``now``,
and returns the new state, the OverdueEvents to send and the records to dead-letter.
The state keeps the loan's accepted records (so late data can be recomputed from any
instant), the walk's ``Carry`` (so a tick continues where the last one stopped) and the
ids it has retracted (so a re-emitted event gets a fresh id).

Late data: a record whose event time is at or before the last processed instant changes
history that was already emitted. The loan is then walked again from the start with and
without the record; every emitted event that no longer holds is retracted and every new
one is emitted. "The stream equals the replay" holds after applying retractions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from . import errors
from .config import EngineConfig
from .dates import local_date, zone
from .events import OverdueEvent
from .records import PAYMENT, REVERSAL, LoanSchedule, Repayment
from .timeline import Carry, Ledger, next_instant, walk


@dataclass(frozen=True, slots=True)
class LoanState:
    """Everything duewatch keeps about one loan."""

    loan_id: str
    schedules: tuple[LoanSchedule, ...] = ()
    repayments: tuple[Repayment, ...] = ()
    carry: Carry = Carry()
    retracted: frozenset[str] = frozenset()

    @property
    def held(self) -> bool:
        """Repayments are waiting for the loan's first schedule."""
        return not self.schedules and bool(self.repayments)


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


def _ready(cfg: EngineConfig, now: datetime | None):
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
    if not state.schedules:
        if not state.repayments:
            return None
        return min(r.paid_at for r in state.repayments) + cfg.hold
    at, timed = next_instant(Ledger(state.schedules, state.repayments), state.carry)
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
    if not state.schedules:
        wake = wake_at(state, cfg)
    else:
        at, timed = next_instant(ledger or Ledger(state.schedules, state.repayments), state.carry)
        wake = None if at is None else (at + cfg.settle if timed else at)
    return Outcome(state=state, events=events, rejected=rejected, wake_at=wake)


def _advance(state: LoanState, now: datetime | None, cfg: EngineConfig, rejected=()) -> Outcome:
    ledger = Ledger(state.schedules, state.repayments)
    carry, produced = walk(ledger, state.carry, cfg, _ready(cfg, now), state.retracted)
    if carry is not state.carry:
        state = LoanState(state.loan_id, state.schedules, state.repayments, carry, state.retracted)
    return _finish(state, cfg, tuple(produced), tuple(rejected), ledger)


def _recompute(old: LoanState, new: LoanState, now: datetime | None, cfg: EngineConfig, rejected=()) -> Outcome:
    """Walk the loan again from the start after a record landed in already-emitted history."""
    horizon = old.carry.cursor
    assert horizon is not None
    ready = _ready(cfg, now)
    _, before = walk(Ledger(old.schedules, old.repayments), Carry(), cfg, lambda at, timed: at <= horizon, old.retracted)
    ledger = Ledger(new.schedules, new.repayments)
    carry, after = walk(ledger, Carry(), cfg, lambda at, timed: at <= horizon or ready(at, timed), old.retracted)
    kept = {e.event_id for e in after}
    already = {e.event_id for e in before}
    issued_at = horizon if now is None or now < horizon else now
    schedule = ledger.schedule_at(issued_at) or new.schedules[0]
    issued_date = local_date(issued_at, zone(schedule.timezone))
    withdrawn = [e for e in before if e.event_id not in kept]
    retractions = tuple(e.retraction(issued_at, issued_date) for e in withdrawn)
    fresh = tuple(e for e in after if e.event_id not in already)
    state = replace(new, carry=carry, retracted=old.retracted | {e.event_id for e in withdrawn})
    return _finish(state, cfg, retractions + fresh, tuple(rejected), ledger)


def _settle_record(old: LoanState, new: LoanState, event_time: datetime, now: datetime | None, cfg, rejected=()):
    cursor = old.carry.cursor
    if cursor is not None and event_time <= cursor:
        return _recompute(old, new, now, cfg, rejected)
    return _advance(new, now, cfg, rejected)


def apply_schedule(state: LoanState, schedule: LoanSchedule, now: datetime | None, cfg: EngineConfig) -> Outcome:
    """Accept a schedule revision (or refuse it with ``InvalidRecord``) and emit what follows from it."""
    if schedule.loan_id != state.loan_id:
        raise errors.InvalidRecord(errors.KEY_MISMATCH, "schedule for another loan")
    for existing in state.schedules:
        if existing.revision == schedule.revision:
            if existing == schedule:
                return replace(_advance(state, now, cfg), duplicate=True)
            raise errors.InvalidRecord(errors.CONFLICTING_DUPLICATE, f"revision {schedule.revision} differs")
    if state.schedules and state.schedules[0].currency != schedule.currency:
        raise errors.InvalidRecord(errors.CURRENCY_CHANGED, "a revision cannot change the loan's currency")
    rejected: list[Rejection] = []
    repayments = state.repayments
    if not state.schedules and repayments:
        wrong = [r for r in repayments if r.currency != schedule.currency]
        if wrong:
            gone = {r.payment_id for r in wrong}
            # A reversal of a refused payment has nothing left to reverse.
            wrong += [r for r in repayments if r.kind == REVERSAL and r.reverses in gone and r not in wrong]
            rejected = [
                Rejection(r, errors.InvalidRecord(errors.CURRENCY_MISMATCH, "currency differs from the loan's"))
                for r in wrong
            ]
            repayments = tuple(r for r in repayments if r not in wrong)
    schedules = tuple(sorted((*state.schedules, schedule), key=lambda s: s.revision))
    new = replace(state, schedules=schedules, repayments=repayments)
    return _settle_record(state, new, schedule.effective_at, now, cfg, rejected)


def apply_repayment(state: LoanState, repayment: Repayment, now: datetime | None, cfg: EngineConfig) -> Outcome:
    """Accept a payment or reversal (or refuse it with ``InvalidRecord``) and emit what follows from it."""
    if repayment.loan_id != state.loan_id:
        raise errors.InvalidRecord(errors.KEY_MISMATCH, "repayment for another loan")
    # A scan, not a dict of the loan's payments: a loan holds a handful, and this runs per record.
    existing = _payment(state.repayments, repayment.payment_id)
    if existing is not None:
        if existing == repayment:
            return replace(_advance(state, now, cfg), duplicate=True)
        raise errors.InvalidRecord(errors.CONFLICTING_DUPLICATE, "payment_id seen with different content")
    if state.schedules and repayment.currency != state.schedules[0].currency:
        raise errors.InvalidRecord(errors.CURRENCY_MISMATCH, "currency differs from the loan's")
    if repayment.kind == REVERSAL:
        target = _payment(state.repayments, repayment.reverses)
        if target is None or target.kind != PAYMENT:
            raise errors.InvalidRecord(errors.UNKNOWN_PAYMENT, "reversal of an unknown payment")
        if any(r.kind == REVERSAL and r.reverses == target.payment_id for r in state.repayments):
            raise errors.InvalidRecord(errors.ALREADY_REVERSED, "payment already reversed")
        if repayment.paid_at < target.paid_at:
            raise errors.InvalidRecord(errors.REVERSAL_BEFORE_PAYMENT, "reversal dated before the payment")
        if repayment.amount != target.amount:
            raise errors.InvalidRecord(errors.REVERSAL_AMOUNT_MISMATCH, "reversal amount differs from the payment's")
    new = LoanState(state.loan_id, state.schedules, (*state.repayments, repayment), state.carry, state.retracted)
    return _settle_record(state, new, repayment.paid_at, now, cfg)


def _payment(repayments: tuple[Repayment, ...], payment_id: str | None) -> Repayment | None:
    """The accepted record with ``payment_id`` (None: none)."""
    for r in repayments:
        if r.payment_id == payment_id:
            return r
    return None


def tick(state: LoanState, now: datetime, cfg: EngineConfig) -> Outcome:
    """Time has reached ``now``: emit every transition due by then; expire repayments held too long."""
    if not state.schedules:
        if not state.repayments:
            return Outcome(state=state)
        expired = [r for r in state.repayments if r.paid_at + cfg.hold <= now]
        if not expired:
            return _finish(state, cfg)
        gone = {r.payment_id for r in expired}
        expired += [r for r in state.repayments if r.kind == REVERSAL and r.reverses in gone and r not in expired]
        rejected = tuple(
            Rejection(r, errors.InvalidRecord(errors.NO_SCHEDULE, "no schedule arrived within the hold period"))
            for r in expired
        )
        state = replace(state, repayments=tuple(r for r in state.repayments if r not in expired))
        return _finish(state, cfg, rejected=rejected)
    return _advance(state, now, cfg)
