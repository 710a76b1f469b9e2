"""Batched intake: the records of the worker's own input topics go from the consumer's fetch
straight to their agent, a whole fetch at a time.

Faust hands every record to its agents one at a time: a ``Message``, the conductor's callback
raced against flow control by ``wait_first`` (four tasks and an ``asyncio.wait`` per record), an
``Event``, the stream's per-event bookkeeping and an ack. Measured on this project's worker, that
machinery cost more CPU per record than the detector itself and capped a worker near 2,500
records/s. Here the consumer's fetch loop (``Consumer._drain_messages``) is replaced by one that
does what Faust's does — the same flow-control, generation, read-offset and gap checks, the same
commit-every — but passes the records of the topics named in ``routes`` on as ``Batch`` values
through an in-memory Faust channel, which the agent iterates. Records of every other topic
(the tables' changelogs during recovery and for standbys) go Faust's own way, record by record.

Acknowledging is the agent's part, after a batch's outputs are acknowledged and its states
written: ``acknowledge`` marks the offsets as Faust's ``Consumer.ack`` does, so Faust's own
committer commits them. The group membership, the assignment, the tables and their recovery,
the seeks after a rebalance and the commits all stay Faust's.

This leans on Faust internals (``Consumer._drain_messages``, ``_wait_next_records``, the
read-offset, acked and gap bookkeeping); the integration tests (SIGKILL, rebalance, the replay
comparison) are what say it still holds after an upgrade.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP
from mode.utils.futures import notify

log = logging.getLogger("duewatch")

_FETCHING = "CONSUMER_FETCHING"  # Faust's diagnostics flag for the same state


@dataclass(frozen=True, slots=True)
class Batch:
    """Records of one fetch for one agent, in their partitions' order, and the consumer
    generation they were fetched in (a batch of an older generation is not handled: after a
    rebalance Faust seeks back to the committed offsets and they come again)."""

    generation: int
    records: list[Any]  # aiokafka ConsumerRecords: topic, partition, offset, key, value, headers


def current(app: faust.App, batch: Batch) -> bool:
    """Whether ``batch`` may be handled now (Faust's streams skip events on the same test)."""
    return app.flow_control.is_active() and batch.generation == app.consumer_generation_id


def acknowledge(app: faust.App, records: Iterable[Any]) -> None:
    """Mark ``records`` done, as Faust's ``Consumer.ack`` marks a message, so the committer
    may commit past them."""
    consumer = app.consumer
    committed_at = consumer._committed_offset
    acked_index = consumer._acked_index
    acked = consumer._acked
    n = 0
    tp: TP | None = None
    index: set[int] = set()
    offsets: list[int] = []
    committed: int | None = None
    for record in records:
        if tp is None or record.partition != tp.partition or record.topic != tp.topic:
            tp = TP(record.topic, record.partition)
            index, offsets, committed = acked_index[tp], acked[tp], committed_at[tp]
        offset = record.offset
        if (committed is None or offset >= committed) and offset not in index:
            index.add(offset)
            offsets.append(offset)
            n += 1
    consumer._n_acked += n
    notify(consumer._waiting_for_ack)


async def hand_over(channel: faust.ChannelT, batch: Batch) -> bool:
    """Put ``batch`` on ``channel``, waiting while its agent's queue is full; False when the
    queue was cleared meanwhile.

    Faust clears its queues when a rebalance begins and when flow resumes, and clearing cancels
    whoever waits to put (mode's ``ThrowableQueue.clear``). Faust's own delivery never waits
    there; this one does, so that cancellation is told apart from the fetcher being stopped:
    only the latter is a cancellation of this task. A cleared batch is dropped like the queued
    ones — Faust seeks back to the committed offsets and its records come again."""
    try:
        await channel.put(batch)  # type: ignore[arg-type]
        return True
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        return False


def install(app: faust.App, routes: Mapping[str, faust.ChannelT], batch_max: int) -> None:
    """Replace the consumer's fetch loop: records of the topics in ``routes`` go to their
    channel as ``Batch`` values of at most ``batch_max`` records; all others Faust's way."""
    consumer = app.consumer

    async def drain(fetcher: Any) -> None:
        callback = consumer.callback
        consumer_should_stop = consumer._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offset = consumer._read_offset
        commit_every = consumer._commit_every
        acks_enabled_for = app.topics.acks_enabled_for
        diag = consumer.diag
        to_message = consumer._to_message
        monitor = app.monitor
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                diag.set_flag(_FETCHING)
                records, active = await consumer._wait_next_records(1.0)
                await consumer.sleep(0)
                if not records or consumer.should_stop:
                    diag.unset_flag(_FETCHING)
                    continue
                generation = app.consumer_generation_id
                batches: dict[faust.ChannelT, list[Any]] = {}
                for tp, fetched in records.items():
                    if not consumer.flow_active or app.consumer_generation_id != generation:
                        break  # a rebalance began: what is left comes again after its seek
                    if active is not None and tp not in active and tp not in consumer._buffered_partitions:
                        continue
                    monitor.track_tp_end_offset(tp, consumer.highwater(tp))
                    channel = routes.get(tp.topic)
                    for record in fetched:
                        offset = record.offset
                        last = read_offset[tp]
                        if last is not None and offset < last:
                            continue  # read before a seek back: Faust drops these too
                        if last and offset - last > 1 and acks_enabled_for(tp.topic):
                            await consumer._add_gap(tp, last + 1, offset)
                        if channel is not None:
                            batches.setdefault(channel, []).append(record)
                        else:
                            await consumer.wait_first(callback(to_message(tp, record)), consumer.suspend_flow.wait())
                        read_offset[tp] = offset
                handing = [(channel, Batch(generation, taken[start : start + batch_max]))
                           for channel, taken in batches.items() for start in range(0, len(taken), batch_max)]  # fmt: skip
                for channel, batch in handing:
                    if not await hand_over(channel, batch):
                        break  # cleared for a rebalance: the rest comes again after its seek
                if commit_every is not None and consumer._n_acked >= commit_every:
                    consumer._n_acked = 0
                    await consumer.commit()
                diag.unset_flag(_FETCHING)
        except consumer.consumer_stopped_errors:
            if app.should_stop:
                log.info("broker stopped the consumer, shutting down")
                return
            raise
        except asyncio.CancelledError:
            if app.should_stop:
                return
            raise
        finally:
            diag.unset_flag(_FETCHING)

    consumer._drain_messages = drain  # type: ignore[method-assign]
