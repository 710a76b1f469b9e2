"""The routers' shell: OverdueEvents, disputes and ticks in; routed records and state writes out.

Three stages, each co-partitioned with the state it serves (SPEC §5):

- ``LoanRouters`` — keyed by loan_id, on the partitions of overdue.events, bureau.disputes and
  clock.ticks: the bureau and collections routers, and the partner fan-out (which remembers,
  per loan, what it shared so it can retract it). It re-keys what is per borrower or per partner
  onto two internal topics.
- ``Notifier`` — keyed by borrower_id (the daily cap spans a borrower's loans).
- ``PartnerDigests`` — keyed by partner_id, with ticks for the daily digests.

Like ``streams.detector`` it knows nothing of Faust: the agents in ``streams.app`` send what
comes back, wait for the acknowledgements, then write the states.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .aside import SetAside, Source, mark, report
from .contracts import codec
from .contracts.topics import TOPIC_RECORD
from .core import errors, statecodec
from .core.routing import Policy, bureau, collections, notifications, partners
from .core.routing.common import Output
from .core.wakeups import WakeIndex
from .detector import Send, dead_letter, dlq_send, internal_error

log = logging.getLogger("duewatch")

NOTIFY_BY_BORROWER = "notify-by-borrower"
PARTNER_ITEMS = "partner-items"
MARKER_HEADER = "tick_marker"
BUREAU_TABLE = "bureau"
COLLECTIONS_TABLE = "collections"
LEDGER_TABLE = "partner-ledgers"
NOTIFY_TABLE = "notifications"
PARTNER_TABLE = "partners"


Load = Callable[[str, str], bytes | None]


# How each router table's states become bytes and back (the tables hold bytes).
CODECS: dict[str, tuple[Callable[[bytes], Any], Callable[[Any], bytes]]] = {
    BUREAU_TABLE: (bureau.state_from_bytes, bureau.state_to_bytes),
    COLLECTIONS_TABLE: (collections.state_from_bytes, collections.state_to_bytes),
    LEDGER_TABLE: (partners.ledger_from_bytes, partners.ledger_to_bytes),
    NOTIFY_TABLE: (notifications.state_from_bytes, notifications.state_to_bytes),
    PARTNER_TABLE: (partners.state_from_bytes, partners.state_to_bytes),
}
# The tables whose states wake on ticks: their next wake-up is stored in front of the state, so a
# restart indexes them without decoding (byte 0x02, then the instant in UTC epoch microseconds
# as a signed 8-byte big-endian integer, -1 for none; a state itself starts with "{").
NEXT_DUE: dict[str, Callable[[Any], datetime | None]] = {
    BUREAU_TABLE: bureau.next_due,
    PARTNER_TABLE: partners.next_due,
}
_HEADED = 0x02


def encode(table: str, state: Any) -> bytes:
    """The bytes a router table stores for ``state``."""
    body = CODECS[table][1](state)
    next_due = NEXT_DUE.get(table)
    if next_due is None:
        return body
    due = next_due(state)
    us = -1 if due is None else statecodec.micros(due)
    return bytes((_HEADED,)) + us.to_bytes(8, "big", signed=True) + body


def decode(table: str, data: bytes) -> Any:
    """The state a router table's bytes hold (with or without the wake-up header)."""
    if data and data[0] == _HEADED:
        data = data[9:]
    return CODECS[table][0](data)


def stored_due(table: str, data: bytes) -> datetime | None:
    """The next wake-up of a stored state: from its header when it has one, else decoded."""
    if data and data[0] == _HEADED:
        us = int.from_bytes(data[1:9], "big", signed=True)
        return None if us < 0 else statecodec.instant(us)
    return NEXT_DUE[table](decode(table, data))


@dataclass(slots=True)
class RouterEffects:
    """Records to send (first) and (table, key, state) writes (after the acks; the agent encodes
    each written key once per batch, however many steps of the batch changed it)."""

    sends: list[Send] = field(default_factory=list)
    writes: list[tuple[str, str, Any]] = field(default_factory=list)
    routed: Counter = field(default_factory=Counter)
    dlq: list[str] = field(default_factory=list)
    # Loans set aside (their mark) or released (None) by this step: written with the states.
    aside: dict[str, bytes | None] = field(default_factory=dict)

    def merge(self, other: RouterEffects) -> None:
        self.sends += other.sends
        self.writes += other.writes
        self.routed.update(other.routed)
        self.dlq += other.dlq
        self.aside.update(other.aside)

    def route(self, outputs: list[Output]) -> None:
        for topic, key, value in outputs:
            self.sends.append(Send(topic, key.encode(), codec.encode(TOPIC_RECORD[topic], value), None))
            self.routed[topic] += 1


class StateCache:
    """The latest router state this worker produced per (table, key), decoded, in front of the tables.

    Several steps of one batch (a catch-up tick emits many events for one loan) must each see
    the previous step's state, but the tables are written only after the batch's outputs are
    acknowledged. Keeping states decoded saves a decode per step and an encode per unchanged
    step. Bounded; cleared after a rebalance, when the tables may hold newer states.
    """

    def __init__(self, load: Load, size: int = 100_000) -> None:
        from collections import OrderedDict

        self._load = load
        self._size = size
        self._data: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def get(self, table: str, key: str, empty: Any = None) -> Any:
        """The decoded state of ``key`` in ``table``, or ``empty`` when it has none."""
        found = self._data.get((table, key))
        if found is not None:
            self._data.move_to_end((table, key))
            return found
        raw = self._load(table, key)
        if raw is None:
            return empty
        found = decode(table, raw)
        self._remember(table, key, found)
        return found

    def put(self, effects: RouterEffects, table: str, key: str, state: Any) -> None:
        """Write ``state`` unless it equals what the table already holds (most events change nothing:
        a reminder leaves the bureau, collections and partner states as they were)."""
        if self.get(table, key) == state:
            return
        self._remember(table, key, state)
        effects.writes.append((table, key, state))

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


def _tick_through(
    state: Any, clock: datetime, next_due: Callable[[Any], datetime | None],
    step: Callable[[Any, datetime], tuple[Any, list[Output]]], router: str,
) -> tuple[Any, list[Output], datetime | None]:
    """Tick ``state`` instant by instant, as replay does (``core.routing.engine.Routers.on_tick``),
    until nothing is due by ``clock``: the new state, what it sent, and its next wake-up."""
    outputs: list[Output] = []
    due = next_due(state)
    while due is not None and due <= clock:
        state, out = step(state, due)
        outputs += out
        due, ticked = next_due(state), due
        if _stuck(due, ticked, router):
            break
    return state, outputs, due


def _stuck(after: datetime | None, due: datetime, router: str) -> bool:
    """True (and logged) when a router's tick at ``due`` left something due by then: ticking it
    again would loop forever and stop the whole agent (it once did). What is left waits for the
    next tick, and every tick logs it again."""
    if after is None or after > due:
        return False
    log.error("the %s router made no progress at its due instant; left for the next tick", router)
    return True


_LOG_EVERY = timedelta(minutes=1)


def _bad(key: bytes | None, value: bytes, exc: Exception, topic: str, partition: int, offset: int) -> RouterEffects:
    """A record of an internal stage topic its router cannot take. duewatch wrote it, so this is a
    bug (INTERNAL_ERROR), unless the bytes do not even decode; either way it goes to the DLQ and
    the stage goes on."""
    if isinstance(exc, codec.DecodeError):
        error = errors.InvalidRecord(errors.UNDECODABLE, exc.detail)
    else:
        report(exc, Source(topic, partition, offset, key, value), "routing")
        error = internal_error(exc)
    return RouterEffects(sends=[dlq_send(key, value, error, topic, partition, offset)], dlq=[error.reason])


class LoanRouters:
    """Bureau, collections and partner fan-out for the loans of this worker's partitions.

    Driven by the detector's agent, right after the detector, in the same partition: the
    events a tick causes are routed before that tick reaches the routers, so a router's clock
    never runs ahead of the events it has seen (a held bureau record is never released before
    the cure that should have cancelled it). After each tick it sends a tick marker from its
    partition to every partition of the partner-items topic: the partner stage's clock is the
    minimum over all source partitions, a watermark.

    Each loan is routed on its own: a router failing for one loan sets that loan aside (the
    event to the DLQ, the loan's router states as they were) and the others go on.
    """

    def __init__(self, policy: Policy, load: Load, partitions: int, set_aside: SetAside | None = None) -> None:
        self.policy = policy
        self.cache = StateCache(load)
        self.partitions = partitions
        self.indexes: dict[int, WakeIndex] = {}
        self.clocks: dict[int, datetime] = {}
        self.aside = set_aside if set_aside is not None else SetAside()

    def index(self, partition: int) -> WakeIndex:
        return self.indexes.setdefault(partition, WakeIndex())

    def on_events(self, partition: int, events: list[tuple[Any, bytes]], rerouted: bool = False) -> RouterEffects:
        """The OverdueEvents (native dict, encoded bytes) the detector just emitted, in as_of order.
        ``rerouted``: an operator redrove them (``duewatch dlq redrive``), so a loan set aside
        is routed all the same."""
        effects = RouterEffects()
        for event, value in sorted(events, key=lambda pair: pair[0]["as_of"]):
            effects.merge(self.on_event(partition, event, value, rerouted))
        return effects

    def on_event(self, partition: int, event: Any, value: bytes, rerouted: bool = False) -> RouterEffects:
        """One OverdueEvent of a loan in ``partition``. Every router's step is computed before any
        state is kept, so a failure leaves the loan's router states as they were."""
        loan_id = event["loan_id"]
        source = Source("overdue.events", partition, -1, loan_id.encode(), value)
        if not rerouted and self.aside.holds(partition, loan_id):
            error = errors.InvalidRecord(errors.LOAN_SET_ASIDE, "the loan is set aside until `duewatch release`")
            return RouterEffects(sends=[dead_letter(source, error, loan_id)], dlq=[error.reason])
        try:
            policy = self.policy
            bstate, bureau_out = bureau.step_event(self.cache.get(BUREAU_TABLE, loan_id, bureau.EMPTY), event, policy)
            cstate, collections_out = collections.step_event(
                self.cache.get(COLLECTIONS_TABLE, loan_id, collections.EMPTY), event, policy
            )
            ledger, envelopes = partners.step_fan_out(
                self.cache.get(LEDGER_TABLE, loan_id, partners.EMPTY_LEDGER), event, policy
            )
            items = [Send(PARTNER_ITEMS, p.encode(), partners.envelope_to_bytes(e), None) for p, e in envelopes]
            notify = notifications.classify(event) is not None or event["type"] == "OVERDUE_RETRACTED"
            effects = RouterEffects()
            effects.route(bureau_out)
            effects.route(collections_out)
            effects.sends += items
            if notify:
                effects.sends.append(Send(NOTIFY_BY_BORROWER, event["borrower_id"].encode(), value, None))
        except Exception as exc:  # a bug or a bad event: this loan alone stops
            return self.set_aside(exc, source, loan_id)
        self.cache.put(effects, BUREAU_TABLE, loan_id, bstate)
        self.index(partition).set(loan_id, bureau.next_due(bstate))
        self.cache.put(effects, COLLECTIONS_TABLE, loan_id, cstate)
        self.cache.put(effects, LEDGER_TABLE, loan_id, ledger)
        return effects

    def set_aside(self, exc: Exception, source: Source, loan_id: str) -> RouterEffects:
        """A router failed for ``loan_id``: what it was handling to the DLQ, the loan set aside."""
        report(exc, source, "routing a loan of")
        error = internal_error(exc)
        marked = mark(exc, source, datetime.now(UTC))
        self.aside.add(source.partition, loan_id, marked)
        self.index(source.partition).set(loan_id, None)
        return RouterEffects(sends=[dead_letter(source, error, loan_id)], dlq=[error.reason], aside={loan_id: marked})

    def release(self, partition: int, loan_id: str) -> None:
        """``loan_id`` was released: its held bureau records wake again."""
        state = self.cache.get(BUREAU_TABLE, loan_id)
        self.index(partition).set(loan_id, None if state is None else bureau.next_due(state))

    def on_dispute(self, source: Source) -> RouterEffects:
        """A Dispute for a loan in ``source.partition`` (bureau router only)."""
        from .core.records import parse_dispute

        loan_id: str | None = None
        try:
            dispute = parse_dispute(codec.decode("Dispute", source.value))
            if source.key is None or source.key.decode("utf-8", "replace") != dispute.loan_id:
                raise errors.InvalidRecord(errors.KEY_MISMATCH, "record key must be its loan_id")
            loan_id = dispute.loan_id
            if self.aside.holds(source.partition, loan_id):
                raise errors.InvalidRecord(errors.LOAN_SET_ASIDE, "the loan is set aside until `duewatch release`")
            record = {"dispute_id": dispute.dispute_id, "loan_id": dispute.loan_id, "status": dispute.status,
                      "at": dispute.at, "note": dispute.note}  # fmt: skip
            state = self.cache.get(BUREAU_TABLE, dispute.loan_id, bureau.EMPTY)
            state, out = bureau.step_dispute(state, record, self.policy)
            effects = RouterEffects()
            effects.route(out)
        except errors.InvalidRecord as exc:
            held = loan_id if exc.reason == errors.LOAN_SET_ASIDE else None
            return RouterEffects(sends=[dead_letter(source, exc, held)], dlq=[exc.reason])
        except codec.DecodeError as exc:
            error = errors.InvalidRecord(errors.UNDECODABLE, exc.detail)
            return RouterEffects(sends=[dead_letter(source, error)], dlq=[error.reason])
        except Exception as exc:  # a bug: this loan alone stops
            if loan_id is None:
                report(exc, source, "deciding for a dispute of")
                error = internal_error(exc)
                return RouterEffects(sends=[dead_letter(source, error)], dlq=[error.reason])
            return self.set_aside(exc, source, loan_id)
        self.cache.put(effects, BUREAU_TABLE, dispute.loan_id, state)
        self.index(source.partition).set(dispute.loan_id, bureau.next_due(state))
        return effects

    def on_tick(self, partition: int, as_of: datetime, source: Source | None = None) -> RouterEffects:
        """Release the held bureau records of ``partition`` that are due by ``as_of``, loan by loan."""
        clock = self.clocks.get(partition)
        if clock is None or as_of > clock:
            self.clocks[partition] = clock = as_of
        effects = RouterEffects()
        index = self.index(partition)
        for loan_id in index.pop_due(clock):
            if self.aside.holds(partition, loan_id):
                continue
            try:
                state = self.cache.get(BUREAU_TABLE, loan_id)
                if state is None:
                    continue
                state, out, due = _tick_through(
                    state, clock, bureau.next_due, lambda s, at: bureau.step_tick(s, at, self.policy), BUREAU_TABLE
                )
                routed = RouterEffects()
                routed.route(out)
            except Exception as exc:  # a bug: this loan alone stops
                where = source or Source("clock.ticks", partition, -1, None, codec.encode("Tick", {"as_of": clock}))
                effects.merge(self.set_aside(exc, where, loan_id))
                continue
            effects.merge(routed)
            self.cache.put(effects, BUREAU_TABLE, loan_id, state)
            index.set(loan_id, due)
        marker = codec.encode("Tick", {"as_of": clock})
        headers = [(MARKER_HEADER, str(partition).encode())]
        effects.sends += [Send(PARTNER_ITEMS, None, marker, target, headers) for target in range(self.partitions)]
        return effects


class Notifier:
    """The notification router, per borrower (events arrive re-keyed by borrower_id)."""

    def __init__(self, policy: Policy, load: Load) -> None:
        self.policy = policy
        self.cache = StateCache(load)

    def on_event(self, partition: int, offset: int, key: bytes | None, value: bytes) -> RouterEffects:
        try:
            event = codec.decode("OverdueEvent", value)
            borrower = event["borrower_id"]
            state = self.cache.get(NOTIFY_TABLE, borrower, notifications.EMPTY)
            state, out = notifications.step_event(state, event, self.policy)
            effects = RouterEffects()
            effects.route(out)
            self.cache.put(effects, NOTIFY_TABLE, borrower, state)
            return effects
        except Exception as exc:  # this borrower's record alone goes to the DLQ
            return _bad(key, value, exc, NOTIFY_BY_BORROWER, partition, offset)


class PartnerDigests:
    """The partner router's second stage, per partner_id: real-time shares and daily digests.

    Its clock for a partition is the minimum of the tick markers received from every source
    partition, so a digest is sent only when every loan partition has passed its instant.
    """

    def __init__(self, policy: Policy, load: Load, partitions: int) -> None:
        self.policy = policy
        self.cache = StateCache(load)
        self.partitions = partitions
        self.indexes: dict[int, WakeIndex] = {}
        self.clocks: dict[int, datetime] = {}
        self.marks: dict[int, dict[int, datetime]] = {}
        self._logged: dict[int, datetime] = {}

    def on_marker(self, partition: int, source: int, value: bytes) -> RouterEffects:
        """A tick marker from loan partition ``source``: advance this partition's watermark."""
        from .core.records import parse_tick

        as_of = parse_tick(codec.decode("Tick", value)).as_of
        marks = self.marks.setdefault(partition, {})
        if source not in marks or as_of > marks[source]:
            marks[source] = as_of
        if len(marks) < self.partitions:
            return RouterEffects()
        return self.on_tick(partition, min(marks.values()))

    def index(self, partition: int) -> WakeIndex:
        return self.indexes.setdefault(partition, WakeIndex())

    def on_item(self, partition: int, offset: int, key: bytes | None, value: bytes) -> RouterEffects:
        try:
            envelope = partners.envelope_from_bytes(value)
            partner_id = (key or b"").decode()
            state = self.cache.get(PARTNER_TABLE, partner_id, partners.EMPTY)
            state, out = partners.step_item(state, partner_id, envelope, self.policy)
            effects = RouterEffects()
            effects.route(out)
            self.cache.put(effects, PARTNER_TABLE, partner_id, state)
            self.index(partition).set(partner_id, partners.next_due(state))
            return effects
        except Exception as exc:  # this partner's record alone goes to the DLQ
            return _bad(key, value, exc, PARTNER_ITEMS, partition, offset)

    def on_tick(self, partition: int, as_of: datetime) -> RouterEffects:
        clock = self.clocks.get(partition)
        if clock is None or as_of > clock:
            self.clocks[partition] = clock = as_of
        effects = RouterEffects()
        index = self.index(partition)
        for partner_id in index.pop_due(clock):
            state = self.cache.get(PARTNER_TABLE, partner_id)
            if state is None:
                continue
            try:
                state, out, due = _tick_through(
                    state, clock, partners.next_due,
                    lambda s, at, partner_id=partner_id: partners.step_tick(s, partner_id, at, self.policy),
                    PARTNER_TABLE,
                )  # fmt: skip
                routed = RouterEffects()
                routed.route(out)
            except Exception as exc:  # a bug: this partner's digest waits, the others go on
                self._failed(exc, partition, clock)
                index.set(partner_id, partners.next_due(state))  # tried again at the next tick
                continue
            effects.merge(routed)
            self.cache.put(effects, PARTNER_TABLE, partner_id, state)
            index.set(partner_id, due)
        return effects

    def _failed(self, exc: Exception, partition: int, clock: datetime) -> None:
        """Log a partner's failed digest at most once a minute per partition: it is retried at every
        tick until a fix is deployed, and the log must not drown."""
        last = self._logged.get(partition)
        now = datetime.now(UTC)
        if last is None or now - last > _LOG_EVERY:
            self._logged[partition] = now
            report(exc, Source(PARTNER_ITEMS, partition, -1, None, b""), "making a partner's digest in",
                   "retried at every tick (logged once a minute)")  # fmt: skip
