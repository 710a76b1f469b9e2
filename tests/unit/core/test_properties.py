"""Properties of the core over generated loans (hypothesis).

- Delivering a loan's records in any order, with the tick clock running ahead of some of
  them, ends — after applying retractions — with exactly the transitions of event-time
  order (replay). The only orders excluded are the ones Kafka itself rules out or SPEC
  sends to the DLQ: a reversal before its payment (same partition, so never reordered).
- Duplicates change nothing.
- Replaying the same records twice, or in another input order, gives identical ids.
- After every record and tick, what the loan keeps incrementally (its ledger, extended a
  repayment at a time, and its carry, stepped on from the last one) equals a walk from
  scratch over its records.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.config import EngineConfig
from streams.core.loan import LoanState, wake_at
from streams.core.records import parse_repayment, parse_schedule
from streams.core.timeline import Ledger, walk
from streams.replay import replay
from tests.support.builders import standing
from tests.support.story import Stream, loan_story

CFG = EngineConfig()


def _content(event: dict[str, Any]) -> tuple:
    return tuple(
        sorted((k, str(v)) for k, v in event.items() if k not in ("event_id", "detected_at", "retracts"))
    )


@st.composite
def delivery(draw, story: dict[str, Any]) -> list:
    """A random arrival order of the story's records (reversals after their payments), with ticks and repeats."""
    pending = list(story["records"])
    order: list = []
    delivered: set[str] = set()
    clock = story["start"]
    schedule_seen = False
    while pending:
        ready = [
            r
            for r in pending
            if r[0] != "loan.repayments" or r[1]["kind"] == "PAYMENT" or r[1]["reverses"] in delivered
        ]
        chosen = draw(st.sampled_from(ready))
        pending.remove(chosen)
        order.append(chosen)
        schedule_seen = schedule_seen or chosen[0] == "loan.schedules"
        if chosen[0] == "loan.repayments":
            delivered.add(chosen[1]["payment_id"])
        if draw(st.integers(0, 4)) == 0:
            order.append(draw(st.sampled_from(order)))  # a repeat of something already sent
        if schedule_seen and draw(st.booleans()):
            clock += timedelta(minutes=draw(st.integers(0, 60 * 24 * 40)))
            order.append(min(clock, story["until"]))
    return order


def _parse(item):
    topic, value = item
    return parse_schedule(value) if topic == "loan.schedules" else parse_repayment(value)


def _replayed(story: dict[str, Any]) -> list[dict[str, Any]]:
    lines = [{"topic": t, "key": "L", "value": v} for t, v in story["records"]]
    outputs = replay(lines, story["until"], EngineConfig(settle=timedelta(0)))
    assert not [o for o in outputs if o.topic == "duewatch.dlq"]
    return standing([o.value for o in outputs if o.topic == "overdue.events"])


def _streamed(order: list, until: datetime) -> Stream:
    stream = Stream("L", CFG)
    for item in order:
        if isinstance(item, datetime):
            stream.tick(item)
        else:
            stream.feed(_parse(item))
    stream.tick(until + CFG.settle)
    return stream


PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.data())
def test_any_arrival_order_ends_where_event_time_order_does(data) -> None:
    story = data.draw(loan_story())
    order = data.draw(delivery(story))
    expected = _replayed(story)
    stream = _streamed(order, story["until"])
    assert stream.refused == []
    got = [e for e in standing(stream.events) if e["as_of"] <= story["until"]]
    assert sorted(map(_content, got)) == sorted(map(_content, expected))
    if not stream.state.retracted:
        assert {e["event_id"] for e in got} == {e["event_id"] for e in expected}


@PROPERTY
@given(st.data())
def test_duplicates_change_nothing(data) -> None:
    story = data.draw(loan_story())
    order = [item for item in data.draw(delivery(story))]
    once: list = []
    for item in order:
        if isinstance(item, datetime) or item not in once:
            once.append(item)
    with_repeats = _streamed(order, story["until"])
    without = _streamed(once, story["until"])
    assert standing(with_repeats.events) == standing(without.events)
    assert with_repeats.refused == without.refused == []


@PROPERTY
@given(st.data())
def test_replaying_twice_and_in_any_input_order_gives_identical_ids(data) -> None:
    story = data.draw(loan_story())
    lines = [{"topic": t, "key": "L", "value": v} for t, v in story["records"]]
    # Any order, except a reversal ahead of its payment (one partition never reorders them; SPEC refuses it).
    shuffled = data.draw(st.permutations(lines))
    shuffled.sort(key=lambda line: line["value"].get("kind") == "REVERSAL")
    first = [o.as_record() for o in replay(lines, story["until"])]
    second = [o.as_record() for o in replay(lines, story["until"])]
    assert first == second
    # Input order only breaks ties between records at one instant; ids never depend on it.
    ids = sorted(r["value"]["event_id"] for r in first if r["topic"] == "overdue.events")
    reordered = replay(shuffled, story["until"])
    assert sorted(o.value["event_id"] for o in reordered if o.topic == "overdue.events") == ids


def _from_scratch(state: LoanState) -> tuple[Ledger, Any]:
    """The loan's records indexed anew and walked from its origin to its cursor."""
    ledger = Ledger(state.schedules, state.repayments, state.sealed.paid if state.sealed else 0)
    cursor = state.carry.cursor
    if cursor is None:
        return ledger, state.origin
    carry, _ = walk(ledger, state.origin, CFG, lambda at, timed: at <= cursor, state.retracted_ids())
    return ledger, carry


@PROPERTY
@given(st.data())
def test_the_incremental_state_equals_a_walk_from_scratch_after_every_record(data) -> None:
    story = data.draw(loan_story())
    stream = Stream("L", CFG)
    for item in data.draw(delivery(story)):
        if isinstance(item, datetime):
            stream.tick(item)
        else:
            stream.feed(_parse(item))
        state = stream.state
        ledger, carry = _from_scratch(state)
        kept = state.ledger()
        assert {name: getattr(kept, name) for name in Ledger.__slots__} == {
            name: getattr(ledger, name) for name in Ledger.__slots__
        }
        assert state.carry == carry
        fresh = LoanState(
            state.loan_id, state.schedules, state.repayments, carry, state.retracted, state.sealed
        )
        assert wake_at(state, CFG) == wake_at(fresh, CFG)
