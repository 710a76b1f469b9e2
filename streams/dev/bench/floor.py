"""The floor loop of the end-to-end benchmark (issue 19): what a worker's intake cannot do without.

Per input record the worker has to decode it (fastavro), read the loan's state and write the new
one (RocksDB through rocksdict, which Faust's ``rocksdb://`` store uses, one database per
partition), send that state to the table's changelog and, for a record that causes an output,
encode and send it. The floor loop does exactly that and nothing else: plain aiokafka, no Faust
app, no core, in a subprocess of its own (its own core, like the worker), over the same input
topics with a consumer group of its own. Its records per CPU second are what a worker could take
in if everything but that I/O cost nothing; the worker's figure over the floor's says how much
of its CPU goes to the rest (Faust, the core, the shells).

The floor does it the way the worker's checkpoint does (``streams.worker.checkpoint``), batch by
batch (``Settings.batch_max`` records a fetch): the outputs as record batches per partition,
their acknowledgements awaited, then the changelog records as record batches, acknowledged, then
one RocksDB write batch per partition; offsets committed every ``commit_interval`` (Faust's).
The producer is the worker's: acks=all, idempotent, linger 2 ms, 256 KiB batches.

What the floor has to do is measured from the worker's run in the same benchmark, so it must
run after the worker (``observe`` at the end of the worker's intake, ``measure`` afterwards):

- the state size: the mean size of the values the worker wrote to its loans changelog during its
  intake (every one when there are at most ``SAMPLE``, else evenly spaced windows of every
  partition); the value the floor writes is a real state from that changelog, cut or repeated to
  the mean size;
- the output fraction: records on overdue.events and the DLQ at the end of the intake ÷ input
  records committed by then, at most 1. One record can cause several events, so this is an upper
  bound on the share of records that caused one (the routers' outputs follow from the events and
  are not counted again); the floor sends one OverdueEvent-shaped record (a real event of the
  worker's, re-keyed) for that share of its records, spread evenly.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from ...contracts import codec
from ...contracts import topics as names
from ...settings import Settings, from_env

NAME = "floor loop (decode + RocksDB get/put + changelog + outputs, subprocess)"
TARGET_PER_CPU = 40_000.0  # input records per worker CPU second (issue 19)
TARGET_RATIO = 0.50  # worker ÷ floor, per CPU second (issue 19)
SAMPLE = 50_000  # changelog values read at most to measure the state size
WINDOWS = 10  # windows per changelog partition when sampling
#: The topics whose records the worker's detector step sends itself, one or more per input record
#: that causes any; the routers' outputs follow from the events.
CAUSED = (names.OVERDUE, names.DLQ)
#: The worker's producer (streams/worker/app.py: producer_acks, producer_linger,
#: producer_max_batch_size; faust_internals.IdempotentProducer).
PRODUCER = {"acks": "all", "enable_idempotence": True, "linger_ms": 2, "max_batch_size": 256 * 1024}


# --------------------------------------------------------------------------- what the worker did


@dataclass(frozen=True)
class Observed:
    """The end of a worker's intake: its loans changelog's end offsets per partition, the records
    on its output topics (logical name -> count) and the input records it had committed."""

    changelog: str
    changelog_ends: dict[int, int]
    outputs: dict[str, int]
    taken: int


@dataclass(frozen=True)
class Workload:
    """What the floor does per record, from a worker's run."""

    state: bytes  # the value written for every record (len = the mean state size)
    sampled: int  # changelog values the mean is over
    changelog_records: int  # the worker's changelog records in the intake
    output_fraction: float
    outputs: dict[str, int]
    taken: int
    event: bytes  # an OverdueEvent (Avro) the outputs are made from
    event_from_worker: bool

    @property
    def state_bytes(self) -> int:
        return len(self.state)


async def _end_offsets(cfg: Settings, topics: Sequence[str]) -> dict[str, dict[int, int]]:
    """Per topic (``cfg.partitions`` partitions each), per partition: its end offset."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**cfg.kafka_kwargs(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(cfg.partitions)]
        consumer.assign(tps)  # the consumer fetches these topics' metadata
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    out: dict[str, dict[int, int]] = {t: {} for t in topics}
    for tp, offset in ends.items():
        out[tp.topic][tp.partition] = offset
    return out


async def observe(cfg: Settings, changelog: str, taken: int) -> Observed:
    """What a worker (settings ``cfg``) has written by now: call it at the end of its intake."""
    physical = {cfg.topic(t): t for t in CAUSED}
    ends = await _end_offsets(cfg, [changelog, *physical])
    return Observed(
        changelog=changelog,
        changelog_ends=ends[changelog],
        outputs={physical[t]: sum(ends[t].values()) for t in physical},
        taken=taken,
    )


def windows(
    ends: Mapping[int, int], limit: int = SAMPLE, per_partition: int = WINDOWS
) -> list[tuple[int, int, int]]:
    """``(partition, start, stop)`` offset ranges to read of a topic whose partitions end at
    ``ends``: all of it when it holds at most ``limit`` records, else ``per_partition`` windows
    spread evenly over each partition, ``limit`` records in all (each partition as many)."""
    total = sum(ends.values())
    if total <= limit:
        return [(p, 0, end) for p, end in sorted(ends.items()) if end > 0]
    size = max(1, limit // (per_partition * max(1, sum(1 for e in ends.values() if e > 0))))
    out = []
    for p, end in sorted(ends.items()):
        if end <= 0:
            continue
        if size * per_partition >= end:
            out.append((p, 0, end))
            continue
        starts = [i * end // per_partition for i in range(per_partition)]
        out += [(p, s, min(end, s + size)) for s in starts]
    return out


async def read_values(
    cfg: Settings, topic: str, ranges: Sequence[tuple[int, int, int]], timeout: float = 120
) -> list[bytes]:
    """The values in ``ranges`` (``windows``) of ``topic`` (tombstones left out)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        **cfg.kafka_kwargs(), group_id=None, enable_auto_commit=False, max_partition_fetch_bytes=4 << 20
    )
    await consumer.start()
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        consumer.assign(sorted({TopicPartition(topic, p) for p, _, _ in ranges}))
        for p, start, stop in ranges:
            tp = TopicPartition(topic, p)
            consumer.seek(tp, start)
            position = start
            while position < stop:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"reading {topic}[{p}] {start}..{stop}: at {position} after {timeout:.0f} s"
                    )
                batch = await consumer.getmany(tp, timeout_ms=500)
                for message in batch.get(tp, []):
                    if message.offset >= stop:
                        break
                    if message.value is not None:
                        values.append(message.value)
                    position = message.offset + 1
                if not batch:  # compacted or aborted offsets at the end: ask where the log ends
                    position = max(position, min(stop, await consumer.position(tp)))
    finally:
        await consumer.stop()
    return values


def fit(value: bytes, size: int) -> bytes:
    """``value`` cut or repeated to ``size`` bytes."""
    if not value or size <= 0:
        return b"\0" * max(0, size)
    return (value * (size // len(value) + 1))[:size]


def workload(values: Sequence[bytes], observed: Observed, event: bytes | None) -> Workload:
    """The floor's work per record from the worker's changelog ``values`` (``read_values`` over
    ``windows`` of ``observed.changelog_ends``), what ``observe`` saw and one of the worker's
    events (None: none was seen; one the core makes stands in)."""
    if values:
        mean = sum(len(v) for v in values) / len(values)
        closest = min(values, key=lambda v: abs(len(v) - mean))
        state = fit(closest, round(mean))
    else:
        state = b""
    caused = sum(observed.outputs.values())
    fraction = min(1.0, caused / observed.taken) if observed.taken > 0 else 0.0
    return Workload(
        state=state, sampled=len(values), changelog_records=sum(observed.changelog_ends.values()),
        output_fraction=fraction, outputs=dict(observed.outputs), taken=observed.taken,
        event=event if event is not None else sample_event(), event_from_worker=event is not None,
    )  # fmt: skip


def sample_event() -> bytes:
    """An OverdueEvent of a generated loan as the core makes it (when the worker's run sent none)."""
    from ...core.config import EngineConfig
    from ...core.loan import apply_schedule, new_loan, tick
    from ...core.records import parse_schedule
    from ..book import generate

    cfg = EngineConfig()
    first = next(r for r in generate(1, date(2026, 3, 1), 60) if r.topic == names.SCHEDULES)
    schedule = parse_schedule(first.value)
    state = apply_schedule(new_loan(schedule.loan_id), schedule, None, cfg).state
    events = tick(state, datetime(2026, 6, 1, tzinfo=UTC), cfg).events
    return codec.encode("OverdueEvent", events[-1].to_dict(datetime.now(UTC)))


def causes_output(index: int, fraction: float) -> bool:
    """Whether record number ``index`` (from 0) is one of the ``fraction`` that send an output:
    over n records, ⌊n × fraction⌋ of them, spread evenly."""
    return math.floor((index + 1) * fraction) > math.floor(index * fraction)


# --------------------------------------------------------------------------- the loop (subprocess)


def spec(
    workload: Workload, cfg: Settings, inputs: Mapping[str, str], changelog: str, output: str, group: str,
    expect: int, state_dir: Path, commit_interval: float, timeout: float,
) -> dict[str, Any]:  # fmt: skip
    """The floor loop's JSON spec: ``inputs`` maps physical input topics to their logical names."""
    return {
        "bootstrap": cfg.bootstrap_servers, "inputs": {t: codec.TOPIC_RECORD[lg] for t, lg in inputs.items()},
        "changelog": changelog, "output": output, "group": group, "expect": expect, "state_dir": str(state_dir),
        "state": workload.state.hex(), "output_fraction": workload.output_fraction, "event": workload.event.hex(),
        "batch_max": cfg.batch_max, "partitions": cfg.partitions, "commit_interval": commit_interval,
        "timeout": timeout,
    }  # fmt: skip


def _record_batches(producer: Any, records: list[tuple[bytes | None, bytes]]) -> Iterator[Any]:
    """``records`` (key, value) as the producer's record batches, each as large as it allows."""
    batch, count = producer.create_batch(), 0
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None, headers=[]) is None:
            batch.close()
            yield batch
            batch, count = producer.create_batch(), 0
            batch.append(key=key, value=value, timestamp=None, headers=[])
        count += 1
    if count:
        batch.close()
        yield batch


async def _send(producer: Any, topic: str, grouped: Mapping[int, list[tuple[bytes | None, bytes]]]) -> None:
    """Send ``grouped`` (partition -> records) as record batches and await every acknowledgement."""
    acks = [
        await producer.send_batch(batch, topic, partition=partition)
        for partition, records in grouped.items()
        for batch in _record_batches(producer, records)
    ]
    if acks:
        await asyncio.gather(*acks)


@dataclass
class Loop:
    """The floor loop's state over a run: its databases, the records seen and outputs sent."""

    types: dict[str, str]
    state: bytes
    fraction: float
    event: dict[str, Any]
    dbs: dict[int, Any] = field(default_factory=dict)
    seen: int = 0
    outputs: int = 0

    def step(
        self, batch: Mapping[Any, list[Any]]
    ) -> tuple[dict[int, list[Any]], dict[int, list[Any]], dict[int, Any]]:
        """One fetched batch: decode, read the state, and what to send and write."""
        from rocksdict import WriteBatch

        outputs: dict[int, list[Any]] = {}
        changelog: dict[int, list[Any]] = {}
        writes: dict[int, Any] = {}
        state = self.state
        for tp, messages in batch.items():
            partition = tp.partition
            record_type = self.types[tp.topic]
            db = self.dbs[partition]
            logged = changelog.setdefault(partition, [])
            written = writes[partition] = WriteBatch(raw_mode=True)
            for message in messages:
                codec.decode(record_type, message.value)
                key = message.key
                db.get(key)
                written.put(key, state)
                logged.append((key, state))
                if causes_output(self.seen, self.fraction):
                    event = {**self.event, "loan_id": key.decode()}
                    outputs.setdefault(partition, []).append((key, codec.encode("OverdueEvent", event)))
                    self.outputs += 1
                self.seen += 1
        return outputs, changelog, writes


async def floor_loop(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The floor loop over ``spec`` (``spec()``), until it has read ``expect`` records."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from faust.stores.rocksdb import RocksDBOptions

    cfg = from_env({**os.environ, "KAFKA_BOOTSTRAP_SERVERS": spec["bootstrap"]})
    expect = int(spec["expect"])
    consumer = AIOKafkaConsumer(
        *spec["inputs"], **cfg.kafka_kwargs(), group_id=spec["group"], enable_auto_commit=False,
        auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20,
    )  # fmt: skip
    producer = AIOKafkaProducer(**cfg.kafka_kwargs(), **PRODUCER)
    floor = Loop(
        types=dict(spec["inputs"]), state=bytes.fromhex(spec["state"]), fraction=float(spec["output_fraction"]),
        event=codec.decode("OverdueEvent", bytes.fromhex(spec["event"])),
    )  # fmt: skip
    state_dir = Path(spec["state_dir"])
    options = RocksDBOptions()  # Faust's defaults, as the worker's tables have them
    await consumer.start()
    await producer.start()
    try:
        for p in range(int(spec["partitions"])):  # one database per partition, as Faust's store keeps them
            floor.dbs[p] = options.open(state_dir / f"loans-{p}.db")
        return await _consume(spec, consumer, producer, floor, expect)
    finally:
        await producer.stop()
        await consumer.stop()
        for db in floor.dbs.values():
            db.close()


async def _consume(
    spec: Mapping[str, Any], consumer: Any, producer: Any, floor: Loop, expect: int
) -> dict[str, Any]:
    changelog, output = spec["changelog"], spec["output"]
    interval = float(spec["commit_interval"])
    batch_max = int(spec["batch_max"])
    cpu0 = time.process_time()
    first: float | None = None
    last_commit = time.perf_counter()
    deadline = time.monotonic() + float(spec["timeout"])
    while floor.seen < expect:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the floor loop read {floor.seen} of {expect} records")
        batch = await consumer.getmany(timeout_ms=1000, max_records=batch_max)
        if not batch:
            continue
        if first is None:
            first = time.perf_counter()
        outputs, logged, writes = floor.step(batch)
        await _send(producer, output, outputs)  # the outputs, acknowledged
        await _send(producer, changelog, logged)  # then the states' changelog records, acknowledged
        for partition, written in writes.items():  # then the states into RocksDB
            floor.dbs[partition].write(written)
        now = time.perf_counter()
        if now - last_commit >= interval:
            await consumer.commit()
            last_commit = now
    await consumer.commit()
    done = time.perf_counter()
    cpu = time.process_time() - cpu0
    assert first is not None
    return {
        "records": floor.seen, "outputs": floor.outputs, "seconds": done - first, "rate": floor.seen / (done - first),
        "cpu_seconds": cpu, "per_cpu": floor.seen / cpu if cpu > 0 else 0.0, "state_bytes": len(floor.state),
        "databases": len(floor.dbs), "batch_max": batch_max,
    }  # fmt: skip


async def run_floor(spec: Mapping[str, Any], cwd: Path) -> dict[str, Any]:
    """``floor_loop`` in a subprocess (its own core); its result."""
    from .. import broker as devkafka

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.dev.bench.floor", json.dumps(spec), cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=devkafka.set_pdeathsig,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(
            f"the floor loop failed ({proc.returncode}):\n{err.decode(errors='replace')[-3000:]}"
        )
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


# --------------------------------------------------------------------------- in the benchmark


async def measure(
    cfg: Settings, observed: Observed, event: bytes | None, inputs: Mapping[str, str], expect: int, prefix: str,
    state_dir: Path, commit_interval: float, timeout: float, cwd: Path,
) -> dict[str, Any]:  # fmt: skip
    """The floor loop over the worker's ``inputs`` (physical -> logical topic, ``expect`` records
    in all) with the workload the worker's run says (``observed`` at the end of its intake, one of
    its ``event``s if any), on topics of its own named ``prefix``…; its result and that workload."""
    from ... import kafkaio

    values = await read_values(cfg, observed.changelog, windows(observed.changelog_ends), timeout)
    work = workload(values, observed, event)
    changelog, output = f"{prefix}loans-changelog", f"{prefix}overdue"
    await kafkaio.create_topics(cfg, (), physical=[output], compacted=[changelog])
    loop_spec = spec(work, cfg, inputs, changelog, output, f"{prefix}group", expect, state_dir, commit_interval,
                     timeout)  # fmt: skip
    result = await run_floor(loop_spec, cwd)
    return {
        **result, "sampled": work.sampled, "changelog_records": work.changelog_records,
        "output_fraction": work.output_fraction, "caused": work.outputs, "taken": work.taken,
        "event_from_worker": work.event_from_worker,
    }  # fmt: skip


def rows(
    worker_per_cpu: float | None, judged: bool, floor: Mapping[str, Any]
) -> list[tuple[str, str, str, bool | None]]:
    """The report's rows (measure, result, target, passed: None when not judged) for the worker's
    intake per CPU second, the floor loop and the worker over the floor."""
    short = "" if judged else " (window too short to judge)"
    worker = (
        ("worker intake per worker CPU second", f"{worker_per_cpu:,.0f} records{short}",
         f"≥ {TARGET_PER_CPU:,.0f} records", worker_per_cpu >= TARGET_PER_CPU if judged else None)
        if worker_per_cpu
        else ("worker intake per worker CPU second", "not known (no CPU figure for the worker)",
              f"≥ {TARGET_PER_CPU:,.0f} records", None)
    )  # fmt: skip
    out = [worker]
    if floor.get("error"):
        out.append((NAME, f"failed: `{floor['error']}`", "", None))
        return out
    if not floor.get("per_cpu"):
        return out
    per_cpu = float(floor["per_cpu"])
    ratio = worker_per_cpu / per_cpu if worker_per_cpu else None
    out.append((NAME, f"{floor['rate']:,.0f} records/s; {per_cpu:,.0f} records per CPU second", "", None))
    out.append((
        "worker / floor loop, per CPU second",
        f"{100 * ratio:.1f} %{short}" if ratio is not None else "not known",
        f"≥ {100 * TARGET_RATIO:.0f} %", ratio >= TARGET_RATIO if ratio is not None and judged else None,
    ))  # fmt: skip
    return out


def describe(floor: Mapping[str, Any], commit_interval: float) -> str:
    """The report's line on how the floor loop was measured and where its workload came from."""
    if not floor.get("per_cpu"):
        return ""
    caused = ", ".join(f"{topic} {n:,}" for topic, n in floor.get("caused", {}).items())
    sampled = floor["sampled"]
    how = (
        f"all {sampled:,} of them" if sampled >= floor["changelog_records"]
        else f"{sampled:,} of them, in {WINDOWS} evenly spaced windows of each partition"
    )  # fmt: skip
    return (
        f"- Floor loop: after the worker has stopped, a plain aiokafka process over the same input topics "
        f"(own group, fetches of up to {floor.get('batch_max', 'the worker’s batch_max')} records) that per record "
        "decodes it with fastavro (`codec.decode`), gets and puts the record key in a RocksDB database of "
        "its partition (rocksdict with Faust's default options, one database per partition) and sends one "
        "changelog record, and for a share of the records encodes and sends an OverdueEvent; per fetch "
        "outputs, then changelog records, each acknowledged, then the RocksDB write batch, as the worker's "
        "checkpoint does; the worker's producer settings (acks=all, idempotent, linger 2 ms, 256 KiB "
        f"batches); offsets committed every {commit_interval} s. {floor['records']:,} records in "
        f"{floor['seconds']:.1f} s, {floor['cpu_seconds']:.2f} CPU s (its own process time). "
        f"State size {floor['state_bytes']:,} B: the mean size of the worker's loans-changelog values "
        f"written in its intake ({floor['changelog_records']:,} records for {floor['taken']:,} input records: "
        "it writes a loan's state once per batch; the floor writes one per record, as issue 19 defines it; "
        f"{how}); the value written is one of them, cut or repeated to that size. Outputs: {floor['outputs']:,} "
        f"({100 * floor['output_fraction']:.2f} % of the records) = the records on the worker's "
        f"{' and '.join(CAUSED)} at the end of its intake ({caused or 'none'}) ÷ the {floor['taken']:,} input "
        "records it had committed by then, an upper bound on the share of records that caused one; the event "
        + ("is one the worker sent." if floor.get("event_from_worker") else "is one the core makes (the worker "
           "sent none in this run).")
    )  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(asyncio.run(floor_loop(json.loads(sys.argv[1])))))
