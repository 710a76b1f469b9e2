"""What one step of the worker asks for: records to send, states to write, what to count.

The detector and the routers both return :class:`Effects`; the checkpoint carries them out in
the at-least-once order (send, wait for the broker, write the states, acknowledge the input).
A step that a record could not get through produces a dead-letter record instead, built here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..contracts import topics
from ..core import errors
from ..core.events import OverdueEvent


@dataclass(frozen=True, slots=True)
class Source:
    """The input record a step was taken for: where it came from and its original bytes, which
    a DLQ record carries unchanged."""

    topic: str  # logical name
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = field(default=())


def source_of(message: Any, logical: str) -> Source:
    """The consumed record ``message`` of logical topic ``logical``, as the shells take it."""
    return Source(
        logical, message.partition, message.offset, message.key, message.value, tuple(message.headers or ())
    )


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
    """What a step asks for, in order: send these records, then write these states.

    ``writes`` maps (table, key) to the state to keep (None deletes it); a later step of the same
    batch that writes the same key replaces the earlier state, so each changed state is encoded
    and written once per batch."""

    sends: list[Send] = field(default_factory=list)
    writes: dict[tuple[str, str], Any] = field(default_factory=dict)
    events: list[OverdueEvent] = field(default_factory=list)  # the detector's, for its metrics
    # The detector's events (record form, Avro bytes) for the loan's routers, which run after it.
    routed: list[tuple[dict[str, Any], bytes]] = field(default_factory=list)
    dlq: list[str] = field(default_factory=list)  # the reasons of this step's DLQ records
    duplicate: bool = False

    def merge(self, other: Effects) -> None:
        """Add ``other``'s effects after these (a later step of the same batch)."""
        self.sends += other.sends
        self.writes.update(other.writes)
        self.events += other.events
        self.routed += other.routed
        self.dlq += other.dlq

    def dead_letter(self, source: Source, error: errors.InvalidRecord, loan_id: str | None = None) -> Effects:
        """Add the DLQ record of ``source`` (see :func:`dead_letter`); returns self."""
        self.sends.append(dead_letter(source, error, loan_id))
        self.dlq.append(error.reason)
        return self


#: The headers duewatch adds to a dead-lettered record (a redrive takes them off again).
DLQ_HEADERS = ("reason", "detail", "source_topic", "source_partition", "source_offset", "loan_id")


def dlq_send(
    key: bytes | None,
    value: bytes,
    error: errors.InvalidRecord,
    topic: str,
    partition: int,
    offset: int,
    headers: Iterable[tuple[str, bytes]] = (),
    loan_id: str | None = None,
) -> Send:
    """The dead-letter record: original key, bytes and headers, the reason and the source in
    headers of its own (and the loan, for a loan set aside)."""
    own = [
        ("reason", error.reason.encode()),
        ("detail", error.detail.encode("utf-8", "replace")[:512]),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
    ]
    if loan_id is not None:
        own.append(("loan_id", loan_id.encode()))
    return Send(topics.DLQ, key, value, None, [*(h for h in headers if h[0] not in DLQ_HEADERS), *own])


def dead_letter(source: Source, error: errors.InvalidRecord, loan_id: str | None = None) -> Send:
    """``dlq_send`` of the input record ``source``."""
    return dlq_send(source.key, source.value, error, source.topic, source.partition, source.offset,
                    source.headers, loan_id)  # fmt: skip


def internal_error(exc: BaseException) -> errors.InvalidRecord:
    """The DLQ reason of an unexpected failure, naming only the exception's type."""
    return errors.InvalidRecord(errors.INTERNAL_ERROR, type(exc).__name__)
