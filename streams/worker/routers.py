"""The routers' shell: OverdueEvents, disputes and ticks in; routed records and state writes out.

The decisions and their order are the engine's (``streams.core.routing.engine``), the same
replay runs; this shell gives the engine a storage port on the worker's tables and carries
what one stage hands the next over Kafka. Three stages, each co-partitioned with the state it
serves (SPEC §5):

- ``LoanRouters`` — keyed by loan_id, on the detector's partitions: the bureau and collections
  routers and the partner fan-out; it re-keys what is per borrower or per partner onto two
  internal topics. Driven by the detector's agent right after the detector.
- ``Notifier`` — keyed by borrower_id (the daily cap spans a borrower's loans).
- ``PartnerDigests`` — keyed by partner_id, with a tick watermark for the daily digests.

Each key is routed on its own: a loan whose routing fails is set aside (its event to the DLQ,
its router states as they were) and the others go on.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from ..contracts import codec
from ..contracts.topics import OVERDUE, TICKS
from ..core import errors
from ..core.records import parse_dispute, parse_tick
from ..core.routing import Policy, engine, partners
from ..core.routing.common import Output
from ..core.routing.engine import BUREAU
from ..core.wakeups import WakeIndex
from .aside import SetAside, mark, report
from .effects import Effects, Send, Source, internal_error
from .tables import ASIDE, NOTIFY_BY_BORROWER, PARTNER_ITEMS, decode_router
from .tracing import trace_headers, trace_of
from .wire import Wire

MARKER_HEADER = "tick_marker"

#: A stored router state by (table, partition, key).
Load = Callable[[str, int, str], bytes | None]


class StateCache:
    """The latest router state this worker produced per (table, key), decoded, in front of the tables.

    Several steps of one batch (a catch-up tick emits many events for one loan) must each see
    the previous step's state, but the tables are written only after the batch's outputs are
    acknowledged. Keeping states decoded saves a decode per step and an encode per unchanged
    step. Bounded; cleared after a rebalance, when the tables may hold newer states.
    """

    def __init__(self, load: Load, size: int = 100_000) -> None:
        self._load = load
        self._size = size
        self._data: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def get(self, table: str, partition: int, key: str, empty: Any = None) -> Any:
        """The decoded state of ``key`` in ``table``, or ``empty`` when it has none."""
        found = self._data.get((table, key))
        if found is not None:
            self._data.move_to_end((table, key))
            return found
        raw = self._load(table, partition, key)
        if raw is None:
            return empty
        found = decode_router(table, raw)
        self._remember(table, key, found)
        return found

    def put(self, effects: Effects, table: str, partition: int, key: str, state: Any) -> None:
        """Write ``state`` unless it equals what the table already holds (most events change nothing:
        a reminder leaves the bureau, collections and partner states as they were)."""
        if self.get(table, partition, key) == state:
            return
        self._remember(table, key, state)
        effects.writes[(table, key)] = state

    def _remember(self, table: str, key: str, state: Any) -> None:
        self._data[(table, key)] = state
        self._data.move_to_end((table, key))
        if len(self._data) > self._size:
            self._data.popitem(last=False)

    def forget(self, table: str, key: str) -> None:
        """Drop ``key``'s cached state: it was not written (its batch failed), the table is the truth."""
        self._data.pop((table, key), None)

    def clear(self) -> None:
        self._data.clear()


class Port:
    """The engine's storage port for one step in one partition: reads through the cache, and
    every state put becomes a write of the step's effects."""

    __slots__ = ("cache", "partition", "effects")

    def __init__(self, cache: StateCache, partition: int, effects: Effects) -> None:
        self.cache, self.partition, self.effects = cache, partition, effects

    def get(self, table: str, key: str, empty: Any) -> Any:
        return self.cache.get(table, self.partition, key, empty)

    def put(self, table: str, key: str, state: Any) -> None:
        self.cache.put(self.effects, table, self.partition, key, state)


def route(effects: Effects, outputs: list[Output], wire: Wire, trace: bytes | None = None) -> None:
    """The routers' outputs as records to send: encoded, with their SPEC §1 headers, ``trace``
    the ``traceparent`` of what they were routed for."""
    send = wire.send
    effects.sends += [send(topic, key.encode(), value, None, trace) for topic, key, value in outputs]


class LoanRouters:
    """Bureau, collections and partner fan-out for the loans of this worker's partitions.

    Driven by the detector's agent right after the detector, in the same partition: the events
    a tick causes are routed before that tick reaches the routers, so a router's clock never
    runs ahead of the events it has seen (a held bureau record is never released before the
    cure that should have cancelled it). After each tick it sends a tick marker from its
    partition to every partition of the partner-items topic: the partner stage's clock is the
    minimum over all source partitions, a watermark.
    """

    def __init__(
        self,
        policy: Policy,
        load: Load,
        partitions: int,
        set_aside: SetAside | None = None,
        wire: Wire | None = None,
    ) -> None:
        self.policy = policy
        self.cache = StateCache(load)
        self.partitions = partitions
        self.indexes: dict[int, WakeIndex] = {}
        self.clocks: dict[int, datetime] = {}
        self.aside = set_aside if set_aside is not None else SetAside()
        self.wire = wire if wire is not None else Wire()

    def index(self, partition: int) -> WakeIndex:
        return self.indexes.setdefault(partition, WakeIndex())

    def on_events(
        self,
        partition: int,
        events: list[tuple[Any, bytes]],
        rerouted: bool = False,
        trace: bytes | None = None,
    ) -> Effects:
        """The OverdueEvents (native dict, encoded bytes) the detector just emitted, in as_of order.
        ``rerouted``: an operator redrove them (``duewatch dlq redrive``), so a loan set aside is
        routed all the same. ``trace``: the ``traceparent`` of the record or tick they came from."""
        effects = Effects()
        for event, value in sorted(events, key=lambda pair: pair[0]["as_of"]):
            effects.merge(self.on_event(partition, event, value, rerouted, trace))
        return effects

    def on_event(
        self, partition: int, event: Any, value: bytes, rerouted: bool = False, trace: bytes | None = None
    ) -> Effects:
        """One OverdueEvent of a loan in ``partition``. What goes on to the per-borrower and
        per-partner stages carries ``trace``, so the trace of a repayment reaches its SMS."""
        loan_id = event["loan_id"]
        if not rerouted and self.aside.holds(partition, loan_id):
            error = errors.InvalidRecord(
                errors.LOAN_SET_ASIDE, "the loan is set aside until `duewatch release`"
            )
            return Effects().dead_letter(self._source(partition, event, value, trace), error, loan_id)
        effects = Effects()
        try:
            routed = engine.route_loan_event(Port(self.cache, partition, effects), self.policy, event)
            route(effects, routed.outputs, self.wire, trace)
        except Exception as exc:  # a bug or a bad event: this loan alone stops
            for table, key in effects.writes:
                self.cache.forget(table, key)
            return self.set_aside(exc, self._source(partition, event, value, trace), loan_id)
        handed = trace_headers(trace)
        for partner_id, envelope in routed.envelopes:
            effects.sends.append(
                Send(PARTNER_ITEMS, partner_id.encode(), partners.envelope_to_bytes(envelope), None, handed)
            )
        if routed.notify:  # the overdue.events record as it was sent, for the per-borrower stage
            effects.sends.append(Send(NOTIFY_BY_BORROWER, event["borrower_id"].encode(), value, None, handed))
        self.index(partition).set(loan_id, routed.bureau_due)
        return effects

    def _source(self, partition: int, event: Any, value: bytes, trace: bytes | None) -> Source:
        """The event as the record a DLQ entry is made of: its bytes and the headers its
        overdue.events record carries (SPEC §1), so a dead-lettered event says what it is."""
        headers = tuple(self.wire.headers(OVERDUE, event, trace))
        return Source(OVERDUE, partition, -1, event["loan_id"].encode(), value, headers)

    def set_aside(self, exc: Exception, source: Source, loan_id: str) -> Effects:
        """A router failed for ``loan_id``: what it was handling to the DLQ, the loan set aside."""
        report(exc, source, "routing a loan of")
        marked = mark(exc, source, datetime.now(UTC))
        self.aside.add(source.partition, loan_id, marked)
        self.index(source.partition).set(loan_id, None)
        effects = Effects().dead_letter(source, internal_error(exc), loan_id)
        effects.writes[(ASIDE, loan_id)] = marked
        return effects

    def release(self, partition: int, loan_id: str) -> None:
        """``loan_id`` was released: its held bureau records wake again."""
        from ..core.routing import bureau

        state = self.cache.get(BUREAU, partition, loan_id)
        self.index(partition).set(loan_id, None if state is None else bureau.next_due(state))

    def on_dispute(self, source: Source) -> Effects:
        """A Dispute for a loan in ``source.partition`` (bureau router only)."""
        loan_id: str | None = None
        effects = Effects()
        try:
            dispute = parse_dispute(self.wire.decode("Dispute", source.value))
            if source.key is None or source.key.decode("utf-8", "replace") != dispute.loan_id:
                raise errors.InvalidRecord(errors.KEY_MISMATCH, "record key must be its loan_id")
            loan_id = dispute.loan_id
            if self.aside.holds(source.partition, loan_id):
                raise errors.InvalidRecord(
                    errors.LOAN_SET_ASIDE, "the loan is set aside until `duewatch release`"
                )
            record = {"dispute_id": dispute.dispute_id, "loan_id": dispute.loan_id, "status": dispute.status,
                      "at": dispute.at, "note": dispute.note}  # fmt: skip
            out, due = engine.route_dispute(Port(self.cache, source.partition, effects), self.policy, record)
            route(effects, out, self.wire, trace_of(source.headers))
        except errors.InvalidRecord as exc:
            return Effects().dead_letter(
                source, exc, loan_id if exc.reason == errors.LOAN_SET_ASIDE else None
            )
        except codec.DecodeError as exc:  # UNDECODABLE, or in registry mode UNKNOWN_SCHEMA, SCHEMA_MISMATCH
            return Effects().dead_letter(source, errors.InvalidRecord(exc.reason, exc.detail))
        except Exception as exc:  # a bug: this loan alone stops
            for table, key in effects.writes:
                self.cache.forget(table, key)
            if loan_id is None:
                report(exc, source, "deciding for a dispute of")
                return Effects().dead_letter(source, internal_error(exc))
            return self.set_aside(exc, source, loan_id)
        self.index(source.partition).set(loan_id, due)
        return effects

    def on_tick(
        self, partition: int, as_of: datetime, source: Source | None = None, trace: bytes | None = None
    ) -> Effects:
        """Release the held bureau records of ``partition`` that are due by ``as_of``, loan by loan;
        ``trace``: the tick's ``traceparent``, which the tick marker passes on to the partner stage."""
        clock = self.clocks.get(partition)
        if clock is None or as_of > clock:
            self.clocks[partition] = clock = as_of
        effects = Effects()
        index = self.index(partition)
        for loan_id in index.pop_due(clock):
            if self.aside.holds(partition, loan_id):
                continue
            step = Effects()
            try:
                out, due = engine.tick_loan(Port(self.cache, partition, step), self.policy, loan_id, clock)
                route(step, out, self.wire, trace)
            except Exception as exc:  # a bug: this loan alone stops
                for table, key in step.writes:
                    self.cache.forget(table, key)
                where = source or Source(TICKS, partition, -1, None, codec.encode("Tick", {"as_of": clock}))
                effects.merge(self.set_aside(exc, where, loan_id))
                continue
            effects.merge(step)
            index.set(loan_id, due)
        marker = codec.encode("Tick", {"as_of": clock})
        headers = [(MARKER_HEADER, str(partition).encode()), *trace_headers(trace)]
        effects.sends += [
            Send(PARTNER_ITEMS, None, marker, target, headers) for target in range(self.partitions)
        ]
        return effects


def _stage_failure(source: Source, exc: Exception) -> Effects:
    """A record of an internal stage topic its router cannot take. duewatch wrote it, so this is a
    bug (INTERNAL_ERROR), unless the bytes do not even decode; either way it goes to the DLQ and
    the stage goes on."""
    if isinstance(exc, codec.DecodeError):
        return Effects().dead_letter(source, errors.InvalidRecord(exc.reason, exc.detail))
    report(exc, source, "routing")
    return Effects().dead_letter(source, internal_error(exc))


class Notifier:
    """The notification router, per borrower (events arrive re-keyed by borrower_id)."""

    def __init__(self, policy: Policy, load: Load, wire: Wire | None = None) -> None:
        self.policy = policy
        self.cache = StateCache(load)
        self.wire = wire if wire is not None else Wire()

    def on_event(self, source: Source) -> Effects:
        """An overdue.events record handed over by the loan's routers (its bytes as sent, framed
        in registry mode), with the ``traceparent`` it was emitted under."""
        effects = Effects()
        try:
            event = self.wire.decode("OverdueEvent", source.value)
            out = engine.route_borrower_event(Port(self.cache, source.partition, effects), self.policy, event)
            route(effects, out, self.wire, trace_of(source.headers))
            return effects
        except Exception as exc:  # this borrower's record alone goes to the DLQ
            for table, key in effects.writes:
                self.cache.forget(table, key)
            return _stage_failure(source, exc)


_LOG_EVERY = timedelta(minutes=1)


class PartnerDigests:
    """The partner router's second stage, per partner_id: real-time shares and daily digests.

    Its clock for a partition is the minimum of the tick markers received from every source
    partition, so a digest is sent only when every loan partition has passed its instant.
    """

    def __init__(self, policy: Policy, load: Load, partitions: int, wire: Wire | None = None) -> None:
        self.policy = policy
        self.cache = StateCache(load)
        self.partitions = partitions
        self.wire = wire if wire is not None else Wire()
        self.indexes: dict[int, WakeIndex] = {}
        self.clocks: dict[int, datetime] = {}
        self.marks: dict[int, dict[int, datetime]] = {}
        self._logged: dict[int, datetime] = {}

    def index(self, partition: int) -> WakeIndex:
        return self.indexes.setdefault(partition, WakeIndex())

    def on_record(self, source: Source) -> Effects:
        """A record of the partner-items topic: a tick marker or an item."""
        headers = dict(source.headers)
        marker = headers.get(MARKER_HEADER)
        if marker is not None:
            return self.on_marker(source.partition, int(marker), source.value, trace_of(source.headers))
        return self.on_item(source)

    def on_marker(self, partition: int, origin: int, value: bytes, trace: bytes | None = None) -> Effects:
        """A tick marker from loan partition ``origin``: advance this partition's watermark. The
        digests it lets out carry its tick's ``trace``."""
        as_of = parse_tick(codec.decode("Tick", value)).as_of
        marks = self.marks.setdefault(partition, {})
        if origin not in marks or as_of > marks[origin]:
            marks[origin] = as_of
        if len(marks) < self.partitions:
            return Effects()
        return self.on_tick(partition, min(marks.values()), trace)

    def on_item(self, source: Source) -> Effects:
        effects = Effects()
        try:
            envelope = partners.envelope_from_bytes(source.value)
            partner_id = (source.key or b"").decode()
            port = Port(self.cache, source.partition, effects)
            out, due = engine.route_partner_item(port, self.policy, partner_id, envelope)
            route(effects, out, self.wire, trace_of(source.headers))
        except Exception as exc:  # this partner's record alone goes to the DLQ
            for table, key in effects.writes:
                self.cache.forget(table, key)
            return _stage_failure(source, exc)
        self.index(source.partition).set(partner_id, due)
        return effects

    def on_tick(self, partition: int, as_of: datetime, trace: bytes | None = None) -> Effects:
        clock = self.clocks.get(partition)
        if clock is None or as_of > clock:
            self.clocks[partition] = clock = as_of
        effects = Effects()
        index = self.index(partition)
        for partner_id in index.pop_due(clock):
            step = Effects()
            try:
                out, due = engine.tick_partner(
                    Port(self.cache, partition, step), self.policy, partner_id, clock
                )
                route(step, out, self.wire, trace)
            except Exception as exc:  # a bug: this partner's digest waits, the others go on
                for table, key in step.writes:
                    self.cache.forget(table, key)
                self._failed(exc, partition)
                state = self.cache.get(engine.PARTNERS, partition, partner_id)
                index.set(partner_id, None if state is None else partners.next_due(state))  # again next tick
                continue
            effects.merge(step)
            index.set(partner_id, due)
        return effects

    def _failed(self, exc: Exception, partition: int) -> None:
        """Log a partner's failed digest at most once a minute per partition: it is retried at every
        tick until a fix is deployed, and the log must not drown."""
        last = self._logged.get(partition)
        now = datetime.now(UTC)
        if last is None or now - last > _LOG_EVERY:
            self._logged[partition] = now
            report(exc, Source(PARTNER_ITEMS, partition, -1, None, b""), "making a partner's digest in",
                   "retried at every tick (logged once a minute)")  # fmt: skip


__all__ = ["MARKER_HEADER", "LoanRouters", "Notifier", "PartnerDigests", "Port", "StateCache"]
