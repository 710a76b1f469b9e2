"""The router shells drive the one router engine exactly as replay does, whatever the batching,
and one loan's failure sets that loan alone aside."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta
from itertools import groupby
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings

from streams.contracts import codec
from streams.core.dates import parse_instant
from streams.core.routing import bureau, route_all
from streams.core.routing.engine import BUREAU, _notification_order
from streams.dev.book import generate
from streams.policy_loader import load_policy
from streams.replay import replay
from streams.worker.agents import Later, routed_later
from streams.worker.effects import Effects, Source
from streams.worker.routers import LoanRouters, Notifier, PartnerDigests
from streams.worker.tables import (
    CODECS,
    NOTIFY_BY_BORROWER,
    PARTNER_ITEMS,
    decode_router,
    encode_router,
    stored_due,
)
from tests.support.routing import at, event, loan_histories, make_policy, retraction

POLICY = """
[partners.P-ANTFIN]
key = "ant-financial-test-key-0123456789abcdef"
mode = "REALTIME"
[partners.P-CITYBANK]
key = "city-bank-test-key-0123456789abcdef-xyz"
mode = "DIGEST"
"""


class Shells:
    """The three router stages of one worker with one partition, handing over in-process as the
    internal topics would, their tables written after each step as the checkpoint writes them."""

    def __init__(self, policy: Any) -> None:
        self.table: dict[tuple[str, str], bytes] = {}
        load = lambda table, partition, key: self.table.get((table, key))  # noqa: E731
        self.loans = LoanRouters(policy, load, 1)
        self.notifier = Notifier(policy, load)
        self.digests = PartnerDigests(policy, load, 1)
        self.sent: Counter = Counter()
        self._handoffs: list[Any] = []

    def take(self, effects: Effects) -> None:
        for (table, key), state in effects.writes.items():
            self.table[(table, key)] = encode_router(table, state)
        for send in effects.sends:
            if send.topic in (NOTIFY_BY_BORROWER, PARTNER_ITEMS):
                self._handoffs.append(send)
            else:
                self.sent[(send.topic, send.key.decode(), send.value)] += 1

    def drain(self, borrowers_in_replay_order: bool = False) -> None:
        """The handed-over records through their stages; notifications of one instant in replay's
        order when asked (the stream's borrower stage takes them as they arrive)."""
        while self._handoffs:
            handoffs, self._handoffs = self._handoffs, []
            items = [s for s in handoffs if s.topic == PARTNER_ITEMS]
            notes = [s for s in handoffs if s.topic == NOTIFY_BY_BORROWER]
            for send in items:
                source = Source(PARTNER_ITEMS, 0, 0, send.key, send.value, tuple(send.headers))
                self.take(self.digests.on_record(source))
            if borrowers_in_replay_order:
                notes.sort(key=lambda s: _notification_order(codec.decode("OverdueEvent", s.value)))
            for send in notes:
                self.take(self.notifier.on_event(Source(NOTIFY_BY_BORROWER, 0, 0, send.key, send.value)))

    def events(self, events: list[dict[str, Any]]) -> None:
        self.take(self.loans.on_events(0, [(e, codec.encode("OverdueEvent", e)) for e in events]))
        self.drain(borrowers_in_replay_order=True)

    def tick(self, at: datetime) -> None:
        self.take(self.loans.on_tick(0, at))
        self.drain()


def _expected(events: list[dict[str, Any]], until: datetime, policy: Any) -> Counter:
    return Counter(
        (topic, key, codec.encode(codec.TOPIC_RECORD[topic], value))
        for topic, key, value in route_all(events, [], until, policy)
    )


def test_one_catch_up_batch_routes_like_replay(tmp_path) -> None:
    """A tick after downtime hands the routers a whole history at once; states must thread through it."""
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY)
    policy = load_policy(str(policy_file))
    book = generate(60, date(2026, 3, 1), 60, seed=5)
    until = parse_instant(max(r.event_time for r in book))
    events = [o.value for o in replay([r.as_line() for r in book], until) if o.topic == "overdue.events"]
    shells = Shells(policy)
    shells.take(shells.loans.on_events(0, [(e, codec.encode("OverdueEvent", e)) for e in events]))
    shells.drain()
    shells.tick(until)
    expected = _expected(events, until, policy)
    assert sum(expected.values()) > 50
    assert shells.sent == expected


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(loan_histories())
def test_the_stream_side_adapters_route_exactly_what_the_engine_routes_in_replay(history: tuple) -> None:
    """Random event sequences (reminders, episodes of every shape, retractions, several loans of a
    few borrowers, partners in both modes) through the engine with its in-memory port (replay's
    ``route_all``) and through the worker's three stages: the same records."""
    events, until = history
    policy = make_policy()
    shells = Shells(policy)
    for instant, at_instant in groupby(events, key=lambda e: e["as_of"]):
        shells.tick(instant)
        shells.events(list(at_instant))
    shells.tick(until)
    assert shells.sent == _expected(events, until, policy)


def test_stored_router_states_carry_their_wake_up_and_read_back(tmp_path) -> None:
    """A restart indexes bureau and partner states from a header; it must equal decoding them."""
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY)
    policy = load_policy(str(policy_file))
    book = generate(40, date(2026, 3, 1), 60, seed=6)
    until = parse_instant(max(r.event_time for r in book))
    events = [o.value for o in replay([r.as_line() for r in book], until) if o.topic == "overdue.events"]
    routers = LoanRouters(policy, lambda table, partition, key: None, 1)
    states = []  # every state a step wrote, including those a later step replaced
    for e in events:
        effects = routers.on_event(0, e, codec.encode("OverdueEvent", e))
        states += [state for (table, _), state in effects.writes.items() if table == BUREAU]
    assert any(bureau.next_due(s) is not None for s in states) and any(
        bureau.next_due(s) is None for s in states
    )
    for state in states:
        data = encode_router(BUREAU, state)
        assert decode_router(BUREAU, data) == state
        assert stored_due(BUREAU, data) == bureau.next_due(state)
        bare = CODECS[BUREAU][1](state)  # as written before the header existed
        assert decode_router(BUREAU, bare) == state and stored_due(BUREAU, bare) == bureau.next_due(state)


def test_deferred_routing_keeps_order_and_a_failing_router_sets_each_loan_aside_alone() -> None:
    """A tick's routing runs after the batch's ticks (``agents.routed_later``), in order. A
    router that fails for a loan sets that loan aside (SPEC §2): its events go to the DLQ from
    overdue.events with a ``loan_id`` header, its router states are not written, and the other
    loans of the same step are routed."""
    book = generate(20, date(2026, 3, 1), 60, seed=6)
    until = parse_instant(max(r.event_time for r in book))
    events = [o.value for o in replay([r.as_line() for r in book], until) if o.topic == "overdue.events"]
    routed = [(e, codec.encode("OverdueEvent", e)) for e in events]
    repayment = SimpleNamespace(key=b"L1", value=b"repayment bytes", partition=3, offset=41)
    tick = SimpleNamespace(key=None, value=b"tick bytes", partition=3, offset=7)
    later = [
        Later(repayment, "loan.repayments", 3, Effects(routed=routed)),
        Later(tick, "clock.ticks", 3, None, until),
    ]
    policy = load_policy(None)
    steps = routed_later(later, LoanRouters(policy, lambda table, partition, key: None, 12))
    assert [(record, logical) for record, logical, _ in steps] == [
        (repayment, "loan.repayments"),
        (tick, "clock.ticks"),
    ]
    assert steps[0][2].sends and not any(s.topic == "duewatch.dlq" for _, _, e in steps for s in e.sends)

    victim = events[0]["loan_id"]
    seen: list[int] = []

    def broken(table: str, partition: int, key: str):
        seen.append(partition)
        if key == victim:
            raise RuntimeError("this loan's state does not decode")
        return None

    routers = LoanRouters(policy, broken, 12)
    [(record, logical, effects)] = routed_later(later[:1], routers)
    assert set(seen) == {3}, "states are read in the step's own partition"
    dead = [s for s in effects.sends if s.topic == "duewatch.dlq"]
    headers = dict(dead[0].headers)
    assert headers["source_topic"] == b"overdue.events" and headers["reason"] == b"INTERNAL_ERROR"
    assert headers["loan_id"] == victim.encode() and dead[0].value == routed[0][1]
    assert {dict(s.headers)["reason"] for s in dead[1:]} <= {b"LOAN_SET_ASIDE"}
    assert len(dead) == sum(1 for e in events if e["loan_id"] == victim)
    assert ("set-aside", victim) in effects.writes and routers.aside.holds(3, victim)
    assert all(key != victim for table, key in effects.writes if table != "set-aside")
    others = {e["loan_id"] for e in events} - {victim}
    assert others and others <= {key for _, key in effects.writes}


def test_the_bureau_shell_releases_a_record_held_again_at_its_last_tick() -> None:
    """A record held again at the very instant of the last tick (retracted opening, re-opened)
    once made the shell's tick loop spin forever; it is released at the next tick, once."""
    shells = Shells(load_policy(None))

    def records() -> int:
        return sum(n for (topic, *_), n in shells.sent.items() if topic == "bureau.records")

    release_at = at("2026-03-17T00:00:00+08:00")
    facts = {"total": 105_000, "oldest": date(2026, 3, 15), "first_delinquency": date(2026, 3, 16)}
    first = event("OVERDUE_OPENED", at("2026-03-16T00:00:00+08:00"), dpd=1, previous_bucket="M0", **facts)
    shells.events([first])
    shells.tick(release_at)
    assert records() == 1
    shells.events([retraction(first, at("2026-03-17T10:00:00+08:00"))])
    shells.events([event("OVERDUE_OPENED", at("2026-03-16T00:00:00+08:00"), dpd=1, previous_bucket="M0",
                         event_id="E-reopened", **facts)])  # fmt: skip
    before = records()
    shells.tick(release_at + timedelta(seconds=1))
    assert records() == before + 1
    assert bureau.next_due(shells.loans.cache.get(BUREAU, 0, "L1")) is None
