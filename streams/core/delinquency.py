"""Where a loan stands at an instant: allocation, past due, DPD, bucket (SPEC §3).

``position`` is the pure function at the heart of the detector: given the schedule in
effect, the total of the payments in effect and an instant, it allocates the money
oldest first (fee, interest, principal), decides which instalments are past due and
how many days the oldest of them is. Charges (penalty, late fees) are path-dependent
and live in ``timeline``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import lru_cache
from itertools import accumulate
from zoneinfo import ZoneInfo

from .buckets import BucketTable
from .dates import cut_off, effective_due_date, local_date, local_instant, zone
from .records import LoanSchedule


@dataclass(frozen=True, slots=True)
class SchedulePlan:
    """The calendar facts of a schedule, computed once: effective due dates, cut-offs, reminders."""

    tz: ZoneInfo
    effective_due: tuple[date, ...]
    # Non-decreasing (due dates strictly increase and FOLLOWING only moves a date forward), so
    # "the instalments whose cut-off has passed" is a prefix found by bisection.
    cutoffs: tuple[datetime, ...]
    # Per instalment, the reminder instants (UTC) in increasing order; each precedes the
    # instalment's cut-off, and the k-th reminders of successive instalments do not decrease.
    reminders: tuple[tuple[datetime, ...], ...]
    # Which instalments a reminder instant is for, in seq order: a step at an instant looks its
    # DUE_SOONs up instead of scanning every instalment's reminders.
    reminding: Mapping[datetime, tuple[int, ...]]


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
    reminding: dict[datetime, tuple[int, ...]] = {}
    for index, instants in enumerate(reminders):
        for instant in instants:
            reminding[instant] = (*reminding.get(instant, ()), index)
    return SchedulePlan(tz, effective, cutoffs, reminders, reminding)


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


def amounts(schedule: LoanSchedule) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Each instalment's amount due and their running totals (kept on the schedule): with them
    the instalments a payment total covers in full are found by bisection, not by a pass."""
    memo: tuple[tuple[int, ...], tuple[int, ...]] | None = schedule.amounts_memo
    if memo is None:
        dues = tuple(i.principal + i.interest + i.fee for i in schedule.installments)
        memo = (dues, tuple(accumulate(dues)))
        object.__setattr__(schedule, "amounts_memo", memo)
    return memo


@dataclass(frozen=True, slots=True)
class Position:
    """A loan's standing at one instant. Amounts are outstanding minor units of past-due instalments.

    Money is allocated oldest first, so the instalments fall in three runs: paid in full (before
    ``first_unpaid``), the one partly paid (``first_unpaid``, owing ``first_owed``), and the
    untouched rest. Per-instalment facts are answered from that, so a position costs
    O(past-due instalments), not O(instalments)."""

    dpd: int
    bucket: str
    oldest_index: int | None  # index into the schedule's installments, None when nothing is past due
    overdue_installments: int
    overdue_principal: int
    overdue_interest: int
    overdue_fee: int
    first_unpaid: int  # instalments before it are paid in full
    first_owed: int  # what instalment ``first_unpaid`` still owes
    cut: int  # instalments before it have reached their cut-off
    dues: tuple[int, ...]  # each instalment's amount due
    tolerance: int

    @property
    def total_overdue(self) -> int:
        """Outstanding of every past-due instalment."""
        return self.overdue_principal + self.overdue_interest + self.overdue_fee

    def owed(self, index: int) -> int:
        """What instalment ``index`` still owes."""
        if index < self.first_unpaid:
            return 0
        return self.first_owed if index == self.first_unpaid else self.dues[index]

    def settled(self, index: int) -> bool:
        """Instalment ``index``'s shortfall is within tolerance."""
        return self.owed(index) <= self.tolerance

    def past_due(self) -> list[int]:
        """The past-due instalments (cut-off passed, not settled), oldest first."""
        return [i for i in range(self.first_unpaid, self.cut) if not self.settled(i)]


def position(
    schedule: LoanSchedule, plan: SchedulePlan, paid: int, at: datetime, buckets: BucketTable
) -> Position:
    """Allocate ``paid`` over the instalments and judge them at instant ``at``.

    Allocation fills instalments in seq order, each in full (fee, interest, principal)
    before the next; an instalment is settled when its shortfall is within tolerance; it
    is past due from its cut-off on while not settled.
    """
    dues, totals = amounts(schedule)
    first_unpaid = bisect_right(totals, paid)
    first_owed = 0
    if first_unpaid < len(dues):
        first_owed = totals[first_unpaid] - paid
    cut = bisect_right(plan.cutoffs, at)
    tolerance = schedule.tolerance
    oldest: int | None = None
    count = principal = interest = fee = 0
    for index in range(first_unpaid, cut):
        owed = first_owed if index == first_unpaid else dues[index]
        if owed <= tolerance:
            continue
        if oldest is None:
            oldest = index
        count += 1
        inst = schedule.installments[index]
        allocated = dues[index] - owed
        fee_paid = min(inst.fee, allocated)
        interest_paid = min(inst.interest, allocated - fee_paid)
        fee += inst.fee - fee_paid
        interest += inst.interest - interest_paid
        principal += inst.principal - (allocated - fee_paid - interest_paid)
    dpd = 0 if oldest is None else (local_date(at, plan.tz) - plan.effective_due[oldest]).days
    return Position(
        dpd, buckets.of(dpd), oldest, count, principal, interest, fee,
        first_unpaid, first_owed, cut, dues, tolerance,
    )  # fmt: skip
