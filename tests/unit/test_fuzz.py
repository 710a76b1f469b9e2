"""The fuzz suite (SPEC §2): hostile records mixed into a good book never change what the good
loans report, and each reaches the DLQ with its reason — in replay and in the detector's shell.

`make test` runs a bounded number of examples; `make fuzz` runs many more
(``HYPOTHESIS_PROFILE=fuzz``). The chaos run's poison records are regression tests of their
own below, and through the stream in tests/integration/test_poison.py.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.contracts import codec
from streams.core import errors, statecodec
from streams.core.config import EngineConfig
from streams.dev.book import generate
from streams.replay import replay
from streams.worker.detector import Detector
from streams.worker.effects import Source
from tests.support import hostile
from tests.support.hostile import Bad

UNTIL = datetime(2026, 9, 1, tzinfo=UTC)
NOW = datetime(2026, 9, 2, tzinfo=UTC)


@cache
def good_book(seed: int) -> tuple[dict, ...]:
    """A small book (and one loan with every field at its bound), as replay lines."""
    lines = [r.as_line() for r in generate(6, date(2026, 3, 1), 90, seed=seed)]
    lines.append({"topic": hostile.SCHEDULES, "key": "EDGE", "value": hostile.at_bounds("EDGE")})
    return tuple(lines)


def _loans(lines) -> list[str]:
    return sorted({line["key"] for line in lines if line["topic"] == hostile.SCHEDULES})


def _mixed(good, bad: list[Bad], seed: int) -> list:
    """``bad`` records at random places among ``good`` (whose own order is kept)."""
    rng = random.Random(seed)
    out = list(good)
    for record in bad:
        out.insert(rng.randint(0, len(out)), record)
    return out


def _records(outputs) -> list[dict]:
    return [o.as_record() for o in outputs if o.topic != "duewatch.dlq"]


def _reasons(outputs) -> Counter:
    return Counter(o.headers["reason"] for o in outputs if o.topic == "duewatch.dlq")


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_replay_of_a_book_with_hostile_records_gives_the_good_loans_events_and_dead_letters_the_rest(
    data,
) -> None:
    seed = data.draw(st.integers(0, 3), label="book")
    good = good_book(seed)
    bad = [b for b in data.draw(hostile.bad_records(_loans(good)), label="bad") if b.raw is None]
    mixed = _mixed(good, bad, data.draw(st.integers(0, 10**6), label="places"))
    lines = [m.as_line() if isinstance(m, Bad) else m for m in mixed]
    alone, together = replay(list(good), UNTIL), replay(lines, UNTIL)
    assert _records(together) == _records(alone)
    assert _reasons(together) - _reasons(alone) == Counter(b.reason for b in bad)


class Table(dict):
    """What the agent would have written: the loans' stored bytes."""

    def write(self, effects) -> None:
        for (table, loan_id), value in effects.writes.items():
            if table == "loans":
                self[loan_id] = statecodec.dumps(value[0])

    def load(self, partition: int, loan_id: str) -> bytes | None:
        return self.get(loan_id)


def _through_the_shell(items: list) -> tuple[list[dict], Counter]:
    """Records as Kafka bytes through the detector's shell, one tick at the end: the standing
    events (JSON form) and the DLQ reasons."""
    table = Table()
    detector = Detector(EngineConfig(settle=timedelta(0)), table.load)
    events, reasons = [], Counter()
    for offset, item in enumerate(items):
        if isinstance(item, Bad):
            source = Source(
                item.topic, 0, offset, None if item.key is None else item.key.encode(), item.as_bytes()
            )
        else:
            record_type = codec.TOPIC_RECORD[item["topic"]]
            value = codec.encode(record_type, codec.from_json(record_type, item["value"]))
            source = Source(item["topic"], 0, offset, item["key"].encode(), value)
        effects = detector.handle(source, NOW)
        table.write(effects)
        events += effects.events
        reasons.update(effects.dlq)
    tick = Source("clock.ticks", 0, len(items), None, codec.encode("Tick", {"as_of": UNTIL}))
    effects = detector.on_tick(tick, UNTIL, NOW)
    events += effects.events
    reasons.update(effects.dlq)
    return [codec.to_json("OverdueEvent", e.to_dict()) for e in events], reasons


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_the_shell_takes_hostile_bytes_and_the_good_loans_report_what_replay_says(data) -> None:
    seed = data.draw(st.integers(0, 3), label="book")
    good = [line for line in good_book(seed) if line["topic"] in (hostile.SCHEDULES, hostile.REPAYMENTS)]
    bad = data.draw(hostile.bad_records(_loans(good)), label="bad")
    mixed = _mixed(sorted(good, key=_event_time), bad, data.draw(st.integers(0, 10**6), label="places"))
    events, reasons = _through_the_shell(mixed)
    expected = [
        codec.to_json("OverdueEvent", o.value) for o in replay(good, UNTIL) if o.topic == "overdue.events"
    ]
    assert sorted(e["event_id"] for e in events) == sorted(e["event_id"] for e in expected)
    good_reasons = _through_the_shell(sorted(good, key=_event_time))[1]
    assert reasons - good_reasons == Counter(b.reason for b in bad)


def _event_time(line: dict) -> str:
    value = line["value"]
    return codec.from_json(codec.TOPIC_RECORD[line["topic"]], value)[
        "effective_at" if line["topic"] == hostile.SCHEDULES else "paid_at"
    ].isoformat()


# --- the chaos run's findings, one regression test each ---------------------------------------


@pytest.mark.parametrize("index", range(5), ids=[name for name, _, _ in hostile.SCHEDULE_BREAKS[:5]])
def test_each_poison_schedule_is_refused_and_the_good_loans_go_on(index: int) -> None:
    """Each of these was accepted once, and every tick of its partition then failed."""
    good = list(good_book(0))
    poison = hostile.broken_schedule(index, "POISON")
    together = replay([poison.as_line(), *good], UNTIL)
    assert _records(together) == _records(replay(good, UNTIL))
    [dead] = [o for o in together if o.topic == "duewatch.dlq" and o.key == "POISON"]
    assert dead.headers["reason"] == errors.OUT_OF_RANGE and dead.headers["source_topic"] == "loan.schedules"
    events, reasons = _through_the_shell([poison, *sorted(good, key=_event_time)])
    assert reasons[errors.OUT_OF_RANGE] >= 1 and events


def test_a_900_kb_borrower_id_is_too_large_in_replay_and_in_the_shell() -> None:
    big = hostile.too_large("BIG")
    [dead] = [o for o in replay([big.as_line()], UNTIL) if o.topic == "duewatch.dlq"]
    assert dead.headers["reason"] == errors.TOO_LARGE
    assert _through_the_shell([big])[1] == Counter({errors.TOO_LARGE: 1})


def test_an_over_long_varint_is_undecodable_not_wrapped() -> None:
    """2^64 + 1000 in eleven bytes: fastavro alone reads 1000."""
    long = hostile.overlong_amount("L1", "p1")
    with pytest.raises(codec.DecodeError, match="more bytes than its type allows"):
        codec.decode("Repayment", long.raw)
    assert _through_the_shell([long])[1] == Counter({errors.UNDECODABLE: 1})


def test_dlq_details_name_fields_never_values() -> None:
    """A 900-character time zone was once written whole into the worker log and the DLQ header."""
    secret = "Asia/" + "S3CR3T" * 150
    value = hostile.base_schedule("L1") | {"timezone": secret}
    [dead] = [o for o in replay([{"topic": "loan.schedules", "key": "L1", "value": value}], UNTIL)
              if o.topic == "duewatch.dlq"]  # fmt: skip
    assert dead.headers["reason"] == errors.INVALID_TIMEZONE and "S3CR3T" not in dead.headers["detail"]
    for name, change, _ in hostile.SCHEDULE_BREAKS:
        value = hostile.base_schedule("L1")
        change(value)
        for out in replay([{"topic": "loan.schedules", "key": value["loan_id"], "value": value}], UNTIL):
            if out.topic == "duewatch.dlq":
                detail = out.headers["detail"]
                assert len(detail) <= errors.MAX_DETAIL_CHARS and detail.isprintable(), name
                assert "2147483647" not in detail and "9999" not in detail and "\n" not in detail, name
