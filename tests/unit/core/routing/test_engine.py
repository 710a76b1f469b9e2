"""The in-process facade (Routers, route_all) and the issue's retraction scenario across all routers."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest

from streams.core.routing import Routers, emission_instant, route_all
from tests.support.routing import at, event, make_policy, retraction

POLICY = make_policy()
D = date(2026, 3, 15)
FACTS = dict(total=105000, oldest=D, first_delinquency=date(2026, 3, 16))


def opened(when: str = "2026-03-16T00:00:00+08:00", **kw: Any) -> dict[str, Any]:
    return event("OVERDUE_OPENED", when, dpd=1, previous_bucket="M0", **{**FACTS, **kw})


def by_topic(out: list) -> dict[str, list[dict[str, Any]]]:
    result: dict[str, list[dict[str, Any]]] = {}
    for topic, _, value in out:
        result.setdefault(topic, []).append(value)
    return result


class TestLatePaymentRetractsTheOpening:
    """A payment dated before the cut-off reaches the detector late: OVERDUE_OPENED is retracted."""

    def _run(self, arrives: str, then_tick: str) -> tuple[list, list]:
        routers = Routers(POLICY)
        o = opened()
        before = routers.on_event(o) + routers.on_tick(at("2026-03-16T07:00:00+08:00"))
        after = routers.on_event(retraction(o, at(arrives))) + routers.on_tick(at(then_tick))
        return before, after

    def test_after_the_messages_were_due(self) -> None:
        before, after = self._run("2026-03-16T10:00:00+08:00", "2026-03-18T08:00:00+08:00")
        first = by_topic(before)
        assert sorted(n["kind"] for n in first["notify.requests"]) == ["COLLECTION", "NOTICE"]
        out = by_topic(after)
        corrections = out["notify.requests"]
        assert sorted(n["kind"] for n in corrections) == [
            "CORRECTION",
            "CORRECTION",
        ]  # the collection + the notice
        assert all(n["created_at"] == at("2026-03-16T10:00:00+08:00") for n in corrections)
        [share] = out["partner.shares"]  # REALTIME partner: a RETRACTED item; DIGEST partner: never saw it
        assert share["partner_id"] == "P-RT" and share["items"][0]["type"] == "RETRACTED"
        [task] = out["collections.tasks"]
        assert (task["action"], task["reason"]) == ("CLOSE", "RETRACTED")
        assert "bureau.records" not in out  # the held record was dropped
        assert "bureau.records" not in first

    def test_before_the_messages_were_due(self) -> None:
        _, after = self._run("2026-03-16T07:30:00+08:00", "2026-03-18T08:00:00+08:00")
        out = by_topic(after)
        assert "notify.requests" not in out  # nothing had gone out yet: no correction
        assert [s["items"][0]["type"] for s in out["partner.shares"]] == ["RETRACTED"]
        assert [t["reason"] for t in out["collections.tasks"]] == ["RETRACTED"]
        assert "bureau.records" not in out

    def test_after_the_record_was_released(self) -> None:
        routers = Routers(POLICY)
        o = opened()
        routers.on_event(o)
        released = by_topic(routers.on_tick(at("2026-03-17T07:30:00+08:00")))
        [record] = released["bureau.records"]
        [digest] = released["partner.shares"]  # the DIGEST partner's 07:00 digest went out
        out = by_topic(
            routers.on_event(retraction(o, at("2026-03-19T10:00:00+08:00")))
            + routers.on_tick(at("2026-03-20T08:00:00+08:00"))
        )
        [correction] = out["bureau.records"]
        assert correction["corrects"] == record["record_id"] and correction["pboc_status"] == "N"
        types = {(s["partner_id"], s["mode"]): [i["type"] for i in s["items"]] for s in out["partner.shares"]}
        assert types == {("P-RT", "REALTIME"): ["RETRACTED"], ("P-DG", "DIGEST"): ["RETRACTED"]}
        assert digest["items"][0]["type"] == "OVERDUE_OPENED"


def test_route_all_emits_time_driven_outputs_at_their_instant_up_to_until() -> None:
    o = opened()
    out = route_all([o], [], at("2026-03-17T00:00:00+08:00"), POLICY)
    records = [v for t, _, v in out if t == "bureau.records"]
    assert [r["released_at"] for r in records] == [at("2026-03-17T00:00:00+08:00")]  # due exactly at until
    assert not [
        v for t, _, v in out if t == "partner.shares" and v["mode"] == "DIGEST"
    ]  # 07:00 is after until
    out = route_all([o], [], at("2026-03-16T23:59:59+08:00"), POLICY)
    assert not [v for t, _, v in out if t == "bureau.records"]


def test_route_all_ignores_events_after_until() -> None:
    out = route_all([opened()], [], at("2026-03-15T23:00:00+08:00"), POLICY)
    assert out == []


def test_route_all_orders_by_emission_instant() -> None:
    events = [opened(), opened("2026-03-16T12:00:00+08:00", loan="L2", borrower="B2")]
    out = route_all(events, [], at("2026-03-20T00:00:00+08:00"), POLICY)
    instants = [emission_instant(t, v) for t, _, v in out]
    assert instants == sorted(instants)
    kinds = [
        (t, v.get("kind") or v.get("mode") or v.get("pboc_status") or v.get("action")) for t, _, v in out
    ]
    # Within an instant, each event through its loan's routers in the stream's order (bureau,
    # collections, partners), then the instant's notifications.
    assert kinds[:5] == [
        ("notify.requests", "NOTICE"),
        ("collections.tasks", "AUTO_REMINDER"),
        ("partner.shares", "REALTIME"),
        ("notify.requests", "COLLECTION"),
        ("notify.requests", "NOTICE"),
    ]


def test_route_all_applies_disputes_at_their_instant() -> None:
    dispute = {
        "dispute_id": "d1",
        "loan_id": "L1",
        "status": "OPEN",
        "at": "2026-03-17T00:00:00+08:00",
        "note": "says paid",
    }
    out = route_all([opened()], [dispute], at("2026-03-18T00:00:00+08:00"), POLICY)
    [record] = [v for t, _, v in out if t == "bureau.records"]
    assert record["disputed"] is True  # a dispute at the release instant comes first


@pytest.mark.parametrize("reverse", [False, True])
def test_route_all_cap_decides_same_instant_events_by_event_id(reverse: bool) -> None:
    events = [opened(loan=f"L{i}") for i in range(3)]
    ordered = list(reversed(events)) if reverse else events
    out = route_all(ordered, [], at("2026-03-16T01:00:00+08:00"), POLICY)
    sent = {
        v["source_event_id"]
        for t, _, v in out
        if t == "notify.requests" and v["kind"] == "COLLECTION" and v["disposition"] == "SEND"
    }
    assert sent == set(sorted(e["event_id"] for e in events)[:2])


def test_routers_next_due_and_tick_index() -> None:
    routers = Routers(POLICY)
    assert routers.next_due() is None
    routers.on_event(opened())
    assert routers.next_due() == at("2026-03-17T00:00:00+08:00")
    assert routers.on_tick(at("2026-03-16T12:00:00+08:00")) == []
    out = routers.on_tick(at("2026-03-18T00:00:00+08:00"))  # fires both due instants, in order
    assert [t for t, _, _ in out] == ["bureau.records", "partner.shares"]
    assert routers.next_due() is None
    tables = routers.port.tables
    assert set(tables["bureau"]) == {"L1"} and set(tables["partners"]) == {"P-RT", "P-DG"}


def test_many_loans_tick_cost_is_only_what_is_due() -> None:
    routers = Routers(POLICY)
    for i in range(200):
        routers.on_event(
            opened(f"2026-03-{1 + i % 28:02d}T00:00:00+08:00", loan=f"L{i}", borrower=f"B{i}", partners=())
        )
    out = routers.on_tick(at("2026-03-02T00:00:00+08:00"))
    assert len(out) == 8 and all(t == "bureau.records" for t, _, _ in out)  # only 2026-03-01's openings
    assert routers.next_due() == at("2026-03-03T00:00:00+08:00")


def test_stream_like_retraction_within_one_instant_batch() -> None:
    routers = Routers(POLICY)
    o = opened()
    out = routers.on_events([o, retraction(o, at("2026-03-16T00:00:00+08:00") + timedelta(0))])
    # A retraction never precedes what it retracts, even when sorted within the instant.
    assert [v["reason"] for t, _, v in out if t == "collections.tasks"] == ["OPENED", "RETRACTED"]
    assert isinstance(out[0][2]["created_at"], datetime)


def _example_events(name: str) -> tuple[list[dict[str, Any]], datetime]:
    """The expected OverdueEvents of a worked example, with the context fields the example omits."""
    import hashlib
    import json

    from tests.support.shared import EXAMPLES, need

    folder = need(EXAMPLES / name)
    events = []
    for line in (folder / "expected.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        e = json.loads(line)
        tz = "America/New_York" if e["as_of"].endswith(("-05:00", "-04:00")) else "Asia/Shanghai"
        e = {
            **e,
            "as_of": datetime.fromisoformat(e["as_of"]),
            "as_of_date": date.fromisoformat(e["as_of_date"]),
        }
        for f in ("oldest_past_due_date", "first_delinquency_date", "due_date"):
            e[f] = date.fromisoformat(e[f]) if e.get(f) else None
        e.update(
            event_id=hashlib.sha256(line.encode()).hexdigest()[:32],
            borrower_id="B-" + e["loan_id"],
            currency="CNY",
            timezone=tz,
            contact={"locale": "en", "channels": ["push", "sms"]},
            partners=["P-RT", "P-DG"],
            retracts=None,
            loan_status="WRITTEN_OFF" if e["type"] == "WRITTEN_OFF" else "ACTIVE",
        )
        e.setdefault("due_seq", None), e.setdefault("amount_due", None)
        events.append(e)
    until = datetime.fromisoformat((folder / "until").read_text().strip())
    return events, until


def test_worked_example_late_then_cured() -> None:
    events, until = _example_events("02-late-then-cured")
    out = by_topic(route_all(events, [], until, POLICY))
    assert [n["kind"] for n in out["notify.requests"]] == [
        "REMINDER",
        "REMINDER",
        "NOTICE",
        "COLLECTION",
        "CONFIRMATION",
        "REMINDER",
    ]
    assert [(r["pboc_status"], r["released_at"]) for r in out["bureau.records"]] == [
        ("1", at("2026-03-17T00:00:00+08:00")),
        ("N", at("2026-03-20T11:30:00+08:00")),
    ]
    assert [(t["action"], t["reason"]) for t in out["collections.tasks"]] == [
        ("AUTO_REMINDER", "OPENED"),
        ("CLOSE", "CURED"),
    ]
    confirmation = out["notify.requests"][4]
    assert "15 March 2026" in confirmation["text"] and "5 day(s)" in confirmation["text"]


def test_worked_example_write_off_walks_the_whole_ladder() -> None:
    events, until = _example_events("09-penalty-late-fee-write-off")
    out = by_topic(route_all(events, [], until, POLICY))
    assert [r["pboc_status"] for r in out["bureau.records"]] == ["1", "2", "3", "4", "5", "6", "7", "B"]
    assert [r["metro2_status"] for r in out["bureau.records"]][-2:] == ["84", "97"]
    assert [t["action"] for t in out["collections.tasks"]] == [
        "AUTO_REMINDER",
        "PHONE",
        "AGENCY",
        "AGENCY",
        "AGENCY",
        "AGENCY",
        "LEGAL",
        "CLOSE",
    ]


def test_worked_example_dst_new_york_quiet_hours() -> None:
    events, until = _example_events("06-dst-new-york")
    out = by_topic(route_all(events, [], until, POLICY))
    collection = next(n for n in out["notify.requests"] if n["kind"] == "COLLECTION")
    assert collection["not_before"] == datetime.fromisoformat("2026-03-09T08:00:00-04:00")


def test_a_tick_that_makes_no_progress_is_a_bug_raised_not_a_loop() -> None:
    """A router step that leaves something due at its own instant once spun the shell forever;
    the engine raises, and the stream sets that loan aside."""
    from streams.core.routing import RoutingError
    from streams.core.routing.engine import tick_through

    due = at("2026-03-17T00:00:00+08:00")
    later = at("2026-03-18T00:00:00+08:00")
    state, out, after = tick_through(
        0, later, lambda s: [due, later, None][s], lambda s, t: (s + 1, [("t", "k", {})])
    )
    assert (state, len(out), after) == (2, 2, None)
    with pytest.raises(RoutingError, match="no progress"):
        tick_through(0, due, lambda s: due, lambda s, t: (s, []))
