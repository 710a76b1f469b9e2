"""The edge cases everyone gets wrong (shared/notes/domain-anchors.md), one story each."""

from __future__ import annotations

from datetime import timedelta

from streams.core.config import EngineConfig
from streams.core.dates import effective_due_date
from streams.core.records import parse_schedule
from streams.replay import replay
from tests.support.builders import (
    at,
    d,
    payment,
    payment_dict,
    record,
    schedule,
    schedule_dict,
    standing,
)
from tests.support.story import Stream

UNTIL = at("2026-12-31")


def run(*records: dict, until=UNTIL) -> list[dict]:
    outputs = replay(list(records), until)
    return standing([o.value for o in outputs if o.topic == "overdue.events"])


def kinds(events: list[dict]) -> list[tuple[str, str]]:
    return [(e["type"], e["as_of"].isoformat()) for e in events if e["type"] != "DUE_SOON"]


# 1. The due day itself is not overdue; the cut-off is the first instant of D+1.
def test_payment_in_the_last_second_of_the_due_day_is_on_time() -> None:
    events = run(
        record("loan.schedules", schedule_dict()),
        record("loan.repayments", payment_dict("p1", 100_000, "2026-03-15T23:59:59")),
    )
    assert kinds(events) == []


def test_payment_one_second_after_the_cut_off_is_late() -> None:
    events = run(
        record("loan.schedules", schedule_dict()),
        record("loan.repayments", payment_dict("p1", 100_000, "2026-03-16T00:00:01")),
    )
    assert kinds(events) == [
        ("OVERDUE_OPENED", "2026-03-16T00:00:00+08:00"),
        ("OVERDUE_CURED", "2026-03-16T00:00:01+08:00"),
    ]
    assert events[-2]["dpd"] == 1


# 2. Midnight is the loan's midnight: the same UTC instant is late in Shanghai, on time in UTC.
def test_cut_off_follows_the_loans_time_zone() -> None:
    paid = at("2026-03-15T20:00", tz=at("2026-01-01").tzinfo).astimezone(__import__("datetime").UTC)
    paid = paid.replace(hour=20)  # 2026-03-15T20:00Z = 2026-03-16T04:00 in Shanghai
    sh = run(
        record("loan.schedules", schedule_dict("SH")),
        record("loan.repayments", payment_dict("p1", 100_000, paid, loan_id="SH")),
    )
    utc = run(
        record("loan.schedules", schedule_dict("UT", timezone="UTC")),
        record("loan.repayments", payment_dict("p1", 100_000, paid, loan_id="UT")),
    )
    assert [e["type"] for e in kinds_full(sh)] == ["OVERDUE_OPENED", "OVERDUE_CURED"]
    assert kinds(utc) == []


def kinds_full(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] != "DUE_SOON"]


# 3. Holidays: detect on the adjusted date.
def test_due_date_on_a_chinese_public_holiday_moves_to_the_next_working_day() -> None:
    # 2026-10-01 is National Day; the golden week ends 10-07; 10-08 is the first working day.
    assert effective_due_date(d("2026-10-01"), "FOLLOWING", "CN") == d("2026-10-08")
    # 2026-10-10 is a Saturday but an official make-up working day: it does not move.
    assert effective_due_date(d("2026-10-10"), "FOLLOWING", "CN") == d("2026-10-10")
    # Without a calendar FOLLOWING skips only the weekend.
    assert effective_due_date(d("2026-10-03"), "FOLLOWING", None) == d("2026-10-05")
    # Convention NONE never moves a date.
    assert effective_due_date(d("2026-10-01"), "NONE", "CN") == d("2026-10-01")
    events = run(
        record(
            "loan.schedules",
            schedule_dict(
                dues=[("2026-10-01", 50_000)], business_day_convention="FOLLOWING", effective_at="2026-09-01"
            ),
        ),
    )
    opened = kinds_full(events)[0]
    assert (opened["type"], opened["as_of"].isoformat(), opened["oldest_past_due_date"].isoformat()) == (
        "OVERDUE_OPENED",
        "2026-10-09T00:00:00+08:00",
        "2026-10-08",
    )


# 4. Grace delays opening, not DPD: DPD counts from the due date.
def test_grace_opens_at_dpd_grace_plus_one() -> None:
    events = run(record("loan.schedules", schedule_dict(grace_days=5)))
    opened = kinds_full(events)[0]
    assert (opened["type"], opened["dpd"], opened["as_of"].isoformat()) == (
        "OVERDUE_OPENED",
        6,
        "2026-03-21T00:00:00+08:00",
    )
    assert opened["first_delinquency_date"] == d("2026-03-16")
    assert opened["previous_bucket"] == "M1"  # already in M1 during grace


def test_cure_into_grace_reports_remaining_dpd() -> None:
    """Paying the oldest instalment leaves a younger one within grace: cured with dpd > 0."""
    events = run(
        record(
            "loan.schedules", schedule_dict(dues=[("2026-03-15", 1000), ("2026-03-20", 1000)], grace_days=3)
        ),
        record("loan.repayments", payment_dict("p1", 1000, "2026-03-22T12:00")),
    )
    assert [(e["type"], e["dpd"], e["bucket"]) for e in kinds_full(events)][:3] == [
        ("OVERDUE_OPENED", 4, "M1"),
        ("OVERDUE_CURED", 2, "M1"),
        ("OVERDUE_OPENED", 4, "M1"),  # the younger instalment leaves grace two days later
    ]


# 5. Partial payments: oldest first, each instalment fee, interest, principal.
def test_allocation_order_oldest_first_fee_interest_principal() -> None:
    events = run(
        record(
            "loan.schedules",
            schedule_dict(dues=[("2026-03-15", 10_000, 1_000, 500), ("2026-04-15", 10_000, 1_000, 500)]),
        ),
        record("loan.repayments", payment_dict("p1", 1_200, "2026-03-10")),
        until=at("2026-04-20"),
    )
    last = kinds_full(events)[0]
    assert last["type"] == "OVERDUE_OPENED"
    assert (last["overdue_fee"], last["overdue_interest"], last["overdue_principal"]) == (0, 300, 10_000)
    assert last["oldest_past_due_seq"] == 1
    due_soon = [e for e in events if e["type"] == "DUE_SOON" and e["due_seq"] == 2][-1]
    assert due_soon["amount_due"] == 11_500 and due_soon["dpd"] == 30


# 6. Backdated payments: the stream retracts what it said, and ends where the replay does.
def test_late_payment_retracts_the_opened_event() -> None:
    cfg = EngineConfig()
    stream = Stream(cfg=cfg).run(
        [
            schedule(),
            at("2026-03-16T00:05"),
            payment("p1", 100_000, "2026-03-15T18:00"),
            at("2026-03-16T00:06"),
        ]
    )
    assert stream.types() == ["DUE_SOON", "DUE_SOON", "OVERDUE_OPENED", "OVERDUE_RETRACTED"]
    opened, retraction = stream.events[2], stream.events[3]
    assert retraction["retracts"] == opened["event_id"]
    assert retraction["as_of"].isoformat() == "2026-03-16T00:05:00+08:00"  # issued on the tick clock
    assert [e["type"] for e in standing(stream.events)] == ["DUE_SOON", "DUE_SOON"]


def test_payment_still_in_flight_within_the_settle_delay_causes_no_retraction() -> None:
    stream = Stream().run(
        [
            schedule(),
            at("2026-03-16T00:00:30"),
            payment("p1", 100_000, "2026-03-15T23:59"),
            at("2026-03-16T00:02"),
        ]
    )
    assert stream.types() == ["DUE_SOON", "DUE_SOON"]


def test_nothing_is_emitted_ahead_of_the_clock() -> None:
    stream = Stream().run([schedule(), at("2026-03-16T00:00:59")])
    assert "OVERDUE_OPENED" not in stream.types()
    stream.tick(at("2026-03-16T00:01"))
    assert stream.types()[-1] == "OVERDUE_OPENED"
    assert stream.events[-1]["as_of"].isoformat() == "2026-03-16T00:00:00+08:00"


def test_record_ahead_of_the_clock_waits_for_it() -> None:
    stream = Stream().run([schedule(), at("2026-03-17"), payment("p1", 100_000, "2026-03-20T12:00")])
    assert stream.types()[-1] == "OVERDUE_OPENED"
    stream.tick(at("2026-03-20T11:59"))
    assert stream.types()[-1] == "OVERDUE_OPENED"
    stream.tick(at("2026-03-20T12:00"))
    assert stream.types()[-1] == "OVERDUE_CURED"


# 7. Reversals reopen delinquency.
def test_reversal_reopens_and_counts_dpd_from_the_due_date() -> None:
    events = run(
        record("loan.schedules", schedule_dict()),
        record("loan.repayments", payment_dict("p1", 100_000, "2026-03-14T10:00")),
        record(
            "loan.repayments", payment_dict("r1", 100_000, "2026-04-20T10:00", kind="REVERSAL", reverses="p1")
        ),
    )
    opened = kinds_full(events)[0]
    assert (opened["type"], opened["dpd"], opened["bucket"]) == ("OVERDUE_OPENED", 36, "M2")


# 8. Reschedule: a revision replaces the schedule from its effective_at.
def test_revision_that_shortens_the_schedule_opens_at_its_effective_at() -> None:
    events = run(
        record("loan.schedules", schedule_dict(dues=[("2026-06-15", 1000)])),
        record(
            "loan.schedules",
            schedule_dict(dues=[("2026-03-15", 1000)], revision=2, effective_at="2026-04-01T09:30"),
        ),
    )
    opened = kinds_full(events)[0]
    assert (opened["type"], opened["dpd"], opened["schedule_revision"], opened["previous_bucket"]) == (
        "OVERDUE_OPENED",
        17,
        2,
        "M0",
    )


def test_lower_revision_arriving_late_never_takes_effect_over_a_higher_one() -> None:
    events = run(
        record(
            "loan.schedules",
            schedule_dict(dues=[("2026-06-15", 1000)], revision=2, effective_at="2026-02-01"),
        ),
        record(
            "loan.schedules",
            schedule_dict(dues=[("2026-03-15", 1000)], revision=1, effective_at="2026-03-01"),
        ),
        until=at("2026-05-01"),
    )
    assert kinds(events) == []


# 9. Prepaid and overpaid.
def test_overpayment_prepays_later_instalments_and_leaves_a_credit() -> None:
    events = run(
        record("loan.schedules", schedule_dict(dues=[("2026-03-15", 1000), ("2026-04-15", 1000)])),
        record("loan.repayments", payment_dict("p1", 5000, "2026-02-20")),
    )
    assert events == []


# 10. Tiny shortfalls: the tolerance decides.
def test_shortfall_one_above_tolerance_is_past_due() -> None:
    events = run(
        record("loan.schedules", schedule_dict(tolerance=100)),
        record("loan.repayments", payment_dict("p1", 99_899, "2026-03-15T12:00")),
        until=at("2026-03-20"),
    )
    opened = kinds_full(events)[0]
    assert (opened["type"], opened["total_overdue"]) == ("OVERDUE_OPENED", 101)


# 11. Month ends and leap years.
def test_month_end_schedule_in_a_leap_year() -> None:
    events = run(
        record(
            "loan.schedules",
            schedule_dict(
                dues=[("2028-01-31", 1000), ("2028-02-29", 1000), ("2028-03-31", 1000)],
                effective_at="2027-12-31",
            ),
        ),
        until=at("2028-04-02"),
    )
    transitions = [
        (e["type"], e["as_of"].date().isoformat(), e["dpd"], e["overdue_installments"])
        for e in kinds_full(events)
    ]
    assert transitions == [
        ("OVERDUE_OPENED", "2028-02-01", 1, 1),
        ("BUCKET_CHANGED", "2028-03-02", 31, 2),  # Jan 31 + 31 days, through Feb 29
        ("BUCKET_CHANGED", "2028-04-01", 61, 3),
    ]
    reminders = [e["as_of"].date().isoformat() for e in events if e["type"] == "DUE_SOON"]
    assert reminders == ["2028-01-28", "2028-01-30", "2028-02-26", "2028-02-28", "2028-03-28", "2028-03-30"]


# 12. Write-off keeps the first delinquency date, and nothing follows it.
def test_nothing_is_emitted_after_write_off_or_close() -> None:
    events = run(
        record("loan.schedules", schedule_dict()),
        record("loan.schedules", schedule_dict(revision=2, status="WRITTEN_OFF", effective_at="2026-05-01")),
        record("loan.repayments", payment_dict("p1", 100_000, "2026-05-02")),
    )
    assert [e["type"] for e in kinds_full(events)] == ["OVERDUE_OPENED", "BUCKET_CHANGED", "WRITTEN_OFF"]
    assert kinds_full(events)[-1]["first_delinquency_date"] == d("2026-03-16")


def test_closing_an_open_loan_cures_it_reporting_what_was_still_overdue() -> None:
    events = run(
        record("loan.schedules", schedule_dict()),
        record("loan.schedules", schedule_dict(revision=2, status="CLOSED", effective_at="2026-03-20")),
    )
    cured = kinds_full(events)[-1]
    assert (cured["type"], cured["total_overdue"], cured["dpd"], cured["loan_status"]) == (
        "OVERDUE_CURED",
        100_000,
        5,
        "CLOSED",
    )


# 14. Missed run days: one tick after a long outage emits every transition at its own instant.
def test_catch_up_after_downtime_emits_each_transition_at_its_own_as_of() -> None:
    stream = Stream().run([schedule(dues=[("2026-03-15", 1000)]), at("2026-06-01")])
    transitions = [
        (e["type"], e["as_of"].date().isoformat()) for e in stream.events if e["type"] != "DUE_SOON"
    ]
    assert transitions == [
        ("OVERDUE_OPENED", "2026-03-16"),
        ("BUCKET_CHANGED", "2026-04-15"),
        ("BUCKET_CHANGED", "2026-05-15"),
    ]


# Charges.
def test_penalty_interest_accrues_per_midnight_half_even_and_late_fee_once() -> None:
    # 1,000,000 at 3650 bps = 1000/day exactly; 5 at 3650 bps = 0.5/day -> 0 (half to even).
    events = run(
        record(
            "loan.schedules",
            schedule_dict(
                dues=[("2026-03-15", 1_000_000), ("2026-03-16", 5)], penalty_rate_bps=3650, late_fee=2000
            ),
        ),
        until=at("2026-04-15"),
    )
    changed = kinds_full(events)[-1]
    assert changed["type"] == "BUCKET_CHANGED" and changed["dpd"] == 31
    assert changed["penalty_accrued"] == 31 * 1000
    assert changed["late_fees"] == 4000  # one per instalment


def test_a_later_reversal_does_not_refund_penalty_already_charged() -> None:
    events = run(
        record("loan.schedules", schedule_dict(dues=[("2026-03-15", 1_000_000)], penalty_rate_bps=3650)),
        record("loan.repayments", payment_dict("p1", 1_000_000, "2026-03-20T12:00")),
        record(
            "loan.repayments",
            payment_dict("r1", 1_000_000, "2026-03-25T12:00", kind="REVERSAL", reverses="p1"),
        ),
        until=at("2026-03-26"),
    )
    cured, reopened = kinds_full(events)[1:]
    assert cured["penalty_accrued"] == 5 * 1000  # 16th..20th
    assert reopened["type"] == "OVERDUE_OPENED" and reopened["penalty_accrued"] == 5 * 1000


# Held repayments.
def test_repayment_before_its_schedule_is_held_then_applied() -> None:
    stream = Stream().run(
        [payment("p1", 100_000, "2026-03-10"), at("2026-03-11"), schedule(), at("2026-03-20")]
    )
    assert "OVERDUE_OPENED" not in stream.types() and stream.refused == []


def test_repayment_held_longer_than_the_hold_period_goes_to_the_dlq() -> None:
    stream = Stream().run([payment("p1", 100_000, "2026-03-10"), at("2026-03-16T23:59"), at("2026-03-17")])
    assert stream.refused == ["NO_SCHEDULE"]
    assert stream.state.repayments == ()


def test_schedule_currency_refuses_held_repayments_in_another_currency() -> None:
    stream = Stream().run([payment("p1", 100, "2026-03-10", currency="USD"), schedule()])
    assert stream.refused == ["CURRENCY_MISMATCH"]


def test_parse_keeps_an_unknown_calendar_out() -> None:
    import pytest

    from streams.core.errors import InvalidRecord

    with pytest.raises(InvalidRecord) as err:
        parse_schedule(schedule_dict(calendar="XX"))
    assert err.value.reason == "INVALID_CALENDAR"


def test_dst_gap_at_midnight_cut_off_is_the_first_valid_instant() -> None:
    # America/Santiago: clocks jump from 00:00 to 01:00 on 2026-09-06.
    events = run(
        record(
            "loan.schedules",
            schedule_dict(
                dues=[("2026-09-05", 1000)],
                timezone="America/Santiago",
                currency="CLP",
                effective_at="2026-08-01",
            ),
        ),
        until=at("2026-09-10"),
    )
    opened = kinds_full(events)[0]
    assert opened["as_of"].isoformat() == "2026-09-06T01:00:00-03:00"
    assert opened["dpd"] == 1 and timedelta(0) == timedelta(0)


def test_a_schedule_planned_under_other_reminder_settings_gets_their_reminders() -> None:
    """A schedule keeps its calendar plan for the next tick; a worker (or a test) that plans the
    same schedule object with other reminder settings must not be handed the kept one."""
    from datetime import time

    from streams.core.delinquency import plan_for

    s = schedule(dues=[("2026-03-15", 1000)])
    default = plan_for(s, (3, 1), time(9, 0))
    assert plan_for(s, (3, 1), time(9, 0)) is default
    other = plan_for(s, (2,), time(10, 30))
    assert len(other.reminders[0]) == 1 and other.reminders[0] != default.reminders[0][:1]
    assert plan_for(s, (3, 1), time(9, 0)).reminders == default.reminders


def test_event_ids_are_those_earlier_releases_gave() -> None:
    """A record processed again after an upgrade must re-send the ids the old release sent, or a
    consumer cannot recognise the repeat: the id's hash input is a contract. Pinned ids of one
    story (reminders, an opening, its retraction by a late payment, a later opening)."""
    stream = Stream().run(
        [
            schedule(
                dues=[("2026-03-15", 100_000, 500, 100), ("2026-04-15", 100_000)],
                penalty_rate_bps=3650,
                late_fee=300,
                partners=["P1"],
            ),
            at("2026-03-20"),
            payment("p1", 100_600, "2026-03-15T18:00"),
            at("2026-04-30"),
        ]
    )
    assert [(e["type"], e["event_id"]) for e in stream.events] == [
        ("DUE_SOON", "4a3ed7a0d0cb47927afcc9e88b90b85a"),
        ("DUE_SOON", "c351139fdfc95f64832067b5a79fa8f7"),
        ("OVERDUE_OPENED", "a9cba7bbdc3056f87af4b0c64a5f6432"),
        ("OVERDUE_RETRACTED", "5bf8a5086fe68521eb72523f7218d90b"),
        ("DUE_SOON", "3de54b174030c5108dcb84f788ac5e97"),
        ("DUE_SOON", "d1a4720aa521a4531f15b6d134310486"),
        ("OVERDUE_OPENED", "3c3fb532823e907f3da032f0b4c6beb7"),
    ]
