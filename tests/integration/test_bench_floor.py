"""The benchmark's floor loop on the real broker: it measures a worker's run (a stand-in changelog
and output topics written here) and does that work per record, in its subprocess."""

from __future__ import annotations

import dataclasses
import os
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams import kafkaio
from streams.contracts import codec
from streams.contracts import topics as names
from streams.dev.bench import floor
from streams.dev.book import generate
from streams.settings import from_env
from tests.support.shared import REPO

pytestmark = pytest.mark.integration

PARTITIONS = 3


async def _ends(kafka_config: dict[str, Any], topic: str) -> int:
    consumer = AIOKafkaConsumer(**kafka_config, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


async def test_the_floor_loop_does_the_measured_work_per_record(
    kafka_bootstrap: str, kafka_config: dict[str, Any], tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    cfg = from_env({
        **os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "DUEWATCH_TOPIC_PREFIX": f"fl{run}.",
        "DUEWATCH_PARTITIONS": str(PARTITIONS), "DUEWATCH_APP_ID": f"fl{run}",
    })  # fmt: skip
    changelog = f"fl{run}-loans-changelog"
    await kafkaio.create_topics(cfg, (names.SCHEDULES, names.REPAYMENTS, *floor.CAUSED), physical=[changelog])
    book = generate(40, date(2026, 3, 1), 60)
    states = [b"s" * 100, b"t" * 300]  # what "the worker" wrote: mean 200 B
    event = floor.sample_event()
    producer = AIOKafkaProducer(**kafka_config)
    await producer.start()
    try:
        for r in book:
            kind = codec.TOPIC_RECORD[r.topic]
            value = codec.encode(kind, codec.from_json(kind, r.value))
            await producer.send(cfg.topic(r.topic), value, key=r.key.encode())
        for n, state in enumerate(states * 5):
            await producer.send(changelog, state, key=b"L%d" % n, partition=n % PARTITIONS)
        for _ in range(len(book) // 10):  # a tenth of the records caused an event
            await producer.send(cfg.topic(names.OVERDUE), event, key=b"L", partition=0)
        await producer.flush()
    finally:
        await producer.stop()

    observed = await floor.observe(cfg, changelog, len(book))
    assert observed.outputs == {names.OVERDUE: len(book) // 10, names.DLQ: 0}
    assert sum(observed.changelog_ends.values()) == 10
    inputs = {cfg.topic(t): t for t in (names.SCHEDULES, names.REPAYMENTS)}
    result = await floor.measure(
        dataclasses.replace(cfg, batch_max=50), observed, event, inputs, len(book), f"fl{run}.floor.",
        tmp_path / "state", 2.8, 120, REPO,
    )  # fmt: skip

    assert result["records"] == len(book)
    assert result["state_bytes"] == 200 and result["sampled"] == 10
    assert result["output_fraction"] == pytest.approx((len(book) // 10) / len(book))
    assert result["outputs"] == len(book) // 10
    assert result["databases"] == PARTITIONS and result["batch_max"] == 50
    assert result["cpu_seconds"] > 0 and result["per_cpu"] > 0
    # what it sent: one changelog record per input record, the outputs, its offsets committed
    assert await _ends(kafka_config, f"fl{run}.floor.loans-changelog") == len(book)
    assert await _ends(kafka_config, f"fl{run}.floor.overdue") == len(book) // 10
    admin = AIOKafkaAdminClient(**kafka_config)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(f"fl{run}.floor.group")
        assert sum(m.offset for m in committed.values()) == len(book)
    finally:
        await admin.close()
    assert len(list((tmp_path / "state").glob("loans-*.db"))) == PARTITIONS
