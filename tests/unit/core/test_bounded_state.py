"""A loan's stored state stays bounded however long it lives (SPEC §2), and folding its old
history changes nothing it reports."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core import errors, statecodec
from streams.core.config import EngineConfig
from streams.core.dates import MICROSECOND
from streams.core.loan import (
    MAX_KEPT_INSTALMENTS,
    MAX_KEPT_REPAYMENTS,
    MAX_RETRACTED,
    LoanState,
    Sealed,
    apply_repayment,
    apply_schedule,
    new_loan,
)
from streams.core.records import Contact, Installment, LoanSchedule, Repayment
from streams.core.timeline import Carry
from tests.support.builders import at, payment, schedule
from tests.support.story import Stream

# Folding needs the history to be out of reach of every later record; with windows of a
# century nothing ever is, so this engine keeps every record: the reference.
UNFOLDED = EngineConfig(late_window=timedelta(days=36_500))


def _monthly_dues(first: date, months: int, principal: int) -> list[tuple[str, int, int, int]]:
    dues = []
    for k in range(months):
        year, month = divmod(first.month - 1 + k, 12)
        dues.append(
            (
                date(first.year + year, month + 1, min(first.day, 28)).isoformat(),
                principal,
                principal // 20,
                100,
            )
        )
    return dues


def _daily_story() -> list:
    """Five years of a loan repaid by daily sweeps (1,800 of them), with gaps that open and cure
    episodes, a few reversals and a revision after two years."""
    dues = _monthly_dues(date(2026, 3, 15), 60, 30_000)
    items: list = [schedule(dues=dues, penalty_rate_bps=1800, late_fee=500)]
    revised = schedule(
        dues=dues, revision=2, effective_at="2028-03-01T10:00", penalty_rate_bps=1200, late_fee=500
    )
    day = datetime(2026, 3, 1, 12, tzinfo=UTC)
    for n in range(1800):
        when = day + timedelta(days=n)
        if 200 <= n % 365 < 215:
            continue  # two weeks without money every year: an episode opens, then cures
        items.append(payment(f"p{n}", 1_300 if n % 7 else 500, when))
        if n % 97 == 0 and n:
            items.append(payment(f"r{n}", 1_300 if n % 7 else 500, when + timedelta(hours=5), kind="REVERSAL",
                                 reverses=f"p{n}"))  # fmt: skip
        if n == 730:
            items.append(revised)
    return items


def _in_event_time_order(items: list, cfg: EngineConfig, until: datetime) -> Stream:
    """Feed records as replay does: the clock just before each record, then the record."""
    stream = Stream(cfg=cfg)
    for item in items:
        when = item.effective_at if isinstance(item, LoanSchedule) else item.paid_at
        stream.tick(when - MICROSECOND)
        stream.feed(item)
    stream.tick(until)
    return stream


def test_five_years_of_daily_repayments_keep_a_small_state_and_report_the_same() -> None:
    items = _daily_story()
    until = datetime(2031, 6, 1, tzinfo=UTC)
    folded = _in_event_time_order(items, EngineConfig(), until)
    reference = _in_event_time_order(items, UNFOLDED, until)

    assert folded.events == reference.events and folded.refused == reference.refused == []
    assert {"OVERDUE_OPENED", "OVERDUE_CURED", "DUE_SOON"} <= set(folded.types())
    state = folded.state
    assert state.sealed is not None and state.sealed.at > datetime(2029, 1, 1, tzinfo=UTC)
    assert len(state.repayments) < 800 < len(reference.state.repayments)
    assert [s.revision for s in state.schedules] == [2]
    size = len(statecodec.dumps(state))
    assert size < 60_000 and 2 * size < len(statecodec.dumps(reference.state))
    assert statecodec.loads(statecodec.dumps(state)) == state


def test_a_folded_loan_goes_on_exactly_like_one_that_kept_everything() -> None:
    """After folding, late data within the window and new records still give what they would."""
    items = _daily_story()[:1200]
    until = datetime(2029, 6, 1, tzinfo=UTC)
    folded = _in_event_time_order(items, EngineConfig(), until)
    reference = _in_event_time_order(items, UNFOLDED, until)
    assert folded.state.sealed is not None
    for stream in (folded, reference):
        stream.feed(payment("late", 50_000, "2029-02-01T09:00"))  # four months late: retracts history
        stream.feed(payment("late", 50_000, "2029-02-01T09:00"))  # a repeat changes nothing
        stream.feed(payment("rev", 50_000, "2029-03-01T09:00", kind="REVERSAL", reverses="late"))
        stream.tick(datetime(2029, 9, 1, tzinfo=UTC))
    assert folded.events == reference.events
    assert folded.state.carry == reference.state.carry


def test_records_beyond_the_windows_are_refused_with_their_field_named() -> None:
    dues = _monthly_dues(date(2026, 3, 15), 24, 1000)
    stream = Stream().run([schedule(dues=dues), payment("p1", 400, "2026-03-01"), at("2027-06-01")])
    assert stream.state.carry.cursor is not None and stream.state.carry.cursor > at("2027-05-01")
    stream.feed(payment("old", 100, "2026-04-01"))  # 13 months behind the loan's clock
    stream.feed(schedule(dues=dues, revision=2, effective_at="2026-04-01T00:00"))
    assert stream.refused == [errors.OUT_OF_RANGE, errors.OUT_OF_RANGE]
    stream.feed(payment("r1", 400, "2027-05-30", kind="REVERSAL", reverses="p1"))  # 15 months after it
    assert stream.refused[-1] == errors.OUT_OF_RANGE
    try:
        apply_repayment(stream.state, payment("old", 100, "2026-04-01"), stream.now, stream.cfg)
    except errors.InvalidRecord as exc:
        assert "paid_at" in exc.detail and "366 days" in exc.detail


def test_a_repeat_of_a_folded_revision_is_a_duplicate_and_a_changed_one_a_conflict() -> None:
    first = schedule(dues=[("2026-03-15", 1000), ("2028-03-15", 1000)])
    second = schedule(
        dues=[("2026-03-15", 1000), ("2028-03-15", 900)], revision=2, effective_at="2026-05-01T00:00"
    )
    stream = Stream().run([first, second, payment("p1", 1000, "2026-03-10"), at("2028-06-01")])
    assert stream.state.sealed is not None and [s.revision for s in stream.state.schedules] == [2]
    outcome = apply_schedule(stream.state, first, stream.now, stream.cfg)
    assert outcome.duplicate and outcome.events == ()
    changed = schedule(dues=[("2026-03-15", 1000), ("2028-03-15", 800)])
    stream.feed(changed)
    assert stream.refused == [errors.CONFLICTING_DUPLICATE]


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=0, max_value=40), min_size=5, max_size=60),
    amounts=st.lists(st.integers(min_value=1, max_value=60_000), min_size=60, max_size=60),
    reverse_every=st.integers(min_value=2, max_value=9),
)
def test_folding_never_changes_what_an_in_order_loan_reports(
    gaps: list[int], amounts: list[int], reverse_every: int
) -> None:
    """Random payment histories with reversals, folded every few weeks (windows of 20 days) and
    kept whole: the same events, the same refusals."""
    small = EngineConfig(late_window=timedelta(days=20), reversal_window=timedelta(days=20))
    whole = EngineConfig(late_window=timedelta(days=36_500), reversal_window=timedelta(days=20))
    items: list = [
        schedule(dues=_monthly_dues(date(2026, 3, 15), 24, 40_000), penalty_rate_bps=3650, late_fee=300)
    ]
    when = datetime(2026, 3, 1, 3, tzinfo=UTC)
    for n, gap in enumerate(gaps):
        when += timedelta(days=gap, hours=7)
        amount = amounts[n % len(amounts)]
        items.append(payment(f"p{n}", amount, when))
        if n % reverse_every == 0:
            items.append(
                payment(f"r{n}", amount, when + timedelta(days=gap % 30), kind="REVERSAL", reverses=f"p{n}")
            )
    items.sort(key=lambda r: r.effective_at if isinstance(r, LoanSchedule) else r.paid_at)
    until = when + timedelta(days=90)
    a = _in_event_time_order(items, small, until)
    b = _in_event_time_order(items, whole, until)
    assert a.events == b.events and a.refused == b.refused
    assert len(statecodec.dumps(a.state)) <= len(statecodec.dumps(b.state))


def test_a_state_at_every_bound_stays_well_under_a_kafka_record() -> None:
    """The caps, with every field at its longest, still fit comfortably in 1 MB."""
    long = "x" * 64
    start = datetime(2026, 1, 1, tzinfo=UTC)
    revision = LoanSchedule(
        loan_id=long, borrower_id=long, revision=2**31 - 1, effective_at=start, currency="CNY",
        timezone="America/Argentina/ComodRivadavia", status="ACTIVE",
        installments=tuple(Installment(2**30 + k, date(2030, 1, 1) + timedelta(days=k), 10**12, 10**11, 10**10)
                           for k in range(1200)),
        grace_days=3650, tolerance=10**15, penalty_rate_bps=100_000, late_fee=10**11, business_day_convention="FOLLOWING",
        calendar="CN", partners=tuple(f"{k:02d}" + long[2:] for k in range(64)), contact=Contact("zh-CN", ("push", "sms")),
    )  # fmt: skip
    revisions = tuple(revision.__class__(**{**{f: getattr(revision, f) for f in revision.__dataclass_fields__
                                               if revision.__dataclass_fields__[f].init}, "revision": n})
                      for n in range(1, 1 + MAX_KEPT_INSTALMENTS // 1200))  # fmt: skip
    repayments = tuple(
        Repayment(f"{k:06d}" + long[6:], long, 10**12, "CNY", start + timedelta(minutes=k), long, "PAYMENT")
        for k in range(MAX_KEPT_REPAYMENTS)
    )
    carry = Carry(cursor=start, status="ACTIVE", open=True, bucket="M7", penalty=3 * 10**18, late_fees=10**15,
                  fee_seqs=frozenset(range(2**30, 2**30 + 1200)), daily_penalty=10**15, timed_next=start,
                  total_overdue=10**15)  # fmt: skip
    retracted = frozenset((f"{k:032x}", start + timedelta(seconds=k)) for k in range(MAX_RETRACTED))
    state = LoanState(
        long, revisions, repayments, carry, retracted, Sealed(carry, 10**15, 10**15, ((1, "f" * 16),) * 50)
    )
    size = len(statecodec.dumps(state))
    assert size < 900_000, size
    assert statecodec.loads(statecodec.dumps(state)) == state


def test_the_caps_refuse_the_record_that_would_pass_them() -> None:
    stream = Stream()
    for k in range(MAX_KEPT_REPAYMENTS):  # held: no schedule yet, so nothing is folded
        stream.feed(payment(f"p{k}", 1, datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=k)))
    assert stream.refused == []
    stream.feed(payment("one-more", 1, "2026-02-01"))
    assert stream.refused == [errors.OUT_OF_RANGE]
    assert new_loan("L1").sealed is None
