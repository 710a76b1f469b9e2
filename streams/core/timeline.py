"""The event-time simulation of one loan: from its records to its transitions.

A loan's state can only change at a few instants: when a record takes effect (a
schedule's ``effective_at``, a payment's or reversal's ``paid_at``) and at the local
midnights and reminder times its schedule makes interesting (cut-offs, the DPD at which
it opens, bucket boundaries, late-fee days, DUE_SOON at 09:00). Between two such
instants nothing that is reported can change, so the simulation walks from one to the
next — a loan that is quietly current costs nothing between its reminders, and penalty
interest for the uneventful midnights in between is added up in closed form.

``Carry`` is everything the walk must remember at its cursor (open or not, bucket,
episode start, charges so far); with it a tick continues where the last one stopped.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from . import events as ev
from .config import EngineConfig
from .dates import ONE_DAY, local_date, midnights_between, start_of_day
from .delinquency import Position, SchedulePlan, plan_for, position
from .money import daily_penalty
from .records import ACTIVE, CLOSED, PAYMENT, WRITTEN_OFF, LoanSchedule, Repayment


@dataclass(frozen=True, slots=True)
class Carry:
    """What the walk knows at ``cursor``, the last instant it processed (``None``: not started)."""

    cursor: datetime | None = None
    status: str | None = None
    open: bool = False
    bucket: str = "M0"
    first_delinquency_date: date | None = None
    penalty: int = 0
    late_fees: int = 0
    fee_seqs: frozenset[int] = frozenset()
    # Penalty accrued at each midnight after the cursor until the next instant (constant in between).
    daily_penalty: int = 0
    terminal: bool = False
    # The next midnight/reminder after the cursor at which the loan can change. It depends only on
    # the state at the cursor, which a record after the cursor cannot change, so it is computed once.
    timed_next: datetime | None = None
    # Outstanding of the past-due instalments at the cursor (what the loan owes overdue).
    total_overdue: int = 0
    # Its stored form once encoded (``statecodec``): a record that does not move the cursor leaves
    # the carry as it was, and the state is written again. A memo: not part of the value.
    stored_form: Any = field(default=None, init=False, repr=False, compare=False)


class Ledger:
    """A read-only view of a loan's accepted records, indexed for 'what holds at instant t'.

    Kept on the loan's state (``LoanState.ledger``) and extended by one repayment at a time
    (``plus``): a loan takes a record at a time, and building the index from all its records for
    each one cost more than deciding on it."""

    __slots__ = (
        "points",
        "in_effect",
        "pay_points",
        "paid_totals",
        "base",
        "record_instants",
        "first_effective",
        "payments",
        "gross",
    )

    def __init__(
        self, schedules: Sequence[LoanSchedule], repayments: Sequence[Repayment], base_paid: int = 0
    ) -> None:
        """``base_paid``: the payments in effect at the loan's fold point, folded into one total
        (``loan.Sealed``); the ledger then answers for instants after that point only."""
        if len(schedules) == 1:
            points, in_effect = [schedules[0].effective_at], list(schedules)
        else:
            points = sorted({s.effective_at for s in schedules})
            in_effect = [
                max((s for s in schedules if s.effective_at <= point), key=lambda s: s.revision)
                for point in points
            ]
        deltas: dict[datetime, int] = {}
        gross = 0
        for r in repayments:
            if r.kind == PAYMENT:
                deltas[r.paid_at] = deltas.get(r.paid_at, 0) + r.amount
                gross += r.amount
            else:
                deltas[r.paid_at] = deltas.get(r.paid_at, 0) - r.amount
        pay_points = sorted(deltas)
        paid: list[int] = []
        total = base_paid
        for point in pay_points:
            total += deltas[point]
            paid.append(total)
        self.points = points
        self.in_effect = in_effect
        self.pay_points = pay_points
        self.paid_totals = paid
        self.base = base_paid
        self.first_effective: datetime | None = points[0] if points else None
        instants = sorted(set(points).union(pay_points)) if pay_points else points
        if points and instants[0] < points[0]:
            instants = instants[bisect_left(instants, points[0]) :]
        self.record_instants: list[datetime] = instants
        #: The kept repayments by payment id (duplicates and reversals look them up).
        self.payments: dict[str, Repayment] = {r.payment_id: r for r in repayments}
        #: The kept PAYMENT amounts added up (SPEC §2's bound on a loan's sums).
        self.gross = gross

    def plus(self, repayment: Repayment) -> Ledger:
        """This ledger with ``repayment`` added (the lists copied, the rest shared)."""
        out = Ledger.__new__(Ledger)
        t = repayment.paid_at
        delta = repayment.amount if repayment.kind == PAYMENT else -repayment.amount
        pay_points, paid = list(self.pay_points), list(self.paid_totals)
        i = bisect_left(pay_points, t)
        if i < len(pay_points) and pay_points[i] == t:
            start = i
        else:
            pay_points.insert(i, t)
            paid.insert(i, paid[i - 1] if i else self.base)
            start = i
        for k in range(start, len(paid)):
            paid[k] += delta
        instants = self.record_instants
        first = self.first_effective
        if first is None or t >= first:
            j = bisect_left(instants, t)
            if j == len(instants) or instants[j] != t:
                instants = [*instants[:j], t, *instants[j:]]
        out.points, out.in_effect, out.base = self.points, self.in_effect, self.base
        out.pay_points, out.paid_totals = pay_points, paid
        out.first_effective, out.record_instants = first, instants
        out.payments = {**self.payments, repayment.payment_id: repayment}
        out.gross = self.gross + (repayment.amount if repayment.kind == PAYMENT else 0)
        return out

    def schedule_at(self, t: datetime) -> LoanSchedule | None:
        """The schedule in effect at ``t``: the highest revision whose effective_at ≤ t."""
        i = bisect_right(self.points, t) - 1
        return self.in_effect[i] if i >= 0 else None

    def paid_at(self, t: datetime) -> int:
        """Total of the payments in effect at ``t`` (paid_at ≤ t, not reversed at t)."""
        i = bisect_right(self.pay_points, t) - 1
        return self.paid_totals[i] if i >= 0 else self.base

    def next_record_after(self, t: datetime | None) -> datetime | None:
        """The first instant after ``t`` (from the first effective_at on) at which a record takes effect."""
        if t is None:
            return self.first_effective
        i = bisect_right(self.record_instants, t)
        return self.record_instants[i] if i < len(self.record_instants) else None


def next_instant(ledger: Ledger, carry: Carry) -> tuple[datetime | None, bool]:
    """The next instant after the cursor at which the loan can change, and whether it is time-driven.

    Time-driven instants (midnights, reminders) wait for the settle delay in the stream;
    record instants do not.
    """
    if carry.terminal:
        return None, False
    record_next = ledger.next_record_after(carry.cursor)
    timed_next = carry.timed_next
    if timed_next is None:
        return record_next, False
    if record_next is None or timed_next <= record_next:
        return timed_next, True
    return record_next, False


def _timed_after(
    schedule: LoanSchedule,
    plan: SchedulePlan,
    pos: Position,
    cursor: datetime,
    fee_seqs: frozenset[int],
    cfg: EngineConfig,
) -> datetime | None:
    """The first midnight or reminder after ``cursor`` that can change an ACTIVE loan standing at ``pos``.

    Cut-offs of unsettled instalments, late-fee days of past-due ones, their next reminders,
    and the days the oldest past-due instalment reaches grace + 1 or a bucket boundary.

    ``pos`` is the position at ``cursor``. Only the past-due instalments and the first unsettled
    ones after them are looked at: a reminder precedes its instalment's cut-off, and cut-offs
    and the k-th reminders of later instalments come no earlier, so once an instalment's
    earliest instant is not before the best found, no later one can be.
    """
    best: datetime | None = None
    grace = schedule.grace_days
    tz = plan.tz
    installments = schedule.installments
    for index in pos.past_due():
        if installments[index].seq not in fee_seqs:
            fee_day = start_of_day(plan.effective_due[index] + (grace + 1) * ONE_DAY, tz)
            if fee_day > cursor and (best is None or fee_day < best):
                best = fee_day
    cutoffs, reminders = plan.cutoffs, plan.reminders
    for index in range(max(pos.cut, pos.first_unpaid), len(installments)):
        own = reminders[index]
        earliest = own[0] if own else cutoffs[index]
        if best is not None and earliest >= best:
            break
        if pos.settled(index):
            continue
        cut = cutoffs[index]  # after the cursor: the instalment is not in the cut prefix
        if best is None or cut < best:
            best = cut
        for reminder in own:
            if reminder > cursor:
                if reminder < best:
                    best = reminder
                break
    if pos.oldest_index is not None:
        days_late = pos.dpd
        due = plan.effective_due[pos.oldest_index]
        for k in (grace + 1, *cfg.buckets.thresholds):
            if k > days_late:
                at = start_of_day(due + k * ONE_DAY, tz)
                if at > cursor and (best is None or at < best):
                    best = at
    return best


def _event(
    kind: str,
    at: datetime,
    day: date,
    schedule: LoanSchedule,
    plan: SchedulePlan,
    pos: Position,
    previous_bucket: str,
    first_delinquency_date: date | None,
    penalty: int,
    late_fees: int,
    due_index: int | None = None,
) -> ev.OverdueEvent:
    oldest = pos.oldest_index
    due_seq = due_date = amount_due = None
    if due_index is not None:
        due_seq = schedule.installments[due_index].seq
        due_date = plan.effective_due[due_index]
        amount_due = pos.owed(due_index)
    return ev.OverdueEvent(
        type=kind,
        loan_id=schedule.loan_id,
        borrower_id=schedule.borrower_id,
        as_of=at,
        as_of_date=day,
        dpd=pos.dpd,
        bucket=pos.bucket,
        previous_bucket=previous_bucket,
        oldest_past_due_seq=schedule.installments[oldest].seq if oldest is not None else None,
        oldest_past_due_date=plan.effective_due[oldest] if oldest is not None else None,
        first_delinquency_date=first_delinquency_date,
        overdue_installments=pos.overdue_installments,
        overdue_principal=pos.overdue_principal,
        overdue_interest=pos.overdue_interest,
        overdue_fee=pos.overdue_fee,
        total_overdue=pos.total_overdue,
        penalty_accrued=penalty,
        late_fees=late_fees,
        currency=schedule.currency,
        schedule_revision=schedule.revision,
        loan_status=schedule.status,
        timezone=schedule.timezone,
        contact=schedule.contact,
        partners=schedule.partners,
        due_seq=due_seq,
        due_date=due_date,
        amount_due=amount_due,
    )


def _charges(
    schedule: LoanSchedule,
    plan: SchedulePlan,
    pos: Position,
    day: date,
    late_fees: int,
    fee_seqs: frozenset[int],
) -> tuple[int, frozenset[int], int]:
    """An ACTIVE loan's charges at local ``day``: late fees now due (once per seq, past grace), the
    seqs charged so far, and the penalty each midnight adds while nothing changes."""
    daily = 0
    new_fee_seqs = set()
    for index in pos.past_due():
        daily += daily_penalty(pos.owed(index), schedule.penalty_rate_bps)
        seq = schedule.installments[index].seq
        if seq not in fee_seqs and (day - plan.effective_due[index]).days > schedule.grace_days:
            late_fees += schedule.late_fee
            new_fee_seqs.add(seq)
    if new_fee_seqs:
        fee_seqs = fee_seqs | new_fee_seqs
    return late_fees, fee_seqs, daily


def step(
    ledger: Ledger, carry: Carry, at: datetime, cfg: EngineConfig
) -> tuple[Carry, list[ev.OverdueEvent]]:
    """Process instant ``at`` (> cursor): charges, then the transitions of SPEC §4 in their fixed order."""
    schedule = ledger.schedule_at(at)
    assert schedule is not None, "nothing happens before the first effective_at"
    plan = plan_for(schedule, cfg.reminder_days, cfg.reminder_time)
    tz = plan.tz
    penalty = carry.penalty
    if carry.cursor is not None and carry.daily_penalty:
        before = ledger.schedule_at(carry.cursor)
        assert before is not None
        before_tz = plan_for(before, cfg.reminder_days, cfg.reminder_time).tz
        penalty += midnights_between(carry.cursor, at, before_tz) * carry.daily_penalty
    pos = position(schedule, plan, ledger.paid_at(at), at, cfg.buckets)
    active = schedule.status == ACTIVE
    day = local_date(at, tz)
    late_fees, fee_seqs, daily = carry.late_fees, carry.fee_seqs, 0
    if active:
        late_fees, fee_seqs, daily = _charges(schedule, plan, pos, day, late_fees, fee_seqs)
        if start_of_day(day, tz) == at:
            penalty += daily

    previous_bucket = carry.bucket
    was_open = carry.open
    fdd = carry.first_delinquency_date
    out: list[ev.OverdueEvent] = []
    terminal = False
    now_open = False

    def emit(kind: str, first_delinquency: date | None, due_index: int | None = None) -> None:
        out.append(
            _event(
                kind,
                at,
                day,
                schedule,
                plan,
                pos,
                previous_bucket,
                first_delinquency,
                penalty,
                late_fees,
                due_index,
            )
        )

    if carry.status is None and not active:
        terminal = True  # a loan that arrives already closed or written off has nothing to report
    elif schedule.status == WRITTEN_OFF:
        emit(ev.WRITTEN_OFF, fdd if was_open else None)
        terminal = True
    elif schedule.status == CLOSED:
        if was_open:
            emit(ev.OVERDUE_CURED, fdd)
        terminal = True
    else:
        now_open = pos.dpd > schedule.grace_days
        if now_open and not was_open:
            assert pos.oldest_index is not None
            fdd = plan.effective_due[pos.oldest_index] + ONE_DAY
            emit(ev.OVERDUE_OPENED, fdd)
        elif was_open and not now_open:
            emit(ev.OVERDUE_CURED, fdd)
        elif now_open and pos.bucket != previous_bucket:
            emit(ev.BUCKET_CHANGED, fdd)
        for index in plan.reminding.get(at, ()):
            if not pos.settled(index):
                emit(ev.DUE_SOON, fdd if now_open else None, index)
    timed_next = None if terminal else _timed_after(schedule, plan, pos, at, fee_seqs, cfg)
    new_carry = Carry(
        cursor=at,
        status=schedule.status,
        open=now_open,
        bucket=pos.bucket,
        first_delinquency_date=fdd if now_open else None,
        penalty=penalty,
        late_fees=late_fees,
        fee_seqs=fee_seqs,
        daily_penalty=daily,
        terminal=terminal,
        timed_next=timed_next,
        total_overdue=pos.total_overdue,
    )
    return new_carry, out


def walk(
    ledger: Ledger,
    carry: Carry,
    cfg: EngineConfig,
    may_process: Callable[[datetime, bool], bool],
    retracted: Collection[str],
) -> tuple[Carry, list[ev.OverdueEvent]]:
    """Process instants after the cursor while ``may_process(instant, time_driven)`` allows; ids attached."""
    out: list[ev.OverdueEvent] = []
    while True:
        at, timed = next_instant(ledger, carry)
        if at is None or not may_process(at, timed):
            return carry, out
        carry, produced = step(ledger, carry, at, cfg)
        out.extend(e.with_id(retracted) for e in produced)
