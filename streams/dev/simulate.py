"""`duewatch simulate`: a synthetic loan book replayed to Kafka on an accelerated event-time clock.

The book is :func:`streams.dev.book.generate` (consumer and small-business loans in Asia/Shanghai,
monthly instalments, Chinese public holidays, good payers, late payers who cure, partial payers,
defaulters, reversals and reschedules; a seed names a book exactly). Its loans are disbursed from
``start`` − 240 days on, so part of the book is history by ``start``.

Against Kafka (SPEC §1: keyed by loan_id with the default partitioner, Avro values):

1. every record with an event time before ``start`` at once (the history); then the clock is
   fast-forwarded across the history to ``start`` (midnight of ``start`` in Asia/Shanghai) in
   at most ``HISTORY_STEPS`` ticks, so the workers emit the history's transitions in
   day-sized batches rather than in one batch of tens of thousands of events per partition
   (which would block a worker's event loop for many seconds);
2. a simulated clock T runs from ``start`` to ``start + days`` at ``speed`` simulated days per
   wall-clock second: every ``step`` seconds of wall time T moves on by ``speed × step`` days,
   the records with event time ≤ T are produced (in event-time order, so each topic's and each
   loan's records stay in order), their acknowledgements awaited, and then a tick at T is sent
   to every partition of clock.ticks — the workers' ticker is off, the simulator is the clock;
3. a last tick at ``start + days`` plus the settle delay plus 1 s, so the transitions at the
   final midnight are emitted too (SPEC §4: a midnight is emitted once the clock is a settle
   delay past it).

``throttle``, if given, is awaited before every tick with the number of ticks sent so far; it
may wait (``duewatch demo`` waits while its workers are too far behind), and the clock resumes
where it was: the speed is then an upper bound. Without it the clock never waits, like an
upstream system that does not care whether anyone keeps up.

With ``out`` the same records are written as replay input instead (JSON lines
``{"topic", "key", "value"}``; replay makes its own clock, so no ticks), and nothing touches
Kafka.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path

from .. import kafkaio
from ..contracts import codec, jsonform
from ..contracts import topics as names
from ..settings import Settings
from .book import SHANGHAI, BookRecord, generate

#: Wall-clock seconds between two steps of the simulated clock.
STEP = 0.25
#: At most this many ticks carry the clock across the history (the days before ``start``).
HISTORY_STEPS = 120


@dataclass(frozen=True, slots=True)
class Progress:
    """Where the simulator is: reported after the history and after every step."""

    simulated: datetime  # the simulated clock: the instant of the last tick sent
    produced: int  # input records produced so far (ticks not counted)
    total: int  # input records in the book
    ticks: int  # ticks sent so far (each to every partition)
    loans: int  # distinct loans whose first schedule has been produced
    done: bool = False
    history: bool = False  # still fast-forwarding across the days before ``start``


def start_instant(start: date) -> datetime:
    """The simulated clock's start: midnight of ``start`` in Asia/Shanghai."""
    return datetime.combine(start, time(0), tzinfo=SHANGHAI)


def end_instant(start: date, days: int) -> datetime:
    """The simulated clock's end: midnight of ``start + days`` in Asia/Shanghai (replay's ``until``)."""
    return start_instant(start) + timedelta(days=days)


def write_replay_input(records: Sequence[BookRecord], out: str | Path) -> int:
    """Write ``records`` as replay input JSON lines; returns how many."""
    with open(out, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(jsonform.dumps(record.as_line()))
            fh.write("\n")
    return len(records)


async def simulate(
    cfg: Settings,
    loans: int,
    days: int,
    speed: float,
    seed: int,
    start: date,
    out: str | Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    *,
    records: Sequence[BookRecord] | None = None,
    step: float = STEP,
    throttle: Callable[[int], Awaitable[None]] | None = None,
    timeout: float = kafkaio.DEFAULT_TIMEOUT,
) -> int:
    """Generate the book (or take ``records``) and write it to ``out`` or play it to Kafka.

    Returns the number of input records written or produced. ``speed`` is simulated days per
    wall-clock second (> 0). ``on_progress`` is called with a :class:`Progress` after the
    history, after every step and at the end (synchronously: keep it cheap). ``throttle``: see
    the module doc.
    """
    if speed <= 0:
        raise ValueError("speed must be > 0 simulated days per second")
    if days < 0 or loans < 0:
        raise ValueError("loans and days must be ≥ 0")
    if records is None:
        records = generate(loans, start, days, seed)
    begin, end = start_instant(start), end_instant(start, days)
    if out is not None:
        written = write_replay_input(records, out)
        if on_progress is not None:
            on_progress(Progress(end, written, written, 0, len({r.key for r in records}), done=True))
        return written
    return await _play(cfg, records, begin, end, speed, step, on_progress, throttle, timeout)


async def _play(
    cfg: Settings,
    records: Sequence[BookRecord],
    begin: datetime,
    end: datetime,
    speed: float,
    step: float,
    on_progress: Callable[[Progress], None] | None,
    throttle: Callable[[int], Awaitable[None]] | None,
    timeout: float,
) -> int:
    from aiokafka import AIOKafkaProducer

    ticks_topic = cfg.topic(names.TICKS)
    physical = {t: cfg.topic(t) for t in (names.SCHEDULES, names.REPAYMENTS, names.DISPUTES)}
    await kafkaio.topic_partitions(cfg, [ticks_topic, *physical.values()], timeout)  # all there, or fail now
    producer = AIOKafkaProducer(
        **cfg.kafka_kwargs(),  # aiokafka's own request timeout: a busy demo broker may take a while
        linger_ms=5,
        acks="all",
        max_batch_size=256 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    state = {"sent": 0, "ticks": 0}
    seen_loans: set[str] = set()
    try:
        await kafkaio.bounded(producer.start(), timeout)
        fanout = await kafkaio.partition_count(producer, ticks_topic)

        async def send_until(limit: datetime | None) -> None:
            """Produce the next records with event time ≤ ``limit`` (all when None), wait for the acks."""
            pending = []
            i = state["sent"]
            while i < len(records) and (limit is None or records[i].event_time <= limit):
                r = records[i]
                key, value = kafkaio.encode_line(r.topic, {"key": r.key, "value": r.value}, raw=False)
                pending.append(await producer.send(physical[r.topic], value, key=key))
                if r.topic == names.SCHEDULES:
                    seen_loans.add(r.key)
                i += 1
                if len(pending) >= 5000:  # keep memory flat on a big history
                    await asyncio.gather(*pending)
                    pending.clear()
            state["sent"] = i
            if pending:
                await asyncio.gather(*pending)

        async def tick(at: datetime) -> None:
            if throttle is not None:
                await throttle(state["ticks"])
            payload = codec.encode("Tick", {"as_of": at})
            pending = [await producer.send(ticks_topic, payload, partition=p) for p in range(fanout)]
            await asyncio.gather(*pending)
            state["ticks"] += 1

        def report(at: datetime, done: bool = False, history: bool = False) -> None:
            if on_progress is not None:
                on_progress(
                    Progress(at, state["sent"], len(records), state["ticks"], len(seen_loans), done, history)
                )

        # 1. the history, all at once, and the clock fast-forwarded across it to the start
        await send_until(begin - timedelta(microseconds=1))
        first = records[0].event_time if records else begin
        if first < begin:
            span = begin - first
            count = max(1, min(HISTORY_STEPS, math.ceil(span / timedelta(days=1))))
            for i in range(1, count):
                at = first + span * i / count
                await tick(at)
                report(at, history=True)
        await tick(begin)
        report(begin)
        # 2. the accelerated clock
        loop = asyncio.get_running_loop()
        advance = timedelta(days=speed * step)
        clock = begin
        wake = loop.time()
        while clock < end:
            wake += step
            await asyncio.sleep(max(0.0, wake - loop.time()))
            clock = min(end, clock + advance)
            await send_until(clock)
            await tick(clock)
            if wake < loop.time() - step:  # held by the throttle, or slow: resume from now, no burst
                wake = loop.time()
            report(clock)
        await send_until(None)  # nothing is left (the book ends before `end`), but never lose a record
        # 3. past the settle delay of the last midnight
        final = end + timedelta(seconds=cfg.settle_delay + 1)
        await tick(final)
        report(final, done=True)
    finally:
        await producer.stop()
    return state["sent"]


__all__ = ["Progress", "end_instant", "simulate", "start_instant", "write_replay_input"]
