"""Property tests of the four routers over generated loan histories (hypothesis).

- no SEND notification has its not_before inside quiet hours;
- no negative bureau record is released before its NOTICE's created_at + lead time, every
  one follows its NOTICE, and an episode that cured within the lead time reports nothing
  negative;
- no partner share contains a borrower_id, a contact field or the real id;
- exactly one CLOSE task per cure and per write-off;
- re-delivering events yields no new output ids (and the same content per id);
- outputs do not depend on when ticks arrive (after applying corrections);
- every loan's bureau records form a hash chain that holds, re-deliveries and corrections
  included, and one equal to replay's when events reach the routers in order (SPEC §7.1).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core import chain
from streams.core.routing import Routers, make_id, route_all
from streams.core.routing.bureau import NEGATIVE
from streams.core.routing.common import in_window
from streams.core.routing.partners import ITEM_FIELDS, step_fan_out
from tests.support.routing import PARTNERS, loan_histories, make_policy, stream_and_truth

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QUIET = st.sampled_from([(time(21), time(8)), (time(22), time(7)), (time(0), time(6)), (time(13), time(14))])
LEADS = st.sampled_from([timedelta(hours=24), timedelta(hours=2), timedelta(days=3), timedelta(0)])

Out = list[tuple[str, str, dict[str, Any]]]


def _values(out: Out, topic: str) -> list[dict[str, Any]]:
    return [v for t, _, v in out if t == topic]


def _id(topic: str, value: dict[str, Any]) -> str:
    return value[
        {
            "notify.requests": "notification_id",
            "bureau.records": "record_id",
            "partner.shares": "share_id",
            "collections.tasks": "task_id",
        }[topic]
    ]


def _u(instant: datetime) -> datetime:
    return instant.astimezone(UTC)


@SETTINGS
@given(loan_histories(), QUIET)
def test_no_send_notification_inside_quiet_hours(history: tuple, quiet: tuple[time, time]) -> None:
    events, until = history
    policy = make_policy(quiet_hours_start=quiet[0], quiet_hours_end=quiet[1])
    out = route_all(events, [], until, policy)
    zones = {e["loan_id"]: ZoneInfo(e["timezone"]) for e in events}
    as_of = {e["event_id"]: e["as_of"] for e in events}
    for n in _values(out, "notify.requests"):
        assert _u(n["not_before"]) >= _u(n["created_at"])
        assert _u(n["created_at"]) == _u(as_of[n["source_event_id"]])
        if n["disposition"] == "SEND":
            local = n["not_before"].astimezone(zones[n["loan_id"]]).time()
            assert not in_window(local, *quiet), (n["kind"], n["not_before"])
            assert n["channel"] in ("push", "sms")


@SETTINGS
@given(loan_histories(), LEADS)
def test_no_negative_record_without_a_notice_the_lead_time_before(history: tuple, lead: timedelta) -> None:
    events, until = history
    policy = make_policy(bureau_lead_time=lead)
    out = route_all(events, [], until, policy)
    seen_notices: dict[str, dict[str, Any]] = {}
    for topic, _, value in out:
        if topic == "notify.requests" and value["kind"] == "NOTICE":
            seen_notices[value["notification_id"]] = value
        if topic == "bureau.records" and value["pboc_status"] in NEGATIVE and value["corrects"] is None:
            notice = seen_notices.get(value["notice_id"])
            assert notice is not None, "a negative record before (or without) its notice"
            assert notice["loan_id"] == value["loan_id"]
            assert _u(value["released_at"]) >= _u(notice["created_at"]) + lead
            assert _u(value["released_at"]) >= _u(value["as_of"])

    # Episodes that cured within the lead time (and were not retracted) report nothing negative.
    retracted = {e["retracts"] for e in events if e["type"] == "OVERDUE_RETRACTED"}
    by_loan: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if e["event_id"] not in retracted and e["type"] != "OVERDUE_RETRACTED":
            by_loan.setdefault(e["loan_id"], []).append(e)
    records = _values(out, "bureau.records")
    for loan_events in by_loan.values():
        for i, e in enumerate(loan_events):
            if e["type"] != "OVERDUE_OPENED":
                continue
            end = next(
                (x for x in loan_events[i + 1 :] if x["type"] in ("OVERDUE_CURED", "WRITTEN_OFF")), None
            )
            if (
                end is not None
                and end["type"] == "OVERDUE_CURED"
                and _u(end["as_of"]) < _u(e["as_of"]) + lead
            ):
                notice_id = make_id("ntf", "notice", e["event_id"])
                assert not [
                    r for r in records if r["notice_id"] == notice_id and r["pboc_status"] in NEGATIVE
                ]


@SETTINGS
@given(loan_histories())
def test_no_borrower_id_or_contact_in_any_partner_share(history: tuple) -> None:
    events, until = history
    policy = make_policy()
    out = route_all(events, [], until, policy)
    borrowers = {e["borrower_id"] for e in events}
    forbidden_keys = {"borrower_id", "contact", "channels", "locale", "channel", "fallback_channel"}

    def scan(value: Any) -> None:
        if isinstance(value, dict):
            assert not forbidden_keys & set(value), set(value)
            for v in value.values():
                scan(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                scan(v)
        elif isinstance(value, str):
            assert value not in borrowers and not any(b in value for b in borrowers)

    consented = {e["loan_id"]: set(e["partners"]) & set(policy.partners) for e in events}
    for share in _values(out, "partner.shares"):
        scan(share)
        for item in share["items"]:
            assert tuple(item) == ITEM_FIELDS
            assert share["partner_id"] in consented[item["loan_id"]]
    # The envelopes that cross the repartition topic are clean too.
    ledgers: dict[str, Any] = {}
    for e in events:
        from streams.core.routing.partners import EMPTY_LEDGER

        ledgers[e["loan_id"]], envelopes = step_fan_out(ledgers.get(e["loan_id"], EMPTY_LEDGER), e, policy)
        for _, envelope in envelopes:
            scan(envelope)


@SETTINGS
@given(loan_histories())
def test_exactly_one_close_task_per_cure_and_write_off(history: tuple) -> None:
    events, until = history
    out = route_all(events, [], until, make_policy())
    tasks = _values(out, "collections.tasks")
    assert len({t["task_id"] for t in tasks}) == len(tasks)
    closes = [t for t in tasks if t["action"] == "CLOSE"]
    cures = [e for e in events if e["type"] == "OVERDUE_CURED"]
    write_offs = [e for e in events if e["type"] == "WRITTEN_OFF"]
    assert len([t for t in closes if t["reason"] in ("CURED", "LOAN_CLOSED")]) == len(cures)
    assert len([t for t in closes if t["reason"] == "WRITTEN_OFF"]) == len(write_offs)
    for cure in cures:
        assert len([t for t in closes if t["task_id"] == make_id("tsk", "close", cure["event_id"])]) == 1
    # At most one CLOSE ... RETRACTED per loan here (each generated history retracts one episode).
    per_loan: dict[str, int] = {}
    for t in closes:
        if t["reason"] == "RETRACTED":
            per_loan[t["loan_id"]] = per_loan.get(t["loan_id"], 0) + 1
    assert all(n == 1 for n in per_loan.values())


def _stream(
    events: list[dict[str, Any]],
    ticks: list[datetime],
    until: datetime,
    policy: Any,
    lags: list[timedelta],
    redeliver: list[int],
    emitted_at: list[datetime] | None = None,
) -> Out:
    """The routers as the agents run them: events arrive late by ``lags`` after they were emitted
    (by default at their as_of), ticks on their own schedule, some events delivered twice."""
    deliveries: list[tuple[datetime, int, int, Any]] = []
    last = datetime.min.replace(tzinfo=UTC)
    emitted_at = emitted_at or [e["as_of"] for e in events]
    for i, (e, lag) in enumerate(zip(events, lags, strict=True)):
        last = max(last, _u(emitted_at[i]) + lag)  # the detector emits a loan's events in order
        deliveries.append((last, 1, i, e))
        if i in redeliver:
            deliveries.append((last + timedelta(minutes=5), 1, i, e))
    deliveries += [(_u(t), 0, -1, None) for t in ticks]  # at a tie the tick wins: the adversarial case
    deliveries.sort(key=lambda d: (d[0], d[1], d[2]))
    routers = Routers(policy)
    out: Out = []
    for instant, kind, _, e in deliveries:
        out += routers.on_tick(instant) if kind == 0 else routers.on_event(e)
    return out + routers.on_tick(until)


def _unchained(topic: str, value: dict[str, Any]) -> dict[str, Any]:
    """A routed value without its chain fields: where a bureau record sits in its loan's chain
    depends on the corrections the stream had to send, what it says does not."""
    if topic != "bureau.records":
        return value
    return {k: v for k, v in value.items() if k not in chain.CHAIN_FIELDS}


def _chains_hold(out: Out) -> dict[str, list[dict[str, Any]]]:
    """The bureau records of ``out`` by loan, asserted to form chains that hold (identical
    re-sends allowed), without the re-sends."""
    records = _values(out, "bureau.records")
    result = chain.verify((r, str(i), r["loan_id"]) for i, r in enumerate(records))
    assert result.holds, result.lines()
    by_loan: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r not in by_loan.setdefault(r["loan_id"], []):
            by_loan[r["loan_id"]].append(r)
    return by_loan


def _effective(out: Out) -> dict[tuple[str, str], dict[str, Any]]:
    """The outputs after applying corrections: voided bureau records and the corrections dropped."""
    voided = {v["corrects"] for t, _, v in out if t == "bureau.records" and v["corrects"]}
    result: dict[tuple[str, str], dict[str, Any]] = {}
    for topic, _, value in out:
        if topic == "bureau.records" and (value["corrects"] or value["record_id"] in voided):
            continue
        value = _unchained(topic, value)
        key = (topic, _id(topic, value))
        assert result.get(key, value) == value, f"two contents for one id {key}"
        result[key] = value
    return result


@SETTINGS
@given(loan_histories(), st.data())
def test_outputs_do_not_depend_on_tick_timing_or_redelivery(history: tuple, data: st.DataObject) -> None:
    events, until = history
    policy = replace(
        make_policy(), collection_cap_per_day=99
    )  # the cap's arrival-order caveat is tested apart
    start = min(_u(e["as_of"]) for e in events)
    span = max(1, int((_u(until) - start).total_seconds()))
    ticks = sorted(
        start + timedelta(seconds=s) for s in data.draw(st.lists(st.integers(0, span), max_size=40))
    )
    lags = [timedelta(minutes=data.draw(st.integers(0, 120))) for _ in events]
    redeliver = data.draw(st.sets(st.integers(0, max(0, len(events) - 1)), max_size=5))
    replayed_out = route_all(events, [], until, policy)
    streamed_out = _stream(events, ticks, until, policy, lags, list(redeliver))
    replayed, streamed = _effective(replayed_out), _effective(streamed_out)
    assert set(streamed) == set(replayed)
    for key, value in replayed.items():
        assert streamed[key] == value, key
    # SPEC §7.1: the chains hold in both; events in order (however ticks fall), the same hashes
    in_replay, in_stream = _chains_hold(replayed_out), _chains_hold(streamed_out)
    if not any(lags):
        assert in_stream == in_replay


@SETTINGS
@given(loan_histories())
def test_route_all_is_deterministic_and_ordered(history: tuple) -> None:
    from streams.core.routing import emission_instant

    events, until = history
    policy = make_policy()
    first = route_all(events, [], until, policy)
    assert route_all(list(events), [], until, policy) == first
    instants = [_u(emission_instant(t, v)) for t, _, v in first]
    assert instants == sorted(instants)
    assert all(i <= _u(until) for i in instants)
    ids = [(t, _id(t, v)) for t, _, v in first]
    assert len(ids) == len(set(ids))
    assert all(k in PARTNERS or t != "partner.shares" for t, k, _ in first)


def _apply_retractions(out: Out, stream: list[dict[str, Any]]) -> tuple[dict, set]:
    """What a consumer holds after applying retractions and corrections, per topic."""
    retracted = {e["retracts"] for e in stream if e["type"] == "OVERDUE_RETRACTED"}
    retractions = {e["event_id"] for e in stream if e["type"] == "OVERDUE_RETRACTED"}
    withdrawn = {(e["loan_id"], _u(e["as_of"]), e["type"]) for e in stream if e["event_id"] in retracted}
    gone = retracted | retractions
    dead_tasks = {make_id("tsk", role, s) for s in gone for role in ("entry", "close", "reinstated")}
    voided = {v["corrects"] for t, _, v in out if t == "bureau.records" and v["corrects"]}
    kept: dict[tuple[str, str], dict[str, Any]] = {}
    digest_items: set = set()
    for topic, _, v in out:
        if topic == "notify.requests" and v["source_event_id"] in gone:
            continue
        if topic == "bureau.records" and (v["corrects"] or v["record_id"] in voided):
            continue
        if topic == "collections.tasks" and v["task_id"] in dead_tasks:
            continue
        v = _unchained(topic, v)
        if topic == "partner.shares":
            for item in v["items"]:
                if (
                    item["type"] == "RETRACTED"
                    or (item["loan_id"], _u(item["as_of"]), item["type"]) in withdrawn
                ):
                    continue
                frozen = tuple((k, _u(x) if isinstance(x, datetime) else x) for k, x in item.items())
                digest_items.add((v["partner_id"], v["mode"], _u(v["as_of"]), frozen))
            continue
        kept[(topic, _id(topic, v))] = v
    return kept, digest_items


@SETTINGS
@given(stream_and_truth(), st.data())
def test_the_stream_equals_the_replay_after_retractions(case: tuple, data: st.DataObject) -> None:
    """SPEC §4/§5: late data in the stream (retractions, back-dated transitions) ends, once the
    routers' compensations are applied, with exactly what replay of the truth gives."""
    timed, truth, until = case
    policy = replace(
        make_policy(), collection_cap_per_day=99
    )  # the cap's arrival-order caveat is tested apart
    events = [e for _, e in timed]
    start = min(_u(t) for t, _ in timed)
    span = max(1, int((_u(until) - start).total_seconds()))
    ticks = sorted(
        start + timedelta(seconds=s) for s in data.draw(st.lists(st.integers(0, span), max_size=30))
    )
    lags = [timedelta(seconds=data.draw(st.integers(0, 300))) for _ in events]
    streamed = _stream(events, ticks, until, policy, lags, [], [t for t, _ in timed])
    replayed = route_all(truth, [], until, policy)
    assert not [e for e in truth if e["type"] == "OVERDUE_RETRACTED"]
    _chains_hold(streamed)  # the stream's chains hold the corrections it sent, and stay valid
    _chains_hold(replayed)
    s_kept, s_items = _apply_retractions(streamed, events)
    r_kept, r_items = _apply_retractions(replayed, truth)
    assert set(s_kept) == set(r_kept)
    for key, value in r_kept.items():
        assert s_kept[key] == value, key
    assert s_items == r_items
