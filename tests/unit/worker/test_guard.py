"""The partition guard's decisions (SPEC §1): which records are misrouted, what their forward
carries, how a re-keyed record is read back, what is counted and logged."""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry

from streams.contracts import topics as names
from streams.contracts.partitioning import partition_of
from streams.worker.guard import (
    LOG_EVERY,
    ORIGINAL_OFFSET,
    ORIGINAL_PARTITION,
    ORIGINAL_TOPIC,
    Guard,
    forward,
    logical_of_rekeyed,
    misrouted,
)
from streams.worker.metrics import Metrics
from streams.worker.tables import REKEY


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes = b"\x02avro"
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def split_key(partitions: int) -> tuple[bytes, int, int]:
    """A loan id that CRC32 (librdkafka's default) and murmur2 put on different partitions."""
    for n in range(1000):
        key = f"L{n:07d}".encode()
        crc, murmur = zlib.crc32(key) % partitions, partition_of(key, partitions)
        if crc != murmur:
            return key, crc, murmur
    raise AssertionError("no split key")


def test_a_keyed_input_on_another_partition_than_its_keys_is_misrouted() -> None:
    key, crc, murmur = split_key(12)
    for topic in (names.SCHEDULES, names.REPAYMENTS, names.DISPUTES, names.CONTROL):
        assert misrouted(topic, key, crc, 12) == murmur
        assert misrouted(topic, key, murmur, 12) is None


def test_ticks_and_keyless_records_are_never_misrouted() -> None:
    key, crc, _ = split_key(12)
    assert misrouted(names.TICKS, None, 3, 12) is None
    assert misrouted(names.TICKS, key, crc, 12) is None
    assert misrouted(names.REPAYMENTS, None, 3, 12) is None
    assert misrouted(names.OVERDUE, key, crc, 12) is None


def test_the_forward_keeps_key_value_and_headers_and_says_where_it_came_from() -> None:
    key, crc, murmur = split_key(6)
    record = Record("p.loan.repayments", crc, 41, key, headers=[("traceparent", b"00-abc"), ("x", b"1")])
    [send] = forward(record, murmur).sends
    assert (send.topic, send.key, send.value, send.partition) == (REKEY, key, record.value, murmur)
    assert send.headers == [
        ("traceparent", b"00-abc"),
        ("x", b"1"),
        (ORIGINAL_TOPIC, b"p.loan.repayments"),
        (ORIGINAL_PARTITION, str(crc).encode()),
        (ORIGINAL_OFFSET, b"41"),
    ]


def test_a_record_forwarded_again_carries_one_set_of_original_headers() -> None:
    record = Record(
        "loan.repayments", 2, 7, b"L1", headers=[(ORIGINAL_TOPIC, b"old"), (ORIGINAL_OFFSET, b"1")]
    )
    [send] = forward(record, 0).sends
    assert [k for k, _ in send.headers] == [ORIGINAL_TOPIC, ORIGINAL_PARTITION, ORIGINAL_OFFSET]
    assert dict(send.headers)[ORIGINAL_TOPIC] == b"loan.repayments"


def test_a_rekeyed_record_is_processed_as_the_input_it_was_read_from() -> None:
    topic_of = {"p.loan.repayments": names.REPAYMENTS, "p.overdue.events": names.OVERDUE}
    rekeyed = Record("dw-rekey", 1, 0, b"L1", headers=[(ORIGINAL_TOPIC, b"p.loan.repayments")])
    assert logical_of_rekeyed(rekeyed, topic_of) == names.REPAYMENTS
    for headers in ([], [(ORIGINAL_TOPIC, b"p.overdue.events")], [(ORIGINAL_TOPIC, b"elsewhere")]):
        assert logical_of_rekeyed(Record("dw-rekey", 1, 0, b"L1", headers=headers), topic_of) == REKEY


def test_the_guard_counts_by_topic_and_logs_without_ids(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    now = [100.0]
    counts: dict[str, int] = {"p.loan.repayments": 12}
    guard = Guard(counts.get, 3, metrics.input_misrouted, clock=lambda: now[0])
    key, crc, murmur = split_key(12)
    with caplog.at_level(logging.WARNING, logger="duewatch"):
        for offset in range(5):
            assert guard.check(Record("p.loan.repayments", crc, offset, key), names.REPAYMENTS) is not None
        assert guard.check(Record("p.loan.repayments", murmur, 5, key), names.REPAYMENTS) is None
        now[0] += LOG_EVERY + 1
        guard.check(Record("p.loan.repayments", crc, 6, key), names.REPAYMENTS)
    assert registry.get_sample_value("duewatch_input_misrouted_total", {"topic": names.REPAYMENTS}) == 6
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[1].startswith("5 record(s) of loan.repayments")
    assert not any(key.decode() in line for line in lines)


def test_an_unknown_partition_count_falls_back_to_the_configured_one() -> None:
    key, crc, murmur = split_key(3)
    guard = Guard(lambda topic: None, 3, Metrics(CollectorRegistry()).input_misrouted)
    [send] = guard.check(Record("loan.schedules", crc, 0, key), names.SCHEDULES).sends  # type: ignore[union-attr]
    assert send.partition == murmur
