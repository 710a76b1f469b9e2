"""The incremental position (O(past-due instalments)) against the one-pass scan of SPEC §3.

``delinquency.position`` finds the instalments a payment total covers by bisection over
running totals and the passed cut-offs by bisection over the plan; ``timeline._timed_after``
looks only at the past-due instalments and the first unsettled ones after them. Both must
agree with the scan over every instalment on any schedule: zero and sub-tolerance
instalments, over- and under-payment, instants before, between and after the due dates, in
zones with daylight saving.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.buckets import BucketTable
from streams.core.config import EngineConfig
from streams.core.dates import local_date
from streams.core.delinquency import plan_for, position
from streams.core.records import Contact, Installment, LoanSchedule
from streams.core.timeline import _charges, _timed_after
from tests.support.reference import scan_charges, scan_position, scan_timed_after

ZONES = ["Asia/Shanghai", "America/New_York", "UTC", "Europe/London", "Australia/Lord_Howe"]
CONFIGS = [
    EngineConfig(),
    EngineConfig(reminder_days=(7, 3, 1, 0)),
    EngineConfig(reminder_days=()),
    EngineConfig(buckets=BucketTable.from_bounds([("C", 0), ("X", 1), ("Y", 5), ("Z", 9)])),
]


@st.composite
def schedules(draw) -> LoanSchedule:
    first = date(2026, 1, 1) + timedelta(days=draw(st.integers(0, 400)))
    dues = [first]
    for _ in range(draw(st.integers(0, 14))):
        dues.append(dues[-1] + timedelta(days=draw(st.sampled_from([1, 2, 7, 14, 30, 31]))))
    amount = st.one_of(st.just(0), st.integers(1, 60), st.integers(1, 100_000))
    installments = tuple(
        Installment(seq, day, draw(amount), draw(amount), draw(amount)) for seq, day in enumerate(dues, 1)
    )
    return LoanSchedule(
        loan_id="L", borrower_id="B", revision=1,
        effective_at=datetime.combine(first - timedelta(days=40), datetime.min.time(), UTC),
        currency="CNY", timezone=draw(st.sampled_from(ZONES)), status="ACTIVE",
        installments=installments, grace_days=draw(st.integers(0, 5)),
        tolerance=draw(st.sampled_from([0, 0, 50, 200])), penalty_rate_bps=draw(st.sampled_from([0, 3650])),
        late_fee=draw(st.sampled_from([0, 500])), business_day_convention=draw(st.sampled_from(["NONE", "FOLLOWING"])),
        calendar="CN", contact=Contact("en", ()),
    )  # fmt: skip


@st.composite
def standings(draw):
    schedule = draw(schedules())
    cfg = draw(st.sampled_from(CONFIGS))
    plan = plan_for(schedule, cfg.reminder_days, cfg.reminder_time)
    total = sum(i.principal + i.interest + i.fee for i in schedule.installments)
    # Payment totals: zero, exact running totals (an instalment paid to the unit), and anything.
    totals = [0]
    for inst in schedule.installments:
        totals.append(totals[-1] + inst.principal + inst.interest + inst.fee)
    paid = draw(st.one_of(st.sampled_from(totals), st.integers(0, total + 1_000)))
    # Instants: on cut-offs and reminders exactly, one microsecond either side, or anywhere.
    marks = [*plan.cutoffs, *(r for rs in plan.reminders for r in rs)]
    near = st.builds(
        lambda m, d: m + timedelta(microseconds=d), st.sampled_from(marks), st.sampled_from([-1, 0, 1])
    )
    span = st.builds(
        lambda m: plan.cutoffs[0] - timedelta(days=45) + timedelta(minutes=m),
        st.integers(0, ((plan.cutoffs[-1] - plan.cutoffs[0]).days + 400) * 24 * 60),
    )
    at = draw(st.one_of(near, span))
    seqs = [i.seq for i in schedule.installments]
    fee_seqs = frozenset(draw(st.lists(st.sampled_from(seqs), max_size=len(seqs))))
    return schedule, cfg, plan, paid, at, fee_seqs


PROPERTY = settings(max_examples=600, deadline=None)


@PROPERTY
@given(standings())
def test_position_agrees_with_the_scan(case) -> None:
    schedule, cfg, plan, paid, at, _ = case
    got = position(schedule, plan, paid, at, cfg.buckets)
    want = scan_position(schedule, plan, paid, at, cfg.buckets)
    assert (got.dpd, got.bucket, got.oldest_index, got.overdue_installments) == (
        want.dpd, want.bucket, want.oldest_index, want.overdue_installments,
    )  # fmt: skip
    assert (got.overdue_principal, got.overdue_interest, got.overdue_fee) == (
        want.overdue_principal, want.overdue_interest, want.overdue_fee,
    )  # fmt: skip
    n = len(schedule.installments)
    assert tuple(got.owed(i) for i in range(n)) == want.outstanding
    assert tuple(got.settled(i) for i in range(n)) == want.settled
    assert tuple(i in got.past_due() for i in range(n)) == want.past_due


@PROPERTY
@given(standings())
def test_the_next_timed_instant_agrees_with_the_scan(case) -> None:
    schedule, cfg, plan, paid, at, fee_seqs = case
    got = _timed_after(schedule, plan, position(schedule, plan, paid, at, cfg.buckets), at, fee_seqs, cfg)
    assert got == scan_timed_after(
        schedule, plan, scan_position(schedule, plan, paid, at, cfg.buckets), at, fee_seqs, cfg
    )


@PROPERTY
@given(standings(), st.integers(0, 10_000))
def test_charges_agree_with_the_scan(case, late_fees) -> None:
    schedule, cfg, plan, paid, at, fee_seqs = case
    day = local_date(at, plan.tz)
    got = _charges(schedule, plan, position(schedule, plan, paid, at, cfg.buckets), day, late_fees, fee_seqs)
    want = scan_charges(
        schedule, plan, scan_position(schedule, plan, paid, at, cfg.buckets), day, late_fees, fee_seqs
    )
    assert got == want


def test_a_reminder_after_the_due_date_is_refused() -> None:
    """The incremental search relies on every reminder preceding its cut-off."""
    try:
        EngineConfig(reminder_days=(3, -1))
    except ValueError as exc:
        assert "negative" in str(exc)
    else:
        raise AssertionError("a negative reminder day was accepted")
