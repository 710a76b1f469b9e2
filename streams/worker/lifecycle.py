"""What the worker does when partitions move: forget the revoked ones, rebuild the indexes of
the assigned ones from the tables, say when it is ready; and the gauges published each second."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from faust.types import TP

from ..contracts.topics import ALL_TOPICS
from ..core.routing.engine import BUREAU, PARTNERS
from ..core.wakeups import WakeIndex
from ..settings import Settings
from .agents import Context
from .aside import report
from .effects import Source
from .faust_internals import PartitionStore
from .metrics import BookGauges
from .tables import ASIDE, LOANS, REKEY, STAGE_TOPICS, stored_due

log = logging.getLogger("duewatch")

#: Seconds a rebuild waits for batches in flight (they wait for broker acks only).
QUIET_TIMEOUT = 60.0
#: Seconds a rebalance waits for the batch in flight (faust_internals.commit_before_revoke).
REVOKE_QUIET = 10.0


def group_membership(cfg: Settings) -> dict[str, Any]:
    """Faust's consumer-group settings for failover in seconds (docs/reliability.md).

    A crashed worker's partitions move to the others after ``session_timeout``; a restarted one
    takes them back without a rebalance, as the same static member (KIP-345)."""
    return {
        "broker_session_timeout": cfg.session_timeout,
        "broker_heartbeat_interval": cfg.heartbeat_interval,
        "broker_request_timeout": max(90.0, cfg.session_timeout),  # Faust: never below the session
        "consumer_group_instance_id": cfg.group_instance_id,
    }


def load_indexes(
    index: Callable[[int], WakeIndex], stored: Iterable[tuple[int, bytes, bytes | None]], table: str
) -> None:
    """Load each partition's wake-up index of a router table at once from stored (partition, key,
    bytes) states. A state that cannot be read is left out (logged): its key wakes again with its
    next event."""
    entries: dict[int, list[tuple[str, datetime | None]]] = {}
    for partition, key, raw in stored:
        if raw is not None:
            try:
                at = stored_due(table, raw)
            except Exception as exc:  # noqa: BLE001 - one state must not stop the others' index
                report(exc, Source(f"{table}-changelog", partition, -1, key, b""), "reading a stored router state of",
                       "left out of the wake-up index")  # fmt: skip
                continue
            entries.setdefault(partition, []).append((key.decode(), at))
    for partition, loaded in entries.items():
        index(partition).load(loaded)


class Lifecycle:
    """Rebalances, recovery, readiness and the gauges, over the agents' context."""

    def __init__(self, ctx: Context, stores: Mapping[str, PartitionStore], book: BookGauges) -> None:
        self.ctx = ctx
        self.stores = stores
        self.book = book
        self.topic_of = {ctx.cfg.topic(t): t for t in ALL_TOPICS}
        self.topic_of.update({f"{ctx.cfg.app_id}-{name}": name for name in (*STAGE_TOPICS, REKEY)})

    def revoked(self, tps: Iterable[TP]) -> None:
        """Partitions were revoked: not ready until the rebuild after the rebalance."""
        ctx = self.ctx
        ctx.gate.forget(tps)
        ctx.ready = False
        ctx.metrics.ready.set(0)
        ctx.metrics.recovering.set(1)

    async def recovered(self) -> None:
        """After every rebalance and recovery: rebuild the per-partition indexes from the tables.

        Waits for batches in flight first: a batch's states reach the table only after its sends
        are acknowledged, and an index rebuilt meanwhile would miss those loans (a tick would
        then find nothing due for them)."""
        ctx = self.ctx
        try:
            if not await ctx.quiet.wait(QUIET_TIMEOUT):
                log.warning("rebuilding the wake-up index while a batch is still in flight")
            ctx.detector.clear()
            for shell in (ctx.loan_routers, ctx.notifier, ctx.digests):
                shell.cache.clear()
            actives = ctx.app.assignor.assigned_actives()
            ctx.set_aside.load(self.stores[ASIDE].items(actives))
            loaded = ctx.detector.rebuild(self.stores[LOANS].items(actives))
            for shell, table in ((ctx.loan_routers, BUREAU), (ctx.digests, PARTNERS)):
                shell.indexes.clear()
                load_indexes(shell.index, self.stores[table].items(actives), table)
            log.info("wake-up index rebuilt: %d loans in %d partitions", loaded, len(ctx.detector.indexes))
        except Exception:
            log.exception("rebuilding the wake-up index failed")
        finally:
            ctx.ready = True
            ctx.metrics.ready.set(1 if ctx.serving else 0)
            ctx.metrics.recovering.set(0)

    async def publish_gauges(self) -> None:
        """Gauges that are cheaper to publish once a second than per record (the app's timer)."""
        ctx, m = self.ctx, self.ctx.metrics
        self.book.flush()
        m.loans_aside.set(len(ctx.set_aside))
        if ctx.detector.clocks:
            m.tick_lag.set((datetime.now(UTC) - max(ctx.detector.clocks.values())).total_seconds())
        app = ctx.app
        assigned = app.consumer.assignment() if app.consumer else set()
        ends, committed = app.monitor.tp_end_offsets, app.monitor.tp_committed_offsets
        m.consumer_lag.clear()
        for tp, end in list(ends.items()):
            done = committed.get(tp)
            if tp in assigned and done is not None:
                m.consumer_lag.labels(self.topic_of.get(tp.topic, tp.topic), str(tp.partition)).set(
                    max(0, end - done)
                )
