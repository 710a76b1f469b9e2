"""The at-least-once rule, in one place.

The agents hand each batch's steps to a :class:`Checkpoint`, and only it sends, writes states
and acknowledges input offsets. :meth:`Checkpoint.commit` takes these steps, in this order:

1. every output and DLQ record is handed to the producer, as record batches per topic partition;
2. the broker's acknowledgements of all of them are awaited;
3. each state the batch changed is written once (its last value): its changelog records are
   sent and acknowledged, then the state goes into the partition's RocksDB database, then the
   changelog offset a restart reads from is recorded;
4. the input records' offsets are acknowledged, so Faust's committer may commit past them.

A crash anywhere in between leaves an input record uncommitted whose state was not written (or
was written with everything it caused already acknowledged): the record is processed again,
finds the old state and re-sends the same outputs with the same ids. Offsets come last, where
quix-streams' ``Checkpoint.commit`` commits them before flushing its stores, because here a
state written from a changelog record that was never acknowledged could run ahead of what the
outputs say; the changelog, not the local store, is what a new owner restores.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.errors import KafkaError, KafkaTimeoutError
from faust.types import TP

from ..contracts.partitioning import partition_of
from . import faust_internals
from .effects import Effects
from .faust_internals import PartitionStore

log = logging.getLogger("duewatch")

#: Producer batch size: a changelog record batch carries a partition's states of a whole input
#: batch (~1 KB each), well below Kafka's 1 MB message limit.
BATCH_BYTES = 256 * 1024


#: The longest pause between two attempts to send a batch the broker did not take (seconds).
OUTAGE_PAUSE = 10.0


def outage(exc: BaseException) -> bool:
    """Whether a failed send means the broker is unreachable or busy (try again) rather than that
    it refused the records (the step goes to the DLQ): a timeout, or an error Kafka calls
    retriable (no connection, no leader, not enough replicas)."""
    return isinstance(exc, KafkaTimeoutError) or (isinstance(exc, KafkaError) and bool(exc.retriable))


@dataclass(slots=True)
class Step:
    """One step of a batch: the input record it was taken for (its partition is where the step's
    states are written), the record's logical topic, and what it asks for."""

    record: Any
    topic: str
    effects: Effects


Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def record_batches(kafka: Any, records: list[Record]) -> Iterator[tuple[Any, int]]:
    """``records`` (key, value, headers) as aiokafka record batches of the producer ``kafka``,
    in order, each with its record count; a batch is as large as the producer's
    ``max_batch_size`` allows (a record larger than that goes alone: an empty batch takes any
    record)."""
    batch, count = kafka.create_batch(), 0
    for key, value, headers in records:
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
            batch.close()
            yield batch, count
            batch, count = kafka.create_batch(), 0
            batch.append(key=key, value=value, timestamp=None, headers=headers)
        count += 1
    if count:
        batch.close()  # else a later producer.send could add to it, and its count would be short
        yield batch, count


class Checkpoint:
    """A batch's steps, carried out in the at-least-once order (see the module docstring)."""

    def __init__(
        self,
        app: faust.App,
        physical: Mapping[str, str],
        stores: Mapping[str, PartitionStore],
        encode: Callable[[str, Any], bytes | None],
        count: Callable[[Effects], None],
        forget: Callable[[Step], None],
        failed: Callable[[Step, Exception], Effects],
    ) -> None:
        """``physical``: logical topic -> physical name; ``stores``: table -> its partitions;
        ``encode``: a written value's bytes in its table; ``count``: the metrics of a step's
        effects; ``forget``: reset what memory holds of a step whose states were not written;
        ``failed``: what a step that cannot be carried out sends instead (its record to the DLQ)."""
        self.app = app
        self.physical = physical
        self.stores = stores
        self.encode = encode
        self.count = count
        self.forget = forget
        self.failed = failed
        self.steps: list[Step] = []
        self._issued = 0
        self._acks: list[Any] = []
        self._partitions: dict[str, int] = {}

    def add(self, record: Any, topic: str, effects: Effects) -> None:
        """A step of the batch, in order."""
        self.steps.append(Step(record, topic, effects))

    async def issue(self) -> None:
        """Step 1 for the steps added since the last issue: their records to the producer.

        Every record's partition is chosen before anything is sent, as aiokafka's default
        partitioner would (murmur2 of the key, random for a keyless record), so records of one
        partition keep their order across record batches."""
        kafka = faust_internals.kafka_producer(self.app)
        grouped: dict[tuple[str, int], list[Record]] = {}
        for step in self.steps[self._issued :]:
            self.count(step.effects)
            for send in step.effects.sends:
                topic, partition = self.physical[send.topic], send.partition
                if partition is None:
                    partitions = self._partitions.get(topic)
                    if partitions is None:
                        partitions = self._partitions[topic] = len(await kafka.partitions_for(topic))
                    partition = (
                        random.randrange(partitions)
                        if send.key is None
                        else partition_of(send.key, partitions)
                    )
                grouped.setdefault((topic, partition), []).append((send.key, send.value, send.headers))
        for (topic, partition), records in grouped.items():
            for batch, _ in record_batches(kafka, records):
                self._acks.append(await kafka.send_batch(batch, topic, partition=partition))
        self._issued = len(self.steps)

    async def issue_early(self, acknowledged: bool = False) -> None:
        """Step 1 ahead of the commit (and, if ``acknowledged``, step 2): a tick's events leave
        while the next partition is ticked. A failure is left to ``commit``, which reports it."""
        try:
            await self.issue()
            if acknowledged and self._acks:
                await asyncio.wait(self._acks)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - commit reports what fails
            pass

    async def commit(self, acknowledge: Iterable[Any] = ()) -> None:
        """Steps 1 to 4 for the steps added so far, then start afresh. While the broker is
        unreachable the batch is sent again (``outage``). If the batch fails (a record the broker
        refuses), it is carried out step by step (what was sent already goes
        again, with the same ids), and a step that still fails sends its input record to the DLQ
        instead. ``acknowledge``: the input records whose offsets step 4 acknowledges."""
        steps = self.steps
        if steps:
            try:
                await self._until_taken(steps)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sending a batch of %d steps failed; retrying step by step", len(steps))
                for step in steps:
                    await self._alone(step)
        self.steps, self._issued, self._acks = [], 0, []
        records = list(acknowledge)
        if records:
            faust_internals.acknowledge(self.app, records)

    async def _alone(self, step: Step) -> None:
        self.steps, self._issued, self._acks = [step], 0, []
        try:
            await self._until_taken([step])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.forget(step)  # none of its states were written: memory must say what the tables say
            self.steps, self._issued, self._acks = (
                [Step(step.record, step.topic, self.failed(step, exc))],
                0,
                [],
            )
            await self._until_taken(self.steps)

    async def _until_taken(self, steps: list[Step]) -> None:
        """Steps 1 to 3 for ``steps``, carried out again while the broker cannot take them (an
        outage, SPEC §6: not a reason to dead-letter anything). What was sent already goes again,
        with the same ids; a shutdown cancels the wait."""
        pause = 0.5
        while True:
            try:
                await self._carry_out(steps)
                return
            except Exception as exc:
                if not outage(exc):
                    raise
                log.warning("the broker did not take a batch of %d steps (%s); sending it again in %.1f s",
                            len(steps), type(exc).__name__, pause)  # fmt: skip
            await asyncio.sleep(pause)
            pause = min(pause * 2, OUTAGE_PAUSE)
            self._issued, self._acks = 0, []

    async def _carry_out(self, steps: list[Step]) -> None:
        await self.issue()  # 1
        if self._acks:  # 2
            await asyncio.gather(*self._acks)
        latest: dict[tuple[str, str], tuple[int, Any]] = {}
        for step in steps:
            for (table, key), value in step.effects.writes.items():
                latest[(table, key)] = (step.record.partition, value)
        grouped: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = {}
        for (table, key), (partition, value) in latest.items():
            grouped.setdefault((table, partition), []).append((key.encode(), self.encode(table, value)))
        await self._write(grouped)  # 3

    async def _write(self, grouped: dict[tuple[str, int], list[tuple[bytes, bytes | None]]]) -> None:
        """Each state into its table's changelog (as whole record batches: one future per batch
        instead of a trip through Faust's producer buffer per state, which capped a worker near
        1,400 records/s), then, once acknowledged, into RocksDB, then the persisted offsets."""
        if not grouped:
            return
        kafka = faust_internals.kafka_producer(self.app)
        sent = []
        for (table, partition), items in grouped.items():
            store = self.stores[table]
            topic = store.table.changelog_topic.get_topic_name()
            for batch, count in record_batches(kafka, [(key, value, []) for key, value in items]):
                future = await kafka.send_batch(batch, topic, partition=partition)
                sent.append((store, TP(topic, partition), count, future))
        results = await asyncio.gather(*(future for *_, future in sent))
        # Into RocksDB once the changelog has them: a batch the broker refuses leaves the local
        # store as the changelog is (a standby or the next owner restores the same states).
        for (table, partition), items in grouped.items():
            self.stores[table].put(partition, items)
        # A batch is acknowledged with its first offset, and a partition's batches in order, so
        # the last one's last record is the newest.
        newest = {(store, tp): metadata.offset + count - 1
                  for (store, tp, count, _), metadata in zip(sent, results, strict=True)}  # fmt: skip
        for (store, tp), offset in newest.items():
            store.set_persisted_offset(tp, offset)
