"""The worker's agents: what each batch of records goes through, step by step.

Three agents, each iterating batches of one fetch (``faust_internals.install``):

- the detector's (``DetectorAgent``): schedules, repayments, disputes, operators' commands and
  ticks of the loan partitions — the detector, then its loans' routers;
- the notifications stage, per borrower, and the partner stage, per partner (``StageAgent``).

An agent decides nothing itself: it decodes the record's envelope, calls the shells (which call
the core), and hands each step's effects to the batch's checkpoint, which alone sends, writes
and acknowledges. Every collaborator is held in one explicit :class:`Context`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import faust
from faust.types import TP

from ..contracts import codec, control
from ..contracts import topics as names
from ..core import bounds, errors
from ..core.records import parse_tick
from ..settings import Settings
from . import faust_internals, guard
from .aside import SetAside, report
from .checkpoint import Checkpoint
from .detector import Detector
from .effects import Effects, Source, internal_error, source_of
from .gate import Gate
from .guard import Guard, logical_of_rekeyed
from .metrics import Metrics
from .routers import LoanRouters, Notifier, PartnerDigests
from .tables import rekey_topic
from .tracing import Tracing, trace_headers, trace_of
from .wire import Wire

log = logging.getLogger("duewatch")

#: Loans a tick handles between two commits (bounds a catch-up tick's memory).
TICK_PART = 2000


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


@dataclass
class Context:
    """Everything the agents work with, held in one place instead of closure locals."""

    app: faust.App
    cfg: Settings
    metrics: Metrics
    detector: Detector
    loan_routers: LoanRouters
    notifier: Notifier
    digests: PartnerDigests
    set_aside: SetAside
    gate: Gate
    quiet: Quiet
    checkpoint: Callable[[], Checkpoint]  # a fresh checkpoint for each batch
    ready: bool = False  # partitions assigned and their tables recovered
    broker_reachable: bool = True  # a broker answered lately (``outage.BrokerWatch``)
    wire: Wire = field(default_factory=Wire)  # framing and SPEC §1 headers; the registry in registry mode
    tracing: Tracing = field(default_factory=Tracing)

    @property
    def serving(self) -> bool:
        """What ``/ready`` and ``duewatch_ready`` say: recovered, the broker answers and (registry
        mode) the registry answers."""
        return self.ready and self.broker_reachable and self.wire.available

    def readiness(self) -> bool:
        """/ready (``serving``), as the web routes call it."""
        return self.serving


def failed(record: Any, logical: str, exc: BaseException) -> Effects:
    """A bug outside any one loan's step must not lose the record or stop the worker: the record
    goes to the DLQ, under the topic it was read from."""
    source = source_of(record, logical)
    report(exc, source, "handling")
    return Effects().dead_letter(source, internal_error(exc))


async def in_batches(
    ctx: Context, stream: faust.StreamT, handle: Callable[[list[Any]], Awaitable[None]], name: str = "agent"
) -> None:
    """Feed ``handle`` the records of each batch the stream brings (one fetch: a busy worker waits
    for acknowledgements once per batch, an idle one once per record, without a timer). A batch of
    an older consumer generation is skipped: after the rebalance Faust seeks back to the committed
    offsets and it comes again.

    In registry mode a batch first waits for the schemas it needs (``Wire.ready_for``): while the
    registry does not answer, the batch is neither handled nor committed and the worker is not
    ready; nothing is dead-lettered for an outage."""
    async for batch in stream:
        if not faust_internals.current(ctx.app, batch):
            continue
        # Not while busy: a rebuild after a rebalance waits for quiet, and an outage can be long.
        if not await ctx.wire.ready_for(batch.records, partial(faust_internals.current, ctx.app, batch),
                                        lambda up: ctx.metrics.ready.set(int(up and ctx.ready and ctx.broker_reachable))):  # fmt: skip
            continue
        async with ctx.quiet.busy():
            with ctx.tracing.batch(name, batch.records):
                await handle(batch.records)


@dataclass(slots=True)
class Later:
    """A tick's loan-keyed routing, put off until the detector has ticked every partition the
    batch brings a tick for: the record that let the tick through, its logical topic, its
    partition, and the detector's effects to route (None: the routers' own tick at ``as_of``)."""

    record: Any
    topic: str
    partition: int
    effects: Effects | None
    as_of: datetime | None = None
    trace: bytes | None = None  # the traceparent of the tick (or record) the routing is for


def routed_later(later: list[Later], routers: LoanRouters) -> list[tuple[Any, str, Effects]]:
    """The routers' steps put off in ``later``, in order, as (record, logical topic, effects).
    A failure the routers did not isolate sends the record that let the tick through to the
    DLQ, under that record's topic."""
    steps = []
    for item in later:
        try:
            if item.effects is not None:
                routed = routers.on_events(item.partition, item.effects.routed, trace=item.trace)
            else:
                assert item.as_of is not None
                routed = routers.on_tick(item.partition, item.as_of, trace=item.trace)
        except Exception as exc:  # a bug must not lose the record or stop the worker
            routed = failed(item.record, item.topic, exc)
        steps.append((item.record, item.topic, routed))
    return steps


class DetectorAgent:
    """Schedules, repayments, disputes, operators' commands and ticks of a loan partition: the
    detector, then the loan's routers. A keyed record on a partition other than its key's is
    forwarded to the re-key topic instead, and processed when it comes back from there (``guard``).

    Time enters only as ticks. A tick for partition p waits while p's input partitions still hold
    records that were there when it arrived (``Gate``). The loan-keyed routers run after the
    batch's ticks, once their events are out, so their clock never runs ahead of the events a
    tick causes, and the detection latency stays the detector's own."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.held_traces: dict[int, bytes | None] = {}  # partition -> traceparent of its held tick
        self.topic_of = {ctx.cfg.topic(t): t for t in names.ALL_TOPICS}
        self.consumed = {
            t: ctx.metrics.records_consumed.labels(t) for t in (*names.INPUT_TOPICS, names.CONTROL)
        }
        self.rekey = rekey_topic(ctx.cfg)
        self.guard = Guard(
            lambda topic: ctx.app.consumer.topic_partitions(topic),
            ctx.cfg.partitions,
            ctx.metrics.input_misrouted,
        )

    def logical(self, message: Any) -> str:
        """The logical topic ``message`` is processed as: a re-keyed record as the one it was
        first read from (``guard``)."""
        if message.topic == self.rekey:
            return logical_of_rekeyed(message, self.topic_of)
        return self.topic_of.get(message.topic, message.topic)

    async def handle(self, records: list[Any]) -> None:
        """One batch of the detector's partitions."""
        ctx = self.ctx
        started = datetime.now(UTC)
        checkpoint = ctx.checkpoint()
        later: list[Later] = []
        ticks = 0
        taken: dict[str, int] = {}
        for message in records:
            logical = self.logical(message)
            if logical in self.consumed and message.topic != self.rekey:  # counted when it first arrived
                taken[logical] = taken.get(logical, 0) + 1
            try:
                if not await self.step(message, logical, checkpoint, later):
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not lose the record or stop the worker
                checkpoint.add(message, logical, failed(message, logical, exc))
                continue
            # A tick's events leave now, while the next partition's tick is handled, rather than
            # after the whole batch: that wait was half of the detection latency.
            ticks += 1
            await checkpoint.issue_early()
            await asyncio.sleep(0)  # the producer's sender runs only when the batch lets it
        for logical, n in taken.items():
            self.consumed[logical].inc(n)
        await self.route(checkpoint, later)
        await checkpoint.commit(records)
        if ticks:
            m, now = ctx.metrics, datetime.now(UTC)
            m.tick_handling.observe((now - started).total_seconds())
            newest = max(ctx.detector.clocks.values())
            m.last_tick.set(newest.timestamp())
            m.tick_lag.set((now - newest).total_seconds())

    async def step(self, message: Any, logical: str, checkpoint: Checkpoint, later: list[Later]) -> bool:
        """One input record (of logical topic ``logical``): its steps added to ``checkpoint``;
        returns True when it let a tick through. A record other than a tick first lets the
        routers catch up (``later``): a loan's router steps keep its order."""
        ctx = self.ctx
        if logical != names.TICKS:
            await self.route(checkpoint, later)
        partition = message.partition
        source = source_of(message, logical)
        if logical == names.TICKS:
            try:
                as_of = self.tick_instant(message.value)
            except errors.InvalidRecord as exc:
                checkpoint.add(message, logical, Effects().dead_letter(source, exc))
                return False
            if ctx.gate.hold(partition, as_of, await self.unprocessed(partition)):
                self.held_traces[partition] = trace_of(source.headers)  # the newest held tick's
                return False
            self.held_traces.pop(partition, None)
            await self.tick(message, logical, partition, as_of, checkpoint, later)
            return True
        forward = self.guard.check(message, logical) if message.topic != self.rekey else None
        if forward is not None:  # misrouted: processed from the re-key topic instead (``guard``)
            checkpoint.add(message, logical, forward)
        elif logical == names.DISPUTES:
            checkpoint.add(message, logical, ctx.loan_routers.on_dispute(source))
        elif logical == names.CONTROL:
            checkpoint.add(message, logical, self.command(source))
        elif logical in (names.SCHEDULES, names.REPAYMENTS):
            effects = ctx.detector.handle(source, datetime.now(UTC))
            checkpoint.add(message, logical, effects)
            if effects.routed:  # most records change a loan without a transition: nothing to route
                trace = trace_of(source.headers) if source.headers else None
                checkpoint.add(
                    message, logical, ctx.loan_routers.on_events(partition, effects.routed, trace=trace)
                )
        else:
            unknown = errors.InvalidRecord(
                errors.INVALID_FIELD, f"{guard.ORIGINAL_TOPIC} names no input topic"
            )
            checkpoint.add(message, logical, Effects().dead_letter(source, unknown))
        # Every record counts as progress of its partition, forwarded or not: a held tick waits
        # for its input partitions, the re-key topic's included, to reach their targets.
        released = ctx.gate.note(TP(message.topic, partition), message.offset)
        if released is None:
            return False
        await self.tick(message, logical, partition, released, checkpoint, later)
        return True

    def tick_instant(self, value: bytes) -> datetime:
        """A Tick's instant; raises ``InvalidRecord`` for a bad one, or one too far ahead of the
        wall clock (``TICK_AHEAD``)."""
        detector = self.ctx.detector
        try:
            bounds.check_size(len(value), detector.max_record_bytes)
            as_of = parse_tick(self.ctx.wire.decode("Tick", value)).as_of
        except codec.DecodeError as exc:  # UNDECODABLE, or in registry mode UNKNOWN_SCHEMA, SCHEMA_MISMATCH
            raise errors.InvalidRecord(exc.reason, exc.detail) from None
        detector.tick_ahead(as_of, datetime.now(UTC))
        return as_of

    async def tick(
        self,
        record: Any,
        logical: str,
        partition: int,
        as_of: datetime,
        checkpoint: Checkpoint,
        later: list[Later],
    ) -> None:
        """The detector on a tick; its routers' steps go to ``later``. The loans due are ticked
        ``TICK_PART`` at a time and each part is routed and committed before the next: a catch-up
        tick after long downtime makes a whole history due at once, and holding all of it in
        memory took a 100,000-loan worker to 4.5 GB. The loans not yet ticked stay in the index,
        so a tick cut short (a rebalance, a failed send) loses no wake-up. The routers' own tick
        (held bureau records, the partner-stage marker) comes after every event the tick caused."""
        detector = self.ctx.detector
        detector.advance(partition, as_of)
        # What a loan that fails on this tick sends to the DLQ: the tick, also when another record
        # let it through (catch-up gating), so that a redrive ticks that loan again.
        # What it emits carries the tick's traceparent (SPEC §1): its own, or the held tick's.
        if logical == names.TICKS:
            source = source_of(record, logical)
        else:
            held = trace_headers(self.held_traces.pop(partition, None))
            source = Source(
                names.TICKS, partition, -1, None, codec.encode("Tick", {"as_of": as_of}), tuple(held)
            )
        trace = trace_of(source.headers)
        while due := detector.due(partition, TICK_PART):
            effects = detector.tick_loans(source, due, datetime.now(UTC))
            checkpoint.add(record, logical, effects)
            later.append(Later(record, logical, partition, effects, trace=trace))
            if len(due) == TICK_PART:  # more may be due: this part goes out first
                await self.route(checkpoint, later)
                await checkpoint.commit()
        later.append(Later(record, logical, partition, None, as_of, trace))

    async def route(self, checkpoint: Checkpoint, later: list[Later]) -> None:
        """The routers' steps put off by ticks, in order, once the events they route are out.

        The routers cost several times what the detector does per event (a bureau state is a few
        KB to decode and encode again), and nothing downstream of overdue.events waits on them:
        running them after every tick of the batch is what keeps the detection latency the
        detector's own. Before the routers take the loop, the events are handed to the broker and
        acknowledged."""
        if not later:
            return
        await checkpoint.issue_early(acknowledged=True)
        for record, logical, effects in routed_later(later, self.ctx.loan_routers):
            checkpoint.add(record, logical, effects)
        later.clear()

    async def unprocessed(self, partition: int) -> dict[TP, int]:
        """Per input partition of ``partition`` (the re-key topic's included): the last offset
        present now, if not yet processed."""
        ctx = self.ctx
        targets: dict[TP, int] = {}
        consumer = ctx.app.consumer
        for physical in (ctx.cfg.topic(names.SCHEDULES), ctx.cfg.topic(names.REPAYMENTS), self.rekey):
            tp = TP(physical, partition)
            try:
                high = consumer.highwater(tp)
                if high is None:  # not fetched yet (e.g. just assigned): ask the broker
                    high = (await consumer.highwaters(tp)).get(tp)
            except Exception:  # noqa: BLE001 - not assigned (mid-rebalance) or broker hiccup: don't gate
                continue
            committed = faust_internals.committed_offset(ctx.app, tp)
            if tp not in ctx.gate.processed and committed is not None:
                ctx.gate.processed[tp] = committed  # a new owner starts where the last one committed
            if high is not None and ctx.gate.processed.get(tp, -1) < high - 1:
                targets[tp] = high - 1
        return targets

    def command(self, source: Source) -> Effects:
        """An operator's command (``streams.contracts.control``) for a loan of this partition."""
        ctx = self.ctx
        try:
            bounds.check_size(len(source.value), ctx.cfg.max_record_bytes)
            order = control.decode(source.value)
            if source.key is None or source.key.decode("utf-8", "replace") != order.loan_id:
                raise errors.InvalidRecord(errors.KEY_MISMATCH, "record key must be its loan_id")
            if order.command == control.RELEASE:
                effects = ctx.detector.release(source.partition, order.loan_id)
                if effects.writes:
                    ctx.loan_routers.release(source.partition, order.loan_id)
                    log.info(
                        "a loan of partition %d was released (%s@%d)",
                        source.partition,
                        source.topic,
                        source.offset,
                    )
                return effects
            assert order.event is not None
            try:
                event = ctx.wire.decode("OverdueEvent", order.event)
            except codec.DecodeError as exc:
                raise errors.InvalidRecord(exc.reason, exc.detail) from None
            if event["loan_id"] != order.loan_id:
                raise errors.InvalidRecord(errors.KEY_MISMATCH, "the event is of another loan")
            trace = trace_of(source.headers)
            return ctx.loan_routers.on_events(source.partition, [(event, order.event)], True, trace)
        except errors.InvalidRecord as exc:
            return Effects().dead_letter(source, exc)


class StageAgent:
    """A router stage keyed by borrower or partner: each record through ``one``, then the commit;
    a bug sends the record to the DLQ instead."""

    def __init__(self, ctx: Context, logical: str, one: Callable[[Source], Effects]) -> None:
        self.ctx = ctx
        self.logical = logical
        self.one = one

    async def handle(self, records: list[Any]) -> None:
        checkpoint = self.ctx.checkpoint()
        for message in records:
            try:
                effects = self.one(source_of(message, self.logical))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                effects = failed(message, self.logical, exc)
            checkpoint.add(message, self.logical, effects)
        await checkpoint.commit(records)
