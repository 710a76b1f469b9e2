"""Plain aiokafka I/O for the command line: create topics, produce, consume, tick.

These commands are tools around the stream (tests, the simulator, operators), so they use
aiokafka directly rather than a Faust app: no consumer group, no tables, quick to start.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from .contracts import codec
from .contracts import topics as names
from .settings import Settings


def logical_name(topic: str, cfg: Settings) -> str:
    """The logical name of ``topic`` (accepts logical or physical names)."""
    if cfg.topic_prefix and topic.startswith(cfg.topic_prefix):
        topic = topic[len(cfg.topic_prefix) :]
    return topic


async def create_topics(
    cfg: Settings,
    topics: Iterable[str] = names.ALL_TOPICS,
    partitions: int | None = None,
    physical: Iterable[str] = (),
    compacted: Iterable[str] = (),
) -> list[str]:
    """Create the logical ``topics`` (prefixed), ``physical`` and ``compacted`` ones if missing."""
    admin = AIOKafkaAdminClient(**cfg.kafka_kwargs())
    await admin.start()
    created: list[str] = []
    try:
        existing = set(await admin.list_topics())
        count = partitions or cfg.partitions
        wanted = [
            NewTopic(name, num_partitions=count, replication_factor=cfg.replication)
            for name in [*(cfg.topic(t) for t in topics), *physical]
            if name not in existing
        ] + [
            NewTopic(name, num_partitions=count, replication_factor=cfg.replication,
                     topic_configs={"cleanup.policy": "compact"})
            for name in compacted
            if name not in existing
        ]  # fmt: skip
        for topic in wanted:
            try:
                await admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
    return created


async def partition_count(producer: AIOKafkaProducer, topic: str) -> int:
    """How many partitions ``topic`` has (waits for metadata)."""
    partitions = await producer.partitions_for(topic)
    return len(partitions)


def encode_line(topic: str, line: Mapping[str, Any], raw: bool) -> tuple[bytes | None, bytes]:
    """A JSON line ``{"key", "value"}`` as Kafka key and value bytes (SPEC §6 `produce`)."""
    value = line.get("value")
    key = line.get("key")
    if raw:
        if not isinstance(value, str):
            raise ValueError("with --raw each line's value must be a string")
        payload = value.encode()
    else:
        record_type = names.TOPIC_RECORD.get(topic)
        if record_type is None:
            raise ValueError(f"no record type for topic {topic}")
        payload = codec.encode(record_type, codec.from_json(record_type, value))
        if key is None and topic in names.KEY_FIELD:
            key = value.get(names.KEY_FIELD[topic])
    return (None if key is None else str(key).encode()), payload


async def produce(cfg: Settings, topic: str, lines: Iterable[Mapping[str, Any]], raw: bool = False) -> int:
    """Send JSON lines to logical ``topic``; ``clock.ticks`` values go to every partition."""
    producer = AIOKafkaProducer(**cfg.kafka_kwargs(), linger_ms=5, acks="all")
    await producer.start()
    sent = 0
    try:
        physical = cfg.topic(topic)
        fanout = await partition_count(producer, physical) if topic == names.TICKS else 0
        futures = []
        for line in lines:
            if "topic" in line and logical_name(str(line["topic"]), cfg) != topic:
                raise ValueError(f"line for topic {line['topic']} given to {topic}")
            key, value = encode_line(topic, line, raw)
            if fanout:
                futures += [await producer.send(physical, value, key=key, partition=p) for p in range(fanout)]
            else:
                futures.append(await producer.send(physical, value, key=key))
            sent += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


async def send_tick(cfg: Settings, as_of: datetime, producer: AIOKafkaProducer | None = None) -> int:
    """One Tick at ``as_of`` to every partition of clock.ticks; returns the partition count."""
    own = producer is None
    if producer is None:
        producer = AIOKafkaProducer(**cfg.kafka_kwargs(), acks="all")
        await producer.start()
    try:
        physical = cfg.topic(names.TICKS)
        count = await partition_count(producer, physical)
        payload = codec.encode("Tick", {"as_of": as_of})
        futures = [await producer.send(physical, payload, partition=p) for p in range(count)]
        await asyncio.gather(*futures)
        return count
    finally:
        if own:
            await producer.stop()


def render(topic: str, message: Any) -> dict[str, Any]:
    """A consumed message as the JSON line of SPEC §6 `consume`."""
    record_type = names.TOPIC_RECORD.get(topic)
    out: dict[str, Any] = {
        "topic": topic,
        "partition": message.partition,
        "offset": message.offset,
        "key": None if message.key is None else message.key.decode("utf-8", "replace"),
        "headers": {k: v.decode("utf-8", "replace") for k, v in (message.headers or ())},
    }
    if record_type is not None and topic != names.DLQ:
        try:
            out["value"] = codec.to_json(record_type, codec.decode(record_type, message.value))
            return out
        except codec.DecodeError:
            pass
    out["value_b64"] = base64.b64encode(message.value or b"").decode()
    return out


async def consume(
    cfg: Settings, topic: str, from_beginning: bool = False, idle_timeout: float = 5.0, max_records: int | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Yield records of logical ``topic`` until ``idle_timeout`` seconds pass without one, or ``max_records``."""
    physical = cfg.topic(topic)
    consumer = AIOKafkaConsumer(**cfg.kafka_kwargs(), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(physical)
        if partitions is None:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public wait
            partitions = consumer.partitions_for_topic(physical) or set()
        tps = [TopicPartition(physical, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        count = 0
        while max_records is None or count < max_records:
            batch = await consumer.getmany(timeout_ms=int(idle_timeout * 1000))
            if not batch:
                return
            for tp in sorted(batch, key=lambda t: t.partition):
                for message in batch[tp]:
                    yield render(topic, message)
                    count += 1
                    if max_records is not None and count >= max_records:
                        return
    finally:
        await consumer.stop()


async def send_control(cfg: Settings, command: Any) -> None:
    """One operator's command (``streams.contracts.control.Command``) to the control topic, keyed
    by its loan id: the worker owning the loan reads it in order with the loan's records."""
    from .contracts import control

    producer = AIOKafkaProducer(**cfg.kafka_kwargs(), acks="all")
    await producer.start()
    try:
        await (await producer.send(cfg.topic(names.CONTROL), control.encode(command), key=command.loan_id.encode()))
    finally:
        await producer.stop()


async def read_dlq(cfg: Settings, timeout: float = 30.0) -> list[Any]:
    """Every record of the DLQ, from its beginning up to its end when asked
    (``streams.redrive.DeadLetter`` values)."""
    from .redrive import DeadLetter

    physical = cfg.topic(names.DLQ)
    consumer = AIOKafkaConsumer(**cfg.kafka_kwargs(), enable_auto_commit=False, group_id=None)
    await consumer.start()
    out: list[DeadLetter] = []
    try:
        partitions = consumer.partitions_for_topic(physical)
        if partitions is None:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public wait
            partitions = consumer.partitions_for_topic(physical) or set()
        tps = [TopicPartition(physical, p) for p in sorted(partitions)]
        if not tps:
            return out
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if loop.time() > deadline:
                raise TimeoutError(f"reading {physical} took longer than {timeout:.0f} s")
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, messages in batch.items():
                out += [DeadLetter(m.key, m.value, tuple(m.headers or ())) for m in messages if m.offset < ends[tp]]
        return out
    finally:
        await consumer.stop()


async def resend(cfg: Settings, resends: Iterable[Any]) -> int:
    """Produce redriven records (``streams.redrive.Resend``) in order; returns how many."""
    from .redrive import STAGE_TOPICS

    producer = AIOKafkaProducer(**cfg.kafka_kwargs(), acks="all")
    await producer.start()
    try:
        futures = []
        for r in resends:
            topic = f"{cfg.app_id}-{r.topic}" if r.topic in STAGE_TOPICS else cfg.topic(r.topic)
            futures.append(
                await producer.send(topic, r.value, key=r.key, partition=r.partition, headers=list(r.headers))
            )
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()
