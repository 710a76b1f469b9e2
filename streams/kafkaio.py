"""Plain aiokafka I/O for the command line: create topics, produce, consume, tick.

These commands are tools around the stream (tests, the simulator, operators), so they use
aiokafka directly rather than a Faust app: no consumer group, no tables, quick to start.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from .contracts import codec, framing
from .contracts import topics as names
from .settings import COMMAND_TIMEOUT, Settings

T = TypeVar("T")


#: Seconds a command waits for the broker to answer before it gives up (SPEC §6, ``--timeout``).
DEFAULT_TIMEOUT = COMMAND_TIMEOUT


class NoAnswer(TimeoutError):
    """The broker did not answer within the command's timeout (it accepts connections, or
    does not, but says nothing)."""


def client_kwargs(cfg: Settings, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """aiokafka client keyword arguments whose every request gives up after ``timeout`` seconds
    (aiokafka's default is 40 s, and a producer waits that long for a topic's metadata)."""
    return {**cfg.kafka_kwargs(), "request_timeout_ms": max(1, int(timeout * 1000))}


async def bounded(awaitable: Awaitable[T], timeout: float, what: str = "answer") -> T:
    """``awaitable``, or :class:`NoAnswer` after ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise NoAnswer(f"no {what} within {timeout:g} s") from None


@contextlib.asynccontextmanager
async def started(client: Any, timeout: float = DEFAULT_TIMEOUT) -> AsyncIterator[Any]:
    """``client`` (a producer, consumer or admin client) started within ``timeout`` seconds
    (:class:`NoAnswer` otherwise: a broker that accepts connections and never answers would
    keep aiokafka waiting), and stopped again even when starting failed: a client left
    half-started warns "Unclosed ..." at exit, after the error."""
    stop = client.close if isinstance(client, AIOKafkaAdminClient) else client.stop
    try:
        await bounded(client.start(), timeout)
        yield client
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(stop(), timeout)


#: Seconds a topic must stay unknown to the cluster before a command says it does not exist
#: (a broker learns of a new topic a moment after the controller created it).
MISSING_AFTER = 1.0


class TopicMissing(RuntimeError):
    """A topic the command reads does not exist (``duewatch topics create`` makes them)."""


async def topic_partitions(
    cfg: Settings, physical: Iterable[str], timeout: float = DEFAULT_TIMEOUT
) -> dict[str, list[int]]:
    """The partitions of each of the ``physical`` topics, as the cluster describes them (a
    consumer knows a topic's partitions only once its own metadata happens to include it).
    Raises :class:`TopicMissing` for a topic the cluster does not have: a command fails at once
    instead of waiting for metadata that never comes."""
    wanted = list(dict.fromkeys(physical))

    async def described(admin: AIOKafkaAdminClient) -> dict[str, list[int]]:
        # The admin client asks one broker at random and does not try another: a broker of the
        # cluster that is down, a topic whose leader is being elected, or one created a moment ago
        # that this broker does not know yet, is asked again (a missing topic for MISSING_AFTER s).
        loop = asyncio.get_running_loop()
        began = loop.time()
        while True:
            try:
                answer = await admin.describe_topics(wanted)
            except KafkaError as exc:
                if not exc.retriable:
                    raise
                answer = None
            out: dict[str, list[int]] = {}
            for desc in answer or ():
                name, code = desc.get("topic"), desc.get("error_code") or 0
                if code == UnknownTopicOrPartitionError.errno and loop.time() - began >= MISSING_AFTER:
                    raise TopicMissing(
                        f"topic {name} does not exist (create the topics with `duewatch topics create`)"
                    )
                if not code and desc.get("partitions"):
                    out[name] = sorted(p["partition"] for p in desc["partitions"])
            if len(out) == len(wanted):
                return out
            await asyncio.sleep(0.2)

    async with started(AIOKafkaAdminClient(**client_kwargs(cfg, timeout)), timeout) as admin:
        return await bounded(described(admin), timeout)


class ConnectionCause(logging.Handler):
    """Keeps the last error aiokafka logged instead of printing it.

    When a client cannot bootstrap, aiokafka logs the cause ("Unable connect to ...: Authentication
    failed ...", "... Connection at ... closed") and raises a bare "Unable to bootstrap from
    [...]". The command line prints one line that says both (``describe``), instead of a log
    line, a traceback and the exception. Neither aiokafka nor this adds a password to a message.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.last = record.getMessage()

    @classmethod
    @contextlib.contextmanager
    def captured(cls) -> Iterator[ConnectionCause]:
        """While inside: aiokafka's warnings and errors go to the returned handler only."""
        logger = logging.getLogger("aiokafka")
        handler = cls()
        saved = logger.propagate
        logger.addHandler(handler)
        logger.propagate = False
        try:
            yield handler
        finally:
            logger.removeHandler(handler)
            logger.propagate = saved

    def describe(self, exc: BaseException, cfg: Settings) -> str:
        """One line: where, how, and why talking to Kafka failed (with a hint where it helps)."""
        where = f"Kafka at {cfg.bootstrap_servers} ({cfg.security_protocol})"
        if isinstance(exc, TimeoutError | KafkaTimeoutError):
            return (f"{where}: {exc or 'no answer in time'}; is the broker running and answering, and is "
                    "KAFKA_BOOTSTRAP_SERVERS right? (--timeout waits longer)")  # fmt: skip
        if not isinstance(exc, KafkaConnectionError) or self.last is None:
            return f"{where}: {exc}"
        cause = re.sub(r'^Unable connect to "[^"]*": ', "", self.last)
        line = f"cannot connect to {where}: {cause}"
        if cfg.security_protocol == "SSL" and "closed" in cause:
            # TLS 1.3: the broker checks the client certificate after the client's side of the
            # handshake is done, so the client only sees the connection closed, not why.
            line += (" (the broker closed the TLS connection: does it trust the client certificate KAFKA_SSL_CERTFILE?)"
                     if cfg.ssl_certfile else " (the broker closed the TLS connection: does it require a client "
                     "certificate, KAFKA_SSL_CERTFILE?)")  # fmt: skip
        return line


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
    timeout: float = DEFAULT_TIMEOUT,
) -> list[str]:
    """Create the logical ``topics`` (prefixed), ``physical`` and ``compacted`` ones if missing."""
    created: list[str] = []
    async with started(AIOKafkaAdminClient(**client_kwargs(cfg, timeout)), timeout) as admin:
        existing = set(await bounded(admin.list_topics(), timeout))
        count = partitions or cfg.partitions
        required = {cfg.topic(t): names.TOPIC_CONFIGS[t] for t in topics if t in names.TOPIC_CONFIGS}
        wanted = [
            NewTopic(name, num_partitions=count, replication_factor=cfg.replication,
                     topic_configs=required.get(name, {}))
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
                await bounded(admin.create_topics([topic]), timeout)
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        await bounded(
            ensure_topic_configs(admin, {name: c for name, c in required.items() if name not in created}),
            timeout,
        )
    return created


#: DescribeConfigs' config_source of a per-topic override (v1 and later; v0 has is_default instead).
_DYNAMIC_TOPIC_CONFIG = 1


async def ensure_topic_configs(
    admin: AIOKafkaAdminClient, required: Mapping[str, Mapping[str, str]]
) -> list[str]:
    """Give topics that already exist the configs duewatch requires (``topics.TOPIC_CONFIGS``): a
    deployment created before a requirement was added gets it at its next ``topics create``.
    AlterConfigs replaces a topic's whole set of overrides, so the ones it has are sent along.
    Returns the topics changed."""
    if not required:
        return []
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in required]
    changed: list[str] = []
    for response in await admin.describe_configs(resources):
        v0 = response.API_VERSION == 0
        for error_code, message, _kind, name, entries in response.resources:
            if error_code:
                raise RuntimeError(f"cannot read the configs of topic {name}: {message or error_code}")
            current = {entry[0]: entry[1] for entry in entries}
            if all(current.get(key) == value for key, value in required[name].items()):
                continue
            overrides = {entry[0]: entry[1] for entry in entries
                         if (not entry[3] if v0 else entry[3] == _DYNAMIC_TOPIC_CONFIG)}  # fmt: skip
            update = ConfigResource(ConfigResourceType.TOPIC, name, {**overrides, **required[name]})
            for answer in await admin.alter_configs([update]):
                for alter_error, alter_message, *_ in answer.resources:
                    if alter_error:
                        raise RuntimeError(
                            f"cannot set the configs of topic {name}: {alter_message or alter_error}"
                        )
            changed.append(name)
    return changed


async def register_schemas(cfg: Settings) -> dict[str, int]:
    """In registry mode (SPEC §6), register every topic's current schema under
    ``<topic>-value`` with BACKWARD compatibility: {subject: schema id}. Nothing in plain mode."""
    from .contracts.registry import from_settings, register_topic_schemas

    registry = from_settings(cfg)
    if registry is None:
        return {}
    async with registry:
        return await register_topic_schemas(registry, cfg.topic_prefix)


async def partition_count(producer: AIOKafkaProducer, topic: str) -> int:
    """How many partitions ``topic`` has (waits for metadata)."""
    partitions = await producer.partitions_for(topic)
    return len(partitions)


class BadLine(ValueError):
    """A line of a JSON-lines file that cannot be sent, with its line number."""


def encode_lines(
    topic: str, numbered: Iterable[tuple[int, Mapping[str, Any]]], raw: bool, cfg: Settings
) -> list[tuple[bytes | None, bytes]]:
    """Each numbered JSON line for logical ``topic`` as Kafka key and value bytes, all before
    anything is sent; :class:`BadLine` names the first line that cannot be (``produce``)."""
    out = []
    for number, line in numbered:
        try:
            if "topic" in line and logical_name(str(line["topic"]), cfg) != topic:
                raise ValueError(f"a record of {line['topic']}, not of {topic}")
            out.append(encode_line(topic, line, raw))
        except ValueError as exc:
            raise BadLine(f"line {number}: {exc}") from None
    return out


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
        if not isinstance(value, Mapping):
            raise ValueError("each line's value must be a JSON object")
        payload = codec.encode(record_type, codec.from_json(record_type, value))
        if key is None and topic in names.KEY_FIELD:
            key = value.get(names.KEY_FIELD[topic])
    return (None if key is None else str(key).encode()), payload


async def produce(
    cfg: Settings,
    topic: str,
    lines: Iterable[Mapping[str, Any]],
    raw: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> int:
    """Send JSON lines to logical ``topic``; ``clock.ticks`` values go to every partition."""
    records = encode_lines(topic, enumerate(lines, 1), raw, cfg)
    return await send_records(cfg, topic, records, timeout)


async def send_records(
    cfg: Settings, topic: str, records: list[tuple[bytes | None, bytes]], timeout: float = DEFAULT_TIMEOUT
) -> int:
    """Send (key, value) records to logical ``topic`` (``clock.ticks``: to every partition);
    :class:`TopicMissing` before anything is sent when the topic does not exist."""
    physical = cfg.topic(topic)
    partitions = (await topic_partitions(cfg, [physical], timeout))[physical]
    fanout = partitions if topic == names.TICKS else [None]
    producer = AIOKafkaProducer(**client_kwargs(cfg, timeout), linger_ms=5, acks="all")
    async with started(producer, timeout):
        futures = [await producer.send(physical, value, key=key, partition=p)
                   for key, value in records for p in fanout]  # fmt: skip
        await asyncio.gather(*futures)
    return len(records)


async def send_tick(
    cfg: Settings, as_of: datetime, producer: AIOKafkaProducer | None = None, timeout: float = DEFAULT_TIMEOUT
) -> int:
    """One Tick at ``as_of`` to every partition of clock.ticks; returns the partition count."""
    if producer is None:
        physical = cfg.topic(names.TICKS)
        await topic_partitions(cfg, [physical], timeout)  # fails at once without the topic
        async with started(AIOKafkaProducer(**client_kwargs(cfg, timeout), acks="all"), timeout) as own:
            return await send_tick(cfg, as_of, own)
    physical = cfg.topic(names.TICKS)
    count = await partition_count(producer, physical)
    payload = codec.encode("Tick", {"as_of": as_of})
    futures = [await producer.send(physical, payload, partition=p) for p in range(count)]
    await asyncio.gather(*futures)
    return count


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
        # In registry mode (SPEC §6) duewatch's outputs are framed: the body after the schema id
        # is written with one of duewatch's own schemas, which codec.decode knows (every release).
        data = message.value
        for candidate in (data[framing.HEADER_SIZE :], data) if framing.framed(data) else (data,):
            try:
                out["value"] = codec.to_json(record_type, codec.decode(record_type, candidate))
                return out
            except codec.DecodeError:
                pass
    out["value_b64"] = base64.b64encode(message.value or b"").decode()
    return out


async def consume(
    cfg: Settings,
    topic: str,
    from_beginning: bool = False,
    idle_timeout: float = 5.0,
    max_records: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> AsyncIterator[dict[str, Any]]:
    """Yield records of logical ``topic`` until ``idle_timeout`` seconds pass without one, or ``max_records``."""
    physical = cfg.topic(topic)
    partitions = (await topic_partitions(cfg, [physical], timeout))[physical]
    async with started(
        AIOKafkaConsumer(**client_kwargs(cfg, timeout), enable_auto_commit=False, group_id=None), timeout
    ) as consumer:
        tps = [TopicPartition(physical, p) for p in partitions]
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


async def send_control(cfg: Settings, command: Any, timeout: float = DEFAULT_TIMEOUT) -> None:
    """One operator's command (``streams.contracts.control.Command``) to the control topic, keyed
    by its loan id: the worker owning the loan reads it in order with the loan's records."""
    from .contracts import control

    await topic_partitions(cfg, [cfg.topic(names.CONTROL)], timeout)
    async with started(AIOKafkaProducer(**client_kwargs(cfg, timeout), acks="all"), timeout) as producer:
        await (
            await producer.send(
                cfg.topic(names.CONTROL), control.encode(command), key=command.loan_id.encode()
            )
        )


async def read_dlq(cfg: Settings, timeout: float = DEFAULT_TIMEOUT) -> list[Any]:
    """Every record of the DLQ, from its beginning up to its end when asked
    (``streams.redrive.DeadLetter`` values); :class:`NoAnswer` when ``timeout`` seconds pass
    without a record while some are still to be read."""
    from .redrive import DeadLetter

    physical = cfg.topic(names.DLQ)
    out: list[DeadLetter] = []
    partitions = (await topic_partitions(cfg, [physical], timeout))[physical]
    async with started(
        AIOKafkaConsumer(**client_kwargs(cfg, timeout), enable_auto_commit=False, group_id=None), timeout
    ) as consumer:
        tps = [TopicPartition(physical, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await bounded(consumer.end_offsets(tps), timeout)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=int(timeout * 1000))
            if not batch:
                raise NoAnswer(f"no records of {physical} for {timeout:g} s before its end")
            for tp, messages in batch.items():
                out += [
                    DeadLetter(m.key, m.value, tuple(m.headers or ()))
                    for m in messages
                    if m.offset < ends[tp]
                ]
    return out


async def resend(cfg: Settings, resends: Iterable[Any], timeout: float = DEFAULT_TIMEOUT) -> int:
    """Produce redriven records (``streams.redrive.Resend``) in order; returns how many."""
    from .redrive import STAGE_TOPICS

    chosen = [
        (f"{cfg.app_id}-{r.topic}" if r.topic in STAGE_TOPICS else cfg.topic(r.topic), r) for r in resends
    ]
    if chosen:
        await topic_partitions(cfg, [topic for topic, _ in chosen], timeout)
    async with started(AIOKafkaProducer(**client_kwargs(cfg, timeout), acks="all"), timeout) as producer:
        futures = []
        for topic, r in chosen:
            futures.append(
                await producer.send(topic, r.value, key=r.key, partition=r.partition, headers=list(r.headers))
            )
        await asyncio.gather(*futures)
        return len(futures)


async def read_to_end(
    cfg: Settings, topics: Iterable[str], timeout: float = 15.0
) -> dict[str, list[dict[str, Any]]]:
    """Every record of the logical ``topics`` from the beginning up to their end offsets at the start
    (``read_records_to_end``), as ``render`` gives them."""
    logical_of = {cfg.topic(logical): logical for logical in topics}
    out: dict[str, list[dict[str, Any]]] = {logical: [] for logical in logical_of.values()}
    for tp, message in await read_records_to_end(cfg, logical_of, timeout):
        logical = logical_of[tp.topic]
        out[logical].append(render(logical, message))
    return out


async def read_records_to_end(
    cfg: Settings, physical: Iterable[str], timeout: float = 15.0
) -> list[tuple[TopicPartition, Any]]:
    """(partition, consumer record) of every record of the ``physical`` topics from the beginning up
    to their end offsets at the start, each partition's in order.

    Reading up to a snapshot of the end offsets (not "until quiet") makes the answer a function of
    what the topics held when the command began, and returns as soon as that is read. Nothing waits
    unboundedly (SPEC §6): connecting, and every fetch that brings nothing new, gives up after
    ``timeout`` seconds with :class:`TimeoutError`.
    """
    consumer = AIOKafkaConsumer(**client_kwargs(cfg, timeout), enable_auto_commit=False, group_id=None)
    try:
        await asyncio.wait_for(consumer.start(), timeout)
    except TimeoutError:
        await consumer.stop()
        raise TimeoutError(f"no answer from Kafka at {cfg.bootstrap_servers} within {timeout:g} s") from None
    except BaseException:
        await consumer.stop()  # a consumer that failed to start still holds its client
        raise
    try:
        topics = list(dict.fromkeys(physical))
        partitions = await topic_partitions(cfg, topics, timeout)
        tps = [TopicPartition(topic, p) for topic in topics for p in partitions[topic]]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout)
        out: list[tuple[TopicPartition, Any]] = []
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=int(timeout * 1000))
            if not batch:
                raise TimeoutError(f"no records from Kafka at {cfg.bootstrap_servers} for {timeout:g} s "
                                   f"with {len(pending)} partition(s) not read to their end")  # fmt: skip
            for tp in sorted(batch, key=lambda t: (t.topic, t.partition)):
                out.extend((tp, message) for message in batch[tp] if message.offset < ends[tp])
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return out
    finally:
        await consumer.stop()
