"""The partition guard on the real broker (SPEC §1, issue 16): a loan split by a foreign
partitioner is put together again.

The schedules of a book are produced as SPEC §1 says (murmur2, the CLI's aiokafka producer); its
repayments, reversals included, by confluent-kafka's ``Producer`` with no partitioner setting,
i.e. librdkafka's default ``consistent_random``: CRC32 of the key modulo the partition count
(``rd_kafka_msg_partitioner_consistent_random``). For most loans that is another partition than
their schedule's. The stream must still say exactly what `duewatch replay` of the same records
says — with one worker, with two, and when a worker is killed between forwarding misrouted
records and committing their source offsets.
"""

from __future__ import annotations

import asyncio
import signal
import time
import zlib
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams import kafkaio
from streams.contracts import topics as names
from streams.contracts.partitioning import partition_of
from streams.worker.guard import ORIGINAL_OFFSET, ORIGINAL_PARTITION, ORIGINAL_TOPIC
from streams.worker.tables import changelog_topics, internal_topics, rekey_topic
from tests.integration import harness

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SETTLE = harness.SETTLE


def crc32_partition(key: str, partitions: int) -> int:
    """librdkafka's default partition of a keyed record (consistent_random: CRC32 % count)."""
    return zlib.crc32(key.encode()) % partitions


def produce_with_librdkafka(cluster: harness.DuewatchCluster, lines: list[dict[str, Any]]) -> None:
    """Send the repayment ``lines`` (Avro, keyed by loan id) with confluent-kafka's default
    partitioner, in order, as a payment system written with it would."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": cluster.cfg.bootstrap_servers, "enable.idempotence": True})
    topic = cluster.cfg.topic(names.REPAYMENTS)
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    for line in lines:
        key, value = kafkaio.encode_line(names.REPAYMENTS, line, raw=False)
        producer.produce(topic, value=value, key=key, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(60) == 0, "confluent-kafka did not deliver everything within 60 s"
    assert not failures, failures


def split_book(loans: int, days: int, seed: int, partitions: int):
    lines, start, until = harness.book_lines(loans, days, seed)
    schedules = [x for x in lines if x["topic"] == names.SCHEDULES]
    repayments = [x for x in lines if x["topic"] == names.REPAYMENTS]
    assert any(x["value"]["kind"] == "REVERSAL" for x in repayments)
    misrouted = sum(
        crc32_partition(x["key"], partitions) != partition_of(x["key"].encode(), partitions)
        for x in repayments
    )
    assert misrouted > len(repayments) // 2, "with these partition counts CRC32 should split most loans"
    return lines, schedules, repayments, misrouted, start, until


async def run_book(cluster: harness.DuewatchCluster, workers: list[harness.Worker], lines, schedules,
                   repayments, start, until) -> tuple[Counter, Counter]:  # fmt: skip
    await cluster.produce(schedules)
    await asyncio.to_thread(produce_with_librdkafka, cluster, repayments)
    for worker in workers:
        await worker.ready()
    for t in harness.ticks_between(start, until, timedelta(days=2)):
        await cluster.tick(t)
    await cluster.tick(until + SETTLE)
    return await harness.run_until_equal(cluster, harness.replayed(lines, until), until)


async def misrouted_total(workers: list[harness.Worker]) -> float:
    return sum([await w.metric("duewatch_input_misrouted_total") for w in workers if w.running])


async def test_a_loan_split_by_crc32_gives_the_replays_events_with_one_worker(cluster) -> None:
    c = await cluster(partitions=3)
    lines, schedules, repayments, misrouted, start, until = split_book(150, 45, 21, 3)
    worker = c.start_worker()
    got, want = await run_book(c, [worker], lines, schedules, repayments, start, until)
    assert got == want
    # Each misrouted repayment was forwarded once (one worker, no restart), and nothing else.
    assert await misrouted_total([worker]) == misrouted
    # a forwarded record is consumed once, where it arrived
    assert await worker.metric('duewatch_records_consumed_total{topic="loan.repayments"}') == len(repayments)
    assert "forwarded through the re-key topic" in worker.output()
    assert "L0" not in "\n".join(
        x for x in worker.output().splitlines() if "re-key" in x
    )  # no loan id logged


async def test_a_loan_split_by_crc32_gives_the_replays_events_with_two_workers(cluster) -> None:
    c = await cluster(partitions=6)
    lines, schedules, repayments, misrouted, start, until = split_book(150, 45, 22, 6)
    a, b = c.start_worker("a"), c.start_worker("b")
    got, want = await run_book(c, [a, b], lines, schedules, repayments, start, until)
    assert got == want
    assert await misrouted_total([a, b]) >= misrouted  # a rebalance may forward some again


async def rekeyed(cluster: harness.DuewatchCluster) -> list[Any]:
    """Every record of the re-key topic so far."""
    physical = rekey_topic(cluster.cfg)
    consumer = AIOKafkaConsumer(**cluster.cfg.kafka_kwargs(), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(physical, p) for p in range(cluster.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            for tp, records in (await consumer.getmany(*pending, timeout_ms=1000)).items():
                out += [r for r in records if r.offset < ends[tp]]
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return out
    finally:
        await consumer.stop()


async def test_a_sigkill_between_forward_and_commit_loses_nothing(cluster) -> None:
    c = await cluster(partitions=3, DUEWATCH_BATCH_MAX="20")  # forwarding takes many batches
    lines, schedules, repayments, misrouted, start, until = split_book(150, 45, 23, 3)
    await kafkaio.create_topics(c.cfg, physical=internal_topics(c.cfg), compacted=changelog_topics(c.cfg))
    await c.produce(schedules)
    await asyncio.to_thread(produce_with_librdkafka, c, repayments)
    worker = c.start_worker("a")
    # Kill the worker as soon as the first forwards are acknowledged: Faust commits the source
    # offsets every few seconds, so those of the forwarded records are not committed yet.
    physical = rekey_topic(c.cfg)
    admin = AIOKafkaAdminClient(**c.cfg.kafka_kwargs())
    probe = AIOKafkaConsumer(**c.cfg.kafka_kwargs(), enable_auto_commit=False, group_id=None)
    await admin.start()
    await probe.start()
    try:
        tps = [TopicPartition(physical, p) for p in range(c.partitions)]
        deadline = time.monotonic() + 120
        while sum((await probe.end_offsets(tps)).values()) == 0:
            assert worker.running, worker.tail()
            assert time.monotonic() < deadline, "nothing was forwarded within 120 s"
            await asyncio.sleep(0.02)
        worker.kill(signal.SIGKILL)
        committed = await admin.list_consumer_group_offsets(c.cfg.app_id)
    finally:
        await probe.stop()
        await admin.close()
    before = await rekeyed(c)
    assert 0 < len(before) < misrouted, "the kill should land while forwarding"
    source = c.cfg.topic(names.REPAYMENTS)

    def uncommitted(record: Any) -> bool:
        h = dict(record.headers)
        tp = TopicPartition(h[ORIGINAL_TOPIC].decode(), int(h[ORIGINAL_PARTITION]))
        done = committed.get(tp)
        return tp.topic == source and (done is None or int(h[ORIGINAL_OFFSET]) >= done.offset)

    # The premise of the test: records were forwarded whose source offsets were not committed.
    assert any(uncommitted(r) for r in before), "the kill came after the source offsets were committed"

    again = c.start_worker("a")
    await again.ready()
    for t in harness.ticks_between(start, until, timedelta(days=2)):
        await c.tick(t)
    await c.tick(until + SETTLE)
    got, want = await harness.run_until_equal(c, harness.replayed(lines, until), until)
    assert got == want
    after = await rekeyed(c)
    original = Counter((dict(r.headers)[ORIGINAL_PARTITION], dict(r.headers)[ORIGINAL_OFFSET]) for r in after)
    assert len(original) == misrouted  # every misrouted record reached the re-key topic
    assert any(n > 1 for n in original.values()), "forwarded again after the kill: at least once"
