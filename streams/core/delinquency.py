"""Where a loan stands at an instant: allocation, past due, DPD, bucket (SPEC §3).

``position`` is the pure function at the heart of the detector: given the schedule in
effect, the total of the payments in effect and an instant, it allocates the money
oldest first (fee, interest, principal), decides which instalments are past due and
how many days the oldest of them is. Charges (penalty, late fees) are path-dependent
and live in ``timeline``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from functools import lru_cache
from zoneinfo import ZoneInfo

from .buckets import BucketTable
from .dates import cut_off, effective_due_date, local_date, local_instant, zone
from .records import LoanSchedule


@dataclass(frozen=True, slots=True)
class SchedulePlan:
    """The calendar facts of a schedule, computed once: effective due dates, cut-offs, reminders."""

    tz: ZoneInfo
    effective_due: tuple[date, ...]
    cutoffs: tuple[datetime, ...]
    # Per instalment, the reminder instants (UTC) in increasing order.
    reminders: tuple[tuple[datetime, ...], ...]


@lru_cache(maxsize=100_000)
def _plan(
    timezone: str,
    calendar: str | None,
    convention: str,
    due_dates: tuple[date, ...],
    reminder_days: tuple[int, ...],
    reminder_time: time,
) -> SchedulePlan:
    tz = zone(timezone)
    effective = tuple(effective_due_date(d, convention, calendar) for d in due_dates)
    cutoffs = tuple(cut_off(d, tz) for d in effective)
    offsets = sorted(set(reminder_days), reverse=True)
    reminders = tuple(
        tuple(local_instant(d.fromordinal(d.toordinal() - k), reminder_time, tz) for k in offsets)
        for d in effective
    )
    return SchedulePlan(tz, effective, cutoffs, reminders)


def plan_for(schedule: LoanSchedule, reminder_days: tuple[int, ...], reminder_time: time) -> SchedulePlan:
    """The calendar plan of ``schedule`` (kept on the schedule for these reminder settings, and
    shared between schedules with the same calendar facts)."""
    memo = schedule.plan_memo
    if memo is not None and memo[0] == reminder_days and memo[1] == reminder_time:
        known: SchedulePlan = memo[2]
        return known
    plan = _plan(
        schedule.timezone,
        schedule.calendar,
        schedule.business_day_convention,
        tuple(i.due_date for i in schedule.installments),
        reminder_days,
        reminder_time,
    )
    object.__setattr__(schedule, "plan_memo", (reminder_days, reminder_time, plan))
    return plan


@dataclass(frozen=True, slots=True)
class Position:
    """A loan's standing at one instant. Amounts are outstanding minor units of past-due instalments."""

    dpd: int
    bucket: str
    oldest_index: int | None  # index into the schedule's installments, None when nothing is past due
    overdue_installments: int
    overdue_principal: int
    overdue_interest: int
    overdue_fee: int
    # Per instalment: outstanding amount, settled flag, past-due flag.
    outstanding: tuple[int, ...]
    settled: tuple[bool, ...]
    past_due: tuple[bool, ...]

    @property
    def total_overdue(self) -> int:
        """Outstanding of every past-due instalment."""
        return self.overdue_principal + self.overdue_interest + self.overdue_fee


def position(
    schedule: LoanSchedule, plan: SchedulePlan, paid: int, at: datetime, buckets: BucketTable
) -> Position:
    """Allocate ``paid`` over the instalments and judge them at instant ``at``.

    Allocation fills instalments in seq order, each in full (fee, interest, principal)
    before the next; an instalment is settled when its shortfall is within tolerance; it
    is past due from its cut-off on while not settled.
    """
    remaining = paid
    tolerance = schedule.tolerance
    outstanding: list[int] = []
    settled: list[bool] = []
    past_due: list[bool] = []
    oldest: int | None = None
    count = principal = interest = fee = 0
    for index, inst in enumerate(schedule.installments):
        due = inst.principal + inst.interest + inst.fee
        allocated = due if remaining >= due else remaining
        remaining -= allocated
        owed = due - allocated
        is_settled = owed <= tolerance
        is_past_due = not is_settled and at >= plan.cutoffs[index]
        outstanding.append(owed)
        settled.append(is_settled)
        past_due.append(is_past_due)
        if is_past_due:
            if oldest is None:
                oldest = index
            count += 1
            fee_paid = min(inst.fee, allocated)
            interest_paid = min(inst.interest, allocated - fee_paid)
            fee += inst.fee - fee_paid
            interest += inst.interest - interest_paid
            principal += inst.principal - (allocated - fee_paid - interest_paid)
    if oldest is None:
        dpd = 0
    else:
        dpd = (local_date(at, plan.tz) - plan.effective_due[oldest]).days
    return Position(
        dpd=dpd,
        bucket=buckets.of(dpd),
        oldest_index=oldest,
        overdue_installments=count,
        overdue_principal=principal,
        overdue_interest=interest,
        overdue_fee=fee,
        outstanding=tuple(outstanding),
        settled=tuple(settled),
        past_due=tuple(past_due),
    )
