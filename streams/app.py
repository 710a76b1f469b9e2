"""The Faust application: topics, tables, the detector+router agent, the partner and notification
stages, the ticker, metrics and the operator routes.

Thin by design (DESIGN.md): agents take raw bytes, hand them to the shells (``streams.detector``,
``streams.routing_shell``), which call the pure core, and do what comes back — send, wait for the
broker's acknowledgements, then write the states. Writing state only after its outputs are
acknowledged is what makes at-least-once hold across a crash: a record processed again finds the
old state and re-sends the same outputs with the same ids.

Time enters only as ticks. A tick for partition p waits while p's input partitions still hold
records that were there when the tick arrived (catch-up gating), so after downtime the backlog
is read before the clock moves. The loan-keyed routers (bureau, collections, partner fan-out)
run in the same agent right after the detector (after the batch's ticks, once their events are
out), so their clock never runs ahead of the events a tick causes; the per-partner stage
follows a watermark of tick markers (``routing_shell``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import faust
from aiokafka.partitioner import murmur2
from faust.streams import _current_event
from faust.types import TP

from . import aside, intake
from .aside import SetAside, Source, report
from .contracts import codec, control
from .contracts import topics as names
from .core import bounds, errors
from .core.wakeups import WakeIndex
from .detector import Detector, Effects, dead_letter, indexed, stored
from .logs import logging_config
from .metrics import BookGauges, Metrics
from .policy_loader import load_policy
from .producer import use_idempotent_producer
from .routing_shell import (
    BUREAU_TABLE,
    COLLECTIONS_TABLE,
    LEDGER_TABLE,
    MARKER_HEADER,
    NOTIFY_BY_BORROWER,
    NOTIFY_TABLE,
    PARTNER_ITEMS,
    PARTNER_TABLE,
    LoanRouters,
    Notifier,
    PartnerDigests,
    RouterEffects,
    stored_due,
)
from .routing_shell import encode as routing_encode
from .settings import Settings

log = logging.getLogger("duewatch")

LOAN_TABLE = "loans"
ASIDE_TABLE = "set-aside"  # the marks of loans set aside (streams.aside), keyed by loan id
ROUTER_TABLES = (BUREAU_TABLE, COLLECTIONS_TABLE, LEDGER_TABLE, NOTIFY_TABLE, PARTNER_TABLE)


def internal_topics(cfg: Settings) -> tuple[str, ...]:
    """The repartition topics the routers use (created with the others before the worker starts)."""
    return tuple(f"{cfg.app_id}-{name}" for name in (NOTIFY_BY_BORROWER, PARTNER_ITEMS))


def changelog_topics(cfg: Settings) -> tuple[str, ...]:
    """The tables' changelog topics. Created before the worker starts: a fresh worker could
    otherwise look for one before it appears in its metadata (PartitionsMismatch, stalls)."""
    return tuple(f"{cfg.app_id}-{name}-changelog" for name in (LOAN_TABLE, ASIDE_TABLE, *ROUTER_TABLES))


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key bytes): where upstream put this loan."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def _credentials(cfg: Settings) -> Any:
    if cfg.security_protocol == "PLAINTEXT":
        return None
    context = cfg.ssl_context()  # the CLI's TLS too: CA, client certificate chain, key password
    if cfg.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    sasl = cfg.sasl_kwargs()
    return faust.SASLCredentials(
        username=sasl["sasl_plain_username"],
        password=sasl["sasl_plain_password"],
        mechanism=sasl["sasl_mechanism"],
        ssl_context=context,
    )


class Gate:
    """Catch-up gating of ticks, per partition (DESIGN.md "Time enters only as ticks").

    When a tick for partition p arrives while an input partition of p has records the worker
    has not processed yet (its offset is below the high-water mark seen then), the tick is held
    until those records are processed. A newer tick replaces a held one but keeps the older
    targets, so a steady stream of input can delay the clock but never stop it: a held tick is
    let through when its input partitions made no progress for ``STALL`` seconds (a target can
    be unreachable: the last offset may be a transaction marker no consumer ever sees). How
    many ticks arrive meanwhile does not matter: after downtime a whole backlog of ticks can
    arrive before the input records of the same partitions.
    """

    STALL = 10.0  # seconds without progress on a held tick's inputs before it is let through

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.processed: dict[TP, int] = {}
        # partition -> (held instant, targets, when its inputs last made progress)
        self.held: dict[int, tuple[datetime, dict[TP, int], float]] = {}
        self._clock = clock

    def hold(self, partition: int, as_of: datetime, targets: dict[TP, int]) -> bool:
        """Hold the tick if there are targets to reach; returns True when held."""
        held = self.held.get(partition)
        now = self._clock()
        progress_at = now
        if held is not None:
            as_of = max(as_of, held[0])
            targets = held[1] or targets
            progress_at = held[2]
        targets = {tp: end for tp, end in targets.items() if self.processed.get(tp, -1) < end}
        if not targets or now - progress_at > self.STALL:
            if targets:
                log.warning("tick for partition %d let through: its input made no progress for %.0f s",
                            partition, now - progress_at)  # fmt: skip
            self.held.pop(partition, None)
            return False
        self.held[partition] = (as_of, targets, progress_at)
        return True

    def note(self, tp: TP, offset: int) -> datetime | None:
        """Record that ``tp`` was processed up to ``offset``; returns a released tick, if any."""
        self.processed[tp] = offset
        held = self.held.get(tp.partition)
        if held is None:
            return None
        as_of, targets, _ = held
        if all(self.processed.get(t, -1) >= end for t, end in targets.items()):
            del self.held[tp.partition]
            return as_of
        if tp in targets:
            self.held[tp.partition] = (as_of, targets, self._clock())
        return None

    def forget(self, tps: Iterable[TP]) -> None:
        """Partitions were revoked: their positions and held ticks no longer apply here."""
        for tp in tps:
            self.processed.pop(tp, None)
            self.held.pop(tp.partition, None)


@dataclass(slots=True)
class Sent:
    """How far a batch's entries have been handed to the producer, and the acknowledgements
    still to await."""

    upto: int = 0
    acks: list[Any] = field(default_factory=list)

    def clear(self) -> None:
        self.upto = 0
        self.acks = []


class _InPartition:
    """A stand-in for Faust's current event: its RocksDB store reads only ``.message.partition``."""

    __slots__ = ("message", "__weakref__")

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


_IN_PARTITION: dict[int, _InPartition] = {}


def make_current(partition: int) -> None:
    """Make ``partition`` the current event's for Faust's own table path, which looks a key up
    only in the current event's partition and writes into it: batched records
    (``streams.intake``) are not Faust events (faust-streaming#497 is the same limit, met by
    ``take()``)."""
    current = _IN_PARTITION.get(partition)
    if current is None:
        current = _IN_PARTITION[partition] = _InPartition(partition)
    _current_event.set(weakref.ref(current))  # type: ignore[arg-type]


class PartitionStore:
    """A Faust table's states read and written by partition, straight on the partition's
    RocksDB database.

    Faust's ``Table.get`` and ``table.data[key] = value`` pass each call through five layers and
    pick the partition from the current event: ~12 µs each measured, against ~1 µs for the
    database call, and a worker makes one write per input record. A step always knows its
    partition. The bytes are the same either way (the tables' serializers are raw). A store that
    is not rocksdict-backed RocksDB is used through the table, the partition made current first
    (``point``)."""

    def __init__(self, table: faust.types.TableT, point: Callable[[int], None]) -> None:
        self.table = table
        self._point = point
        self._db_for: Callable[[int], Any] | None = None
        self._write_batch: Callable[..., Any] | None = None
        self._resolved = False

    def _databases(self) -> Callable[[int], Any] | None:
        if not self._resolved:  # the store exists once the app is configured, not at definition
            store = self.table.data
            if getattr(store, "use_rocksdict", False) and hasattr(store, "_db_for_partition"):
                from rocksdict import WriteBatch

                self._db_for, self._write_batch = store._db_for_partition, WriteBatch
            self._resolved = True
        return self._db_for

    def get(self, partition: int, key: bytes) -> bytes | None:
        db_for = self._databases()
        if db_for is None:
            self._point(partition)
            return self.table.get(key)
        return db_for(partition).get(key)

    def put(self, partition: int, items: list[tuple[bytes, bytes | None]]) -> None:
        """Write ``items`` into ``partition`` at once (one RocksDB write batch); a None value
        deletes the key, as a changelog tombstone does in Faust's recovery."""
        db_for = self._databases()
        if db_for is None or self._write_batch is None:
            self._point(partition)
            for key, value in items:
                if value is None:
                    self.table.data.pop(key, None)
                else:
                    self.table.data[key] = value
            return
        batch = self._write_batch(raw_mode=True)
        for key, value in items:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        db_for(partition).write(batch)

    def items(self, actives: set[TP], partitions: int) -> Iterator[tuple[int, bytes, bytes | None]]:
        """(partition, key, bytes) of every state in the table's active partitions.

        Straight from each partition's database (Faust's RocksDB store keeps one per partition),
        so a restart neither asks the partitioner for each of a million keys nor pays Faust's
        per-item layers; any other store is read through the table, the key's partition computed."""
        store = self.table.data
        dbs = getattr(store, "_dbs", None)
        visible = getattr(store, "_visible_items", None)
        if dbs is None or visible is None:
            for key, raw in self.table.items():
                yield partition_of(key, partitions), key, raw
            return
        topic = self.table.changelog_topic_name
        for partition, db in list(dbs.items()):
            if TP(topic, partition) in actives:
                for key, raw in visible(db):
                    yield partition, key, raw


class Quiet:
    """Whether an agent is in the middle of a batch (shared by the worker's agents)."""

    def __init__(self) -> None:
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def busy(self) -> AsyncIterator[None]:
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def wait(self, timeout: float) -> bool:
        """Until no batch is in flight; False when ``timeout`` seconds passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False


BATCHES_QUEUED = 4  # fetched batches waiting per agent (bounds memory; the fetch waits beyond)
TICK_PART = 2000  # loans a tick handles between two sends (bounds a catch-up tick's memory)
CHANGELOG_BATCH_BYTES = 256 * 1024  # producer batch size: well below Kafka's 1 MB message limit
QUIET_TIMEOUT = 60.0  # seconds a rebuild waits for batches in flight (they wait for broker acks only)

_METRICS: Metrics | None = None
_FAUST_METRICS: Any = None


def metrics() -> Metrics:
    """The process's metrics (registered once in the default registry)."""
    global _METRICS
    if _METRICS is None:
        _METRICS = Metrics()
    return _METRICS


def _add_sensors(app: faust.App) -> None:
    """Faust's own Prometheus sensor, in the default registry that /metrics serves (streams.web)."""
    from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
    from prometheus_client import REGISTRY

    global _FAUST_METRICS
    if _FAUST_METRICS is None:
        _FAUST_METRICS = FaustMetrics.create(REGISTRY, "faust")
    app.monitor = PrometheusMonitor(metrics=_FAUST_METRICS)


def source_of(message: Any, logical: str) -> Source:
    """The input record ``message`` of logical topic ``logical``, as the shells take it."""
    return Source(logical, message.partition, message.offset, message.key, message.value, tuple(message.headers or ()))


def internal_error(message: Any, logical: str, exc: Exception) -> Effects:
    """A bug outside any one loan's step must not lose the record or stop the worker: the record
    goes to the DLQ, under the topic it was read from."""
    source = source_of(message, logical)
    report(exc, source, "handling")
    error = errors.InvalidRecord(errors.INTERNAL_ERROR, type(exc).__name__)
    return Effects(sends=[dead_letter(source, error)], dlq=[error.reason])


# A tick's loan-keyed routing, put off until the detector has ticked every partition the batch
# brings a tick for: (the record that let the tick through, its logical topic, its partition, the
# detector's effects to route, or None for the routers' own tick at ``as_of``).
Deferred = list[tuple[Any, str, int, Effects | None, datetime | None]]


def routed_later(
    later: Deferred, routers: LoanRouters, point: Callable[[int], None]
) -> list[tuple[Any, str, Effects | RouterEffects]]:
    """The routers' steps put off in ``later``, in order, as (record, logical topic, effects)
    entries; ``point`` makes each step's partition the one its states are read in. A router that
    fails sends the record that let the tick through to the DLQ, under that record's topic."""
    entries: list[tuple[Any, str, Effects | RouterEffects]] = []
    for record, logical, partition, effects, as_of in later:
        point(partition)
        routed: Effects | RouterEffects
        try:
            if effects is not None:
                routed = routers.on_events(partition, effects.routed)
            else:
                assert as_of is not None
                routed = routers.on_tick(partition, as_of)
        except Exception as exc:  # a bug must not lose the record or stop the worker
            routed = internal_error(record, logical, exc)
        entries.append((record, logical, routed))
    return entries


def tick_instant(value: bytes, detector: Detector) -> datetime:
    """A Tick's instant; raises ``InvalidRecord`` for a bad one, or one too far ahead of the
    wall clock (``TICK_AHEAD``)."""
    from .core.records import parse_tick

    try:
        bounds.check_size(len(value), detector.max_record_bytes)
        as_of = parse_tick(codec.decode("Tick", value)).as_of
    except codec.DecodeError as exc:
        raise errors.InvalidRecord(errors.UNDECODABLE, exc.detail) from None
    detector.tick_ahead(as_of, datetime.now(UTC))
    return as_of


def create_app(cfg: Settings) -> faust.App:
    """Build the worker's Faust app from settings."""
    m = metrics()
    app = faust.App(
        cfg.app_id,
        broker=[f"kafka://{b.strip()}" for b in cfg.bootstrap_servers.split(",") if b.strip()],
        broker_credentials=_credentials(cfg),
        store="rocksdb://",
        datadir=cfg.state_dir,
        processing_guarantee="at_least_once",
        topic_partitions=cfg.partitions,
        topic_replication_factor=cfg.replication,
        table_standby_replicas=1,
        consumer_auto_offset_reset="earliest",
        logging_config=logging_config(cfg.log_json, cfg.log_level, cfg.kafka_log_level),
        web_enabled=True,
        web_port=cfg.web_port,
        web_bind=cfg.web_bind,
        web_host=cfg.web_host,
        canonical_url=f"http://{cfg.web_host}:{cfg.web_port}",
        web_tables_enabled=False,  # /table/... would expose loan data
        web_router_enabled=False,
        producer_acks="all",  # Faust's default too; with idempotence below (streams.producer)
        producer_linger=0.002,
        # A changelog record batch carries a partition's states of a whole input batch (~1 KB each).
        producer_max_batch_size=CHANGELOG_BATCH_BYTES,
        # Don't block a rebalance on draining streams (it can deadlock with an in-flight commit).
        # Safe here: a state is written only after its outputs are acknowledged, so whatever the
        # new owner reprocesses re-sends the same ids.
        stream_wait_empty=False,
    )
    use_idempotent_producer(app)
    _add_sensors(app)
    topic_of = {cfg.topic(t): t for t in names.ALL_TOPICS}
    topic_of.update({f"{cfg.app_id}-{name}": name for name in (NOTIFY_BY_BORROWER, PARTNER_ITEMS)})

    def topic(*physical: str, internal: bool = False) -> faust.TopicT:
        return app.topic(
            *physical, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
            partitions=cfg.partitions, internal=internal,
        )  # fmt: skip

    outputs: dict[str, faust.TopicT] = {
        t: topic(cfg.topic(t)) for t in (names.OVERDUE, names.DLQ, names.TICKS, names.NOTIFY, names.BUREAU,
                                          names.PARTNER, names.COLLECTIONS)
    }  # fmt: skip
    notify_topic, items_topic = (topic(name, internal=True) for name in internal_topics(cfg))
    outputs[NOTIFY_BY_BORROWER], outputs[PARTNER_ITEMS] = notify_topic, items_topic

    # Faust derives a table's serializers from key_type/value_type alone (bytes -> raw, anything
    # else -> json); a schema= is ignored. States are bytes already, so raw it is.
    def table(name: str) -> faust.types.TableT:
        return app.Table(name, default=None, key_type=bytes, value_type=bytes, partitions=cfg.partitions)

    loans = table(LOAN_TABLE)
    tables = {name: table(name) for name in ROUTER_TABLES}

    direct = {name: PartitionStore(table, make_current) for name, table in tables.items()}
    direct[LOAN_TABLE] = loan_store = PartitionStore(loans, make_current)
    direct[ASIDE_TABLE] = aside_store = PartitionStore(table(ASIDE_TABLE), make_current)
    # The partition of the step at hand: the shells load states by key alone, and a key is read
    # in its record's partition (each step sets it first).
    pointed = [0]

    def load(name: str, key: str) -> bytes | None:
        return direct[name].get(pointed[0], key.encode())

    def point(partition: int) -> None:
        pointed[0] = partition

    policy = load_policy(cfg.policy_file)
    book = BookGauges(m)
    set_aside = SetAside()
    detector = Detector(
        cfg.engine, lambda loan_id: loan_store.get(pointed[0], loan_id.encode()), book=book, set_aside=set_aside,
        max_record_bytes=cfg.max_record_bytes,
        max_tick_ahead=timedelta(seconds=cfg.max_tick_ahead) if cfg.max_tick_ahead else None,
    )  # fmt: skip
    loan_routers = LoanRouters(policy, load, cfg.partitions, set_aside)
    notifier = Notifier(policy, load)
    digests = PartnerDigests(policy, load, cfg.partitions)
    shell_of = {name: loan_routers for name in (BUREAU_TABLE, COLLECTIONS_TABLE, LEDGER_TABLE)}
    shell_of.update({NOTIFY_TABLE: notifier, PARTNER_TABLE: digests})
    gate = Gate()
    readiness = {"ready": False}
    quiet = Quiet()
    app.duewatch_detector = detector  # for tests and the web views of this process

    # --- sending and writing ------------------------------------------------------------------

    physical = {logical: t.get_topic_name() for logical, t in outputs.items()}
    consumed = {logical: m.records_consumed.labels(logical) for logical in (*names.INPUT_TOPICS, names.CONTROL)}
    by_type: dict[str, Any] = {}
    by_sink: dict[str, Any] = {}

    def count(effects: Effects | RouterEffects) -> None:
        if isinstance(effects, Effects) and effects.events:
            wall = datetime.now(UTC)
            for event in effects.events:
                counter = by_type.get(event.type) or by_type.setdefault(
                    event.type, m.overdue_events.labels(event.type)
                )
                counter.inc()
                if event.retracts is None:
                    m.detection_lag.observe((wall - event.as_of).total_seconds())
        if isinstance(effects, RouterEffects):
            for sink, n in effects.routed.items():
                (by_sink.get(sink) or by_sink.setdefault(sink, m.routed_records.labels(sink))).inc(n)
        for reason in effects.dlq:
            m.invalid_records.labels(reason).inc()
        for marked in effects.aside.values():
            (m.loans_set_aside if marked is not None else m.loans_released).inc()
        for send in effects.sends:
            if send.topic == names.DLQ:
                m.dlq_records.labels(dict(send.headers).get("source_topic", b"?").decode()).inc()

    # One entry per step of a batch: the input record it came from (whose partition a state
    # written for it goes to in the changelog), the input's logical topic, what to do.
    Entry = tuple[Any, str, Effects | RouterEffects]

    async def issue(entries: list[Entry], sent: Sent) -> None:
        """Hand the sends of the entries not yet issued to the producer, in order; their
        acknowledgements are awaited by ``route`` (before the routers run) and by ``perform``.

        Records go as record batches per topic partition (``record_batches``), in order within
        it, as the changelog's do: a midnight emits an event and several routed records per
        loan, and a send each cost a future, a metadata wait and the partitioner. Every record's
        partition is chosen before anything is sent, as aiokafka's default partitioner would: a
        keyed record's is murmur2 of the key over the topic's partitions (where upstream and
        Faust put that key), a keyless one's is random."""
        kafka = app.producer._ensure_producer()
        known: dict[str, int] = {}
        grouped: dict[tuple[str, int], list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]] = {}
        for _, _, effects in entries[sent.upto :]:
            count(effects)
            for send in effects.sends:
                topic, partition = physical[send.topic], send.partition
                if partition is None:
                    partitions = known.get(topic)
                    if partitions is None:
                        partitions = known[topic] = len(await kafka.partitions_for(topic))
                    if send.key is None:
                        partition = random.randrange(partitions)
                    else:
                        partition = partition_of(send.key, partitions)
                grouped.setdefault((topic, partition), []).append((send.key, send.value, send.headers))
        for (topic, partition), records in grouped.items():
            for batch, _ in record_batches(kafka, records):
                sent.acks.append(await kafka.send_batch(batch, topic, partition=partition))
        sent.upto = len(entries)

    async def issue_early(entries: list[Entry], sent: Sent, acknowledged: bool = False) -> None:
        """``issue`` ahead of the batch's ``flush`` (and, if ``acknowledged``, wait for the broker's
        acknowledgements); a failure is left to ``flush``, which issues them again and reports it."""
        try:
            await issue(entries, sent)
            if acknowledged and sent.acks:
                await asyncio.wait(sent.acks)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - flush reports what fails
            pass

    async def perform(entries: list[Entry], sent: Sent | None = None) -> None:
        """Send everything a batch caused (what ``sent`` says is out already is not sent again), in
        order; wait for every acknowledgement once; then write each changed state once (its last
        value), in the partition of its input."""
        sent = sent or Sent()
        await issue(entries, sent)
        loan_writes: dict[str, tuple[Any, Any, datetime | None]] = {}
        router_writes: dict[tuple[str, str], tuple[Any, Any]] = {}
        aside_writes: dict[str, tuple[Any, bytes | None]] = {}
        for record, _, effects in entries:
            if isinstance(effects, Effects):
                for loan_id, state in effects.writes.items():
                    loan_writes[loan_id] = (record, state, effects.wakes.get(loan_id))
            else:
                for name, key, state in effects.writes:
                    router_writes[(name, key)] = (record, state)
            for loan_id, marked in effects.aside.items():
                aside_writes[loan_id] = (record, marked)
        if sent.acks:
            await asyncio.gather(*sent.acks)
        writes = [(loan_store, record.partition, loan_id.encode(), stored(state, wake, detector.cfg))
                  for loan_id, (record, state, wake) in loan_writes.items()]  # fmt: skip
        writes += [(direct[name], record.partition, key.encode(), routing_encode(name, state))
                   for (name, key), (record, state) in router_writes.items()]  # fmt: skip
        writes += [(aside_store, record.partition, loan_id.encode(), marked)
                   for loan_id, (record, marked) in aside_writes.items()]  # fmt: skip
        await write_states(writes)

    async def write_states(writes: list[tuple[PartitionStore, int, bytes, bytes | None]]) -> None:
        """Each state into its table's RocksDB partition and its changelog, the changelog records
        sent together and acknowledged before the batch's records are acked.

        Faust's own path (``table[key] = value``) queues each changelog record on its producer
        buffer, which sends them one by one and holds the stream back while more than 100 wait:
        at one write per input record that alone capped a worker near 1,400 records/s. Each
        partition's records go as whole record batches (aiokafka's ``send_batch``): one future and
        one trip through the producer per batch instead of per state. The store, the changelog
        topic and the persisted-offset bookkeeping are Faust's, used as it does."""
        grouped: dict[tuple[PartitionStore, int], list[tuple[bytes, bytes | None]]] = {}
        for store, partition, key, value in writes:
            grouped.setdefault((store, partition), []).append((key, value))
        if not grouped:
            return
        kafka = app.producer._ensure_producer()  # the aiokafka producer under Faust's
        sent = []
        for (store, partition), items in grouped.items():
            topic = store.table.changelog_topic.get_topic_name()
            for batch, count in record_batches(kafka, [(key, value, []) for key, value in items]):
                sent.append((store.table, TP(topic, partition), count,
                             await kafka.send_batch(batch, topic, partition=partition)))  # fmt: skip
        results = await asyncio.gather(*(fut for *_, fut in sent))
        # Into RocksDB once the changelog has them: a batch the broker refuses leaves the local
        # store as the changelog is (a standby or the next owner restores the same states).
        for (store, partition), items in grouped.items():
            store.put(partition, items)
        # What a restart reads each changelog partition from (Faust's Table._on_changelog_sent
        # records it per record): a batch is acknowledged with its first offset, and a
        # partition's batches in order, so the last one's last record is the newest.
        newest = {(table, tp): metadata.offset + count - 1
                  for (table, tp, count, _), metadata in zip(sent, results, strict=True)}  # fmt: skip
        for (table, tp), offset in newest.items():
            table.data.set_persisted_offset(tp, offset)

    async def flush(entries: list[Entry], sent: Sent | None = None) -> None:
        """``perform`` the batch; if that fails (a record the broker refuses), entry by entry (what
        was sent already goes again: the same ids), and an entry that still fails sends its input
        record to the DLQ instead."""
        if not entries:
            return
        try:
            await perform(entries, sent)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sending a batch of %d steps failed; retrying step by step", len(entries))
        for entry in entries:
            record, logical, effects = entry
            try:
                await perform([entry])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # None of this step's states were written: memory must say what the tables say.
                if isinstance(effects, Effects):
                    detector.reload(effects.writes, record.partition)
                else:
                    for name, key, _ in effects.writes:
                        shell_of[name].cache.forget(name, key)
                for loan_id, marked in effects.aside.items():
                    if marked is not None:
                        set_aside.remove(record.partition, loan_id)
                await perform([(record, logical, internal_error(record, logical, exc))])

    async def in_batches(stream: faust.StreamT, handle: Callable[[list[Any]], Awaitable[None]]) -> None:
        """Feed ``handle`` the records of each ``intake.Batch`` the stream brings (one fetch: a
        busy worker waits for acknowledgements once per batch, an idle one once per record,
        without a timer). The records are acknowledged after ``handle`` returns — after their
        outputs are acknowledged and their states written — so the committed offsets never pass
        a record whose effects could be lost. A batch of an older consumer generation is skipped:
        after the rebalance Faust seeks back to the committed offsets and it comes again."""
        async for batch in stream:
            if not intake.current(app, batch):
                continue
            async with quiet.busy():
                await handle(batch.records)
            intake.acknowledge(app, batch.records)

    # --- the detector, with the loan-keyed routers right behind it ----------------------------

    async def tick_steps(
        record: Any, logical: str, partition: int, as_of: datetime, entries: list[Entry], sent: Sent,
        later: Deferred,
    ) -> None:
        """The detector on a tick; its routers' steps go to ``later``. The loans due are ticked
        ``TICK_PART`` at a time and each part is routed, sent and written before the next
        (``entries`` emptied): a catch-up tick after long downtime makes a whole history due at
        once, and holding all of it in memory took a 100,000-loan worker to 4.5 GB. The routers'
        own tick (held bureau records, the partner-stage marker) comes after every event the tick
        caused. The loans not yet ticked stay in the index, so a tick cut short (a rebalance, a
        failed send) loses no wake-up."""
        detector.advance(partition, as_of)
        # What a loan that fails on this tick sends to the DLQ: the tick, also when another record
        # let it through (catch-up gating), so that a redrive ticks that loan again.
        if logical == names.TICKS:
            source = source_of(record, logical)
        else:
            source = Source(names.TICKS, partition, -1, None, codec.encode("Tick", {"as_of": as_of}))
        while due := detector.due(partition, TICK_PART):
            effects = detector.tick_loans(source, due, datetime.now(UTC))
            entries.append((record, logical, effects))
            later.append((record, logical, partition, effects, None))
            if len(due) == TICK_PART:  # more may be due: this part goes out first
                await route(entries, sent, later)
                await flush(entries, sent)
                entries.clear()
                sent.clear()
        later.append((record, logical, partition, None, as_of))

    async def route(entries: list[Entry], sent: Sent, later: Deferred) -> None:
        """The routers' steps put off by ticks, in order, once the events they route are out.

        The routers cost several times what the detector does per event (a bureau state is a
        few KB to decode and encode again), and nothing downstream of overdue.events waits on
        them: running them after every tick of the batch is what keeps the detection latency
        the detector's own. Before the routers take the loop, the events are handed to the broker
        and acknowledged."""
        if not later:
            return
        await issue_early(entries, sent, acknowledged=True)
        entries += routed_later(later, loan_routers, point)
        later.clear()

    async def unprocessed_targets(partition: int) -> dict[TP, int]:
        """Per input partition of ``partition``: the last offset present now, if not yet processed."""
        targets: dict[TP, int] = {}
        committed = getattr(app.consumer, "_committed_offset", {})
        for logical in (names.SCHEDULES, names.REPAYMENTS):
            tp = TP(cfg.topic(logical), partition)
            try:
                high = app.consumer.highwater(tp)
                if high is None:  # not fetched yet (e.g. just assigned): ask the broker
                    high = (await app.consumer.highwaters(tp)).get(tp)
            except Exception:  # noqa: BLE001 - not assigned (mid-rebalance) or broker hiccup: don't gate
                continue
            if tp not in gate.processed and committed.get(tp) is not None:
                gate.processed[tp] = committed[tp]  # a new owner starts where the last one committed
            if high is not None and gate.processed.get(tp, -1) < high - 1:
                targets[tp] = high - 1
        return targets

    def command(source: Source) -> Effects | RouterEffects:
        """An operator's command (``streams.contracts.control``) for a loan of this partition."""
        try:
            bounds.check_size(len(source.value), cfg.max_record_bytes)
            order = control.decode(source.value)
            if source.key is None or source.key.decode("utf-8", "replace") != order.loan_id:
                raise errors.InvalidRecord(errors.KEY_MISMATCH, "record key must be its loan_id")
            if order.command == control.RELEASE:
                effects = detector.release(source.partition, order.loan_id)
                if effects.aside:
                    loan_routers.release(source.partition, order.loan_id)
                    log.info("a loan of partition %d was released (%s@%d)", source.partition, source.topic, source.offset)
                return effects
            assert order.event is not None
            try:
                event = codec.decode("OverdueEvent", order.event)
            except codec.DecodeError as exc:
                raise errors.InvalidRecord(errors.UNDECODABLE, exc.detail) from None
            if event["loan_id"] != order.loan_id:
                raise errors.InvalidRecord(errors.KEY_MISMATCH, "the event is of another loan")
            return loan_routers.on_events(source.partition, [(event, order.event)], rerouted=True)
        except errors.InvalidRecord as exc:
            return Effects(sends=[dead_letter(source, exc)], dlq=[exc.reason])

    async def step(message: Any, logical: str, entries: list[Entry], sent: Sent, later: Deferred) -> bool:
        """One input record of the detector's partitions (of logical topic ``logical``): its steps
        appended to ``entries``; returns True when it let a tick through. A record other than a
        tick first lets the routers catch up (``later``): a loan's router steps keep its order."""
        if logical != names.TICKS:
            await route(entries, sent, later)
        partition = pointed[0] = message.partition
        source = source_of(message, logical)
        if logical == names.TICKS:
            try:
                as_of = tick_instant(message.value, detector)
            except errors.InvalidRecord as exc:
                entries.append((message, logical, Effects(sends=[dead_letter(source, exc)], dlq=[exc.reason])))
                return False
            if gate.hold(partition, as_of, await unprocessed_targets(partition)):
                return False
            await tick_steps(message, logical, partition, as_of, entries, sent, later)
            return True
        if logical == names.DISPUTES:
            entries.append((message, logical, loan_routers.on_dispute(source)))
            return False
        if logical == names.CONTROL:
            entries.append((message, logical, command(source)))
            return False
        effects = detector.handle(source, datetime.now(UTC))
        entries.append((message, logical, effects))
        if effects.routed:  # most records change a loan without a transition: nothing to route
            entries.append((message, logical, loan_routers.on_events(partition, effects.routed)))
        released = gate.note(TP(message.topic, partition), message.offset)
        if released is None:
            return False
        await tick_steps(message, logical, partition, released, entries, sent, later)
        return True

    inputs = topic(*(cfg.topic(t) for t in (names.SCHEDULES, names.REPAYMENTS, names.TICKS, names.DISPUTES,
                                            names.CONTROL)))  # fmt: skip
    reread_uncommitted(app, {t.get_topic_name() for t in (notify_topic, items_topic)} | set(inputs.topics))
    # Each agent iterates a channel of batches (streams.intake) rather than its topics; the
    # topics are subscribed as iterating them would (the conductor's set decides the consumer's
    # subscription and the assignor's co-partitioned groups).
    detector_batches, notify_batches, item_batches = (app.channel(maxsize=BATCHES_QUEUED) for _ in range(3))
    routes: dict[str, faust.ChannelT] = {}
    for source, channel in ((inputs, detector_batches), (notify_topic, notify_batches), (items_topic, item_batches)):
        app.topics.add(source.clone(is_iterator=True))
        routes.update(dict.fromkeys(source.topics, channel))
    intake.install(app, routes, cfg.batch_max)

    async def detect_batch(batch: list[Any]) -> None:
        started = datetime.now(UTC)
        entries: list[Entry] = []
        ticks = 0
        taken: dict[str, int] = {}
        sent = Sent()
        later: Deferred = []
        for message in batch:
            logical = topic_of.get(message.topic, message.topic)
            taken[logical] = taken.get(logical, 0) + 1
            try:
                if not await step(message, logical, entries, sent, later):
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not lose the record or stop the worker
                entries.append((message, logical, internal_error(message, logical, exc)))
                continue
            # A tick's events leave now, while the next partition's tick is handled, rather than
            # after the whole batch: that wait was half of the detection latency.
            ticks += 1
            await issue_early(entries, sent)
            await asyncio.sleep(0)  # the producer's sender runs only when the batch lets it
        for logical, n in taken.items():
            consumed[logical].inc(n)
        await route(entries, sent, later)
        await flush(entries, sent)
        if ticks:
            m.tick_handling.observe((datetime.now(UTC) - started).total_seconds())
            newest = max(detector.clocks.values())
            m.last_tick.set(newest.timestamp())
            m.tick_lag.set((datetime.now(UTC) - newest).total_seconds())

    @app.agent(detector_batches, concurrency=1)
    async def detect(stream: faust.StreamT) -> None:
        """Schedules, repayments, disputes and ticks of a loan partition: detector, then its routers."""
        await in_batches(stream, detect_batch)

    # --- the per-borrower and per-partner stages ----------------------------------------------

    def stage(logical: str, one: Callable[[Any], RouterEffects]) -> Callable[[list[Any]], Awaitable[None]]:
        """A router stage's batch handler: each record through ``one``, then one ``flush``; a bug
        sends the record to the DLQ instead."""

        async def handle(batch: list[Any]) -> None:
            entries: list[Entry] = []
            for message in batch:
                pointed[0] = message.partition
                try:
                    effects: Effects | RouterEffects = one(message)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    effects = internal_error(message, logical, exc)
                entries.append((message, logical, effects))
            await flush(entries)

        return handle

    def notification(message: Any) -> RouterEffects:
        return notifier.on_event(message.partition, message.offset, message.key, message.value)

    def partner_item(message: Any) -> RouterEffects:
        headers = dict(message.headers or ())
        if MARKER_HEADER in headers:
            return digests.on_marker(message.partition, int(headers[MARKER_HEADER]), message.value)
        return digests.on_item(message.partition, message.offset, message.key, message.value)

    @app.agent(notify_batches, concurrency=1)
    async def notify(stream: faust.StreamT) -> None:
        """Notifications, per borrower (the daily cap spans the borrower's loans)."""
        await in_batches(stream, stage(NOTIFY_BY_BORROWER, notification))

    @app.agent(item_batches, concurrency=1)
    async def partner_shares(stream: faust.StreamT) -> None:
        """Partner shares, per partner: real time, or a daily digest on the tick-marker watermark."""
        await in_batches(stream, stage(PARTNER_ITEMS, partner_item))

    # --- recovery, readiness, gauges ------------------------------------------------------------

    @app.on_partitions_revoked.connect
    async def revoked(app: faust.App, revoked: set, **kwargs: Any) -> None:
        gate.forget(revoked)
        readiness["ready"] = False
        m.ready.set(0)
        m.recovering.set(1)

    @loans.on_recover
    async def rebuild_indexes() -> None:
        """After every rebalance and recovery: rebuild the per-partition indexes from the tables.

        Waits for batches in flight first: a batch's states reach the table only after its sends
        are acknowledged, and an index rebuilt meanwhile would miss those loans (a tick would
        then find nothing due for them)."""
        try:
            if not await quiet.wait(QUIET_TIMEOUT):
                log.warning("rebuilding the wake-up index while a batch is still in flight")
            detector.indexes.clear()
            detector.clear_cache()
            for shell in (loan_routers, notifier, digests):
                shell.cache.clear()
            actives = app.assignor.assigned_actives()
            set_aside.load(aside_store.items(actives, cfg.partitions))
            loaded = rebuild(detector, loan_store.items(actives, cfg.partitions))
            for shell, name in ((loan_routers, BUREAU_TABLE), (digests, PARTNER_TABLE)):
                shell.indexes.clear()
                load_indexes(shell.index, direct[name].items(actives, cfg.partitions),
                             lambda raw, name=name: stored_due(name, raw))  # fmt: skip
            log.info("wake-up index rebuilt: %d loans in %d partitions", loaded, len(detector.indexes))
        except Exception:
            log.exception("rebuilding the wake-up index failed")
        finally:
            readiness["ready"] = True
            m.ready.set(1)
            m.recovering.set(0)

    @app.timer(1.0)
    async def publish_gauges() -> None:
        """Gauges that are cheaper to publish once a second than per record."""
        book.flush()
        m.loans_aside.set(len(set_aside))
        if detector.clocks:
            m.tick_lag.set((datetime.now(UTC) - max(detector.clocks.values())).total_seconds())
        assigned = app.consumer.assignment() if app.consumer else set()
        ends, committed = app.monitor.tp_end_offsets, app.monitor.tp_committed_offsets
        m.consumer_lag.clear()
        for tp, end in list(ends.items()):
            done = committed.get(tp)
            if tp in assigned and done is not None:
                m.consumer_lag.labels(topic_of.get(tp.topic, tp.topic), str(tp.partition)).set(max(0, end - done))

    for logical in (*names.INPUT_TOPICS, names.CONTROL):
        m.records_consumed.labels(logical)  # every series exists from the start (rate() needs a 0)

    from .web import add_routes

    add_routes(app, loans, cfg.engine, cfg.api_token, lambda: readiness["ready"])

    if cfg.ticker_enabled:
        tick_topic = outputs[names.TICKS]

        @app.timer(cfg.tick_interval, on_leader=True)
        async def ticker() -> None:
            """The clock: one Tick with the current time to every partition of clock.ticks."""
            if app.rebalancing:
                return
            payload = codec.encode("Tick", {"as_of": datetime.now(UTC)})
            count = app.consumer.topic_partitions(cfg.topic(names.TICKS)) or cfg.partitions
            for partition in range(count):
                await tick_topic.send(value=payload, partition=partition)

    return app


def record_batches(
    kafka: Any, records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]
) -> Iterator[tuple[Any, int]]:
    """``records`` (key, value, headers) as aiokafka record batches of the producer ``kafka``,
    in order, each with its record count; a batch is as large as the producer's
    ``max_batch_size`` allows (a record larger than that goes alone: an empty batch takes any
    record)."""
    batch, count = kafka.create_batch(), 0
    for key, value, headers in records:
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
            batch.close()
            yield batch, count
            batch, count = kafka.create_batch(), 0
            batch.append(key=key, value=value, timestamp=None, headers=headers)
        count += 1
    if count:
        batch.close()  # else a later producer.send could add to it, and its count would be short
        yield batch, count


def reread_uncommitted(app: faust.App, topics: set[str]) -> None:
    """After each of Faust's seeks back to the committed offsets, seek the partitions of
    ``topics`` that have no committed offset yet to their beginning.

    Faust drops records it fetched while its flow was paused (recovery, a rebalance) and seeks
    back to the committed offsets to read them again; aiokafka skips a partition with no
    committed offset (or offset 0), so its fetch position stays past records nobody handled.
    Found by the SIGKILL test: a worker killed before its first commit restarted at the end of
    its inputs and never handled what it had not finished. Reading such a partition again from
    its beginning repeats at most what was handled before the first commit: at least once."""
    consumer = app.consumer
    faust_seek = consumer.perform_seek

    async def perform_seek() -> None:
        await faust_seek()
        for tp in consumer.assignment():
            if tp.topic in topics and consumer._committed_offset.get(tp) is None:
                await consumer.seek(tp, 0)

    consumer.perform_seek = perform_seek  # type: ignore[method-assign]


def load_indexes(
    index: Callable[[int], WakeIndex],
    stored: Iterable[tuple[int, bytes, bytes | None]],
    wake: Callable[[bytes], datetime | None],
) -> None:
    """Load each partition's wake-up index at once from stored (partition, key, bytes) states,
    ``wake`` giving a state's next wake-up. A state that cannot be read is left out (logged):
    its key wakes again with its next event."""
    entries: dict[int, list[tuple[str, datetime | None]]] = {}
    for partition, key, raw in stored:
        if raw is not None:
            try:
                at = wake(raw)
            except Exception as exc:  # noqa: BLE001 - one state must not stop the others' index
                report(exc, Source("router-state", partition, -1, key, b""), "reading a stored router state of",
                       "left out of the wake-up index")  # fmt: skip
                continue
            entries.setdefault(partition, []).append((key.decode(), at))
    for partition, loaded in entries.items():
        index(partition).load(loaded)


def rebuild(detector: Detector, stored: Iterable[tuple[int, bytes, bytes | None]]) -> int:
    """Fill the detector's per-partition wake-up indexes (and the book gauges) from stored loan
    states, given as (partition, key, bytes); returns the number of loans. A state that cannot
    be read (written by a newer release, damaged) sets its loan aside, not the rebuild."""
    contributions = []
    entries: dict[int, list[tuple[str, datetime | None]]] = {}
    for partition, key, raw in stored:
        if raw is None:
            continue
        try:
            at, contributed = indexed(raw, detector.cfg)
        except Exception as exc:  # this loan alone stops (SPEC §2)
            loan_id = key.decode("utf-8", "replace")
            source = Source("loans-changelog", partition, -1, key, b"")
            report(exc, source, "reading a stored loan state of", "the loan is set aside")
            detector.aside.add(partition, loan_id, aside.mark(exc, source, datetime.now(UTC)))
            continue
        contributions.append(contributed)
        entries.setdefault(partition, []).append((key.decode(), at))
    for partition, loaded in entries.items():
        detector.index(partition).load(loaded)
    if detector.book is not None:
        detector.book.reset(contributions, len(contributions))
    return len(contributions)
