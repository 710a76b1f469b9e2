"""Notification router: kinds, channels, locale, quiet hours, the daily cap, corrections, re-delivery."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from streams.core.routing import notifications as nr
from tests.support.routing import at, event, make_policy, retraction

POLICY = make_policy()
D = date(2026, 3, 15)


def opened(when: str = "2026-03-16T00:00:00+08:00", **kw: Any) -> dict[str, Any]:
    return event(
        "OVERDUE_OPENED",
        when,
        dpd=1,
        previous_bucket="M0",
        total=105000,
        oldest=D,
        first_delinquency=date(2026, 3, 16),
        penalty=624,
        late_fees=2000,
        **kw,
    )


def run(events: list[dict[str, Any]], policy=POLICY) -> tuple[nr.NotificationState, list[dict[str, Any]]]:
    state = nr.EMPTY
    out: list[dict[str, Any]] = []
    for e in events:
        state, emitted = nr.step_event(state, e, policy)
        out += [v for _, _, v in emitted]
    return state, out


def test_due_soon_is_a_reminder_in_the_borrowers_locale() -> None:
    e = event("DUE_SOON", "2026-03-12T09:00:00+08:00", due_seq=1, due_date=D, amount_due=105000, locale="en")
    _, [n] = run([e])
    assert n["kind"] == "REMINDER" and n["disposition"] == "SEND" and n["template"] == "due_soon"
    assert n["locale"] == "en" and n["channel"] == "push" and n["fallback_channel"] == "sms"
    assert n["created_at"] == n["not_before"] == at("2026-03-12T09:00:00+08:00")
    assert "CNY 1,050.00" in n["text"] and "15 March 2026" in n["text"] and "3 day(s)" in n["text"]
    assert n["params"]["amount"] == "CNY 1,050.00" and n["borrower_id"] == "B1" and n["loan_id"] == "L1"
    assert set(n) == {
        "notification_id",
        "source_event_id",
        "kind",
        "disposition",
        "borrower_id",
        "loan_id",
        "channel",
        "fallback_channel",
        "locale",
        "template",
        "params",
        "text",
        "created_at",
        "not_before",
    }


def test_opened_at_midnight_is_a_collection_deferred_to_the_end_of_quiet_hours() -> None:
    _, [n] = run([opened()])
    assert n["kind"] == "COLLECTION" and n["template"] == "overdue_opened"
    assert n["created_at"] == at("2026-03-16T00:00:00+08:00")
    assert n["not_before"] == at("2026-03-16T08:00:00+08:00")
    text = n["text"]
    assert "¥1,050.00" in text and "2026年3月15日" in text and "逾期1天" in text
    assert "¥6.24" in text and "¥20.00" in text and "征信" in text


def test_channels_push_first_then_sms_whatever_the_stored_order() -> None:
    _, [n] = run([opened(channels=("sms", "push"))])
    assert (n["channel"], n["fallback_channel"]) == ("push", "sms")
    _, [n] = run([opened(channels=("sms",))])
    assert (n["channel"], n["fallback_channel"]) == ("sms", None)


def test_no_consented_channel_is_written_dropped() -> None:
    _, [n] = run([opened(channels=())])
    assert n["channel"] is None and n["disposition"] == "DROPPED"


def test_unknown_locale_falls_back_to_the_default() -> None:
    _, [n] = run([opened(locale="fr")])
    assert n["locale"] == "zh-CN"


def test_bucket_changes_only_upward_notify() -> None:
    up = event(
        "BUCKET_CHANGED",
        "2026-04-15T00:00:00+08:00",
        dpd=31,
        previous_bucket="M1",
        total=105000,
        oldest=D,
        first_delinquency=date(2026, 3, 16),
    )
    down = event(
        "BUCKET_CHANGED",
        "2026-04-20T10:00:00+08:00",
        dpd=20,
        bucket="M1",
        previous_bucket="M2",
        total=50000,
        oldest=date(2026, 3, 31),
        first_delinquency=date(2026, 3, 16),
    )
    _, out = run([up, down])
    assert [n["template"] for n in out] == ["overdue_bucket_up"]
    assert "31" in out[0]["text"]


@pytest.mark.parametrize(
    ("kw", "template"),
    [
        ({"total": 0}, "overdue_cured"),
        ({"total": 3000, "dpd": 2}, "overdue_cured_in_grace"),
        ({"total": 3000, "loan_status": "CLOSED"}, "overdue_closed"),
        ({"total": 0, "loan_status": "CLOSED"}, "overdue_cured"),
    ],
)
def test_cure_confirmations(kw: dict[str, Any], template: str) -> None:
    kw = {
        "dpd": 0,
        "bucket": "M0",
        "previous_bucket": "M1",
        "first_delinquency": date(2026, 3, 16),
        "oldest": D,
        **kw,
    }
    cured = event("OVERDUE_CURED", "2026-03-20T11:30:00+08:00", locale="en", **kw)
    _, [n] = run([cured])
    assert n["kind"] == "CONFIRMATION" and n["template"] == template
    if template == "overdue_cured":
        # The due date comes from the episode (first delinquency − 1): 5 days late.
        assert "15 March 2026" in n["text"] and "5 day(s)" in n["text"] and "20 March 2026" in n["text"]


def test_written_off_sends_nothing_from_this_router() -> None:
    wo = event(
        "WRITTEN_OFF",
        "2026-09-01T10:00:00+08:00",
        dpd=200,
        total=1000,
        loan_status="WRITTEN_OFF",
        oldest=D,
        first_delinquency=date(2026, 3, 16),
    )
    assert run([wo])[1] == []


def _collections_same_day(n: int, borrower: str = "B1") -> list[dict[str, Any]]:
    return [opened(f"2026-03-16T{9 + i:02d}:00:00+08:00", loan=f"L{i}", borrower=borrower) for i in range(n)]


def test_cap_drops_beyond_two_collections_per_local_day_across_loans() -> None:
    state, out = run(_collections_same_day(4))
    assert [n["disposition"] for n in out] == ["SEND", "SEND", "DROPPED", "DROPPED"]
    assert nr.out_of_order_count(state) == 0
    # Reminders are not capped, and the next local day starts afresh.
    reminder = event(
        "DUE_SOON",
        "2026-03-16T12:30:00+08:00",
        loan="L9",
        due_seq=2,
        due_date=date(2026, 4, 15),
        amount_due=1,
    )
    next_day = opened("2026-03-17T09:00:00+08:00", loan="L8")
    _, more = nr.step_event(state, reminder, POLICY)
    assert more[0][2]["disposition"] == "SEND"
    _, more = nr.step_event(state, next_day, POLICY)
    assert more[0][2]["disposition"] == "SEND"


def test_cap_counts_the_local_day_of_created_at() -> None:
    # 23:30 and 00:30 Shanghai are two local days although within one hour.
    late = opened("2026-03-16T23:30:00+08:00", loan="La")
    evening = _collections_same_day(2)
    _, out = run([*evening, late, opened("2026-03-17T00:30:00+08:00", loan="Lb")])
    assert [n["disposition"] for n in out] == ["SEND", "SEND", "DROPPED", "SEND"]


def test_cap_is_per_borrower() -> None:
    from streams.core.routing import Routers

    routers = Routers(POLICY)
    out = routers.on_events([*_collections_same_day(2, "B1"), *_collections_same_day(2, "B2")])
    sent = [v for t, _, v in out if t == "notify.requests" and v["kind"] == "COLLECTION"]
    assert [n["disposition"] for n in sent] == ["SEND"] * 4
    assert set(routers.port.tables["notifications"]) == {"B1", "B2"}


def test_cap_from_policy_and_zero_cap() -> None:
    _, out = run(_collections_same_day(3), make_policy(collection_cap_per_day=1))
    assert [n["disposition"] for n in out] == ["SEND", "DROPPED", "DROPPED"]
    _, out = run(_collections_same_day(1), make_policy(collection_cap_per_day=0))
    assert out[0]["disposition"] == "DROPPED"


def test_out_of_order_arrival_keeps_the_decision_and_records_it() -> None:
    first, second, third = _collections_same_day(3)
    state, out = run([third, second, first])  # arrival order from different partitions
    assert [n["disposition"] for n in out] == ["SEND", "SEND", "DROPPED"]
    assert nr.out_of_order_count(state) == 2
    # The cap is never exceeded and nothing is re-decided on re-delivery.
    state, again = nr.step_event(state, third, POLICY)
    assert again[0][2] == out[0]


def test_redelivery_re_emits_the_same_request_and_does_not_count_twice() -> None:
    a, b, c = _collections_same_day(3)
    state, out1 = run([a])
    state, dup = nr.step_event(state, a, POLICY)
    assert dup[0][2] == out1[0]
    state, out2 = nr.step_event(state, b, POLICY)
    assert out2[0][2]["disposition"] == "SEND"  # a counted once
    state, out3 = nr.step_event(state, c, POLICY)
    assert out3[0][2]["disposition"] == "DROPPED"


def test_notification_ids_are_deterministic() -> None:
    _, out1 = run([opened()])
    _, out2 = run([opened()])
    assert out1 == out2
    assert out1[0]["notification_id"] != run([opened("2026-03-17T00:00:00+08:00")])[1][0]["notification_id"]


# --- retractions ----------------------------------------------------------------------------------


def test_retraction_of_a_due_request_sends_a_correction() -> None:
    o = opened()
    # The late payment arrives at 10:00, after the 08:00 not_before: the message went out.
    state, out = run([o, retraction(o, at("2026-03-16T10:00:00+08:00"))])
    original, correction = out
    assert correction["kind"] == "CORRECTION" and correction["template"] == "correction"
    assert correction["source_event_id"] != original["source_event_id"]
    assert correction["created_at"] == at("2026-03-16T10:00:00+08:00")
    assert "2026年3月16日 08:00" in correction["text"]
    assert correction["notification_id"] != original["notification_id"]


def test_retraction_before_the_request_was_due_sends_nothing() -> None:
    o = opened()
    state, out = run([o, retraction(o, at("2026-03-16T07:59:00+08:00"))])
    assert [n["kind"] for n in out] == ["COLLECTION"]


def test_retraction_exactly_at_not_before_counts_as_due() -> None:
    o = opened()
    _, out = run([o, retraction(o, at("2026-03-16T08:00:00+08:00"))])
    assert [n["kind"] for n in out] == ["COLLECTION", "CORRECTION"]


def test_retraction_of_a_dropped_request_sends_nothing() -> None:
    a, b, c = _collections_same_day(3)
    _, out = run([a, b, c, retraction(c, at("2026-03-16T20:00:00+08:00"))])
    assert [n["kind"] for n in out] == ["COLLECTION"] * 3


def test_retraction_is_idempotent_and_unknown_targets_are_ignored() -> None:
    o = opened()
    r = retraction(o, at("2026-03-16T10:00:00+08:00"))
    state, out = run([o, r])
    state, again = nr.step_event(state, r, POLICY)
    assert [v for _, _, v in again] == out[1:]
    stranger = retraction(opened("2026-02-16T00:00:00+08:00", loan="Lx"), at("2026-03-16T10:00:00+08:00"))
    assert nr.step_event(state, stranger, POLICY)[1] == []


def test_retraction_of_a_reminder_and_of_a_confirmation_also_corrects() -> None:
    reminder = event("DUE_SOON", "2026-03-14T09:00:00+08:00", due_seq=1, due_date=D, amount_due=1)
    cured = event(
        "OVERDUE_CURED",
        "2026-03-20T11:30:00+08:00",
        bucket="M0",
        previous_bucket="M1",
        first_delinquency=date(2026, 3, 16),
    )
    _, out = run(
        [
            reminder,
            cured,
            retraction(cured, at("2026-03-21T09:00:00+08:00")),
            retraction(reminder, at("2026-03-21T09:00:00+08:00")),
        ]
    )
    assert [n["kind"] for n in out] == ["REMINDER", "CONFIRMATION", "CORRECTION", "CORRECTION"]


def test_state_forgets_after_retention() -> None:
    o = opened()
    state, _ = run([o])
    later_event = event(
        "DUE_SOON", "2026-05-01T09:00:00+08:00", due_seq=2, due_date=date(2026, 5, 4), amount_due=1
    )
    state, _ = nr.step_event(state, later_event, POLICY)
    assert o["event_id"] not in state.emitted and "2026-03-16" not in state.days
    assert later_event["event_id"] in state.emitted


def test_no_tick_work() -> None:
    state, _ = run([opened()])
    assert nr.next_due(state) is None
    assert nr.step_tick(state, datetime(2030, 1, 1, tzinfo=UTC), POLICY) == (state, [])


def test_new_york_quiet_hours_use_local_time() -> None:
    o = opened("2026-03-09T00:00:00-04:00", tz="America/New_York")
    _, [n] = run([o])
    assert n["not_before"] == datetime.fromisoformat("2026-03-09T08:00:00-04:00")
    assert n["not_before"] - n["created_at"] == timedelta(hours=8)
