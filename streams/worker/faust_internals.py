"""Every use of a private Faust or aiokafka member, fenced in one module.

Checked against faust-streaming 0.15.3 (mode-streaming 0.7.1) and aiokafka 0.14.0, the minor
versions ``pyproject.toml`` pins; ``tests/unit/worker/test_faust_internals.py`` names the
assumption that broke if an upgrade changes one of these members. Ruff's ``SLF`` rule is on
everywhere else. Why each is needed:

- **Batched intake** (``install``, ``acknowledge``, ``current``): Faust hands every record to its
  agents one at a time (a ``Message``, four tasks and an ``asyncio.wait`` racing flow control, an
  ``Event``, per-event bookkeeping, an ack), which cost more CPU than the detector itself and
  capped a worker near 2,500 records/s. Here the consumer's fetch loop
  (``Consumer._drain_messages``) is replaced by one that does what Faust's does (flow control,
  generation, read offsets, gaps, commit-every) but hands the records of the worker's own
  topics to their agent a whole fetch at a time; records are acknowledged with Faust's own ack
  bookkeeping so Faust's committer commits them. Group membership, assignment, tables and
  their recovery, seeks and commits stay Faust's.
- **Nothing fetched is dropped** (``_sort_fetch``, ``rewind``, the fetch's snapshot of the
  active partitions): Faust's loop drops records it will not hand on (a partition paused while
  its fetch was in flight, the rest of a fetch when a rebalance begins, a changelog record whose
  hand-over the flow stopped) with the consumer's position past them. A standby copy lost whole
  catch-ups that way and a worker that took its partition over decided on old states
  (docs/reliability.md). Here each is sought back to.
- **Recovery in a second, not six** (``shorten_fetch_wait``, ``IDLE_WAIT``): Faust makes the
  broker hold an empty fetch 1.5 s and its recovery's offset requests wait behind it, four
  times per rebalance; its loop also sleeps a second whenever every partition is paused.
- **Reading uncommitted partitions again** (``reread_uncommitted``): after a rebalance or
  recovery Faust seeks back to the committed offsets, but aiokafka skips a partition with no
  committed offset, so a worker killed before its first commit came back at the end of its
  inputs; such partitions are sought to their beginning.
- **Tables by partition** (``PartitionStore``): Faust's ``Table.get`` and ``table[key] = value``
  pass each call through five layers and pick the partition from the current event (~12 µs
  against ~1 µs for the database call); a step always knows its partition, and a batch writes
  each partition's states as one RocksDB write batch. A store that is not rocksdict-backed is
  used through the table, with the partition made the current event's (``_current_event``).
- **Record batches** (``kafka_producer``): changelog and output records go as aiokafka record
  batches per topic partition (one future per batch, not per record) through the aiokafka
  producer under Faust's.
- **Committed offsets** (``committed_offset``): a tick's catch-up gating starts a new owner of a
  partition where the last one committed.
- **The idempotent producer** (``IdempotentProducer``): Faust turns on aiokafka's idempotence
  only under ``exactly_once``; its producer's ``_settings_extra`` is extended instead.
- **Committing before a rebalance** (``commit_before_revoke``): Faust's consumer drops the
  acknowledged but not yet committed offsets of revoked partitions (``on_partitions_revoked``),
  so whoever gets them reprocesses up to a commit interval of records.
- **A static member that moved** (``accept_moved_member``): a worker restarted under the same
  ``DUEWATCH_INSTANCE_ID`` is handed back the assignment made for its previous URL; Faust's
  assignor asserts the URL (``_url``, ``_decompress``/``_compress``), which would stop
  aiokafka's coordinator for good.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import faust
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import IllegalStateError
from faust.assignor.client_assignment import ClientMetadata
from faust.streams import _current_event
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.utils.futures import notify
from mode.utils.queues import ThrowableQueue

log = logging.getLogger("duewatch")

CHECKED_AGAINST = {"faust-streaming": "0.15", "aiokafka": "0.14", "mode-streaming": "0.7"}

#: (class, member) pairs this module relies on; the test checks each still exists.
ASSUMED: tuple[tuple[str, str], ...] = (
    ("faust.transport.consumer.Consumer", "_drain_messages"),
    ("faust.transport.consumer.Consumer", "_get_active_partitions"),
    ("faust.transport.consumer.Consumer", "_add_gap"),
    ("faust.transport.consumer.Consumer", "_to_message"),
    ("faust.transport.consumer.Consumer", "perform_seek"),
    ("faust.transport.consumer.ThreadDelegateConsumer", "_getmany"),
    ("faust.transport.drivers.aiokafka.AIOKafkaConsumerThread", "_create_worker_consumer"),
    ("aiokafka.consumer.subscription_state.Assignment", "state_value"),
    ("aiokafka.consumer.subscription_state.TopicPartitionState", "has_valid_position"),
    ("faust.stores.rocksdb.Store", "_db_for_partition"),
    ("faust.stores.rocksdb.Store", "_visible_items"),
    ("faust.transport.drivers.aiokafka.Producer", "_settings_extra"),
    ("faust.transport.drivers.aiokafka.Producer", "_ensure_producer"),
    ("faust.assignor.PartitionAssignor", "_url"),
    ("faust.assignor.PartitionAssignor", "_compress"),
    ("faust.assignor.PartitionAssignor", "_decompress"),
    ("faust.tables.manager.TableManager", "changelog_queue"),
)
#: Instance attributes of Faust's consumer used here (set in its ``__init__``).
CONSUMER_ATTRIBUTES = (
    "_read_offset", "_committed_offset", "_acked", "_acked_index", "_n_acked", "_commit_every",
    "_waiting_for_ack", "_buffered_partitions", "_stopped", "_thread", "not_waiting_next_records",
    "can_resume_flow",
)  # fmt: skip

#: Instance attributes of Faust's table manager and its recovery used here (``KeptChangelogQueue``).
TABLES_ATTRIBUTES = ("_changelog_queue",)
RECOVERY_ATTRIBUTES = ("active_tps", "standby_tps")

_FETCHING = "CONSUMER_FETCHING"  # Faust's diagnostics flag for the same state


# --- batched intake ------------------------------------------------------------------------

#: Seconds a fetch waits for records before the loop looks at the partitions again (a partition
#: resumed meanwhile is fetched from the next round on).
FETCH_TIMEOUT = 0.2
#: Seconds the loop waits while every partition is paused (Faust: one second).
IDLE_WAIT = 0.05
#: How long the broker holds a fetch that finds no new record (Faust hard-codes 1,500 ms). The
#: consumer's other requests to that broker (the recovery's earliest and latest offsets) queue
#: behind it on the one connection: at 1.5 s each, a rebalance's recovery spent about 6 s
#: waiting, a takeover 16 s instead of 12.
FETCH_MAX_WAIT_MS = 100


@dataclass(frozen=True, slots=True)
class Batch:
    """Records of one fetch for one agent, in their partitions' order, and the consumer
    generation they were fetched in (a batch of an older generation is not handled: after a
    rebalance Faust seeks back to the committed offsets and they come again)."""

    generation: int
    records: list[Any]  # aiokafka ConsumerRecords: topic, partition, offset, key, value, headers


def current(app: faust.App, batch: Batch) -> bool:
    """Whether ``batch`` may be handled now (Faust's streams skip events on the same test)."""
    return bool(app.flow_control.is_active()) and batch.generation == app.consumer_generation_id


def acknowledge(app: faust.App, records: Iterable[Any]) -> None:
    """Mark ``records`` done, as Faust's ``Consumer.ack`` marks a message, so the committer
    may commit past them."""
    consumer: Any = app.consumer  # private members, untyped by Faust
    committed_at = consumer._committed_offset
    acked_index = consumer._acked_index
    acked = consumer._acked
    n = 0
    tp: TP | None = None
    index: set[int] = set()
    offsets: list[int] = []
    committed: int | None = None
    for record in records:
        if tp is None or record.partition != tp.partition or record.topic != tp.topic:
            tp = TP(record.topic, record.partition)
            index, offsets, committed = acked_index[tp], acked[tp], committed_at[tp]
        offset = record.offset
        if (committed is None or offset >= committed) and offset not in index:
            index.add(offset)
            offsets.append(offset)
            n += 1
    consumer._n_acked += n
    notify(consumer._waiting_for_ack)


async def hand_over(channel: faust.ChannelT, batch: Batch) -> bool:
    """Put ``batch`` on ``channel``, waiting while its agent's queue is full; False when the
    queue was cleared meanwhile.

    Faust clears its queues when a rebalance begins and when flow resumes, and clearing cancels
    whoever waits to put (mode's ``ThrowableQueue.clear``). Faust's own delivery never waits
    there; this one does, so that cancellation is told apart from the fetcher being stopped:
    only the latter is a cancellation of this task. A cleared batch is dropped like the queued
    ones — Faust seeks back to the committed offsets and its records come again."""
    try:
        await channel.put(batch)  # type: ignore[arg-type]
        return True
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        return False


async def _sort_fetch(
    app: faust.App,
    records: Mapping[TP, list[Any]],
    active: Any,
    routes: Mapping[str, faust.ChannelT],
    generation: int,
) -> tuple[dict[faust.ChannelT, list[Any]], dict[TP, int]]:
    """One fetch's records by the channel of their agent, with Faust's checks (flow, generation,
    read offsets, gaps); records of other topics (the tables' changelogs) go Faust's own way, one
    by one.

    The second value says, per partition, the first offset of the records not taken: they are
    read again (``rewind``). The consumer's position is past every record a fetch returned, so a
    record dropped here without a seek back is skipped for good; Faust drops them (and so did
    this loop) in three places, each of which lost states in the chaos runs:

    - a partition paused while its fetch was in flight (Faust pauses the changelogs it has
      recovered while standby partitions, fetched from their beginning, are in the same fetch);
    - the rest of a fetch once the flow stops or the generation changes (a rebalance began);
    - a changelog record whose hand-over was cancelled because the flow stopped meanwhile.

    While a rebalance is not over, the records of the agents' topics are not taken either: Faust's
    recovery resumes those partitions before it seeks them to the committed offsets, and records
    read in between would be processed ahead of the committed offset, before the records the seek
    then brings."""
    consumer: Any = app.consumer
    read_offset = consumer._read_offset
    acks_enabled_for = app.topics.acks_enabled_for
    batches: dict[faust.ChannelT, list[Any]] = {}
    rewind: dict[TP, int] = {}
    for tp, fetched in records.items():
        if not fetched:
            continue
        channel = routes.get(tp.topic)
        if (
            not consumer.flow_active
            or app.consumer_generation_id != generation
            or (active is not None and tp not in active and tp not in consumer._buffered_partitions)
            or (channel is not None and app.rebalancing)
        ):
            rewind[tp] = fetched[0].offset
            continue
        app.monitor.track_tp_end_offset(tp, consumer.highwater(tp))
        for record in fetched:
            offset = record.offset
            last = read_offset[tp]
            if last is not None and offset < last:
                continue  # read before a seek back: Faust drops these too
            if last and offset - last > 1 and acks_enabled_for(tp.topic):
                await consumer._add_gap(tp, last + 1, offset)
            if channel is not None:
                batches.setdefault(channel, []).append(record)
            elif not await _delivered(consumer, consumer._to_message(tp, record)):
                rewind[tp] = offset
                break
            read_offset[tp] = offset
    return batches, rewind


async def _delivered(consumer: Any, message: Any) -> bool:
    """Hand a changelog record to Faust (its tables' queue), unless the flow stops first."""
    delivery = consumer.callback(message)
    result = await consumer.wait_first(delivery, consumer.suspend_flow.wait())
    return delivery in result.done


def fetch_position(app: faust.App, tp: TP) -> int | None:
    """The consumer's position in ``tp`` (the offset its next fetch starts at); None when the
    partition is not assigned or its position is being reset."""
    client: Any = app.consumer._thread._consumer  # type: ignore[attr-defined]
    subscription = client._subscription.subscription if client is not None else None
    assignment = subscription.assignment if subscription is not None else None
    state = assignment.state_value(tp) if assignment is not None else None
    return state.position if state is not None and state.has_valid_position else None


async def rewind(app: faust.App, tp: TP, offset: int) -> None:
    """Read ``tp`` again from ``offset``, unless its position is there or before already (a seek
    since the fetch, e.g. the recovery's, wins: reading more again is harmless, less is a loss)."""
    position = fetch_position(app, tp)
    if position is not None and position <= offset:
        return
    try:
        await app.consumer.seek(tp, offset)
    except IllegalStateError:
        pass  # no longer assigned: not this worker's to read


class KeptChannel(faust.Channel):
    """A channel whose queue Faust's flow control never clears.

    Faust clears its agents' queues whenever the flow resumes (mode's ``FlowControlQueue`` with
    ``clear_on_resume``), which its recovery does several times, the last one after it sought
    the partitions to their committed offsets: a batch cleared then is never read again, and
    the committer, seeing later offsets acknowledged, commits past it. A batch in this queue is
    handled, or skipped by its agent because it is of an older generation (``current``), and
    then read again after that rebalance's seek."""

    @property
    def queue(self) -> Any:
        if self._queue is None:
            maxsize = self.maxsize if self.maxsize is not None else self.app.conf.stream_buffer_maxsize
            self._queue = self.app.FlowControlQueue(maxsize=maxsize, clear_on_resume=False)
        return self._queue


class KeptChangelogQueue(ThrowableQueue):
    """The tables' changelog queue (what Faust's recovery applies to the tables), kept when the
    flow resumes.

    Faust's own is cleared whenever the flow resumes (``clear_on_resume``), the last time after
    the recovery has resumed the standby partitions and its ``on_recovery_completed`` callbacks
    and the seek to the committed offsets have run: the standby changelog records fetched
    meanwhile and not yet applied are dropped while the consumer's position is past them. The
    recovery then takes the next ones (a compacted changelog has gaps, so it cannot tell), and
    the standby copy lacks those states for good while its persisted offset moves past them;
    promoted to active, it decides on older states (the chaos run lost schedules and repayments
    that way: docs/reliability.md). Kept, a record is applied when its turn comes, or ignored by
    the recovery if its offset is not beyond what it has read (after a rebalance's seek the
    records come again). A record of a partition the recovery no longer tracks is dropped here:
    Faust would apply it to the table of the record before."""

    def __init__(self, app: faust.App, maxsize: int | None) -> None:
        super().__init__(maxsize=maxsize or 0, flow_control=app.flow_control, clear_on_resume=False)
        tables: Any = app.tables
        self._recovery: Any = tables.recovery

    async def get(self) -> Any:
        while True:
            event = await super().get()
            tp = event.message.tp
            if tp in self._recovery.active_tps or tp in self._recovery.standby_tps:
                return event


def keep_changelog_queue(app: faust.App) -> None:
    """Give ``app``'s tables a ``KeptChangelogQueue``. Call it once the tables are defined and
    before the app starts (Faust creates its queue lazily, when the tables start)."""
    tables: Any = app.tables
    if tables._changelog_queue is not None:
        raise RuntimeError("the tables' changelog queue exists already; call keep_changelog_queue earlier")
    tables._changelog_queue = KeptChangelogQueue(app, app.conf.stream_buffer_maxsize)


def install(app: faust.App, routes: Mapping[str, faust.ChannelT], batch_max: int) -> None:
    """Replace the consumer's fetch loop: records of the topics in ``routes`` go to their
    channel as ``Batch`` values of at most ``batch_max`` records; all others Faust's way (the
    tables' changelogs during recovery and for standbys)."""
    consumer: Any = app.consumer
    fetch_a_snapshot(consumer)
    shorten_fetch_wait(app)

    async def drain(fetcher: Any) -> None:
        commit_every = consumer._commit_every
        diag = consumer.diag
        try:
            while not (consumer._stopped.is_set() or fetcher._stopped.is_set()):
                diag.set_flag(_FETCHING)
                records, active = await _next_records(consumer)
                await consumer.sleep(0)
                if records and not consumer.should_stop:
                    generation = app.consumer_generation_id
                    batches, again = await _sort_fetch(app, records, active, routes, generation)
                    for tp, offset in again.items():
                        await rewind(app, tp, offset)
                    handing = [(channel, Batch(generation, taken[start : start + batch_max]))
                               for channel, taken in batches.items() for start in range(0, len(taken), batch_max)]  # fmt: skip
                    for channel, batch in handing:
                        if not await hand_over(channel, batch):
                            break  # cleared for a rebalance: the rest comes again after its seek
                    if commit_every is not None and consumer._n_acked >= commit_every:
                        consumer._n_acked = 0
                        await consumer.commit()
                diag.unset_flag(_FETCHING)
        except consumer.consumer_stopped_errors:
            if app.should_stop:
                log.info("broker stopped the consumer, shutting down")
                return
            raise
        except asyncio.CancelledError:
            if app.should_stop:
                return
            raise
        finally:
            diag.unset_flag(_FETCHING)

    consumer._drain_messages = drain


def fetch_a_snapshot(consumer: Any) -> None:
    """Give the consumer's fetches a copy of the active partitions: aiokafka reads the set when
    its fetch wakes up and, finding it emptied (Faust pauses every partition between its recovery
    and the standby start), returns the records of every partition it has fetched."""
    faust_getmany = consumer._getmany

    async def getmany(active_partitions: set[TP] | None, timeout: float) -> Any:
        snapshot = None if active_partitions is None else set(active_partitions)
        return await faust_getmany(active_partitions=snapshot, timeout=timeout)

    consumer._getmany = getmany


async def _next_records(consumer: Any) -> tuple[Any, Any]:
    """Faust's ``_wait_next_records``, without its one-second sleep while every partition is
    paused (a rebalance): the fetch starts within ``IDLE_WAIT`` of the recovery resuming one."""
    if not consumer.flow_active:
        await consumer.wait(consumer.can_resume_flow)
    consumer.not_waiting_next_records.set()
    active = consumer._get_active_partitions()
    if not active:
        await consumer.sleep(IDLE_WAIT)
        return {}, active
    return await consumer._getmany(active_partitions=active, timeout=FETCH_TIMEOUT), active


def shorten_fetch_wait(app: faust.App) -> None:
    """Make the consumer's broker hold an empty fetch ``FETCH_MAX_WAIT_MS`` at most (see there).
    Records are returned as soon as there are any either way."""
    thread: Any = app.consumer._thread  # type: ignore[attr-defined]
    faust_create = thread._create_worker_consumer

    def create_worker_consumer(*args: Any, **kwargs: Any) -> Any:
        client = faust_create(*args, **kwargs)
        client._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by its fetcher when it starts
        return client

    thread._create_worker_consumer = create_worker_consumer


def reread_uncommitted(app: faust.App, topics: set[str]) -> None:
    """After each of Faust's seeks back to the committed offsets, seek the partitions of
    ``topics`` that have no committed offset yet to their beginning (see the module docstring).
    Reading such a partition again repeats at most what was handled before the first commit:
    at least once."""
    consumer: Any = app.consumer
    faust_seek = consumer.perform_seek

    async def perform_seek() -> None:
        await faust_seek()
        for tp in consumer.assignment():
            if tp.topic in topics and consumer._committed_offset.get(tp) is None:
                await consumer.seek(tp, 0)

    consumer.perform_seek = perform_seek


def committed_offset(app: faust.App, tp: TP) -> int | None:
    """The offset Faust last committed for ``tp`` (None: none yet)."""
    consumer: Any = app.consumer
    offset: int | None = consumer._committed_offset.get(tp)
    return offset


# --- tables by partition ---------------------------------------------------------------------


class _InPartition:
    """A stand-in for Faust's current event: its RocksDB store reads only ``.message.partition``."""

    __slots__ = ("message", "__weakref__")

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


_IN_PARTITION: dict[int, _InPartition] = {}


def make_current(partition: int) -> None:
    """Make ``partition`` the current event's for Faust's own table path, which looks a key up
    only in the current event's partition and writes into it: batched records are not Faust
    events (faust-streaming#497 is the same limit, met by ``take()``)."""
    current = _IN_PARTITION.get(partition)
    if current is None:
        current = _IN_PARTITION[partition] = _InPartition(partition)
    _current_event.set(weakref.ref(current))  # type: ignore[arg-type]


class PartitionStore:
    """A Faust table's states read and written by partition, straight on the partition's
    RocksDB database (see the module docstring). The bytes are the same either way (the tables'
    serializers are raw)."""

    def __init__(self, table: faust.types.TableT, partitions: int) -> None:
        self.table = table
        self.partitions = partitions
        self._db_for: Any = None
        self._write_batch: Any = None
        self._resolved = False

    def _databases(self) -> Any:
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
            make_current(partition)
            return self.table.get(key)
        return db_for(partition).get(key)

    def put(self, partition: int, items: list[tuple[bytes, bytes | None]]) -> None:
        """Write ``items`` into ``partition`` at once (one RocksDB write batch); a None value
        deletes the key, as a changelog tombstone does in Faust's recovery."""
        db_for = self._databases()
        if db_for is None or self._write_batch is None:
            make_current(partition)
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

    def items(self, actives: set[TP]) -> Iterator[tuple[int, bytes, bytes | None]]:
        """(partition, key, bytes) of every state in the table's active partitions.

        Straight from each partition's database (Faust's RocksDB store keeps one per partition),
        so a restart neither asks the partitioner for each of a million keys nor pays Faust's
        per-item layers; any other store is read through the table, the key's partition computed."""
        from ..contracts.partitioning import partition_of

        store = self.table.data
        dbs = getattr(store, "_dbs", None)
        visible = getattr(store, "_visible_items", None)
        if dbs is None or visible is None:
            for key, raw in self.table.items():
                yield partition_of(key, self.partitions), key, raw
            return
        topic = self.table.changelog_topic.get_topic_name()
        for partition, db in list(dbs.items()):
            if TP(topic, partition) in actives:
                for key, raw in visible(db):
                    yield partition, key, raw

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        """Where a restart reads this table's changelog partition from (Faust's
        ``Table._on_changelog_sent`` records it per record)."""
        store: Any = self.table.data
        store.set_persisted_offset(tp, offset)


# --- producing -------------------------------------------------------------------------------


def kafka_producer(app: faust.App) -> Any:
    """The aiokafka producer under Faust's (for record batches: ``create_batch``/``send_batch``)."""
    producer: Any = app.producer
    return producer._ensure_producer()


async def cluster_metadata(app: faust.App) -> Any:
    """The cluster's metadata, asked of its brokers now through the producer's client (raises
    when none answers): whether the worker can reach its broker (``outage.BrokerWatch``)."""
    return await kafka_producer(app).client.fetch_all_metadata()


class IdempotentProducer(faust_aiokafka.Producer):
    """Faust's aiokafka producer with acks=all and idempotence, whatever the processing guarantee.

    On a replicated cluster a record acknowledged by the leader alone is lost if the leader dies
    before a follower copied it; acks=all waits for ``min.insync.replicas``. A send retried after
    a broker failure would be written twice without idempotence (the broker recognises the retry
    by producer id and sequence number). Faust has ``producer_acks`` but turns idempotence on only
    under ``exactly_once``, which would also make every send transactional."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


def use_idempotent_producer(app: faust.App) -> None:
    """Make ``app`` send with IdempotentProducer. Call it right after creating the app: Faust
    creates its producer lazily from ``app.transport.Producer``, at the first send or start."""
    if app._producer is not None:
        raise RuntimeError("the app's producer exists already; call use_idempotent_producer earlier")
    app.transport.Producer = IdempotentProducer  # type: ignore[misc]


# --- group membership ------------------------------------------------------------------------


def commit_before_revoke(app: faust.App, quiet: Callable[[float], Awaitable[bool]], timeout: float) -> None:
    """Finish the batch in flight and commit what is done before partitions are revoked.

    Faust's consumer forgets the offsets acknowledged since its last commit (every
    ``broker_commit_interval``) when partitions are revoked, and with ``stream_wait_empty`` off
    (see ``app``) a batch may still be in flight then: the partitions' next owner reprocesses
    all of it. Reprocessing is allowed (at least once), but it is not a replay of what happened:
    it reads the records already there, so a late record can be taken before a tick it followed
    the first time, and what the tick had emitted is then neither emitted again nor retracted
    (docs/reliability.md). Here the agents take no new batch, the one in flight (``quiet``, at
    most ``timeout`` seconds) writes its states and acknowledges its records, and the offsets
    are committed, before Faust's own revocation. Kafka accepts the commit of a member of the
    current generation while the group prepares to rebalance; aiokafka's auto-commit does the
    same there."""
    consumer: Any = app.consumer
    faust_revoked = consumer.on_partitions_revoked

    async def on_partitions_revoked(revoked: set[TP]) -> None:
        if revoked:
            app.flow_control.suspend()  # the agents take no further batch (``current``)
            consumer.stop_flow()  # and the fetch loop hands nothing more over
            if not await quiet(timeout):
                log.warning("partitions revoked while a batch was still in flight after %.0f s", timeout)
            try:
                if not await consumer.commit():  # False: it waited for the committer's commit instead
                    await consumer.commit()
            except Exception as exc:  # noqa: BLE001 - the rebalance goes on; the records come again
                log.warning("committing before the rebalance failed: %s", exc)
        await faust_revoked(revoked)

    consumer.on_partitions_revoked = on_partitions_revoked


def accept_moved_member(app: faust.App) -> None:
    """Let a static member take back an assignment made for another URL of its own.

    The broker hands a static member that rejoins a stable group its previous assignment
    without a rebalance (KIP-345), and Faust's assignment carries the member's canonical URL
    from then. If ``DUEWATCH_WEB_HOST`` or ``DUEWATCH_WEB_PORT`` changed across the restart,
    Faust's ``on_assignment`` fails an assertion inside aiokafka's coordinator task, which
    then stops for good: a worker that never becomes ready. The assignment is taken with this
    worker's URL put in place of the old one instead (a warning says so). Until the next
    rebalance the other workers forward ``/loans/...`` for these partitions to the old URL."""
    assignor: Any = app.assignor
    faust_on_assignment = assignor.on_assignment

    def moved(urls: Mapping[str, Any], old: str, new: str) -> dict[str, Any]:
        return {new if url == old else url: value for url, value in urls.items()}

    def on_assignment(assignment: Any) -> None:
        metadata = ClientMetadata.loads(assignor._decompress(assignment.user_data))
        url = str(assignor._url)
        if metadata.url != url:
            log.warning("this worker's static member id was assigned partitions at another URL (%s); "
                        "taking them at %s", metadata.url, url)  # fmt: skip
            metadata = metadata.derive(
                url=url,
                changelog_distribution=moved(metadata.changelog_distribution, metadata.url, url),
                external_topic_distribution=moved(metadata.external_topic_distribution, metadata.url, url),
            )
            assignment = ConsumerProtocolMemberAssignment(
                assignment.version, assignment.assignment, assignor._compress(metadata.dumps())
            )
        faust_on_assignment(assignment)

    assignor.on_assignment = on_assignment
