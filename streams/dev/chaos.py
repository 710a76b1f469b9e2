"""`make chaos` (``python -m streams.dev.chaos``): duewatch through crashes, a broker failure and
rebalances, checked against replay — a run anyone can repeat (docs/reliability.md).

1. A replicated cluster (``streams.dev.broker.Cluster``: 3 KRaft nodes, replication 3,
   ``min.insync.replicas`` 2; or the broker of ``--bootstrap``), topics with a fresh prefix, and
   ``--workers`` `duewatch worker` processes (ticker off, each with its own state directory, web
   port and static member id ``<app id>-w<n>``, as a Kubernetes StatefulSet gives them).
2. A random book (``streams.dev.book``, seeded), played on a simulated clock like ``duewatch
   simulate``: the history at once, then one simulated day per second of wall time, a tick to
   every partition every half second; a share of the loans with a repayment delivered days late
   (``streams.dev.latebook``), and bad records of every kind mixed in
   (``streams.dev.badrecords``).
3. Meanwhile, every ~20 s, a chaos action (``plan``, seeded): a worker SIGKILLed and started
   again over its state, either at once (it takes its partitions back as the same static member)
   or after the session timeout (the others take its partitions over first); once, the node
   that coordinates the consumer group SIGKILLed and restarted 20 s later; once, a rebalance by
   scaling 3 → 2 (SIGTERM) → 3.
4. Once the clock is past the book's end and every worker is back, the run waits until the
   outputs stop changing, then checks: the five output topics after retractions equal replay's
   (``streams.dev.compare``, ``streams.dev.routed``), every bad record is in the DLQ once with its
   reason and nothing else is, every repeated id carries identical content, nothing is lost.
5. The report: kills survived, rebalances (consumer group generations), broker failures,
   duplicates, lost records, the longest detection gap (``streams.dev.detection``), and per kill
   the takeover time (SIGKILL → the survivors emit every partition of the victim again) or the
   restart time (start → the restarted worker emits every partition of its own again).

Exit status 0 when every check passed, 1 otherwise (the work directory with every log is kept
then). ``--docs`` writes the report into docs/reliability.md. Bounded: ``--deadline`` (570 s).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import logging
import multiprocessing
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from .. import kafkaio
from ..contracts import codec
from ..contracts import topics as names
from ..settings import Settings, from_env
from . import broker as devkafka
from .badrecords import BadRecord
from .book import BookRecord, generate
from .compare import compare
from .copies import Copy, check_copies
from .detection import Clock, Delay, Inputs, delays, percentile, worst_between
from .latebook import Send, late_book, with_bad_records
from .procs import WorkerProcess, duewatch_command
from .routed import ROUTED, chains, compare_routed, duplicates
from .simulate import start_instant

ROOT = Path(__file__).resolve().parents[2]
RELIABILITY = ROOT / "docs" / "reliability.md"
REPORT_SECTION = "The last run of make chaos"
START = date(2026, 3, 1)
HISTORY_TICKS = 40  # the history is crossed in this many ticks before the clock runs
OUTPUTS = (names.OVERDUE, *ROUTED)
GENERATION = re.compile(r"generation id (\d+) ")
#: A broker's group coordinator saying why a rebalance began (deploy/kafka/log4j2.properties logs it).
REBALANCE = re.compile(
    r"^\[([\d-]+ [\d:,]+)\] INFO .*Preparing to rebalance group (\S+) .*\(reason: (.*)$", re.M
)
#: What the coordinator's reasons mean, for the report.
REASONS = (
    ("heartbeat expiration", "a member's session expired"),
    ("Adding new member", "a member joined"),
    ("Leaving group", "a member left"),
    ("change of protocol", "a member joined with another protocol"),
    ("Updating metadata", "a member rejoined while the group rebalanced"),
)
POLICY = """
[notifications]
# High enough that no borrower reaches it: which of an over-cap day's requests are dropped can
# differ from replay by the order loans of one borrower arrive in (streams/core/routing/notifications.py).
collection_cap_per_day = 20

[partners.P-ANTFIN]
key = "duewatch-chaos-only-key-for-P-ANTFIN-0123456789"
mode = "REALTIME"

[partners.P-CITYBANK]
key = "duewatch-chaos-only-key-for-P-CITYBANK-0123456789"
mode = "DIGEST"
digest_time = "07:00"
timezone = "Asia/Shanghai"
"""


@dataclass(frozen=True, slots=True)
class Config:
    """What the run plays; the defaults are `make chaos`'s."""

    loans: int = 800
    days: int = 240  # simulated days after the history, played at ``speed`` days per second
    seed: int = 18
    partitions: int = 6
    workers: int = 3
    nodes: int = 3  # brokers of the cluster the run starts (unused with a bootstrap)
    step: float = 0.5  # wall seconds between ticks
    speed: float = 1.0  # simulated days per wall second
    late_share: float = 0.1  # loans with a repayment delivered late
    bad: int = 20
    every: float = 20.0  # seconds between chaos actions
    session_timeout: float = 10.0  # the workers' DUEWATCH_SESSION_TIMEOUT
    deadline: float = 570.0  # seconds for the whole run

    @property
    def play(self) -> float:
        """Wall seconds the clock runs after the history."""
        return self.days / self.speed


@dataclass(frozen=True, slots=True)
class Action:
    """One chaos action, ``at`` seconds after the clock started running."""

    at: float
    kind: str  # KILL, BROKER, SCALE_DOWN, SCALE_UP
    back: float = 0.0  # seconds until the worker (KILL) or the node (BROKER) is started again


KILL, BROKER, SCALE_DOWN, SCALE_UP = "kill", "broker", "scale-down", "scale-up"


def plan(config: Config, rng: random.Random, broker: bool = True) -> list[Action]:
    """Every ~``every`` seconds an action: a worker SIGKILLed and started again at once or after
    the session timeout (alternating, the order drawn), once a broker node (if ``broker``), once
    a scale-down and, two slots later, the scale-up."""
    slots = max(1, int((config.play - 25) // config.every))
    times = [config.every * (n + 1) + rng.uniform(-3, 3) for n in range(slots)]
    kinds = [KILL] * slots
    if slots >= 6:
        if broker:
            kinds[round(slots * 0.3)] = BROKER
        down = round(slots * 0.55)
        kinds[down], kinds[min(slots - 1, down + 2)] = SCALE_DOWN, SCALE_UP
    quick = rng.random() < 0.5
    out = []
    for at, kind in zip(times, kinds, strict=True):
        back = 0.0
        if kind == KILL:
            quick = not quick
            late = config.session_timeout
            back = rng.uniform(1.0, 3.0) if quick else rng.uniform(late + 5, late + 8)
        elif kind == BROKER:
            back = 20.0
        out.append(Action(at, kind, back))
    return out


# --------------------------------------------------------------------------- the workers


class Fleet:
    """The run's `duewatch worker` processes by name; a name keeps its state dir, port and id."""

    def __init__(self, cfg: Settings, env: Mapping[str, str], work: Path, count: int) -> None:
        self.cfg = cfg
        self.work = work
        self.names = [f"w{n + 1}" for n in range(count)]
        ports = devkafka.free_ports(count)
        self.env = {
            name: {**env, "DUEWATCH_STATE_DIR": str(work / f"state-{name}"), "DUEWATCH_WEB_PORT": str(port),
                   "DUEWATCH_INSTANCE_ID": f"{cfg.app_id}-{name}"}
            for name, port in zip(self.names, ports, strict=True)
        }  # fmt: skip
        self.procs: dict[str, WorkerProcess] = {}

    def start(self, name: str) -> None:
        self.procs[name] = WorkerProcess(name, duewatch_command("worker"), self.env[name],
                                         self.work / f"{name}.log")  # fmt: skip

    def alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.running]

    def kill(self, name: str) -> None:
        self.procs[name].kill(signal.SIGKILL)

    def stop(self, name: str) -> None:
        self.procs[name].stop(timeout=30)

    def instance(self, name: str) -> str:
        return self.env[name]["DUEWATCH_INSTANCE_ID"]

    async def ready(self, name: str, timeout: float = 120.0) -> None:
        """Until the worker's /ready answers 200."""
        import aiohttp

        url = f"http://127.0.0.1:{self.env[name]['DUEWATCH_WEB_PORT']}/ready"
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if not self.procs[name].running:
                    raise RuntimeError(f"{name} exited:\n{self.procs[name].tail()}")
                with contextlib.suppress(OSError, aiohttp.ClientError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.3)
        raise TimeoutError(f"{name}: not ready within {timeout:.0f} s:\n{self.procs[name].tail()}")

    def generation(self) -> int:
        """The highest consumer group generation any worker logged."""
        found = [int(g) for p in self.procs.values() for g in GENERATION.findall(p.output())]
        return max(found, default=0)

    def close(self) -> None:
        for proc in self.procs.values():
            proc.stop(timeout=20)


def rebalances(logs: Sequence[Path], group: str, since: datetime) -> Counter[str]:
    """Why the consumer group ``group`` rebalanced after ``since`` (the brokers' local time), by
    reason, from the group coordinators' logs (every node that coordinated it at some point)."""
    found: Counter[str] = Counter()
    for path in logs:
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        for stamp, name, reason in REBALANCE.findall(text):
            if name != group or datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f") < since:
                continue
            found[next((said for key, said in REASONS if key in reason), reason[:60])] += 1
    return found


async def owners(cfg: Settings, topic: str) -> dict[str, set[int]]:
    """Static member id -> the partitions of ``topic`` it holds now, from the consumer group."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    out: dict[str, set[int]] = {}
    async with kafkaio.started(AIOKafkaAdminClient(**cfg.kafka_kwargs())) as admin:
        [response] = await admin.describe_consumer_groups([cfg.app_id])
        for group in response.groups:
            for member in group[5]:
                member_id, assignment = member[0], member[-1]
                if not assignment:
                    continue
                decoded = ConsumerProtocolMemberAssignment.decode(assignment)
                instance = member_id.rsplit("-", 5)[0]  # a static member's id: <instance id>-<uuid>
                for name, partitions in decoded.assignment:
                    if name == topic:
                        out.setdefault(instance, set()).update(partitions)
    return out


# --------------------------------------------------------------------------- reading the outputs


class Observer:
    """Reads overdue.events from the beginning while the run goes on, noting when each record
    arrived (what the detection delays are measured with)."""

    def __init__(self, cfg: Settings, partitions: int) -> None:
        self.cfg = cfg
        self.partitions = partitions
        self.records: list[tuple[float, int, dict[str, Any]]] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        physical = self.cfg.topic(names.OVERDUE)
        consumer = AIOKafkaConsumer(**self.cfg.kafka_kwargs(), enable_auto_commit=False, group_id=None,
                                    fetch_max_wait_ms=50)  # fmt: skip
        async with kafkaio.started(consumer):
            tps = [TopicPartition(physical, p) for p in range(self.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                now = time.monotonic()
                for tp, messages in batch.items():
                    for m in messages:
                        value = codec.to_json("OverdueEvent", codec.decode("OverdueEvent", m.value))
                        self.records.append((now, tp.partition, value))

    def stop(self) -> None:
        self._stop.set()

    def first_after(self, partitions: set[int], start: float, end: float = float("inf")) -> dict[int, float]:
        """Partition -> wall time of its first record read within (start, end)."""
        out: dict[int, float] = {}
        for wall, partition, _ in self.records:
            if partition in partitions and start < wall < end:
                out.setdefault(partition, wall)
        return out


# --------------------------------------------------------------------------- the clock and the book


@dataclass
class Played:
    """What the player sent and when (wall times are ``time.monotonic``)."""

    clock: Clock = field(default_factory=Clock)
    inputs: Inputs = field(default_factory=Inputs)
    bad: dict[tuple[str, int, int], BadRecord] = field(default_factory=dict)  # (topic, partition, offset)
    started: float = 0.0  # the clock began to run (after the history)
    ended: float = 0.0
    final: datetime | None = None  # the last tick


class Player:
    """Plays the sends on the simulated clock and sends the ticks (``streams.dev.simulate``'s way)."""

    def __init__(
        self, cfg: Settings, config: Config, sends: Sequence[Send], bad: Sequence[BadRecord]
    ) -> None:
        self.cfg, self.config, self.sends = cfg, config, list(sends)
        self.bad_by_send = {(b.topic, b.key, b.at, b.value): b for b in bad}
        self.played = Played()
        self._next = 0
        self.begin = start_instant(START) + timedelta(minutes=2)  # ticks just past the settle delay
        self.end = self.begin + timedelta(days=config.days)
        self.clock_started = asyncio.Event()

    async def run(self) -> Played:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**self.cfg.kafka_kwargs(), acks="all", enable_idempotence=True, linger_ms=5,
                                    max_request_size=2 * 1024 * 1024)  # fmt: skip
        async with kafkaio.started(producer):
            fanout = await kafkaio.partition_count(producer, self.cfg.topic(names.TICKS))
            await self._send_until(producer, self.begin)
            first = self.sends[0].at if self.sends else self.begin
            for n in range(1, HISTORY_TICKS):
                await self._tick(producer, fanout, first + (self.begin - first) * n / HISTORY_TICKS)
            await self._tick(producer, fanout, self.begin)
            self.played.started = time.monotonic()
            self.clock_started.set()
            await self._run_clock(producer, fanout)
            await self._send_until(producer, None)
            final = self.end + timedelta(seconds=self.cfg.settle_delay + 1)
            await self._tick(producer, fanout, final)
            self.played.final, self.played.ended = final, time.monotonic()
        return self.played

    async def _run_clock(self, producer: Any, fanout: int) -> None:
        loop = asyncio.get_running_loop()
        advance = timedelta(days=self.config.speed * self.config.step)
        clock, wake = self.begin, loop.time()
        while clock < self.end:
            wake += self.config.step
            await asyncio.sleep(max(0.0, wake - loop.time()))
            clock = min(self.end, clock + advance)
            await self._send_until(producer, clock)
            await self._tick(producer, fanout, clock)
            wake = max(wake, loop.time() - self.config.step)  # slow (a broker failover): no burst after

    async def _send_until(self, producer: Any, limit: datetime | None) -> None:
        pending = []
        while self._next < len(self.sends) and (limit is None or self.sends[self._next].at <= limit):
            s = self.sends[self._next]
            future = await producer.send(self.cfg.topic(s.topic), s.value, key=s.key.encode())
            pending.append((s, future))
            self._next += 1
        for s, future in pending:
            meta = await future
            if s.reason is not None:
                self.played.bad[(s.topic, meta.partition, meta.offset)] = self.bad_by_send[
                    (s.topic, s.key, s.at, s.value)
                ]
            else:
                self.played.inputs.sent(s.key, s.event_time, time.monotonic())

    async def _tick(self, producer: Any, fanout: int, at: datetime) -> None:
        payload = codec.encode("Tick", {"as_of": at})
        futures = [
            await producer.send(self.cfg.topic(names.TICKS), payload, partition=p) for p in range(fanout)
        ]
        await asyncio.gather(*futures)
        self.played.clock.sent(at, time.monotonic())


def book(config: Config) -> tuple[list[BookRecord], list[Send], list[BadRecord], dict[str, Any]]:
    """The run's good book, what is sent (late data and bad records included), the bad records."""
    rng = random.Random(config.seed)
    records = generate(config.loans, START, config.days, config.seed)
    begin = start_instant(START)
    sends, summary = late_book(records, config.late_share, rng, after=begin)
    sends, bad = with_bad_records(
        sends, records, config.bad, (begin, begin + timedelta(days=config.days)), rng
    )
    return records, sends, bad, summary


def replayed(
    records: Sequence[BookRecord], until: datetime, policy_path: str
) -> dict[str, list[dict[str, Any]]]:
    """Replay's outputs by topic in JSON form (run in a child process: it takes seconds of CPU)."""
    from ..policy_loader import load_policy
    from ..replay import replay

    out: dict[str, list[dict[str, Any]]] = {t: [] for t in OUTPUTS}
    for o in replay([r.as_line() for r in records], until, policy=load_policy(policy_path)):
        if o.topic in out:
            out[o.topic].append(codec.to_json(codec.TOPIC_RECORD[o.topic], o.value))
    return out


# --------------------------------------------------------------------------- the chaos


@dataclass
class Happened:
    """One chaos action as it happened (wall times ``time.monotonic``)."""

    kind: str
    target: str  # a worker's name, or "node <n>"
    at: float
    back: float = 0.0
    partitions: set[int] = field(default_factory=set)  # a killed worker's, of clock.ticks
    restarted: float | None = None
    skipped: str = ""


class Chaos:
    """Carries out a plan against the fleet (and the cluster's nodes)."""

    def __init__(
        self, cfg: Settings, fleet: Fleet, cluster: devkafka.Cluster | None, rng: random.Random
    ) -> None:
        self.cfg, self.fleet, self.cluster, self.rng = cfg, fleet, cluster, rng
        self.happened: list[Happened] = []
        self.down: str | None = None  # scaled down
        self._later: list[asyncio.Task[None]] = []

    async def run(self, actions: Sequence[Action], started: float) -> None:
        do: dict[str, Callable[[Action], Awaitable[None]]] = {
            KILL: self._kill, BROKER: self._broker, SCALE_DOWN: self._scale_down, SCALE_UP: self._scale_up,
        }  # fmt: skip
        for action in actions:
            await asyncio.sleep(max(0.0, started + action.at - time.monotonic()))
            await do[action.kind](action)
        await self.settled()

    async def settled(self) -> None:
        """Every restart scheduled so far has happened."""
        await asyncio.gather(*self._later)

    def _after(self, seconds: float, then: Callable[[], Awaitable[None]]) -> None:
        async def later() -> None:
            await asyncio.sleep(seconds)
            await then()

        self._later.append(asyncio.create_task(later()))

    async def _kill(self, action: Action) -> None:
        alive = self.fleet.alive()
        if len(alive) < 2:
            self.happened.append(Happened(KILL, "-", time.monotonic(), skipped="fewer than 2 workers up"))
            return
        victim = self.rng.choice(alive)
        partitions: set[int] = set()
        with contextlib.suppress(Exception):  # a group in a rebalance may have no assignment to show
            found = await asyncio.wait_for(owners(self.cfg, self.cfg.topic(names.TICKS)), 5)
            partitions = found.get(self.fleet.instance(victim), set())
        await asyncio.to_thread(self.fleet.kill, victim)
        happened = Happened(KILL, victim, time.monotonic(), action.back, partitions)
        self.happened.append(happened)

        async def restart() -> None:
            self.fleet.start(victim)
            happened.restarted = time.monotonic()

        self._after(action.back, restart)

    async def _broker(self, action: Action) -> None:
        if self.cluster is None:
            return
        from aiokafka.admin import AIOKafkaAdminClient

        async with kafkaio.started(AIOKafkaAdminClient(**self.cfg.kafka_kwargs())) as admin:
            node = await admin.find_coordinator(self.cfg.app_id)  # the hardest node to lose
        cluster = self.cluster
        await asyncio.to_thread(cluster.kill, node)
        happened = Happened(BROKER, f"node {node}", time.monotonic(), action.back)
        self.happened.append(happened)

        async def restart() -> None:
            await asyncio.to_thread(cluster.restart, node, 120.0, True)
            happened.restarted = time.monotonic()

        self._after(action.back, restart)

    async def _scale_down(self, action: Action) -> None:
        alive = self.fleet.alive()
        if len(alive) < 2:
            self.happened.append(
                Happened(SCALE_DOWN, "-", time.monotonic(), skipped="fewer than 2 workers up")
            )
            return
        self.down = self.rng.choice(alive)
        began = time.monotonic()
        await asyncio.to_thread(self.fleet.stop, self.down)  # SIGTERM: a graceful stop
        self.happened.append(Happened(SCALE_DOWN, self.down, began))

    async def _scale_up(self, action: Action) -> None:
        if self.down is None:
            return
        self.fleet.start(self.down)
        self.happened.append(Happened(SCALE_UP, self.down, time.monotonic()))
        self.down = None


# --------------------------------------------------------------------------- the checks


@dataclass
class Outcome:
    """What the run found."""

    equal: dict[str, tuple[int, int, int]] = field(
        default_factory=dict
    )  # topic -> (replay's, missing, extra)
    duplicates: dict[str, int] = field(default_factory=dict)
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    dlq: tuple[int, int, int, int] = (
        0,
        0,
        0,
        0,
    )  # (bad records, missing, wrong reason or unexpected, repeats)
    dlq_problems: list[str] = field(default_factory=list)
    differences: dict[str, list[str]] = field(default_factory=dict)  # topic -> what differs (a sample)
    chains: tuple[int, list[str]] = (0, [])  # (loans whose bureau chain was verified, its breaks)
    copies: list[Copy] = field(default_factory=list)  # every worker's table copies, once they stopped

    @property
    def lost(self) -> int:
        return sum(missing for _, missing, _ in self.equal.values()) + self.dlq[1]

    @property
    def passed(self) -> bool:
        return (
            self.lost == 0
            and not any(extra for _, _, extra in self.equal.values())
            and not any(self.conflicts.values())
            and not self.dlq[2]
            and not self.chains[1]
            and not any(c.differ for c in self.copies)
        )


def check_dlq(records: Sequence[Mapping[str, Any]], bad: Mapping[tuple[str, int, int], BadRecord],
              cfg: Settings) -> tuple[tuple[int, int, int, int], list[str]]:  # fmt: skip
    """Every bad record in the DLQ with its reason, nothing else there (repeats of one are allowed)."""
    seen: dict[tuple[str, int, int], list[str]] = {}
    for r in records:
        h = r["headers"]
        source = kafkaio.logical_name(h.get("source_topic", "?"), cfg)
        key = (source, int(h.get("source_partition", -1)), int(h.get("source_offset", -1)))
        seen.setdefault(key, []).append(h.get("reason", "?"))
    problems = [
        f"{b.what} (partition {k[1]}, offset {k[2]}): not in the DLQ" for k, b in bad.items() if k not in seen
    ]
    for key, reasons in seen.items():
        expected = bad.get(key)
        if expected is None:
            problems.append(f"{key[0]} partition {key[1]} offset {key[2]}: in the DLQ ({', '.join(set(reasons))}), "
                            "but not a bad record")  # fmt: skip
        elif set(reasons) != {expected.reason}:
            problems.append(f"{expected.what}: in the DLQ as {', '.join(sorted(set(reasons)))}")
    missing = sum(k not in seen for k in bad)
    repeats = sum(len(v) - 1 for v in seen.values())
    return (len(bad), missing, len(problems) - missing, repeats), problems


def check(outputs: Mapping[str, Sequence[Mapping[str, Any]]], expected: Mapping[str, Sequence[Mapping[str, Any]]],
          played: Played, cfg: Settings) -> Outcome:  # fmt: skip
    """The run's outputs against replay's, the DLQ against the bad records sent."""
    outcome = Outcome()
    overdue = [r["value"] for r in outputs[names.OVERDUE]]
    final = played.final or datetime.max.replace(tzinfo=UTC)
    for topic in OUTPUTS:
        values = [r["value"] for r in outputs[topic]]
        if topic == names.OVERDUE:
            got, want = compare(values, expected[topic], final)
        else:
            got, want = compare_routed(topic, values, expected[topic], overdue)
        outcome.equal[topic] = (sum(want.values()), sum((want - got).values()), sum((got - want).values()))
        if got != want:
            outcome.differences[topic] = [f"missing: {k}" for k in list(want - got)[:20]] + [
                f"unexpected: {k}" for k in list(got - want)[:20]
            ]
        outcome.duplicates[topic], outcome.conflicts[topic] = duplicates(topic, values)
    outcome.dlq, outcome.dlq_problems = check_dlq(outputs[names.DLQ], played.bad, cfg)
    verified = chains(r["value"] for r in outputs[names.BUREAU])
    outcome.chains = (len(verified.chains), [f"{b.loan_id} {b.kind} at chain_seq {b.chain_seq}: {b.detail}"
                                             for b in verified.breaks])  # fmt: skip
    return outcome


# --------------------------------------------------------------------------- the figures


@dataclass
class Figures:
    """The measured side of the report."""

    delays: list[Delay]
    rows: list[tuple[float, str, str]]  # (seconds after the clock started, what, figure)
    takeovers: list[float]
    restarts: list[float]
    problems: list[str]
    started: float  # wall time the clock started (delays of the history's catch-up come before)


def figures(
    happened: Sequence[Happened], observer: Observer, found: Sequence[Delay], started: float
) -> Figures:
    """Per chaos action what it cost, from the arrivals on overdue.events and the detection delays."""
    rows: list[tuple[float, str, str]] = []
    takeovers: list[float] = []
    restarts: list[float] = []
    problems: list[str] = []
    for h in happened:
        when = h.at - started
        if h.skipped:
            rows.append((when, f"{h.kind} skipped", h.skipped))
        elif h.kind == KILL:
            row, seconds, problem = _kill_figure(h, observer, found)
            rows.append((when, *row))
            (takeovers if h.back > 5 else restarts).extend(seconds)
            problems += problem
        else:
            worst = worst_between(found, h.at, h.at + h.back + 15)
            what = {BROKER: f"SIGKILL {h.target} (the group coordinator), restarted after {h.back:.0f} s",
                    SCALE_DOWN: f"scale down: SIGTERM {h.target}", SCALE_UP: f"scale up: {h.target} started"}[h.kind]  # fmt: skip
            rows.append((when, what, f"longest detection delay of the events due then: "
                                     f"{worst.seconds if worst else 0:.1f} s"))  # fmt: skip
    return Figures(list(found), rows, takeovers, restarts, problems, started)


def _kill_figure(
    h: Happened, observer: Observer, found: Sequence[Delay]
) -> tuple[tuple[str, str], list[float], list[str]]:
    parts = ", ".join(map(str, sorted(h.partitions))) or "none seen"
    end = h.restarted or float("inf")
    if h.back > 5:  # after the session timeout: the others take over
        first = observer.first_after(h.partitions, h.at + 1.0, end)
        due = {d.partition for d in found if d.partition in h.partitions and h.at <= d.due < end - 1}
        missed = sorted(due - set(first))
        seconds = [max(first.values()) - h.at] if first and not missed else []
        what = f"SIGKILL {h.target} (partitions {parts}), back after {h.back:.1f} s"
        figure = (f"taken over: the others emitted all its partitions {seconds[0]:.1f} s after the kill" if seconds
                  else "no takeover seen" if missed else "nothing was due on its partitions meanwhile")  # fmt: skip
        problems = (
            [f"{h.target} killed: partitions {missed} had events due and none emitted before it came back"]
            if missed
            else []
        )
        return (what, figure), seconds, problems
    first = observer.first_after(h.partitions, h.restarted or h.at)
    seconds = [max(first.values()) - (h.restarted or h.at)] if first and set(first) == h.partitions else []
    what = f"SIGKILL {h.target} (partitions {parts}), started again after {h.back:.1f} s"
    figure = (f"restart → it emitted all its partitions again: {seconds[0]:.1f} s "
              f"({seconds[0] + h.back:.1f} s after the kill)" if seconds else "its partitions not all seen again")  # fmt: skip
    return (what, figure), seconds, []


# --------------------------------------------------------------------------- the run


@dataclass
class Result:
    """Everything the report says."""

    config: Config
    nodes: int
    outcome: Outcome
    figures: Figures
    happened: list[Happened]
    rebalances: int
    reasons: Counter[str]  # why, when the brokers' logs say (empty with an outside broker)
    seconds: float
    summary: dict[str, Any]
    sends: int
    work: Path

    @property
    def passed(self) -> bool:
        return self.outcome.passed and not self.figures.problems


def say(message: str) -> None:
    print(f"chaos: {message}", file=sys.stderr, flush=True)


async def run(config: Config, work: Path, bootstrap: str | None = None, actions: Sequence[Action] | None = None,
              quiet_for: float = 15.0, broker_logs: Sequence[Path] = ()) -> Result:  # fmt: skip
    """One chaos run in ``work``: the cluster (unless ``bootstrap``: then ``broker_logs`` are its
    brokers' server logs, if known), the workers, the book, the plan (or ``actions``), the
    checks and the figures."""
    began = time.monotonic()
    rng = random.Random(config.seed)
    cluster = None if bootstrap else devkafka.Cluster(work / "kafka", nodes=config.nodes)
    if cluster is not None:
        say(f"starting a {config.nodes}-node Kafka cluster")
        await asyncio.to_thread(cluster.up, 180.0, True)
    fleet: Fleet | None = None
    pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        prefix = f"chaos{uuid.uuid4().hex[:6]}."
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap or (cluster.bootstrap if cluster else ""),
            "DUEWATCH_TOPIC_PREFIX": prefix, "DUEWATCH_APP_ID": prefix.rstrip("."),
            "DUEWATCH_PARTITIONS": str(config.partitions),
            "DUEWATCH_REPLICATION": str(min(3, config.nodes) if cluster else 1),
            "DUEWATCH_TICKER_ENABLED": "false", "DUEWATCH_MAX_TICK_AHEAD": "0",
            "DUEWATCH_SESSION_TIMEOUT": f"{config.session_timeout:g}",
            "DUEWATCH_POLICY_FILE": str(work / "policy.toml"), "DUEWATCH_WEB_BIND": "127.0.0.1",
            "DUEWATCH_WEB_HOST": "127.0.0.1", "DUEWATCH_LOG_LEVEL": "info",
        }  # fmt: skip
        (work / "policy.toml").write_text(POLICY, encoding="utf-8")
        cfg = from_env({**os.environ, **env})
        records, sends, bad, summary = book(config)
        player = Player(cfg, config, sends, bad)
        final = player.end + timedelta(seconds=cfg.settle_delay + 1)
        replay_job = asyncio.get_running_loop().run_in_executor(
            pool, replayed, records, final, env["DUEWATCH_POLICY_FILE"]
        )
        await _create_topics(cfg)
        fleet = Fleet(cfg, env, work, config.workers)
        for name in fleet.names:
            fleet.start(name)
        await asyncio.gather(*(fleet.ready(name, 180.0) for name in fleet.names))
        say(f"{config.workers} workers ready; playing {config.loans} loans ({len(sends):,} records, "
            f"{summary['late_records']} of them late, {len(bad)} bad), {config.days} days at {config.speed:g} a second")  # fmt: skip
        observer = Observer(cfg, config.partitions)
        watching = asyncio.create_task(observer.run())
        playing = asyncio.create_task(player.run())
        await player.clock_started.wait()
        generation, clock_started = fleet.generation(), datetime.now()
        chaos = Chaos(cfg, fleet, cluster, rng)
        todo = list(actions) if actions is not None else plan(config, rng, broker=cluster is not None)
        await asyncio.gather(chaos.run(todo, player.played.started), playing)
        for name in fleet.names:  # everyone back for the end
            if name not in fleet.alive():
                fleet.start(name)
        await asyncio.gather(*(fleet.ready(name, 180.0) for name in fleet.names))
        say("the clock is past the end of the book; waiting for the outputs to settle")
        expected = await replay_job
        outcome, outputs = await _settle(
            cfg, expected, player.played, quiet_for, began + config.deadline - 20
        )
        if not outcome.passed:  # everything needed to see why, beside the logs
            with open(work / "outputs.jsonl", "w", encoding="utf-8") as fh:
                for rendered in outputs.values():
                    fh.writelines(json.dumps(r, default=str) + "\n" for r in rendered)
        observer.stop()
        await watching
        await asyncio.to_thread(fleet.close)  # a stopped worker's state directory can be read
        from ..worker.tables import TABLES

        outcome.copies = await check_copies(cfg, {n: work / f"state-{n}" for n in fleet.names}, TABLES)
        if any(c.differ for c in outcome.copies) and not (work / "outputs.jsonl").exists():
            with open(work / "outputs.jsonl", "w", encoding="utf-8") as fh:
                for rendered in outputs.values():
                    fh.writelines(json.dumps(r, default=str) + "\n" for r in rendered)
        found = delays(observer.records, expected[names.OVERDUE], player.played.clock, player.played.inputs,
                       timedelta(seconds=cfg.settle_delay))  # fmt: skip
        logs = [b.server_log for b in cluster.brokers] if cluster is not None else list(broker_logs)
        return Result(config, config.nodes if cluster else 1, outcome,
                      figures(chaos.happened, observer, found, player.played.started), chaos.happened,
                      fleet.generation() - generation, rebalances(logs, cfg.app_id, clock_started),
                      time.monotonic() - began, summary, len(sends), work)  # fmt: skip
    finally:
        pool.shutdown(cancel_futures=True)
        if fleet is not None:
            await asyncio.to_thread(fleet.close)
        if cluster is not None:
            await asyncio.to_thread(cluster.down, 20.0)


async def _create_topics(cfg: Settings) -> None:
    from ..worker.tables import changelog_topics, internal_topics

    await kafkaio.create_topics(cfg, physical=internal_topics(cfg), compacted=changelog_topics(cfg))


async def _settle(cfg: Settings, expected: Mapping[str, Sequence[Mapping[str, Any]]], played: Played,
                  quiet_for: float, deadline: float) -> tuple[Outcome, dict[str, list[dict[str, Any]]]]:  # fmt: skip
    """Read the outputs until they pass every check, or nothing changed for ``quiet_for`` seconds;
    returns the last check and the outputs it read."""
    last: tuple[int, ...] = ()
    quiet_since = time.monotonic()
    while True:
        outputs = await kafkaio.read_to_end(cfg, (*OUTPUTS, names.DLQ))
        outcome = check(outputs, expected, played, cfg)
        sizes = tuple(len(outputs[t]) for t in (*OUTPUTS, names.DLQ))
        if sizes != last:
            last, quiet_since = sizes, time.monotonic()
        if outcome.passed or time.monotonic() - quiet_since > quiet_for or time.monotonic() > deadline:
            return outcome, outputs
        await asyncio.sleep(2.0)


# --------------------------------------------------------------------------- the report


def report(result: Result) -> str:
    """The run's report (Markdown)."""
    c, o, f = result.config, result.outcome, result.figures
    kills = [h for h in result.happened if h.kind == KILL and not h.skipped]
    brokers = [h for h in result.happened if h.kind == BROKER]
    chaos_delays = [d for d in f.delays if d.due >= f.started]
    gap = max(chaos_delays, key=lambda d: d.seconds, default=None)
    seconds = [d.seconds for d in chaos_delays]
    lines = [
        f"{'PASSED' if result.passed else 'FAILED'}: seed {c.seed}, {c.loans:,} loans ({result.sends:,} records, "
        f"{result.summary['late_records']} late, {c.bad} bad), {c.days} days played in {c.play:.0f} s; "
        f"{result.nodes} broker(s), {c.workers} workers, {c.partitions} partitions; "
        f"DUEWATCH_SESSION_TIMEOUT {c.session_timeout:g} s; {result.seconds:.0f} s in all.",
        "",
        "| check | result |",
        "|---|---|",
    ]  # fmt: skip
    for topic, (want, missing, extra) in o.equal.items():
        lines.append(f"| {topic} after retractions = replay's | {want:,} records; {missing} missing, {extra} unexpected "
                     f"{'✓' if not missing and not extra else '✗'} |")  # fmt: skip
    bad, missing, wrong, repeats = o.dlq
    lines += [
        f"| bad records in the DLQ, once per reason | {bad - missing} of {bad}; {wrong} wrong or unexpected; "
        f"{repeats} repeated {'✓' if not missing and not wrong else '✗'} |",
        f"| bureau hash chains hold (`duewatch verify`) | {o.chains[0]:,} loans; {len(o.chains[1])} breaks "
        f"{'✓' if not o.chains[1] else '✗'} |",
        f"| every worker's table copies = the changelogs | {len(o.copies)} partition copies in "
        f"{len({c.worker for c in o.copies})} workers; {sum(bool(c.differ) for c in o.copies)} differ "
        f"{'✓' if not any(c.differ for c in o.copies) else '✗'} |",
        f"| kills survived | {len(kills)} SIGKILLs ({sum(h.back <= 5 for h in kills)} started again at once, "
        f"{sum(h.back > 5 for h in kills)} after the session timeout) |",
        f"| rebalances | {result.rebalances} (consumer group generations while the clock ran"
        f"{': ' + ', '.join(f'{n} {why}' for why, n in result.reasons.most_common()) if result.reasons else ''}) |",
        f"| broker failures | {len(brokers)} ({', '.join(h.target for h in brokers) or 'none'}: SIGKILL, "
        f"restarted after {brokers[0].back:.0f} s) |" if brokers else "| broker failures | 0 |",
        f"| duplicates (same id ⇒ same content) | {sum(o.duplicates.values())} "
        f"({', '.join(f'{t} {n}' for t, n in o.duplicates.items() if n) or 'none'}); "
        f"{sum(len(v) for v in o.conflicts.values())} conflicting {'✓' if not any(o.conflicts.values()) else '✗'} |",
        f"| lost records | {o.lost} {'✓' if not o.lost else '✗'} |",
        f"| longest detection gap | {gap.seconds:.1f} s (partition {gap.partition}); p50 {percentile(seconds, 0.5):.2f} s, "
        f"p99 {percentile(seconds, 0.99):.1f} s over {len(seconds):,} events |" if gap else "| longest detection gap | - |",
        f"| takeover (SIGKILL → the others emit all the victim's partitions) | "
        f"{', '.join(f'{s:.1f}' for s in f.takeovers) or '-'} s |",
        f"| restart (start → it emits all its partitions again) | {', '.join(f'{s:.1f}' for s in f.restarts) or '-'} s |",
        "",
        "What happened (seconds after the clock started):",
        "",
    ]  # fmt: skip
    lines += [f"- +{when:.0f} s: {what}: {figure}" for when, what, figure in f.rows]
    stale = [f"table copy {c.describe()}" for c in o.copies if c.differ]
    for problem in o.dlq_problems[:10] + o.chains[1][:10] + stale[:10] + f.problems:
        lines.append(f"- PROBLEM: {problem}")
    return "\n".join(lines) + "\n"


def write_docs(text: str, path: Path = RELIABILITY) -> None:
    """Replace the section ``## The last run of make chaos`` of docs/reliability.md with ``text``."""
    heading = f"## {REPORT_SECTION}"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    from .bench.machine import describe

    section = f"{heading}\n\nRun {stamp} on {describe()}.\n\n{text.strip()}\n"
    current = path.read_text(encoding="utf-8") if path.exists() else "# Reliability\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: section + "\n", current).rstrip() + "\n"
    else:
        updated = current.rstrip() + "\n\n" + section
    path.write_text(updated, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.dev.chaos", description=__doc__.split("\n")[0])
    defaults = Config()
    parser.add_argument("--loans", type=int, default=defaults.loans)
    parser.add_argument("--days", type=int, default=defaults.days, help="simulated days played, one a second")
    parser.add_argument("--seed", type=int, default=None, help="book and plan (default: a new one, printed)")
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument(
        "--bootstrap", default=None, help="use this broker instead of starting a 3-node cluster"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (logs, state) when it passes"
    )
    parser.add_argument(
        "--docs", action="store_true", help=f"write the report into {RELIABILITY.relative_to(ROOT)}"
    )
    args = parser.parse_args(argv)
    # The run's own clients ride out the broker it kills; their connection errors are expected.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 100_000)
    config = replace(defaults, loans=args.loans, days=args.days, seed=seed, workers=args.workers)
    devkafka.ensure_jars()
    work = Path(tempfile.mkdtemp(prefix="duewatch-chaos-"))
    say(f"seed {seed}; work directory {work}")
    try:
        result = asyncio.run(asyncio.wait_for(run(config, work, args.bootstrap), config.deadline))
    except TimeoutError:
        say(f"FAILED: the run took more than {config.deadline:.0f} s; logs in {work}")
        return 1
    text = report(result)
    print(text)
    if args.docs:
        write_docs(text)
    if result.passed and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    elif not result.passed:
        with open(work / "differences.txt", "w", encoding="utf-8") as fh:
            for topic, lines in result.outcome.differences.items():
                fh.write(f"--- {topic}\n" + "\n".join(lines) + "\n")
        say(f"logs, state and differences.txt kept in {work}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
