"""Shared routing helpers: quiet hours across midnight and DST, money wording, ids, state codec."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.routing import bureau, notifications
from streams.core.routing.common import (
    at_local,
    format_date,
    format_money,
    in_window,
    make_id,
    next_allowed,
)

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
Q = (time(21, 0), time(8, 0))


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("2026-03-16T00:00:00", "2026-03-16T08:00:00"),  # a midnight opening waits for 08:00
        ("2026-03-16T07:59:59", "2026-03-16T08:00:00"),
        ("2026-03-16T08:00:00", "2026-03-16T08:00:00"),  # the end of quiet hours is allowed
        ("2026-03-16T20:59:59", "2026-03-16T20:59:59"),
        ("2026-03-16T21:00:00", "2026-03-17T08:00:00"),  # the start is quiet
        ("2026-03-16T23:30:00", "2026-03-17T08:00:00"),
        ("2026-12-31T22:00:00", "2027-01-01T08:00:00"),  # across the year end
    ],
)
def test_next_allowed_moves_out_of_quiet_hours(local: str, expected: str) -> None:
    instant = datetime.fromisoformat(local).replace(tzinfo=SH)
    assert next_allowed(instant, SH, *Q) == datetime.fromisoformat(expected).replace(tzinfo=SH)


def test_next_allowed_in_another_zone_uses_that_zones_wall_clock() -> None:
    # 23:00 in New York is 12:00 in Shanghai: quiet for a New York loan.
    instant = datetime(2026, 3, 5, 23, 0, tzinfo=NY)
    assert next_allowed(instant, NY, *Q) == datetime(2026, 3, 6, 8, 0, tzinfo=NY)
    assert next_allowed(instant, SH, *Q) == instant


def test_next_allowed_across_the_spring_dst_change() -> None:
    # 2026-03-08 New York skips 02:00-03:00; the quiet night still ends at 08:00 local (EDT).
    instant = datetime(2026, 3, 7, 22, 0, tzinfo=NY)
    result = next_allowed(instant, NY, *Q)
    assert result.utcoffset() == timedelta(hours=-4)
    assert (result.hour, result.minute) == (8, 0)
    assert result.astimezone(UTC) - instant.astimezone(UTC) == timedelta(hours=9)  # one hour shorter night


def test_quiet_end_inside_a_dst_gap_lands_after_the_gap() -> None:
    instant = datetime(2026, 3, 8, 1, 0, tzinfo=NY)
    result = next_allowed(instant, NY, time(0, 0), time(2, 30))
    assert (result.hour, result.minute) == (3, 30)
    assert not in_window(result.time(), time(0, 0), time(2, 30))


def test_start_equal_end_means_no_quiet_hours() -> None:
    instant = datetime(2026, 3, 16, 23, 0, tzinfo=SH)
    assert next_allowed(instant, SH, time(0), time(0)) == instant


def test_non_wrapping_quiet_window() -> None:
    lunch = (time(12, 0), time(13, 30))
    assert next_allowed(datetime(2026, 3, 16, 12, 10, tzinfo=SH), SH, *lunch) == datetime(
        2026, 3, 16, 13, 30, tzinfo=SH
    )
    assert next_allowed(datetime(2026, 3, 16, 14, 0, tzinfo=SH), SH, *lunch).hour == 14


@given(
    st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 1, 1), timezones=st.just(UTC)),
    st.sampled_from([SH, NY, ZoneInfo("Europe/London"), ZoneInfo("Australia/Lord_Howe")]),
    st.sampled_from([(time(21), time(8)), (time(22), time(7)), (time(12), time(14)), (time(0), time(6, 30))]),
)
def test_next_allowed_is_the_first_allowed_instant(instant: datetime, tz: ZoneInfo, quiet: tuple) -> None:
    result = next_allowed(instant, tz, *quiet)
    assert result >= instant
    assert not in_window(result.astimezone(tz).time(), *quiet)
    if result > instant:  # nothing in between is allowed: check a few points
        for fraction in (0.0, 0.5, 0.99):
            probe = instant + (result - instant) * fraction
            assert in_window(probe.astimezone(tz).time().replace(tzinfo=None), *quiet)


def test_at_local_ambiguous_time_takes_the_first_occurrence() -> None:
    first = at_local(date(2026, 11, 1), time(1, 30), NY)
    assert first.utcoffset() == timedelta(hours=-4)


@pytest.mark.parametrize(
    ("minor", "currency", "zh", "en"),
    [
        (105000, "CNY", "¥1,050.00", "CNY 1,050.00"),
        (0, "CNY", "¥0.00", "CNY 0.00"),
        (5, "CNY", "¥0.05", "CNY 0.05"),
        (123456789012, "CNY", "¥1,234,567,890.12", "CNY 1,234,567,890.12"),
        (1500, "JPY", "JP¥1,500", "JPY 1,500"),
        (1234, "KWD", "KWD 1.234", "KWD 1.234"),
        (-250, "USD", "-US$2.50", "-USD 2.50"),
    ],
)
def test_format_money_uses_integer_minor_units(minor: int, currency: str, zh: str, en: str) -> None:
    assert format_money(minor, currency, "zh-CN") == zh
    assert format_money(minor, currency, "en") == en


def test_format_money_refuses_floats() -> None:
    with pytest.raises(ValueError):
        format_money(10.5, "CNY", "en")  # type: ignore[arg-type]


def test_format_date_in_both_locales() -> None:
    assert format_date(date(2026, 3, 15), "zh-CN") == "2026年3月15日"
    assert format_date(date(2026, 3, 15), "en") == "15 March 2026"


def test_make_id_is_deterministic_and_role_sensitive() -> None:
    assert make_id("ntf", "collection", "e1") == make_id("ntf", "collection", "e1")
    assert make_id("ntf", "collection", "e1") != make_id("ntf", "notice", "e1")
    assert make_id("ntf", "a", "bc") != make_id("ntf", "ab", "c")  # parts are separated
    assert make_id("tsk", "x").startswith("tsk-") and len(make_id("tsk", "x")) == 36


def test_state_codecs_round_trip_with_zones() -> None:
    from tests.support.routing import event, make_policy

    policy = make_policy()
    opened = event(
        "OVERDUE_OPENED",
        "2026-03-16T00:00:00+08:00",
        dpd=1,
        total=105000,
        oldest=date(2026, 3, 15),
        first_delinquency=date(2026, 3, 16),
    )
    state, _ = bureau.step_event(bureau.EMPTY, opened, policy)
    state, _ = bureau.step_dispute(
        state,
        {"dispute_id": "d", "loan_id": "L1", "status": "OPEN", "at": "2026-03-16T10:00:00+08:00", "note": ""},
        policy,
    )
    back = bureau.state_from_bytes(bureau.state_to_bytes(state))
    assert back == state
    assert back.episodes[0].notice["created_at"].tzinfo == SH  # outputs keep the loan's zone
    n_state, _ = notifications.step_event(notifications.EMPTY, opened, policy)
    assert notifications.state_from_bytes(notifications.state_to_bytes(n_state)) == n_state


def test_states_stored_by_the_earlier_json_encoder_still_decode() -> None:
    # Router states in RocksDB and the changelogs were written with the standard library's JSON
    # encoder before orjson took over; a restart must read them, and the format is unchanged.
    import json

    from streams.core.routing.common import to_jsonable
    from tests.support.routing import event, make_policy

    policy = make_policy()
    opened = event(
        "OVERDUE_OPENED",
        "2026-03-16T00:00:00+08:00",
        dpd=1,
        total=105000,
        oldest=date(2026, 3, 15),
        first_delinquency=date(2026, 3, 16),
    )
    state, _ = bureau.step_event(bureau.EMPTY, opened, policy)
    earlier = json.dumps(to_jsonable(state), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert bureau.state_from_bytes(earlier) == state
    assert json.loads(bureau.state_to_bytes(state)) == json.loads(earlier)
    n_state, _ = notifications.step_event(notifications.EMPTY, opened, policy)
    n_earlier = json.dumps(to_jsonable(n_state), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert notifications.state_from_bytes(n_earlier) == n_state
