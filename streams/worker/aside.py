"""Loans set aside: one loan's unexpected failure must never stop another (SPEC §2).

When deciding for a loan fails in a way no validation foresaw (a bug), that loan alone is set
aside: its state stays as it was, the record goes to the DLQ as ``INTERNAL_ERROR`` with a
``loan_id`` header, and every other loan of the batch, the tick and the partition goes on.
Later records for it go to the DLQ as ``LOAN_SET_ASIDE`` and ticks skip it, until an operator
releases it (``duewatch release``), typically after deploying a fix, and redrives what was
dead-lettered meanwhile (``duewatch dlq redrive --loan``).

The mark is kept in a table of its own (so a restart or a new owner of the partition still
knows), and per partition in memory here, so that checking it costs a dict lookup per record.
This module also holds what every shell reports about such a failure: the log line (the
exception's type and where in duewatch it was raised, never a value) and the mark's bytes.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import orjson

from .effects import Source

log = logging.getLogger("duewatch")

_PACKAGE = str(Path(__file__).resolve().parents[1])


def where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame inside duewatch that ``exc`` passed through."""
    place = "?"
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith(_PACKAGE):
            place = f"{Path(frame.filename).relative_to(Path(_PACKAGE).parent)}:{frame.lineno}"
    return place


def report(
    exc: BaseException, source: Source, what: str, then: str = "dead-lettered as INTERNAL_ERROR"
) -> None:
    """Log an unexpected failure in one line an operator can act on, without any input value
    (an exception's message may quote one); the traceback only at DEBUG."""
    log.error(
        "unexpected %s at %s while %s %s[%d]@%d; %s",
        type(exc).__name__, where(exc), what, source.topic, source.partition, source.offset, then,
    )  # fmt: skip
    if log.isEnabledFor(logging.DEBUG):
        log.debug("traceback of that failure", exc_info=exc)


def mark(exc: BaseException, source: Source, wall: datetime) -> bytes:
    """The stored mark of a loan set aside: why, since when, and the record that did it."""
    return orjson.dumps(
        {
            "reason": "INTERNAL_ERROR",
            "error": type(exc).__name__,
            "where": where(exc),
            "since": wall.isoformat(),
            "source_topic": source.topic,
            "source_partition": source.partition,
            "source_offset": source.offset,
        }
    )


class SetAside:
    """The loans set aside in this worker's partitions, by partition."""

    def __init__(self) -> None:
        self._by_partition: dict[int, dict[str, bytes]] = {}

    def __len__(self) -> int:
        return sum(len(loans) for loans in self._by_partition.values())

    def holds(self, partition: int, loan_id: str) -> bool:
        """Whether ``loan_id`` (of ``partition``) is set aside."""
        loans = self._by_partition.get(partition)
        return loans is not None and loan_id in loans

    def get(self, partition: int, loan_id: str) -> bytes | None:
        """The mark of a loan set aside (None: it is not)."""
        return self._by_partition.get(partition, {}).get(loan_id)

    def add(self, partition: int, loan_id: str, marked: bytes) -> None:
        self._by_partition.setdefault(partition, {})[loan_id] = marked

    def remove(self, partition: int, loan_id: str) -> bool:
        """Release ``loan_id``; False when it was not set aside."""
        return self._by_partition.get(partition, {}).pop(loan_id, None) is not None

    def load(self, stored: Iterable[tuple[int, bytes, bytes | None]]) -> None:
        """Replace what is known with the stored marks (partition, key, bytes) of the active partitions."""
        self._by_partition = {}
        for partition, key, raw in stored:
            if raw is not None:
                self.add(partition, key.decode(), raw)
