"""The detector's shell: raw Kafka records in, sends and state writes out.

The Faust agent (``streams.app``) only moves bytes: it hands each message here and does
what comes back — send these records, then write these states (in that order: a state
is written only after what it caused is acknowledged, so a record processed again after
a crash finds the old state and re-sends the same events with the same ids). Keeping
the shell free of Faust makes it testable without a broker and keeps the per-record
path short: one Avro decode, one core call, one encode per event.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from .contracts import codec
from .contracts import topics as names
from .core import errors, statecodec
from .core.config import EngineConfig
from .core.events import OverdueEvent
from .core.loan import (
    LoanState,
    Outcome,
    apply_repayment,
    apply_schedule,
    gauge_figures,
    new_loan,
    tick,
    wake_at,
)
from .core.records import parse_repayment, parse_schedule, repayment_to_dict
from .core.wakeups import WakeIndex
from .metrics import BookGauges

Contribution = tuple[tuple[str, str] | None, int, bool]


def contribution(state: LoanState | None) -> Contribution:
    """What one loan adds to the book gauges: its (bucket, currency) and overdue amount if open; held or not."""
    if state is None:
        return None, 0, False
    return _gauged(*gauge_figures(state))


def _gauged(bucket: str | None, currency: str | None, overdue: int, held: bool) -> Contribution:
    return ((bucket, currency) if bucket is not None and currency is not None else None), overdue, held


def stored(state: LoanState, wake: datetime | None, cfg: EngineConfig) -> bytes:
    """The table's bytes for a loan: its state with the summary a restart indexes it by."""
    return statecodec.dumps(state, statecodec.Summary.of(state, wake, cfg))


def indexed(raw: bytes, cfg: EngineConfig) -> tuple[datetime | None, Contribution]:
    """A stored loan's wake-up instant and gauge contribution, from its summary when that was
    computed with these settings (a header read), else from the decoded state."""
    summary = statecodec.peek(raw)
    if summary is not None and summary.fits(cfg):
        return summary.wake_at, _gauged(summary.bucket, summary.currency, summary.overdue, summary.held)
    state = statecodec.loads(raw)
    return wake_at(state, cfg), contribution(state)


@dataclass(slots=True)
class Send:
    """One record to produce: logical topic, key, value bytes, explicit partition, headers."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class Effects:
    """What handling one input asks the agent to do, in order: send, then write."""

    sends: list[Send] = field(default_factory=list)
    writes: dict[str, LoanState] = field(default_factory=dict)
    wakes: dict[str, datetime | None] = field(default_factory=dict)  # each written loan's wake-up instant
    events: list[OverdueEvent] = field(default_factory=list)
    # Each event's record form and Avro bytes, for the routers that run right after the detector.
    routed: list[tuple[dict, bytes]] = field(default_factory=list)
    dlq: list[str] = field(default_factory=list)
    duplicate: bool = False


def dlq_send(
    key: bytes | None, value: bytes, error: errors.InvalidRecord, topic: str, partition: int, offset: int
) -> Send:
    """The dead-letter record: original key and bytes, the reason and the source in headers."""
    return Send(
        names.DLQ,
        key,
        value,
        None,
        [
            ("reason", error.reason.encode()),
            ("detail", error.detail.encode("utf-8", "replace")[:512]),
            ("source_topic", topic.encode()),
            ("source_partition", str(partition).encode()),
            ("source_offset", str(offset).encode()),
        ],
    )


class Detector:
    """Per-worker detector state that is not in the table: per-partition clocks and wake-up indexes."""

    def __init__(
        self,
        cfg: EngineConfig,
        load: Callable[[str], bytes | None],
        cache_size: int = 200_000,
        book: BookGauges | None = None,
    ) -> None:
        self.cfg = cfg
        self.book = book
        self._load = load
        self.clocks: dict[int, datetime] = {}
        self.indexes: dict[int, WakeIndex] = {}
        self._cache: OrderedDict[str, LoanState] = OrderedDict()
        self._cache_size = cache_size

    # --- state -------------------------------------------------------------------------

    def state(self, loan_id: str) -> LoanState | None:
        """The loan's current state (decoded states are cached; the table is the truth)."""
        state = self._cache.get(loan_id)
        if state is not None:
            self._cache.move_to_end(loan_id)
            return state
        raw = self._load(loan_id)
        if raw is None:
            return None
        state = statecodec.loads(raw)
        self._remember(loan_id, state)
        return state

    def _remember(self, loan_id: str, state: LoanState) -> None:
        self._cache[loan_id] = state
        self._cache.move_to_end(loan_id)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def index(self, partition: int) -> WakeIndex:
        """The wake-up index of ``partition``."""
        index = self.indexes.get(partition)
        if index is None:
            index = self.indexes[partition] = WakeIndex()
        return index

    def clear_cache(self) -> None:
        """Drop decoded states (after a rebalance the table may hold newer ones)."""
        self._cache.clear()

    def forget(self, partition: int) -> None:
        """Drop ``partition`` (revoked): its index and clock; cached states go stale harmlessly."""
        self.indexes.pop(partition, None)
        self.clocks.pop(partition, None)
        self._cache.clear()

    # --- inputs ------------------------------------------------------------------------

    def handle(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes, detected_at: datetime
    ) -> Effects:
        """One schedule or repayment message. Never raises on bad input: that becomes a DLQ send.

        Ticks go to ``on_tick`` (the agent gates them first)."""
        try:
            if topic == names.SCHEDULES:
                record = parse_schedule(codec.decode("LoanSchedule", value))
            elif topic == names.REPAYMENTS:
                record = parse_repayment(codec.decode("Repayment", value))
            else:
                raise errors.InvalidRecord(errors.INVALID_FIELD, f"detector does not read {topic}")
            if key is None or key.decode("utf-8", "replace") != record.loan_id:
                raise errors.InvalidRecord(errors.KEY_MISMATCH, "record key must be its loan_id")
            loan_id = record.loan_id
            before = self.state(loan_id)
            state = before or new_loan(loan_id)
            now = self.clocks.get(partition)
            if topic == names.SCHEDULES:
                outcome = apply_schedule(state, record, now, self.cfg)
            else:
                outcome = apply_repayment(state, record, now, self.cfg)
        except codec.DecodeError as exc:
            return Effects(sends=[dlq_send(key, value, errors.InvalidRecord(errors.UNDECODABLE, exc.detail), topic, partition, offset)], dlq=[errors.UNDECODABLE])
        except errors.InvalidRecord as exc:
            return Effects(sends=[dlq_send(key, value, exc, topic, partition, offset)], dlq=[exc.reason])
        effects = Effects(duplicate=outcome.duplicate)
        self._take(effects, loan_id, before, outcome, partition, detected_at)
        return effects

    def on_tick(self, partition: int, as_of: datetime, detected_at: datetime) -> Effects:
        """The clock of ``partition`` reached ``as_of``: touch only the loans that are due."""
        return self.tick_loans(partition, self.due(partition, as_of), detected_at)

    def due(self, partition: int, as_of: datetime) -> list[str]:
        """Advance ``partition``'s clock to ``as_of``; take out of its index the loans now due."""
        clock = self.clocks.get(partition)
        if clock is None or as_of > clock:
            self.clocks[partition] = clock = as_of
        return self.index(partition).pop_due(clock)

    def tick_loans(self, partition: int, loan_ids: list[str], detected_at: datetime) -> Effects:
        """Tick ``loan_ids`` (taken out by ``due``) to the partition's clock. A catch-up tick can
        make a whole history due at once; the agent ticks it a part at a time."""
        clock = self.clocks[partition]
        effects = Effects()
        for loan_id in loan_ids:
            state = self.state(loan_id)
            if state is None:
                continue
            self._take(effects, loan_id, state, tick(state, clock, self.cfg), partition, detected_at)
        return effects

    def _take(
        self, effects: Effects, loan_id: str, before: LoanState | None, outcome: Outcome, partition: int, detected_at: datetime
    ) -> None:
        key = loan_id.encode()
        for event in outcome.events:
            record = event.to_dict(detected_at)
            value = codec.encode("OverdueEvent", record)
            effects.sends.append(Send(names.OVERDUE, key, value, partition))
            effects.events.append(event)
            effects.routed.append((record, value))
        for rejection in outcome.rejected:
            original = codec.encode("Repayment", repayment_to_dict(rejection.record))
            effects.sends.append(dlq_send(key, original, rejection.error, names.REPAYMENTS, partition, -1))
            effects.dlq.append(rejection.error.reason)
        if not outcome.duplicate:
            effects.writes[loan_id] = outcome.state
            effects.wakes[loan_id] = outcome.wake_at
            self._remember(loan_id, outcome.state)
            if self.book is not None:
                if before is None:
                    self.book.loans += 1
                self.book.add(*contribution(before), -1)
                self.book.add(*contribution(outcome.state), +1)
        self.index(partition).set(loan_id, outcome.wake_at)
