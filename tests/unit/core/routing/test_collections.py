"""Collections router: the ladder, contact window, attempt caps, one CLOSE per end, retractions."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from streams.core.routing import collections as cr
from streams.core.routing.policy import LadderRung
from tests.support.routing import at, bucket_of, event, make_policy, retraction

POLICY = make_policy()
D = date(2026, 3, 15)
FACTS = dict(total=105000, oldest=D, first_delinquency=date(2026, 3, 16))
OPEN_AT = "2026-03-16T00:00:00+08:00"


def opened(**kw: Any) -> dict[str, Any]:
    return event("OVERDUE_OPENED", kw.pop("when", OPEN_AT), dpd=1, previous_bucket="M0", **{**FACTS, **kw})


def aged(dpd: int, **kw: Any) -> dict[str, Any]:
    when = datetime.fromisoformat(OPEN_AT) + timedelta(days=dpd - 1)
    return event("BUCKET_CHANGED", when, dpd=dpd, previous_bucket=bucket_of(dpd - 1), **{**FACTS, **kw})


def cured(when: str = "2026-03-20T11:30:00+08:00", **kw: Any) -> dict[str, Any]:
    return event(
        "OVERDUE_CURED", when, dpd=0, bucket="M0", previous_bucket="M1", **{**FACTS, "total": 0, **kw}
    )


def run(events: list[dict[str, Any]], policy=POLICY) -> tuple[cr.CollectionsState, list[dict[str, Any]]]:
    state = cr.EMPTY
    out: list[dict[str, Any]] = []
    for e in events:
        state, emitted = cr.step_event(state, e, policy)
        assert all(t == "collections.tasks" and k == e["loan_id"] for t, k, _ in emitted)
        out += [v for _, _, v in emitted]
    return state, out


def test_ladder_tasks_from_opening_to_m7() -> None:
    _, out = run([opened(), *(aged(d) for d in (31, 61, 91, 121, 151, 181))])
    assert [(t["bucket"], t["action"], t["reason"]) for t in out] == [
        ("M1", "AUTO_REMINDER", "OPENED"),
        ("M2", "PHONE", "ESCALATED"),
        ("M3", "AGENCY", "ESCALATED"),
        ("M4", "AGENCY", "ESCALATED"),
        ("M5", "AGENCY", "ESCALATED"),
        ("M6", "AGENCY", "ESCALATED"),
        ("M7", "LEGAL", "ESCALATED"),
    ]
    first = out[0]
    assert first["contact_window"] == {"start": "08:00", "end": "21:00", "timezone": "Asia/Shanghai"}
    assert first["max_attempts_per_day"] == 3 and first["opened_at"] == at(OPEN_AT)
    assert first["dpd"] == 1 and first["total_overdue"] == 105000 and first["currency"] == "CNY"
    assert set(first) == {
        "task_id",
        "loan_id",
        "borrower_id",
        "action",
        "reason",
        "bucket",
        "dpd",
        "total_overdue",
        "currency",
        "opened_at",
        "contact_window",
        "max_attempts_per_day",
        "source_event_id",
    }
    assert len({t["task_id"] for t in out}) == 7


def test_downward_bucket_change_makes_no_task() -> None:
    down = event(
        "BUCKET_CHANGED", "2026-04-20T10:00:00+08:00", dpd=20, bucket="M1", previous_bucket="M2", **FACTS
    )
    _, out = run([opened(), aged(31), down])
    assert [t["bucket"] for t in out] == ["M1", "M2"]


def test_ladder_window_and_caps_come_from_the_policy() -> None:
    policy = make_policy(
        ladder={**POLICY.ladder, "M1": LadderRung("SMS_BOT", 1)},
        contact_window_start=datetime(2000, 1, 1, 9).time(),
        contact_window_end=datetime(2000, 1, 1, 20).time(),
        max_attempts_per_day=5,
    )
    _, out = run([opened(), aged(31)], policy)
    assert (out[0]["action"], out[0]["max_attempts_per_day"]) == ("SMS_BOT", 1)
    assert (out[1]["action"], out[1]["max_attempts_per_day"]) == ("PHONE", 5)
    assert out[1]["contact_window"]["start"] == "09:00" and out[1]["contact_window"]["end"] == "20:00"


def test_contact_window_is_in_the_loans_zone() -> None:
    _, [task] = run([opened(when="2026-03-09T00:00:00-04:00", tz="America/New_York")])
    assert task["contact_window"]["timezone"] == "America/New_York"


def test_exactly_one_close_per_cure() -> None:
    c = cured()
    state, out = run([opened(), aged(31), c, c])  # the cure re-delivered
    closes = [t for t in out if t["action"] == "CLOSE"]
    assert len({t["task_id"] for t in closes}) == 1
    assert closes[0]["reason"] == "CURED" and closes[0]["max_attempts_per_day"] == 0
    assert not state.case_open


def test_close_reasons() -> None:
    _, out = run([opened(), cured(loan_status="CLOSED", total=500)])
    assert out[-1]["reason"] == "LOAN_CLOSED"
    wo = event("WRITTEN_OFF", "2026-09-01T10:00:00+08:00", dpd=203, loan_status="WRITTEN_OFF", **FACTS)
    _, out = run([opened(), wo])
    assert (out[-1]["action"], out[-1]["reason"]) == ("CLOSE", "WRITTEN_OFF")


def test_write_off_without_an_episode_closes_nothing() -> None:
    wo = event("WRITTEN_OFF", "2026-09-01T10:00:00+08:00", dpd=0, loan_status="WRITTEN_OFF")
    assert run([wo])[1] == []


def test_cure_of_an_episode_never_seen_still_closes() -> None:
    _, out = run([cured()])
    assert [(t["action"], t["reason"]) for t in out] == [("CLOSE", "CURED")]


def test_retraction_of_the_opening_closes_with_reason_retracted() -> None:
    o = opened()
    state, out = run([o, retraction(o, at("2026-03-16T10:00:00+08:00"))])
    assert [(t["action"], t["reason"]) for t in out] == [("AUTO_REMINDER", "OPENED"), ("CLOSE", "RETRACTED")]
    close = out[1]
    assert close["opened_at"] == at("2026-03-16T10:00:00+08:00") and close["bucket"] == "M1"
    assert not state.case_open


def test_retracting_the_whole_episode_closes_exactly_once() -> None:
    o, bc = opened(), aged(31)
    arrives = at("2026-04-20T10:00:00+08:00")
    _, out = run([o, bc, retraction(o, arrives), retraction(bc, arrives)])
    assert [t["reason"] for t in out if t["action"] == "CLOSE"] == ["RETRACTED"]


def test_retraction_of_an_escalation_reinstates_the_previous_step() -> None:
    o, bc = opened(), aged(31)
    state, out = run([o, bc, retraction(bc, at("2026-04-15T10:00:00+08:00"))])
    assert [(t["action"], t["reason"], t["bucket"]) for t in out] == [
        ("AUTO_REMINDER", "OPENED", "M1"),
        ("PHONE", "ESCALATED", "M2"),
        ("CLOSE", "RETRACTED", "M2"),
        ("AUTO_REMINDER", "REINSTATED", "M1"),
    ]
    assert state.case_open


def test_retraction_of_a_cure_reopens_the_case() -> None:
    c = cured()
    state, out = run([opened(), aged(31), c, retraction(c, at("2026-04-20T09:00:00+08:00"))])
    assert [(t["action"], t["reason"]) for t in out][-2:] == [("CLOSE", "CURED"), ("PHONE", "REINSTATED")]
    assert state.case_open
    # ... and the later real cure closes it again, once.
    _, more = cr.step_event(state, cured("2026-04-25T10:00:00+08:00"), POLICY)
    assert [(t["action"], t["reason"]) for _, _, t in more] == [("CLOSE", "CURED")]


def test_retraction_of_something_without_a_task_does_nothing() -> None:
    reminder = event("DUE_SOON", "2026-03-12T09:00:00+08:00", due_seq=1, due_date=D, amount_due=1)
    state, out = run([opened(), reminder, retraction(reminder, at("2026-03-17T09:00:00+08:00"))])
    assert len(out) == 1


def test_redelivery_repeats_the_same_tasks() -> None:
    o = opened()
    state, first = run([o])
    state, again = cr.step_event(state, o, POLICY)
    assert [v for _, _, v in again] == first
    r = retraction(o, at("2026-03-16T10:00:00+08:00"))
    state, a = cr.step_event(state, r, POLICY)
    state, b = cr.step_event(state, r, POLICY)
    assert a == b


def test_state_round_trip_and_no_tick_work() -> None:
    state, _ = run([opened(), aged(31)])
    assert cr.state_from_bytes(cr.state_to_bytes(state)) == state
    assert cr.next_due(state) is None and cr.step_tick(state, at(OPEN_AT), POLICY) == (state, [])
