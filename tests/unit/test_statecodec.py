"""The loan state survives the table: what goes into RocksDB comes back equal and keeps working."""

from __future__ import annotations

from streams.core import statecodec
from tests.support.builders import at, payment, schedule
from tests.support.story import Stream


def test_round_trip_mid_episode_with_retractions() -> None:
    stream = Stream().run(
        [
            schedule(dues=[("2026-03-15", 100_000, 500, 100), ("2026-04-15", 100_000)], penalty_rate_bps=3650, late_fee=300, partners=["P1"]),
            at("2026-03-20"),
            payment("p1", 100_600, "2026-03-15T18:00"),  # late: retracts the OPENED
            payment("r1", 100_600, "2026-03-19T18:00", kind="REVERSAL", reverses="p1"),
            at("2026-04-30"),
        ]
    )
    state = stream.state
    assert state.retracted and state.carry.open
    data = statecodec.dumps(state)
    assert statecodec.loads(data) == state
    assert len(data) < 2000


def test_a_restored_state_continues_exactly_like_the_original() -> None:
    a = Stream().run([schedule(dues=[("2026-03-15", 1000), ("2026-04-15", 1000)]), at("2026-03-20")])
    b = Stream()
    b.state = statecodec.loads(statecodec.dumps(a.state))
    b.now = a.now
    before = len(a.events)
    for stream in (a, b):
        stream.feed(payment("p1", 1000, "2026-03-25"))
        stream.tick(at("2026-06-01"))
    assert a.events[before:] == b.events and len(b.events) >= 4
