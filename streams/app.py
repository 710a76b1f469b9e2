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
run in the same agent right after the detector, so their clock never runs ahead of the events
a tick causes; the per-partner stage follows a watermark of tick markers (``routing_shell``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import faust
from aiokafka.partitioner import murmur2
from faust.types import TP

from . import codec
from . import settings as names
from .core import errors, statecodec
from .core.loan import wake_at
from .core.routing import bureau, partners
from .detector import Detector, Effects, contribution, dlq_send
from .logs import logging_config
from .metrics import BookGauges, Metrics
from .policy_loader import load_policy
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
)
from .settings import Settings

log = logging.getLogger("duewatch")

LOAN_TABLE = "loans"
ROUTER_TABLES = (BUREAU_TABLE, COLLECTIONS_TABLE, LEDGER_TABLE, NOTIFY_TABLE, PARTNER_TABLE)


def internal_topics(cfg: Settings) -> tuple[str, ...]:
    """The repartition topics the routers use (created with the others before the worker starts)."""
    return tuple(f"{cfg.app_id}-{name}" for name in (NOTIFY_BY_BORROWER, PARTNER_ITEMS))


def changelog_topics(cfg: Settings) -> tuple[str, ...]:
    """The tables' changelog topics. Created before the worker starts: a fresh worker could
    otherwise look for one before it appears in its metadata (PartitionsMismatch, stalls)."""
    return tuple(f"{cfg.app_id}-{name}-changelog" for name in (LOAN_TABLE, *ROUTER_TABLES))


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key bytes): where upstream put this loan."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def _credentials(cfg: Settings) -> Any:
    if cfg.security_protocol == "PLAINTEXT":
        return None
    import ssl

    context = ssl.create_default_context(cafile=cfg.ssl_cafile) if cfg.security_protocol.endswith("SSL") else None
    if cfg.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=cfg.sasl_username,
        password=cfg.sasl_password,
        mechanism=cfg.sasl_mechanism or "PLAIN",
        ssl_context=context,
    )


class Gate:
    """Catch-up gating of ticks, per partition (DESIGN.md "Time enters only as ticks").

    When a tick for partition p arrives while an input partition of p has records the worker
    has not processed yet (its offset is below the high-water mark seen then), the tick is held
    until those records are processed. A newer tick replaces a held one but keeps the older
    targets, so a steady stream of input can delay the clock but never stop it.
    """

    # A tick held across this many newer ticks is let through anyway: the clock must never stop
    # (a target can become unreachable, e.g. when a rebalance moved the partition meanwhile).
    MAX_HOLDS = 30

    def __init__(self) -> None:
        self.processed: dict[TP, int] = {}
        self.held: dict[int, tuple[datetime, dict[TP, int], int]] = {}

    def hold(self, partition: int, as_of: datetime, targets: dict[TP, int]) -> bool:
        """Hold the tick if there are targets to reach; returns True when held."""
        held = self.held.get(partition)
        holds = 0
        if held is not None:
            as_of = max(as_of, held[0])
            targets = held[1] or targets
            holds = held[2] + 1
        targets = {tp: end for tp, end in targets.items() if self.processed.get(tp, -1) < end}
        if not targets or holds > self.MAX_HOLDS:
            if targets:
                log.warning("tick for partition %d released after %d holds with input still unread", partition, holds)
            self.held.pop(partition, None)
            return False
        self.held[partition] = (as_of, targets, holds)
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
        return None

    def forget(self, tps: Iterable[TP]) -> None:
        """Partitions were revoked: their positions and held ticks no longer apply here."""
        for tp in tps:
            self.processed.pop(tp, None)
            self.held.pop(tp.partition, None)


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


def tick_instant(value: bytes) -> datetime:
    """A Tick's instant; raises ``InvalidRecord`` for a bad one."""
    from .core.records import parse_tick

    try:
        return parse_tick(codec.decode("Tick", value)).as_of
    except codec.DecodeError as exc:
        raise errors.InvalidRecord(errors.UNDECODABLE, exc.detail) from None


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
        logging_config=logging_config(cfg.log_json, cfg.log_level),
        web_enabled=True,
        web_port=cfg.web_port,
        web_bind=cfg.web_bind,
        web_host=cfg.web_host,
        canonical_url=f"http://{cfg.web_host}:{cfg.web_port}",
        web_tables_enabled=False,  # /table/... would expose loan data
        web_router_enabled=False,
        producer_linger=0.002,
        # Don't block a rebalance on draining streams (it can deadlock with an in-flight commit).
        # Safe here: a state is written only after its outputs are acknowledged, so whatever the
        # new owner reprocesses re-sends the same ids.
        stream_wait_empty=False,
    )
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

    def load(name: str, key: str) -> bytes | None:
        return tables[name].get(key.encode())

    policy = load_policy(cfg.policy_file)
    book = BookGauges(m)
    detector = Detector(cfg.engine, lambda loan_id: loans.get(loan_id.encode()), book=book)
    loan_routers = LoanRouters(policy, load, cfg.partitions)
    notifier = Notifier(policy, load)
    digests = PartnerDigests(policy, load, cfg.partitions)
    gate = Gate()
    readiness = {"ready": False}
    app.duewatch_detector = detector  # for tests and the web views of this process

    # --- sending and writing ------------------------------------------------------------------

    def count(effects: Effects | RouterEffects) -> None:
        if isinstance(effects, Effects) and effects.events:
            wall = datetime.now(UTC)
            for event in effects.events:
                m.overdue_events.labels(event.type).inc()
                if event.retracts is None:
                    m.detection_lag.observe((wall - event.as_of).total_seconds())
        if isinstance(effects, RouterEffects):
            for sink, n in effects.routed.items():
                m.routed_records.labels(sink).inc(n)
        for reason in effects.dlq:
            m.invalid_records.labels(reason).inc()
        for send in effects.sends:
            if send.topic == names.DLQ:
                m.dlq_records.labels(dict(send.headers).get("source_topic", b"?").decode()).inc()

    async def perform(*all_effects: Effects | RouterEffects) -> None:
        """Send everything, wait for every acknowledgement, then write the states."""
        pending = []
        for effects in all_effects:
            count(effects)
            for send in effects.sends:
                pending.append(
                    await outputs[send.topic].send(
                        key=send.key, value=send.value, partition=send.partition, headers=send.headers or None
                    )
                )
        if pending:
            await asyncio.gather(*pending)
        for effects in all_effects:
            if isinstance(effects, Effects):
                for loan_id, state in effects.writes.items():
                    loans[loan_id.encode()] = statecodec.dumps(state)
            else:
                for name, key, value in effects.writes:
                    tables[name][key.encode()] = value

    async def dead_letter(message: Any, logical: str, exc: Exception) -> None:
        log.exception("failed on %s[%d]@%d; record sent to the DLQ", logical, message.partition, message.offset)
        error = errors.InvalidRecord(errors.INTERNAL_ERROR, type(exc).__name__)
        await perform(Effects(sends=[dlq_send(message.key, message.value, error, logical, message.partition, message.offset)]))

    # --- the detector, with the loan-keyed routers right behind it ----------------------------

    async def detect_and_route(effects: Effects, partition: int, tick_at: datetime | None = None) -> None:
        routed = loan_routers.on_events(partition, effects.routed)
        if tick_at is not None:
            routed.merge(loan_routers.on_tick(partition, tick_at))
        await perform(effects, routed)

    async def handle_tick(partition: int, as_of: datetime) -> None:
        started = datetime.now(UTC)
        await detect_and_route(detector.on_tick(partition, as_of, started), partition, as_of)
        m.tick_handling.observe((datetime.now(UTC) - started).total_seconds())
        newest = max(detector.clocks.values())
        m.last_tick.set(newest.timestamp())
        m.tick_lag.set((datetime.now(UTC) - newest).total_seconds())

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

    inputs = topic(*(cfg.topic(t) for t in (names.SCHEDULES, names.REPAYMENTS, names.TICKS, names.DISPUTES)))

    @app.agent(inputs, concurrency=1)
    async def detect(stream: faust.StreamT) -> None:
        """Schedules, repayments, disputes and ticks of a loan partition: detector, then its routers."""
        async for event in stream.events():
            message = event.message
            logical = topic_of.get(message.topic, message.topic)
            partition = message.partition
            m.records_consumed.labels(logical).inc()
            try:
                if logical == names.TICKS:
                    try:
                        as_of = tick_instant(message.value)
                    except errors.InvalidRecord as exc:
                        await perform(Effects(sends=[dlq_send(message.key, message.value, exc, logical, partition, message.offset)], dlq=[exc.reason]))
                        continue
                    if not gate.hold(partition, as_of, await unprocessed_targets(partition)):
                        await handle_tick(partition, as_of)
                    continue
                if logical == names.DISPUTES:
                    await perform(loan_routers.on_dispute(partition, message.offset, message.key, message.value))
                    continue
                effects = detector.handle(logical, partition, message.offset, message.key, message.value, datetime.now(UTC))
                await detect_and_route(effects, partition)
                released = gate.note(message.tp, message.offset)
                if released is not None:
                    await handle_tick(partition, released)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not lose the record or stop the worker
                await dead_letter(message, logical, exc)

    # --- the per-borrower and per-partner stages ----------------------------------------------

    @app.agent(notify_topic, concurrency=1)
    async def notify(stream: faust.StreamT) -> None:
        """Notifications, per borrower (the daily cap spans the borrower's loans)."""
        async for event in stream.events():
            message = event.message
            try:
                await perform(notifier.on_event(message.partition, message.offset, message.key, message.value))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await dead_letter(message, NOTIFY_BY_BORROWER, exc)

    @app.agent(items_topic, concurrency=1)
    async def partner_shares(stream: faust.StreamT) -> None:
        """Partner shares, per partner: real time, or a daily digest on the tick-marker watermark."""
        async for event in stream.events():
            message = event.message
            try:
                headers = dict(message.headers or ())
                if MARKER_HEADER in headers:
                    source = int(headers[MARKER_HEADER])
                    await perform(digests.on_marker(message.partition, source, message.value))
                else:
                    await perform(digests.on_item(message.partition, message.offset, message.key, message.value))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await dead_letter(message, PARTNER_ITEMS, exc)

    # --- recovery, readiness, gauges ------------------------------------------------------------

    @app.on_partitions_revoked.connect
    async def revoked(app: faust.App, revoked: set, **kwargs: Any) -> None:
        gate.forget(revoked)
        readiness["ready"] = False
        m.ready.set(0)
        m.recovering.set(1)

    @loans.on_recover
    async def rebuild_indexes() -> None:
        """After every rebalance and recovery: rebuild the per-partition indexes from the tables."""
        try:
            detector.indexes.clear()
            detector.clear_cache()
            for shell in (loan_routers, notifier, digests):
                shell.cache.clear()
            loaded = rebuild(detector, loans.items(), cfg.partitions)
            loan_routers.indexes.clear()
            for key, raw in tables[BUREAU_TABLE].items():
                if raw is not None:
                    due = bureau.next_due(bureau.state_from_bytes(raw))
                    loan_routers.index(partition_of(key, cfg.partitions)).set(key.decode(), due)
            digests.indexes.clear()
            for key, raw in tables[PARTNER_TABLE].items():
                if raw is not None:
                    due = partners.next_due(partners.state_from_bytes(raw))
                    digests.index(partition_of(key, cfg.partitions)).set(key.decode(), due)
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
        if detector.clocks:
            m.tick_lag.set((datetime.now(UTC) - max(detector.clocks.values())).total_seconds())
        assigned = app.consumer.assignment() if app.consumer else set()
        ends, committed = app.monitor.tp_end_offsets, app.monitor.tp_committed_offsets
        m.consumer_lag.clear()
        for tp, end in list(ends.items()):
            done = committed.get(tp)
            if tp in assigned and done is not None:
                m.consumer_lag.labels(topic_of.get(tp.topic, tp.topic), str(tp.partition)).set(max(0, end - done))

    for logical in (names.SCHEDULES, names.REPAYMENTS, names.TICKS, names.DISPUTES):
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


def rebuild(detector: Detector, items: Iterable[tuple[bytes, bytes]], partitions: int) -> int:
    """Fill the detector's per-partition wake-up indexes (and the book gauges) from stored loan states."""
    count = 0
    contributions = []
    for key, raw in items:
        if raw is None:
            continue
        state = statecodec.loads(raw)
        detector.index(partition_of(key, partitions)).set(state.loan_id, wake_at(state, detector.cfg))
        contributions.append(contribution(state))
        count += 1
    if detector.book is not None:
        detector.book.reset(contributions, count)
    return count
