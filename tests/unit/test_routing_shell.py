"""The router shells drive the pure routers exactly as replay does, whatever the batching."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta

from streams.contracts import codec
from streams.core.dates import parse_instant
from streams.core.routing import route_all
from streams.dev.book import generate
from streams.policy_loader import load_policy
from streams.replay import replay
from streams.routing_shell import (
    NOTIFY_BY_BORROWER,
    PARTNER_ITEMS,
    LoanRouters,
    Notifier,
    PartnerDigests,
    encode,
)

POLICY = """
[partners.P-ANTFIN]
key = "ant-financial-test-key-0123456789abcdef"
mode = "REALTIME"
[partners.P-CITYBANK]
key = "city-bank-test-key-0123456789abcdef-xyz"
mode = "DIGEST"
"""


def test_one_catch_up_batch_routes_like_replay(tmp_path) -> None:
    """A tick after downtime hands the routers a whole history at once; states must thread through it."""
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY)
    policy = load_policy(str(policy_file))
    book = generate(60, date(2026, 3, 1), 60, seed=5)
    records = [r.as_line() for r in book]
    until = parse_instant(max(r.event_time for r in book))
    events = [o.value for o in replay(records, until) if o.topic == "overdue.events"]
    expected = Counter(
        (topic, key, codec.encode(codec.TOPIC_RECORD[topic], value)) for topic, key, value in route_all(events, [], until, policy)
    )
    table: dict = {}

    def load(name: str, key: str):
        return table.get((name, key))

    loans, notifier, digests = LoanRouters(policy, load, 1), Notifier(policy, load), PartnerDigests(policy, load, 1)
    got: Counter = Counter()
    queue = [loans.on_events(0, [(e, codec.encode("OverdueEvent", e)) for e in events]), loans.on_tick(0, until)]
    while queue:
        effects = queue.pop(0)
        for name, key, state in effects.writes:  # written only after the whole batch: as in the stream
            table[(name, key)] = encode(name, state)
        for send in effects.sends:
            if send.topic == NOTIFY_BY_BORROWER:
                queue.append(notifier.on_event(0, 0, send.key, send.value))
            elif send.topic == PARTNER_ITEMS:
                marker = dict(send.headers).get("tick_marker")
                queue.append(digests.on_marker(0, int(marker), send.value) if marker else digests.on_item(0, 0, send.key, send.value))
            else:
                got[(send.topic, send.key.decode(), send.value)] += 1
    assert sum(expected.values()) > 50
    assert got == expected


def test_stored_router_states_carry_their_wake_up_and_read_back(tmp_path) -> None:
    """A restart indexes bureau and partner states from a header; it must equal decoding them."""
    from streams.core.routing import bureau
    from streams.routing_shell import BUREAU_TABLE, CODECS, decode, stored_due

    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY)
    policy = load_policy(str(policy_file))
    book = generate(40, date(2026, 3, 1), 60, seed=6)
    until = parse_instant(max(r.event_time for r in book))
    events = [o.value for o in replay([r.as_line() for r in book], until) if o.topic == "overdue.events"]
    routers = LoanRouters(policy, lambda name, key: None, 1)
    effects = routers.on_events(0, [(e, codec.encode("OverdueEvent", e)) for e in events])
    states = [state for name, _, state in effects.writes if name == BUREAU_TABLE]
    assert any(bureau.next_due(s) is not None for s in states) and any(bureau.next_due(s) is None for s in states)
    for state in states:
        data = encode(BUREAU_TABLE, state)
        assert decode(BUREAU_TABLE, data) == state
        assert stored_due(BUREAU_TABLE, data) == bureau.next_due(state)
        bare = CODECS[BUREAU_TABLE][1](state)  # as written before the header existed
        assert decode(BUREAU_TABLE, bare) == state and stored_due(BUREAU_TABLE, bare) == bureau.next_due(state)


def test_deferred_routing_keeps_order_and_a_failing_router_sets_each_loan_aside_alone() -> None:
    """A tick's routing runs after the batch's ticks (``streams.app.routed_later``), in order. A
    router that fails for a loan sets that loan aside (SPEC §2): its events go to the DLQ from
    overdue.events with a ``loan_id`` header, its router states are not written, and the other
    loans of the same step are routed."""
    from types import SimpleNamespace

    from streams.app import routed_later
    from streams.detector import Effects

    book = generate(20, date(2026, 3, 1), 60, seed=6)
    until = parse_instant(max(r.event_time for r in book))
    events = [o.value for o in replay([r.as_line() for r in book], until) if o.topic == "overdue.events"]
    routed = [(e, codec.encode("OverdueEvent", e)) for e in events]
    repayment = SimpleNamespace(key=b"L1", value=b"repayment bytes", partition=3, offset=41)
    tick = SimpleNamespace(key=None, value=b"tick bytes", partition=3, offset=7)
    later = [(repayment, "loan.repayments", 3, Effects(routed=routed), None), (tick, "clock.ticks", 3, None, until)]
    pointed: list[int] = []
    policy = load_policy(None)
    entries = routed_later(later, LoanRouters(policy, lambda name, key: None, 12), pointed.append)
    assert pointed == [3, 3]
    assert [(record, logical) for record, logical, _ in entries] == [(repayment, "loan.repayments"), (tick, "clock.ticks")]
    assert entries[0][2].sends and not any(s.topic == "duewatch.dlq" for _, _, e in entries for s in e.sends)

    victim = events[0]["loan_id"]

    def broken(name: str, key: str):
        if key == victim:
            raise RuntimeError("this loan's state does not decode")
        return None

    routers = LoanRouters(policy, broken, 12)
    [(record, logical, effects)] = routed_later(later[:1], routers, pointed.append)
    dead = [s for s in effects.sends if s.topic == "duewatch.dlq"]
    headers = dict(dead[0].headers)
    assert headers["source_topic"] == b"overdue.events" and headers["reason"] == b"INTERNAL_ERROR"
    assert headers["loan_id"] == victim.encode() and dead[0].value == routed[0][1]
    assert {dict(s.headers)["reason"] for s in dead[1:]} <= {b"LOAN_SET_ASIDE"}
    assert len(dead) == sum(1 for e in events if e["loan_id"] == victim)
    assert list(effects.aside) == [victim] and routers.aside.holds(3, victim)
    assert all(key != victim for _, key, _ in effects.writes)
    others = {e["loan_id"] for e in events} - {victim}
    assert others and others <= {key for _, key, _ in effects.writes}


def test_the_bureau_shell_releases_a_record_held_again_at_its_last_tick_and_stops(caplog) -> None:
    """The shell ticks a loan until nothing is due by the clock. A record held again at the very
    instant of the last tick (retracted opening, re-opened) once made that loop spin forever."""
    from streams.core.routing import bureau
    from streams.routing_shell import BUREAU_TABLE, _stuck
    from tests.unit.test_routing_bureau import RELEASE_AT, opened
    from tests.unit.test_routing_support import at, retraction

    table: dict = {}
    routers = LoanRouters(load_policy(None), lambda name, key: table.get((name, key)), 1)

    def send(*events):
        effects = routers.on_events(0, [(e, codec.encode("OverdueEvent", e)) for e in events])
        for name, key, state in effects.writes:
            table[(name, key)] = encode(name, state)

    def bureau_records(effects) -> list:
        return [s for s in effects.sends if s.topic == "bureau.records"]

    first = opened()
    send(first)
    assert len(bureau_records(routers.on_tick(0, RELEASE_AT))) == 1
    send(retraction(first, at("2026-03-17T10:00:00+08:00")))
    send(opened(event_id="E-reopened"))
    assert len(bureau_records(routers.on_tick(0, RELEASE_AT + timedelta(seconds=1)))) == 1
    assert bureau.next_due(routers.cache.get(BUREAU_TABLE, "L1")) is None
    assert not _stuck(None, RELEASE_AT, BUREAU_TABLE) and not _stuck(RELEASE_AT + timedelta(1), RELEASE_AT, "x")
    assert _stuck(RELEASE_AT, RELEASE_AT, BUREAU_TABLE) and "made no progress" in caplog.text
