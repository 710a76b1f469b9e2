"""The straightforward forms of the core's incremental computations: one pass over every
instalment, as SPEC §3 states them. Property tests check the core's O(what changed) forms
against these on generated schedules (``tests/unit/core/test_position.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from streams.core.buckets import BucketTable
from streams.core.config import EngineConfig
from streams.core.dates import ONE_DAY, local_date, start_of_day
from streams.core.delinquency import SchedulePlan
from streams.core.money import daily_penalty
from streams.core.records import LoanSchedule


@dataclass(frozen=True)
class ScanPosition:
    dpd: int
    bucket: str
    oldest_index: int | None
    overdue_installments: int
    overdue_principal: int
    overdue_interest: int
    overdue_fee: int
    outstanding: tuple[int, ...]
    settled: tuple[bool, ...]
    past_due: tuple[bool, ...]


def scan_position(
    schedule: LoanSchedule, plan: SchedulePlan, paid: int, at: datetime, buckets: BucketTable
) -> ScanPosition:
    """Allocate ``paid`` oldest first (fee, interest, principal), instalment by instalment."""
    remaining = paid
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
        is_settled = owed <= schedule.tolerance
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
    dpd = 0 if oldest is None else (local_date(at, plan.tz) - plan.effective_due[oldest]).days
    return ScanPosition(
        dpd, buckets.of(dpd), oldest, count, principal, interest, fee,
        tuple(outstanding), tuple(settled), tuple(past_due),
    )  # fmt: skip


def scan_timed_after(
    schedule: LoanSchedule,
    plan: SchedulePlan,
    pos: ScanPosition,
    cursor: datetime,
    fee_seqs: frozenset[int],
    cfg: EngineConfig,
) -> datetime | None:
    """Every unsettled instalment's cut-off, late-fee day and next reminder, and the oldest
    past-due instalment's next DPD boundary: the earliest after ``cursor``."""
    candidates: list[datetime] = []
    grace = schedule.grace_days
    for index, inst in enumerate(schedule.installments):
        if pos.settled[index]:
            continue
        cut = plan.cutoffs[index]
        if cut > cursor:
            candidates.append(cut)
        elif inst.seq not in fee_seqs:
            candidates.append(start_of_day(plan.effective_due[index] + (grace + 1) * ONE_DAY, plan.tz))
        candidates.extend(r for r in plan.reminders[index] if r > cursor)
    if pos.oldest_index is not None:
        due = plan.effective_due[pos.oldest_index]
        for k in (grace + 1, *cfg.buckets.thresholds):
            if k > pos.dpd:
                candidates.append(start_of_day(due + k * ONE_DAY, plan.tz))
    later = [c for c in candidates if c > cursor]
    return min(later) if later else None


def scan_charges(
    schedule: LoanSchedule,
    plan: SchedulePlan,
    pos: ScanPosition,
    day: date,
    late_fees: int,
    fee_seqs: frozenset[int],
) -> tuple[int, frozenset[int], int]:
    """Penalty on every past-due instalment's outstanding; a late fee per seq once past grace."""
    daily = 0
    charged = set(fee_seqs)
    for index, inst in enumerate(schedule.installments):
        if not pos.past_due[index]:
            continue
        daily += daily_penalty(pos.outstanding[index], schedule.penalty_rate_bps)
        if inst.seq not in charged and (day - plan.effective_due[index]).days > schedule.grace_days:
            late_fees += schedule.late_fee
            charged.add(inst.seq)
    return late_fees, frozenset(charged), daily
