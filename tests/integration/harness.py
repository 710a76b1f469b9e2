"""Run duewatch as it runs in production — `duewatch worker` processes on the real broker —
and drive it like upstream would: produce records, send ticks, read the output topics.

Each ``DuewatchCluster`` gets its own topic prefix and Faust app id, so tests never see
each other's data; workers get their own state dir and web port.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams import kafkaio
from streams.contracts import codec
from streams.contracts import topics as names
from streams.dev import broker as devkafka
from streams.dev.book import generate
from streams.dev.compare import compare, standing
from streams.dev.procs import WorkerProcess, duewatch_command
from streams.replay import replay
from streams.settings import from_env
from tests.support.shared import REPO

ROOT = REPO


class Worker(WorkerProcess):
    """One `duewatch worker` subprocess with its log and its web port."""

    def __init__(self, name: str, env: Mapping[str, str], log_file: Path) -> None:
        super().__init__(name, duewatch_command("worker"), env, log_file)
        self.web = f"http://127.0.0.1:{env['DUEWATCH_WEB_PORT']}"

    async def get(self, path: str) -> tuple[int, str]:
        """(status, body) of a GET on the worker's web port."""
        import aiohttp

        async with aiohttp.ClientSession() as session, session.get(self.web + path) as response:
            return response.status, await response.text()

    async def ready(self, timeout: float = 90.0) -> None:
        """Until ``/ready`` answers 200; raises if it does not within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                if (await self.get("/ready"))[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: /ready not 200 within {timeout} s:\n{self.tail()}")
            await asyncio.sleep(0.3)

    async def metric(self, name: str) -> float:
        """The sum of a metric's samples on ``/metrics`` (0 when it has none)."""
        _, text = await self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


class Reader:
    """Reads a topic from the beginning, keeping everything it has seen."""

    def __init__(self, cluster: DuewatchCluster, topic: str) -> None:
        self.cluster = cluster
        self.topic = topic
        self.records: list[dict[str, Any]] = []
        self._consumer: AIOKafkaConsumer | None = None

    async def _ensure(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            physical = self.cluster.cfg.topic(self.topic)
            consumer = AIOKafkaConsumer(
                **self.cluster.cfg.kafka_kwargs(), enable_auto_commit=False, group_id=None
            )
            await consumer.start()
            tps = [TopicPartition(physical, p) for p in range(self.cluster.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self._consumer = consumer
        return self._consumer

    async def poll(self, timeout: float = 0.5) -> int:
        consumer = await self._ensure()
        batch = await consumer.getmany(timeout_ms=int(timeout * 1000))
        new = 0
        for tp in batch:
            for message in batch[tp]:
                self.records.append(kafkaio.render(self.topic, message))
                new += 1
        return new

    async def until(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 120.0
    ) -> list[dict[str, Any]]:
        """Read until ``done(records)``; raises ``TimeoutError`` (saying what was read) after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not done(self.records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.topic}: the condition did not hold within {timeout:g} s "
                                   f"({len(self.records)} records read)")  # fmt: skip
            await self.poll()
        return self.records

    async def settle(self, quiet: float = 3.0, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Read until nothing new arrives for ``quiet`` seconds; raises ``TimeoutError`` when
        records still arrive after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.topic}: still receiving after {timeout:g} s ({len(self.records)} records)"
                )
            if await self.poll():
                last = time.monotonic()
        return self.records

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


class DuewatchCluster:
    """Topics with a unique prefix, workers sharing one app id, and producer/reader helpers."""

    def __init__(
        self, bootstrap: str, tmp_path: Path, partitions: int = 3, settle: float = 60.0, **env: str
    ) -> None:
        self.tmp_path = tmp_path
        self.partitions = partitions
        self.prefix = f"t{uuid.uuid4().hex[:8]}."
        self.env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "DUEWATCH_TOPIC_PREFIX": self.prefix,
            "DUEWATCH_PARTITIONS": str(partitions),
            "DUEWATCH_APP_ID": f"dw-{self.prefix.rstrip('.')}",
            "DUEWATCH_TICKER_ENABLED": "false",
            # Tests drive books of any date with their own clock (the guard has a test of its own).
            "DUEWATCH_MAX_TICK_AHEAD": "0",
            "DUEWATCH_SETTLE_DELAY": str(settle),
            "DUEWATCH_LOG_LEVEL": "info",
            **env,
        }
        self.cfg = from_env({**os.environ, **self.env})
        self.workers: list[Worker] = []
        self.readers: list[Reader] = []

    async def create_topics(self) -> None:
        await kafkaio.create_topics(self.cfg)

    def start_worker(self, name: str | None = None) -> Worker:
        name = name or f"w{len(self.workers)}"
        env = {
            **self.env,
            "DUEWATCH_STATE_DIR": str(self.tmp_path / f"state-{name}"),
            "DUEWATCH_WEB_PORT": str(devkafka.free_ports(1)[0]),
        }
        worker = Worker(name, env, self.tmp_path / f"{name}.log")
        self.workers.append(worker)
        return worker

    async def produce(self, lines: Iterable[Mapping[str, Any]], raw: bool = False) -> None:
        """Send replay-style lines ``{topic, key, value}``, each topic's lines in order."""
        by_topic: dict[str, list[Mapping[str, Any]]] = {}
        for line in lines:
            by_topic.setdefault(str(line["topic"]), []).append(
                {"key": line.get("key"), "value": line["value"]}
            )
        for topic, batch in by_topic.items():
            await kafkaio.produce(self.cfg, topic, batch, raw=raw)

    async def tick(self, at: datetime) -> None:
        await kafkaio.send_tick(self.cfg, at)

    async def produce_raw(
        self, topic: str, records: Iterable[tuple[bytes | None, bytes]], partition: int | None = None
    ) -> None:
        """Send (key, value bytes) records as they are to logical ``topic`` (or a physical name)."""
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**self.cfg.kafka_kwargs(), acks="all", max_request_size=2 * 1024 * 1024)
        await producer.start()
        try:
            name = (
                topic
                if topic.startswith(self.prefix) or topic.startswith(self.env["DUEWATCH_APP_ID"])
                else self.cfg.topic(topic)
            )
            futures = [
                await producer.send(name, value, key=key, partition=partition) for key, value in records
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run ``duewatch <args>`` against this cluster (its environment)."""
        return subprocess.run(duewatch_command(*args), env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip

    def reader(self, topic: str = names.OVERDUE) -> Reader:
        reader = Reader(self, topic)
        self.readers.append(reader)
        return reader

    async def close(self) -> None:
        for reader in self.readers:
            await reader.close()
        for worker in self.workers:
            worker.stop()
        admin = AIOKafkaAdminClient(**self.cfg.kafka_kwargs())
        await admin.start()
        try:
            mine = [
                t
                for t in await admin.list_topics()
                if t.startswith(self.prefix) or t.startswith(self.env["DUEWATCH_APP_ID"])
            ]
            if mine:
                await admin.delete_topics(mine)
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass
        finally:
            await admin.close()


# --- what the stream tests compare ------------------------------------------------------------

SETTLE = timedelta(seconds=60)  # the worker's settle delay in these tests


def replayed(lines: list[dict[str, Any]], until: datetime) -> list[dict[str, Any]]:
    outputs = replay(lines, until)
    return standing([codec.to_json("OverdueEvent", o.value) for o in outputs if o.topic == "overdue.events"])


def compared(
    records: list[dict[str, Any]], expected: list[dict[str, Any]], until: datetime
) -> tuple[Counter, Counter]:
    """Stream vs replay on every deterministic field (streams.dev.compare; re-emissions carry new ids)."""
    return compare([r["value"] for r in records], expected, until)


def ticks_between(start: datetime, end: datetime, every: timedelta) -> list[datetime]:
    out, t = [], start
    while t < end:
        out.append(t)
        t += every
    return out


async def run_until_equal(cluster: DuewatchCluster, expected: list, until: datetime, timeout: float = 420.0):
    """Read overdue.events until the stream equals the replay (or time out); returns both sides."""
    reader = cluster.readers[0] if cluster.readers else cluster.reader()

    def equal(records: list[dict[str, Any]]) -> bool:
        got, want = compared(records, expected, until)
        return got == want

    try:
        records = await reader.until(equal, timeout=timeout)
    except TimeoutError as exc:
        got, want = compared(reader.records, expected, until)
        raise AssertionError(f"{exc}: the stream misses {sum((want - got).values())} and has "
                             f"{sum((got - want).values())} unexpected of {sum(want.values())} events") from None  # fmt: skip
    return compared(records, expected, until)


def book_lines(loans: int, days: int, seed: int) -> tuple[list[dict[str, Any]], datetime, datetime]:
    records = generate(loans, date(2026, 3, 1), days, seed)
    lines = [r.as_line() for r in records]
    start = min(r.event_time for r in records)
    until = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(days=days)
    return lines, start, until
