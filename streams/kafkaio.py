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


class TopicMissing(RuntimeError):
    """A topic the command reads does not exist (``duewatch topics create`` makes them)."""


async def read_to_end(cfg: Settings, topics: Iterable[str], timeout: float = 15.0) -> dict[str, list[dict[str, Any]]]:
    """Every record of the logical ``topics`` from the beginning up to their end offsets at the start.

    Reading up to a snapshot of the end offsets (not "until quiet") makes the answer a function of
    what the topics held when the command began, and returns as soon as that is read. Nothing waits
    unboundedly (SPEC §6): connecting, and every fetch that brings nothing new, gives up after
    ``timeout`` seconds with :class:`TimeoutError`.
    """
    consumer = AIOKafkaConsumer(**cfg.kafka_kwargs(), enable_auto_commit=False, group_id=None)
    try:
        await asyncio.wait_for(consumer.start(), timeout)
    except TimeoutError:
        await consumer.stop()
        raise TimeoutError(f"no answer from Kafka at {cfg.bootstrap_servers} within {timeout:g} s") from None
    except BaseException:
        await consumer.stop()  # a consumer that failed to start still holds its client
        raise
    try:
        logical_of: dict[str, str] = {}
        tps: list[TopicPartition] = []
        await asyncio.wait_for(consumer._client.force_metadata_update(), timeout)  # noqa: SLF001
        for logical in topics:
            physical = cfg.topic(logical)
            partitions = consumer.partitions_for_topic(physical)
            if not partitions:
                raise TopicMissing(f"topic {physical} does not exist (create the topics with `duewatch topics create`)")
            logical_of[physical] = logical
            tps += [TopicPartition(physical, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout)
        out: dict[str, list[dict[str, Any]]] = {logical: [] for logical in logical_of.values()}
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=int(timeout * 1000))
            if not batch:
                raise TimeoutError(f"no records from Kafka at {cfg.bootstrap_servers} for {timeout:g} s "
                                   f"with {len(pending)} partition(s) not read to their end")  # fmt: skip
            for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
                logical = logical_of[tp.topic]
                for message in batch[tp]:
                    if message.offset < ends[tp]:
                        out[logical].append(render(logical, message))
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return out
    finally:
        await consumer.stop()
