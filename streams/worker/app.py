"""The Faust app of a duewatch worker: configuration, topics, tables and the wiring of its parts.

Nothing here decides or sends anything. The agents (``agents``) hand each batch to the shells
(``detector``, ``routers``), which call the pure core, and the checkpoint (``checkpoint``) carries
out what comes back in the at-least-once order. ``faust_internals`` holds every use of a private
Faust or aiokafka member.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import faust

from ..contracts import registry as schema_registry
from ..contracts import topics as names
from ..contracts.partitioning import partition_of
from ..core.routing.engine import BUREAU, COLLECTIONS, LEDGERS, NOTIFICATIONS, PARTNERS
from ..logs import logging_config
from ..policy_loader import load_policy
from ..settings import Settings
from . import faust_internals
from .agents import Context, DetectorAgent, Quiet, StageAgent, failed, in_batches
from .aside import SetAside
from .checkpoint import BATCH_BYTES, Checkpoint, Step
from .detector import Detector
from .gate import Gate
from .lifecycle import REVOKE_QUIET, Lifecycle, group_membership
from .metrics import BookGauges, Tally, add_faust_sensors, metrics
from .outage import BrokerWatch
from .routers import LoanRouters, Notifier, PartnerDigests
from .tables import ASIDE, LOANS, NOTIFY_BY_BORROWER, PARTNER_ITEMS, REKEY, TABLES, encode, internal_topics
from .ticker import add_ticker
from .tracing import Tracing
from .web import add_routes
from .wire import Wire

log = logging.getLogger("duewatch")

BATCHES_QUEUED = 4  # fetched batches waiting per agent (bounds memory; the fetch waits beyond)


def _credentials(cfg: Settings) -> Any:
    """Faust's broker credentials from the settings: the CLI's TLS context and SASL settings."""
    if cfg.security_protocol == "PLAINTEXT":
        return None
    context = cfg.ssl_context()  # the CLI's TLS too: CA, client certificate chain, key password
    if cfg.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    sasl = cfg.sasl_kwargs()
    return faust.SASLCredentials(
        username=sasl.get("sasl_plain_username"), password=sasl.get("sasl_plain_password"),
        mechanism=sasl.get("sasl_mechanism") or "PLAIN", ssl_context=context,
    )  # fmt: skip


def create_app(cfg: Settings) -> faust.App:
    """Build the worker's Faust app from settings."""
    m = metrics()
    app = faust.App(
        cfg.app_id,
        env={},  # Faust reads no variable of its own (a Kubernetes WEB_PORT=tcp://... would crash it)
        broker=[f"kafka://{b.strip()}" for b in cfg.bootstrap_servers.split(",") if b.strip()],
        broker_credentials=_credentials(cfg),
        store="rocksdb://",
        datadir=cfg.state_dir,
        processing_guarantee="at_least_once",
        topic_partitions=cfg.partitions,
        topic_replication_factor=cfg.replication,
        table_standby_replicas=1,
        consumer_auto_offset_reset="earliest",
        **group_membership(cfg),  # failover in seconds: session, heartbeat, static member
        logging_config=logging_config(cfg.log_json, cfg.log_level, cfg.kafka_log_level),
        web_enabled=True,
        web_port=cfg.web_port,
        web_bind=cfg.web_bind,
        web_host=cfg.web_host,
        canonical_url=f"http://{cfg.web_host}:{cfg.web_port}",
        web_tables_enabled=False,  # /table/... would expose loan data
        web_router_enabled=False,
        producer_acks="all",  # Faust's default too; with idempotence (faust_internals.IdempotentProducer)
        producer_linger=0.002,
        producer_max_batch_size=BATCH_BYTES,
        # Don't block a rebalance on draining streams (it can deadlock with an in-flight commit).
        # Safe here: a state is written only after its outputs are acknowledged, so whatever the
        # new owner reprocesses re-sends the same ids.
        stream_wait_empty=False,
    )
    faust_internals.use_idempotent_producer(app)
    faust_internals.accept_moved_member(app)
    add_faust_sensors(app)

    def topic(*physical: str, internal: bool = False) -> faust.TopicT:
        return app.topic(
            *physical, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
            partitions=cfg.partitions, internal=internal,
        )  # fmt: skip

    outputs = {t: topic(cfg.topic(t)) for t in (*names.OUTPUT_TOPICS, names.TICKS)}
    notify_topic, items_topic, rekey = (topic(name, internal=True) for name in internal_topics(cfg))
    outputs[NOTIFY_BY_BORROWER], outputs[PARTNER_ITEMS], outputs[REKEY] = notify_topic, items_topic, rekey
    physical = {logical: t.get_topic_name() for logical, t in outputs.items()}

    # Faust derives a table's serializers from key_type/value_type alone (bytes -> raw); states
    # are bytes already (``tables``).
    tables = {name: app.Table(name, default=None, key_type=bytes, value_type=bytes, partitions=cfg.partitions)
              for name in TABLES}  # fmt: skip
    stores = {name: faust_internals.PartitionStore(table, cfg.partitions) for name, table in tables.items()}
    faust_internals.keep_changelog_queue(app)  # standby copies must not lose records (docs/reliability.md)

    def load_router(table: str, partition: int, key: str) -> bytes | None:
        return stores[table].get(partition, key.encode())

    policy = load_policy(cfg.policy_file)
    book = BookGauges(m)
    set_aside = SetAside()
    # One framing and one set of SPEC §1 headers for every record the worker writes.
    wire = Wire(cfg.app_id, schema_registry.from_settings(cfg), cfg.topic_prefix)
    tracing = Tracing.from_env(cfg.app_id)
    engine = cfg.engine  # built once: every state write encodes with it
    detector = Detector(
        engine, lambda partition, loan_id: stores[LOANS].get(partition, loan_id.encode()), book=book,
        set_aside=set_aside, max_record_bytes=cfg.max_record_bytes,
        max_tick_ahead=timedelta(seconds=cfg.max_tick_ahead) if cfg.max_tick_ahead else None, wire=wire,
    )  # fmt: skip
    loan_routers = LoanRouters(policy, load_router, cfg.partitions, set_aside, wire)
    notifier, digests = (
        Notifier(policy, load_router, wire),
        PartnerDigests(policy, load_router, cfg.partitions, wire),
    )
    caches = {table: loan_routers.cache for table in (BUREAU, COLLECTIONS, LEDGERS)}
    caches.update({NOTIFICATIONS: notifier.cache, PARTNERS: digests.cache})

    def forget(step: Step) -> None:
        """A step whose states were not written: memory says again what the tables say."""
        partition = step.record.partition
        detector.reload([key for table, key in step.effects.writes if table == LOANS], partition)
        for (table, key), value in step.effects.writes.items():
            if table in caches:
                caches[table].forget(table, key)
            elif table == ASIDE and value is not None:
                set_aside.remove(partition, key)

    tally = Tally(m)
    ctx = Context(
        app, cfg, m, detector, loan_routers, notifier, digests, set_aside, Gate(), Quiet(),
        checkpoint=lambda: Checkpoint(app, physical, stores, lambda t, v: encode(t, v, engine), tally, forget,
                                      lambda step, exc: failed(step.record, step.topic, exc)),
        wire=wire, tracing=tracing,
    )  # fmt: skip

    # Each agent iterates a channel of batches (faust_internals.install) rather than its topics;
    # the topics are subscribed as iterating them would (the conductor's set decides the
    # consumer's subscription and the assignor's co-partitioned groups).
    inputs = topic(*(cfg.topic(t) for t in (*names.INPUT_TOPICS, names.CONTROL)), rekey.get_topic_name())
    faust_internals.reread_uncommitted(
        app, {notify_topic.get_topic_name(), items_topic.get_topic_name(), *inputs.topics}
    )
    channels = [faust_internals.KeptChannel(app, maxsize=BATCHES_QUEUED) for _ in range(3)]
    routes: dict[str, faust.ChannelT] = {}
    for source, channel in zip((inputs, notify_topic, items_topic), channels, strict=True):
        app.topics.add(source.clone(is_iterator=True))  # type: ignore[arg-type]  # a TopicT, typed as a channel
        routes.update(dict.fromkeys(source.topics, channel))
    faust_internals.install(app, routes, cfg.batch_max)

    handlers = (
        DetectorAgent(ctx).handle,
        StageAgent(ctx, NOTIFY_BY_BORROWER, notifier.on_event).handle,
        StageAgent(ctx, PARTNER_ITEMS, digests.on_record).handle,
    )
    for name, channel, handle in zip(("detect", "notify", "partner_shares"), channels, handlers, strict=True):

        async def agent(stream: faust.StreamT, handle: Any = handle, name: str = name) -> None:
            await in_batches(ctx, stream, handle, name)

        app.agent(channel, name=name, concurrency=1)(agent)

    lifecycle = Lifecycle(ctx, stores, book)
    faust_internals.commit_before_revoke(app, ctx.quiet.wait, REVOKE_QUIET)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # Faust's signal type has no async form
    async def revoked(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        lifecycle.revoked(revoked)

    tables[LOANS].on_recover(lifecycle.recovered)
    app.timer(1.0)(lifecycle.publish_gauges)
    for logical in (*names.INPUT_TOPICS, names.CONTROL):
        m.records_consumed.labels(logical)  # every series exists from the start (rate() needs a 0)
    add_routes(app, tables[LOANS], engine, cfg.api_token, ctx.readiness,
               lambda loan_id: detector.clocks.get(partition_of(loan_id.encode(), cfg.partitions)))  # fmt: skip
    tables[LOANS].on_recover(BrokerWatch(ctx, lambda: faust_internals.cluster_metadata(app)).start)
    if cfg.ticker_enabled:
        add_ticker(app, cfg, outputs[names.TICKS], tracing)
    return app
