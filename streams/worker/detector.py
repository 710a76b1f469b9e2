"""The detector's shell: raw Kafka records in, effects out.

The agent hands each record here with its partition and does what comes back, through the
checkpoint: send these records, then write these states (a state is written only after what it
caused is acknowledged, so a record processed again after a crash finds the old state and
re-sends the same events with the same ids). Keeping the shell free of Faust makes it testable
without a broker and keeps the per-record path short: one Avro decode, one core call, one
encode per event.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from ..contracts import codec
from ..contracts import topics as names
from ..core import bounds, errors, statecodec
from ..core.config import EngineConfig
from ..core.loan import LoanState, Outcome, apply_repayment, apply_schedule, new_loan, tick
from ..core.records import LoanSchedule, Repayment, parse_repayment, parse_schedule, repayment_to_dict
from ..core.wakeups import WakeIndex
from . import aside
from .aside import SetAside
from .effects import Effects, Send, Source, dlq_send, internal_error
from .metrics import BookGauges
from .tables import ASIDE, LOANS, contribution, indexed
from .tracing import trace_headers, trace_of
from .wire import Wire

#: A stored loan state by (partition, loan id).
Load = Callable[[int, str], bytes | None]

_DUE_NOW = datetime.min.replace(tzinfo=UTC)


class Detector:
    """Per-worker detector state that is not in the tables: per-partition clocks and wake-up
    indexes, decoded states, the loans set aside."""

    def __init__(
        self,
        cfg: EngineConfig,
        load: Load,
        cache_size: int = 200_000,
        book: BookGauges | None = None,
        set_aside: SetAside | None = None,
        max_record_bytes: int = bounds.MAX_RECORD_BYTES,
        max_tick_ahead: timedelta | None = timedelta(days=1),
        wire: Wire | None = None,
    ) -> None:
        self.cfg = cfg
        self.wire = wire if wire is not None else Wire()
        self.book = book
        self._load = load
        self.clocks: dict[int, datetime] = {}
        self.indexes: dict[int, WakeIndex] = {}
        self._cache: OrderedDict[str, LoanState] = OrderedDict()
        self._cache_size = cache_size
        self.aside = set_aside if set_aside is not None else SetAside()
        self.max_record_bytes = max_record_bytes
        self.max_tick_ahead = max_tick_ahead

    # --- state -------------------------------------------------------------------------

    def state(self, partition: int, loan_id: str) -> LoanState | None:
        """The loan's current state (decoded states are cached; the table is the truth)."""
        state = self._cache.get(loan_id)
        if state is not None:
            self._cache.move_to_end(loan_id)
            return state
        raw = self._load(partition, loan_id)
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

    def clear(self) -> None:
        """Forget indexes and decoded states (after a rebalance the tables may hold newer ones)."""
        self.indexes.clear()
        self._cache.clear()

    def reload(self, loan_ids: Iterable[str], partition: int) -> None:
        """Forget what memory holds of ``loan_ids`` beyond their stored states (a batch whose
        outputs the broker refused wrote none of its states) and index them as stored. A loan
        whose stored state cannot be read is made due at once: its tick sets it aside."""
        index = self.index(partition)
        for loan_id in loan_ids:
            self._cache.pop(loan_id, None)
            index.set(loan_id, None)
            if self.aside.holds(partition, loan_id):
                continue
            raw = self._load(partition, loan_id)
            if raw is not None:
                try:
                    index.set(loan_id, indexed(raw, self.cfg)[0])
                except Exception:  # noqa: BLE001 - set aside by its first tick, with a DLQ record
                    index.set(loan_id, _DUE_NOW)

    def rebuild(self, stored: Iterable[tuple[int, bytes, bytes | None]]) -> int:
        """Fill the per-partition wake-up indexes (and the book gauges) from stored loan states,
        given as (partition, key, bytes); returns the number of loans. A state that cannot be
        read (written by a newer release, damaged) sets its loan aside, not the rebuild."""
        contributions = []
        entries: dict[int, list[tuple[str, datetime | None]]] = {}
        for partition, key, raw in stored:
            if raw is None:
                continue
            try:
                at, contributed = indexed(raw, self.cfg)
            except Exception as exc:  # this loan alone stops (SPEC §2)
                loan_id = key.decode("utf-8", "replace")
                source = Source(LOANS + "-changelog", partition, -1, key, b"")
                aside.report(exc, source, "reading a stored loan state of", "the loan is set aside")
                self.aside.add(partition, loan_id, aside.mark(exc, source, datetime.now(UTC)))
                continue
            contributions.append(contributed)
            entries.setdefault(partition, []).append((key.decode(), at))
        for partition, loaded in entries.items():
            self.index(partition).load(loaded)
        if self.book is not None:
            self.book.reset(contributions, len(contributions))
        return len(contributions)

    # --- inputs ------------------------------------------------------------------------

    def handle(self, source: Source, detected_at: datetime) -> Effects:
        """One schedule or repayment record. Never raises: bad input becomes a DLQ record with its
        reason, an unexpected failure sets the loan aside (SPEC §2).

        Ticks go to ``on_tick`` (the agent gates them first)."""
        topic, partition = source.topic, source.partition
        loan_id: str | None = None
        try:
            bounds.check_size(len(source.value), self.max_record_bytes)
            record: LoanSchedule | Repayment
            if topic == names.SCHEDULES:
                record = parse_schedule(self.wire.decode("LoanSchedule", source.value))
            elif topic == names.REPAYMENTS:
                record = parse_repayment(self.wire.decode("Repayment", source.value))
            else:
                raise errors.InvalidRecord(errors.INVALID_FIELD, f"detector does not read {topic}")
            if source.key is None or source.key.decode("utf-8", "replace") != record.loan_id:
                raise errors.InvalidRecord(errors.KEY_MISMATCH, "record key must be its loan_id")
            loan_id = record.loan_id
            if self.aside.holds(partition, loan_id):
                raise errors.InvalidRecord(
                    errors.LOAN_SET_ASIDE, "the loan is set aside until `duewatch release`"
                )
            before = self.state(partition, loan_id)
            state = before or new_loan(loan_id)
            now = self.clocks.get(partition)
            if isinstance(record, LoanSchedule):
                outcome = apply_schedule(state, record, now, self.cfg)
            else:
                outcome = apply_repayment(state, record, now, self.cfg)
            effects = Effects(duplicate=outcome.duplicate)
            trace = trace_of(source.headers) if source.headers else None
            self._take(effects, loan_id, before, outcome, partition, detected_at, trace)
            return effects
        except codec.DecodeError as exc:  # UNDECODABLE, or in registry mode UNKNOWN_SCHEMA, SCHEMA_MISMATCH
            return Effects().dead_letter(source, errors.InvalidRecord(exc.reason, exc.detail))
        except errors.InvalidRecord as exc:
            return Effects().dead_letter(
                source, exc, loan_id if exc.reason == errors.LOAN_SET_ASIDE else None
            )
        except Exception as exc:  # a bug: this loan alone stops, the record is kept in the DLQ
            return self.set_aside(exc, source, loan_id, detected_at)

    def set_aside(self, exc: Exception, source: Source, loan_id: str | None, wall: datetime) -> Effects:
        """An unexpected failure for ``loan_id`` (None: before the record named one): the record
        to the DLQ as INTERNAL_ERROR and the loan set aside, its state as it was."""
        aside.report(exc, source, "deciding for a loan of")
        effects = Effects().dead_letter(source, internal_error(exc), loan_id)
        if loan_id is not None:
            marked = aside.mark(exc, source, wall)
            self.aside.add(source.partition, loan_id, marked)
            self._cache.pop(loan_id, None)
            self.index(source.partition).set(loan_id, None)
            effects.writes[(ASIDE, loan_id)] = marked
        return effects

    def release(self, partition: int, loan_id: str) -> Effects:
        """An operator released ``loan_id``: it takes records and ticks again from its stored state."""
        effects = Effects()
        if self.aside.remove(partition, loan_id):
            effects.writes[(ASIDE, loan_id)] = None
            self.reload([loan_id], partition)
        return effects

    def tick_ahead(self, as_of: datetime, wall: datetime) -> None:
        """Refuse a tick further ahead of the wall clock than allowed (``TICK_AHEAD``): what a
        tick emits cannot be taken back."""
        if self.max_tick_ahead is not None and as_of > wall + self.max_tick_ahead:
            raise errors.InvalidRecord(
                errors.TICK_AHEAD,
                f"tick more than {self.max_tick_ahead.total_seconds():.0f} s ahead of the wall clock",
            )

    def on_tick(self, source: Source, as_of: datetime, detected_at: datetime) -> Effects:
        """The clock of ``source.partition`` reached ``as_of``: touch only the loans that are due."""
        effects = Effects()
        self.advance(source.partition, as_of)
        while due := self.due(source.partition):
            effects.merge(self.tick_loans(source, due, detected_at))
        return effects

    def advance(self, partition: int, as_of: datetime) -> datetime:
        """Move ``partition``'s clock to ``as_of`` (never back); returns the clock."""
        clock = self.clocks.get(partition)
        if clock is None or as_of > clock:
            self.clocks[partition] = clock = as_of
        return clock

    def due(self, partition: int, limit: int | None = None) -> list[str]:
        """Take out of ``partition``'s index up to ``limit`` loans due by its clock: the rest stay
        indexed, so a tick cut short (a rebalance, a failed send) loses no wake-up."""
        clock = self.clocks.get(partition)
        if clock is None:
            return []
        return self.index(partition).pop_due(clock, limit)

    def tick_loans(self, source: Source, loan_ids: list[str], detected_at: datetime) -> Effects:
        """Tick ``loan_ids`` (taken out by ``due``) to the partition's clock, each on its own: a
        loan whose tick fails is set aside and the others go on. A catch-up tick can make a
        whole history due at once; the agent ticks it a part at a time."""
        partition = source.partition
        clock = self.clocks[partition]
        effects = Effects()
        trace = trace_of(source.headers) if source.headers else None  # the tick's (SPEC §1)
        for loan_id in loan_ids:
            try:
                if self.aside.holds(partition, loan_id):
                    continue
                state = self.state(partition, loan_id)
                if state is None:
                    continue
                outcome = tick(state, clock, self.cfg)
                if outcome.wake_at is not None and outcome.wake_at <= clock:
                    raise RuntimeError("a tick left the loan due at the instant it was ticked to")
                self._take(effects, loan_id, state, outcome, partition, detected_at, trace)
            except Exception as exc:  # a bug: this loan alone stops
                effects.merge(self.set_aside(exc, source, loan_id, detected_at))
        return effects

    def _take(
        self,
        effects: Effects,
        loan_id: str,
        before: LoanState | None,
        outcome: Outcome,
        partition: int,
        detected_at: datetime,
        trace: bytes | None = None,
    ) -> None:
        """Add ``outcome`` to ``effects`` and to what memory holds. Everything that can fail (the
        encoding) happens before anything is changed, so a loan that fails here is left as it was.
        ``trace``: the ``traceparent`` of the record (or tick) the outcome is for."""
        key = loan_id.encode()
        sends: list[Send] = []
        routed: list[tuple[dict, bytes]] = []
        send = self.wire.send
        for event in outcome.events:
            record = event.to_dict(detected_at)
            out = send(names.OVERDUE, key, record, partition, trace)
            sends.append(out)
            routed.append((record, out.value))
        rejected: list[str] = []
        for rejection in outcome.rejected:
            original = codec.encode("Repayment", repayment_to_dict(rejection.record))
            sends.append(dlq_send(key, original, rejection.error, names.REPAYMENTS, partition, -1,
                                  trace_headers(trace)))  # fmt: skip
            rejected.append(rejection.error.reason)
        effects.sends += sends
        effects.events += outcome.events
        effects.routed += routed
        effects.dlq += rejected
        if not outcome.duplicate:
            effects.writes[(LOANS, loan_id)] = (outcome.state, outcome.wake_at)
            self._remember(loan_id, outcome.state)
            if self.book is not None:
                if before is None:
                    self.book.loans += 1
                self.book.add(*contribution(before), -1)
                self.book.add(*contribution(outcome.state), +1)
        self.index(partition).set(loan_id, outcome.wake_at)
