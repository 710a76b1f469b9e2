"""The partition guard (SPEC §1): a loan's input records are processed on the one partition
murmur2 gives its key, whatever partitioner their producer used.

A worker keeps a loan's state in the partition its records arrive on. A producer with another
default partitioner (librdkafka's CRC32 — confluent-kafka for Python, the Go and .NET clients)
puts a loan's repayments on one partition and the CLI its schedule on another: each side would
keep its own state for the loan, and both would be wrong. So a keyed input record that arrives
on a partition other than its key's is not processed there: it is forwarded, bytes and headers
unchanged plus where it came from, to its key's partition of the internal re-key topic
(``<app id>-rekey``, same partition count), which the detector's agent consumes beside the
inputs and processes as the topic it came from.

The forward is a send of the batch's checkpoint like any output, so the source offset is
acknowledged only after the broker acknowledged the forward (a crash in between forwards it
again: at least once, nothing lost), and a source partition's forwards leave in its order, so
one producer's records for a loan stay in order. Ticks are keyless (one copy per partition) and
never guarded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..contracts import topics as names
from ..contracts.partitioning import partition_of
from .effects import Effects, Send
from .tables import REKEY

log = logging.getLogger("duewatch")

#: Headers a forwarded record carries besides its own: the physical topic, partition and offset
#: it was read from (decimal strings).
ORIGINAL_TOPIC = "duewatch-original-topic"
ORIGINAL_PARTITION = "duewatch-original-partition"
ORIGINAL_OFFSET = "duewatch-original-offset"
ORIGINAL_HEADERS = (ORIGINAL_TOPIC, ORIGINAL_PARTITION, ORIGINAL_OFFSET)

#: The inputs keyed by loan id, and so guarded (SPEC §1); ticks are not.
GUARDED = frozenset({names.SCHEDULES, names.REPAYMENTS, names.DISPUTES, names.CONTROL})

#: Seconds between two log lines about misrouted records of one topic.
LOG_EVERY = 60.0


def misrouted(logical: str, key: bytes | None, partition: int, partitions: int) -> int | None:
    """The partition a record of logical topic ``logical`` with ``key``, read from ``partition``
    of a topic of ``partitions``, belongs on, when that is another one; None when it is where it
    belongs or has no place of its own (a tick, a keyless record: the detector judges those)."""
    if logical not in GUARDED or key is None:
        return None
    right = partition_of(key, partitions)
    return None if right == partition else right


def forward(message: Any, right: int) -> Effects:
    """The step that sends ``message`` (a consumed record) to partition ``right`` of the re-key
    topic: its key, value and headers unchanged, plus where it came from (replacing what an
    earlier forward wrote there)."""
    headers = [(k, v) for k, v in (message.headers or ()) if k not in ORIGINAL_HEADERS]
    headers += [
        (ORIGINAL_TOPIC, message.topic.encode()),
        (ORIGINAL_PARTITION, str(message.partition).encode()),
        (ORIGINAL_OFFSET, str(message.offset).encode()),
    ]
    return Effects(sends=[Send(REKEY, message.key, message.value, right, headers)])


def original_topic(message: Any) -> str | None:
    """The physical topic a record of the re-key topic was first read from (None: no header)."""
    for key, value in message.headers or ():
        if key == ORIGINAL_TOPIC:
            return bytes(value).decode("utf-8", "replace")
    return None


class Guard:
    """The guard of one detector agent: where a record belongs, its forward, the count and a
    log line per topic at most every ``LOG_EVERY`` seconds (counts and partitions, never a key)."""

    def __init__(
        self,
        partitions: Callable[[str], int | None],
        default: int,
        counter: Any,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``partitions``: a physical topic's partition count as the consumer knows it (None:
        not known yet, ``default`` then); ``counter``: ``duewatch_input_misrouted`` by topic."""
        self._partitions = partitions
        self._default = default
        self._counter = counter
        self._clock = clock
        self._logged: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def check(self, message: Any, logical: str) -> Effects | None:
        """The forward of ``message`` when it is misrouted; None when it is processed here."""
        if logical not in GUARDED or message.key is None:
            return None
        count = self._partitions(message.topic) or self._default
        right = misrouted(logical, message.key, message.partition, count)
        if right is None:
            return None
        self._counter.labels(logical).inc()
        self._note(logical, message.partition, right)
        return forward(message, right)

    def _note(self, logical: str, partition: int, right: int) -> None:
        self._since[logical] = self._since.get(logical, 0) + 1
        now = self._clock()
        last = self._logged.get(logical)
        if last is not None and now - last < LOG_EVERY:
            return
        log.warning(
            "%d record(s) of %s arrived on a partition other than their key's by murmur2 (e.g. %d, not %d): "
            "forwarded through the re-key topic; the producer's partitioner is not Kafka's default "
            "(duewatch_input_misrouted_total, deploy/README.md)",
            self._since[logical], logical, partition, right,
        )  # fmt: skip
        self._logged[logical] = now
        self._since[logical] = 0


def logical_of_rekeyed(message: Any, topic_of: Mapping[str, str]) -> str:
    """The logical topic a record of the re-key topic is processed as: the one it was first read
    from; ``REKEY`` when its header is missing or names no input (the detector dead-letters it)."""
    original = original_topic(message)
    logical = topic_of.get(original) if original is not None else None
    return logical if logical in GUARDED else REKEY
