"""The real broker (streams/dev/broker.py, Kafka 4.0.x KRaft) with aiokafka and a real Faust worker."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

pytestmark = pytest.mark.integration


async def consume(kafka_config: dict[str, Any], topic: str, until: Any, timeout: float = 60.0,
                  **kwargs: Any) -> list[Any]:  # fmt: skip
    """Read ``topic`` from the beginning until ``until(records)`` is true."""
    consumer = AIOKafkaConsumer(
        topic, **kafka_config, auto_offset_reset="earliest", enable_auto_commit=False, **kwargs
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while not until(records):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{topic}: condition not met after {timeout} s; got {len(records)} records"
                )
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
        if kwargs.get("group_id"):
            await consumer.commit()
    finally:
        await consumer.stop()
    return records


async def test_produce_consume_roundtrip(kafka_config: dict[str, Any], new_topic: Any) -> None:
    topic = await new_topic(partitions=3)
    sent = [(f"k{i % 5}".encode(), f"v{i}".encode()) for i in range(50)]

    producer = AIOKafkaProducer(**kafka_config, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in sent:
            await producer.send(topic, key=key, value=value, headers=[("source", b"roundtrip")])
        await producer.flush()
    finally:
        await producer.stop()

    group = f"roundtrip-{uuid.uuid4().hex[:8]}"
    records = await consume(kafka_config, topic, lambda rs: len(rs) >= len(sent), group_id=group)

    assert sorted((r.key, r.value) for r in records) == sorted(sent)
    assert {r.partition for r in records} <= {0, 1, 2}
    assert all(list(r.headers) == [("source", b"roundtrip")] for r in records)
    per_key: dict[bytes, list[bytes]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        per_key[r.key].append(r.value)
    for key, values in per_key.items():  # one key -> one partition -> order kept
        assert values == [v for k, v in sent if k == key]


async def produce(kafka_config: dict[str, Any], topic: str, keys: list[bytes]) -> None:
    producer = AIOKafkaProducer(**kafka_config, acks="all")
    await producer.start()
    try:
        for i, key in enumerate(keys):
            await producer.send(topic, key=key, value=f"event-{i}".encode())
        await producer.flush()
    finally:
        await producer.stop()


def counts_by_key(records: list[Any]) -> dict[bytes, list[int]]:
    out: dict[bytes, list[int]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        out[r.key].append(int(r.value))
    return dict(out)


@pytest.mark.slow
async def test_faust_worker_counts_with_rocksdb_table(
    kafka_config: dict[str, Any], new_topic: Any, faust_worker: Any, tmp_path: Path
) -> None:
    partitions = 2
    source = await new_topic(partitions=partitions, prefix="faust-in")
    sink = await new_topic(partitions=partitions, prefix="faust-out")
    env = {
        "DW_TEST_APP_ID": f"dw-test-{uuid.uuid4().hex[:10]}",
        "DW_TEST_SOURCE": source,
        "DW_TEST_SINK": sink,
        "DW_TEST_PARTITIONS": str(partitions),
        "DW_TEST_DATADIR": str(tmp_path / "faust-state"),
    }
    app = "tests.integration.faust_minimal_app"
    new_topic.track(
        f"{env['DW_TEST_APP_ID']}-counts-changelog", f"{env['DW_TEST_APP_ID']}-__assignor-__leader"
    )

    # inputs first: the worker starts from the earliest offset
    await produce(kafka_config, source, [b"a", b"b", b"a", b"c", b"a", b"b"])
    worker = faust_worker(app, env)
    expected = {b"a": [1, 2, 3], b"b": [1, 2], b"c": [1]}
    records = await consume(kafka_config, sink, lambda rs: len(rs) >= 6, timeout=90)
    assert counts_by_key(records) == expected, worker.tail()
    assert worker.running
    assert worker.stop() == 0, worker.tail()
    assert (tmp_path / "faust-state").is_dir()  # RocksDB state lives in the state dir

    # a restarted worker continues from its table (RocksDB + changelog) and committed offsets
    worker = faust_worker(app, env)
    await produce(kafka_config, source, [b"a", b"c"])
    records = await consume(kafka_config, sink, lambda rs: len(rs) >= 8, timeout=90)
    expected = {b"a": [1, 2, 3, 4], b"b": [1, 2], b"c": [1, 2]}
    assert counts_by_key(records) == expected, worker.tail()
    assert worker.stop() == 0, worker.tail()
