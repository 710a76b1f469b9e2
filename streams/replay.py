"""`duewatch replay`: the detector's core driven from a file instead of Kafka.

Replay has every record in hand, so it sorts them by event time (stable for ties) and
ticks each loan just before each of its records and finally at ``until``, with no settle
delay. That is the same as ticking at every instant where something can happen: the
core's walk visits exactly those instants. The very same ``streams.core.loan`` functions
decide as in the stream; only the driving differs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from .contracts import codec
from .contracts.topics import DISPUTES, DLQ, OVERDUE, REPAYMENTS, SCHEDULES, TICKS, TOPIC_RECORD
from .contracts.topics import EVENT_TIME_FIELD as _EVENT_TIME_FIELD
from .core import bounds, errors
from .core.config import REPLAY_CONFIG, EngineConfig
from .core.dates import MICROSECOND, parse_instant
from .core.loan import LoanState, Outcome, apply_repayment, apply_schedule, new_loan, tick
from .core.records import LoanSchedule, parse_dispute, parse_repayment, parse_schedule, repayment_to_dict
from .core.routing import Policy, emission_instant, route_all

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # where a run with no dated record puts its DLQ outputs


@dataclass(order=True)
class Output:
    """One output record, sortable by (as_of, emission order)."""

    as_of: datetime
    order: int
    topic: str = field(compare=False)
    key: str | None = field(compare=False)
    value: dict[str, Any] = field(compare=False)
    headers: dict[str, str] | None = field(compare=False, default=None)

    def as_record(self) -> dict[str, Any]:
        """The ``{"topic", "key", "value"}`` form of SPEC §6 (plus ``headers`` on the DLQ)."""
        record: dict[str, Any] = {"topic": self.topic, "key": self.key, "value": self.value}
        if self.headers is not None:
            record["headers"] = self.headers
        return record


def _logical(topic: str) -> str:
    for name in (SCHEDULES, REPAYMENTS, TICKS, DISPUTES):
        if topic == name or topic.endswith("." + name) or topic.endswith(name):
            return name
    return topic


def dlq_headers(error: errors.InvalidRecord, source_topic: str, loan_id: str | None = None) -> dict[str, str]:
    """The DLQ headers replay writes (the stream adds partition and offset); ``loan_id`` for a
    loan set aside (SPEC §2)."""
    headers = {"reason": error.reason, "detail": error.detail, "source_topic": source_topic}
    if loan_id is not None:
        headers["loan_id"] = loan_id
    return headers


def encoded_size(topic: str, value: Mapping[str, Any], limit: int) -> int:
    """How many bytes ``value`` takes on the wire, as far as a bound of ``limit`` bytes is
    concerned: what the stream measures (SPEC §2's TOO_LARGE) for replay's JSON input.

    Its JSON form is never shorter than its Avro encoding (every field adds at least its name),
    so only a value whose JSON exceeds the bound is encoded to be measured; one that does not
    encode is measured as JSON, and its validation says what is wrong with it."""
    size = len(orjson.dumps(value))
    if size <= limit:
        return size
    record_type = TOPIC_RECORD[topic]
    try:
        return len(codec.encode(record_type, codec.from_json(record_type, value)))
    except (codec.DecodeError, codec.EncodeError):
        return size


@dataclass
class Replay:
    """The state of one replay run; ``feed`` records in any order, then ``finish``."""

    cfg: EngineConfig = REPLAY_CONFIG
    loans: dict[str, LoanState] = field(default_factory=dict)
    outputs: list[Output] = field(default_factory=list)
    disputes: list[Any] = field(default_factory=list)
    max_record_bytes: int = bounds.MAX_RECORD_BYTES
    # Loans an unexpected failure set aside (SPEC §2): their later records go to the DLQ.
    aside: set[str] = field(default_factory=set)
    _order: int = 0

    def _emit(self, at: datetime, topic: str, key: str | None, value: dict[str, Any], headers=None) -> None:
        self._order += 1
        self.outputs.append(Output(at, self._order, topic, key, value, headers))

    def _outcome(self, loan_id: str, outcome: Outcome, source_topic: str) -> None:
        self.loans[loan_id] = outcome.state
        for event in outcome.events:
            self._emit(event.as_of, OVERDUE, loan_id, event.to_dict())
        for rejection in outcome.rejected:
            self._emit(
                rejection.record.paid_at,
                DLQ,
                loan_id,
                repayment_to_dict(rejection.record),
                dlq_headers(rejection.error, REPAYMENTS),
            )

    def run(
        self,
        records: Iterable[Mapping[str, Any]],
        until: datetime | None,
        progress: Callable | None = None,
        policy: Policy | None = None,
    ):
        """Sort ``records`` by event time, apply them, tick every loan to ``until``; returns outputs in order.

        With a routing ``policy`` the four routers of SPEC §5 run over the detector's events too.
        """
        timed: list[tuple[datetime, int, str, Any, Mapping[str, Any]]] = []
        first_bad: list[tuple[int, str, Any, Any, errors.InvalidRecord]] = []
        latest: datetime | None = None
        for index, record in enumerate(records):
            topic = _logical(str(record.get("topic", "")))
            value = record.get("value")
            key = record.get("key")
            try:
                event_time = self._event_time(record, topic, value)
                assert isinstance(value, Mapping)
            except errors.InvalidRecord as exc:
                first_bad.append((index, topic, key, value, exc))
                continue
            timed.append((event_time, index, topic, key, value))
            latest = event_time if latest is None or event_time > latest else latest
        timed.sort(key=lambda t: (t[0], t[1]))
        until = until if until is not None else latest
        start = timed[0][0] if timed else (until or _EPOCH)
        for _, topic, key, value, error in first_bad:
            self._emit(
                start,
                DLQ,
                key,
                value if isinstance(value, dict) else {"raw": value},
                dlq_headers(error, topic),
            )
        for done, (event_time, _, topic, key, value) in enumerate(timed):
            self._apply(event_time, topic, key, value, until)
            if progress is not None:
                progress(done + 1, len(timed))
        if until is not None:
            for loan_id, state in list(self.loans.items()):
                if loan_id in self.aside:
                    continue
                try:
                    self._outcome(loan_id, tick(state, until, self.cfg), TICKS)
                except Exception as exc:  # a bug: this loan alone stops (SPEC §2)
                    self._set_aside(exc, until, TICKS, None, {"as_of": until.isoformat()}, loan_id)
        self.outputs.sort()
        if policy is not None and until is not None:
            events = [o.value for o in self.outputs if o.topic == OVERDUE]
            disputes = [
                {
                    "dispute_id": d.dispute_id,
                    "loan_id": d.loan_id,
                    "status": d.status,
                    "at": d.at,
                    "note": d.note,
                }
                for d in self.disputes
            ]
            for topic, key, value in route_all(events, disputes, until, policy):
                self._emit(emission_instant(topic, value), topic, key, value)
            self.outputs.sort()
        return self.outputs

    def _event_time(self, record: Mapping[str, Any], topic: str, value: Any) -> datetime:
        """The event time of an input record, or the InvalidRecord replay dead-letters it for."""
        if UNDECODABLE_LINE in record:
            raise errors.InvalidRecord(errors.UNDECODABLE, str(record[UNDECODABLE_LINE]))
        time_field = _EVENT_TIME_FIELD.get(topic)
        if time_field is None:
            raise errors.InvalidRecord(errors.INVALID_FIELD, "unknown topic")
        if not isinstance(value, Mapping):
            raise errors.InvalidRecord(errors.UNDECODABLE, "value is not an object")
        bounds.check_size(encoded_size(topic, value, self.max_record_bytes), self.max_record_bytes)
        try:
            return parse_instant(value.get(time_field))
        except (ValueError, OverflowError):
            raise errors.InvalidRecord(
                errors.INVALID_FIELD, f"{time_field} must be an ISO-8601 instant with an offset"
            ) from None

    def _apply(
        self, event_time: datetime, topic: str, key: Any, value: Mapping[str, Any], until: datetime | None
    ):
        before = event_time - MICROSECOND
        if until is not None and before > until:
            before = until
        loan_id: str | None = None
        try:
            if topic == TICKS:
                return  # replay makes its own clock; input ticks never change what is true
            if topic == DISPUTES:
                dispute = parse_dispute(value)
                if dispute.loan_id in self.aside:
                    loan_id = dispute.loan_id
                    raise errors.InvalidRecord(
                        errors.LOAN_SET_ASIDE, "the loan is set aside until `duewatch release`"
                    )
                self.disputes.append(dispute)
                return
            record = parse_schedule(value) if topic == SCHEDULES else parse_repayment(value)
            if key is not None and key != record.loan_id:
                raise errors.InvalidRecord(errors.KEY_MISMATCH, "key differs from loan_id")
            loan_id = record.loan_id
            if loan_id in self.aside:
                raise errors.InvalidRecord(
                    errors.LOAN_SET_ASIDE, "the loan is set aside until `duewatch release`"
                )
            state = self.loans.get(loan_id) or new_loan(loan_id)
            caught_up = tick(state, before, self.cfg)
            if isinstance(record, LoanSchedule):
                applied = apply_schedule(caught_up.state, record, before, self.cfg)
            else:
                applied = apply_repayment(caught_up.state, record, before, self.cfg)
            self._outcome(loan_id, caught_up, TICKS)
            self._outcome(loan_id, applied, topic)
        except errors.InvalidRecord as exc:
            held = loan_id if exc.reason == errors.LOAN_SET_ASIDE else None
            self._emit(event_time, DLQ, key, dict(value), dlq_headers(exc, topic, held))
        except Exception as exc:  # a bug: this loan alone stops (SPEC §2)
            self._set_aside(exc, event_time, topic, key, value, loan_id)

    def _set_aside(
        self,
        exc: Exception,
        at: datetime,
        topic: str,
        key: Any,
        value: Mapping[str, Any],
        loan_id: str | None,
    ) -> None:
        """An unexpected failure: the record to the DLQ as INTERNAL_ERROR and, when it named a
        loan, that loan set aside, as the stream does."""
        error = errors.InvalidRecord(errors.INTERNAL_ERROR, type(exc).__name__)
        self._emit(at, DLQ, key, dict(value), dlq_headers(error, topic, loan_id))
        if loan_id is not None:
            self.aside.add(loan_id)


def latest_event_time(records: Iterable[Mapping[str, Any]]) -> datetime | None:
    """The latest event time among ``records`` (replay's default ``until``); None when none has one.

    Records replay would dead-letter before applying them (unknown topic, no event time) do not count.
    """
    latest: datetime | None = None
    for record in records:
        time_field = _EVENT_TIME_FIELD.get(_logical(str(record.get("topic", ""))))
        value = record.get("value")
        if time_field is None or not isinstance(value, Mapping):
            continue
        try:
            event_time = parse_instant(value.get(time_field))
        except (errors.InvalidRecord, ValueError):
            continue
        latest = event_time if latest is None or event_time > latest else latest
    return latest


#: The key under which ``load_input`` says why a line is no record (replay dead-letters it as
#: UNDECODABLE).
UNDECODABLE_LINE = "undecodable"


def load_input(path: str | Path) -> list[dict[str, Any]]:
    """The JSON-lines replay input at ``path``; a line that is not a JSON object becomes a record
    replay dead-letters as UNDECODABLE (``{"raw": line, "line": number}`` under no topic), so it
    is reported with its line number, not fatal."""
    from .contracts import jsonform

    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = jsonform.loads(line)
                why = None if isinstance(record, dict) else f"line {number} is not a JSON object"
            except ValueError:
                why = f"line {number} is not JSON"
            if why is None:
                records.append(record)
            else:
                raw = {"raw": line.rstrip("\n"), "line": number}
                records.append({"topic": "", "key": None, "value": raw, UNDECODABLE_LINE: why})
    return records


def replay(
    records: Iterable[Mapping[str, Any]],
    until: datetime | None = None,
    cfg: EngineConfig = REPLAY_CONFIG,
    progress: Callable | None = None,
    policy: Policy | None = None,
) -> list[Output]:
    """Run the detector (and, with a policy, the routers) over ``records`` up to ``until``; outputs in order."""
    return Replay(cfg=cfg).run(records, until, progress, policy)
