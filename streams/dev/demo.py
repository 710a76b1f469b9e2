"""`duewatch demo` (`make demo`): a bank's loan book going overdue, live, on a local Kafka.

One command does the whole job on a fresh machine:

1. **Broker.** ``KAFKA_BOOTSTRAP_SERVERS`` if set; else the local broker of ``make kafka-up``
   if it is running; else one started with :mod:`streams.dev.broker` in ``deploy/kafka/run`` on
   port 9092 (or, if 9092/9093 are taken by something else, in a temporary directory on free
   ports), stopped again at the end.
2. **Topics.** A unique topic prefix and Faust app id per run (``demo-<yyyymmddHHMMSS>-<4 hex>``), so a
   second run never sees the first one's data; all topics of SPEC §1 plus the routers' internal
   ones and the tables' changelogs are created, and deleted again at the end. They have 6
   partitions (3 per worker; ``DUEWATCH_PARTITIONS`` overrides), not the production default of
   12: every tick goes to every partition, and the loan routers forward a tick marker from every
   partition to every partition of the partner stage, so the clock's traffic grows with the
   square of the partition count (156 messages per tick at 12 partitions, 42 at 6).
3. **Workers.** Two ``duewatch worker`` processes (detector, routers, web server) with the
   ticker off — the simulator is the clock — web ports 6066 and 6067 (or free ones;
   ``DUEWATCH_DEMO_WEB_PORTS=a,b`` chooses), state under a temporary directory, and a policy
   file: ``deploy/policy.sample.toml`` plus the book's two partners (P-ANTFIN real time,
   P-CITYBANK daily digest) with demo-only keys.
4. **Simulation.** :func:`streams.dev.simulate.simulate` plays the synthetic book
   (:mod:`streams.dev.book`) to Kafka — its history (loans disbursed up to 240 days before the
   start) fast-forwarded, then an accelerated event-time clock — held back while the workers
   are too far behind (:class:`FlowControl`), while a live terminal view shows the simulated date, records in and out per second, loans by bucket, the latest
   routed messages, the DLQ count and the worker URLs. Without a terminal (CI) it prints a
   plain progress line every few seconds instead.
5. **Summary and check.** Once the workers have caught up (the consumer group has committed
   everything and the outputs have been quiet for 3 s): episodes, roll rates, messages per
   sink, DLQ; then the stream's overdue events, after applying retractions
   (:mod:`streams.dev.compare`), against ``duewatch replay`` of the same records with the same
   policy, on every deterministic field, printed as one line::

       stream vs replay: equal (N events)
       stream vs replay: NOT equal (M missing, K unexpected of N)

   The replay runs in a background process (niced) while the stream plays. Before that line
   the demo writes the risk report of its run (SPEC §7.4: from the stream's standing events and
   the book's schedules) to ``reports/demo-<stamp>.html`` and prints where it is.
6. **Shutdown.** Workers get SIGTERM, the demo's topics are deleted, a broker the demo started
   is stopped — also on Ctrl-C or SIGTERM. Exit status 0 only if the check said equal.

"Loans by bucket" counts, per loan, the bucket of its latest standing OPENED or BUCKET_CHANGED
event; a CURED loan is back in M0, a WRITTEN_OFF one is counted apart; a loan with no event
(or only DUE_SOON reminders, or past due but still within its grace days) is M0.

Roll rate Mi→Mi+1 = the number of standing BUCKET_CHANGED events from Mi to Mi+1, divided by
the number of loans that were ever in Mi (an OPENED or BUCKET_CHANGED event into Mi), over the
whole book: the history before the start date included.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from .. import kafkaio
from ..contracts import topics as names
from ..core.dates import parse_instant
from ..settings import Settings, from_env
from . import broker as devkafka
from .book import SHANGHAI, generate
from .compare import compare, standing
from .procs import WorkerProcess, duewatch_command
from .simulate import Progress, end_instant, simulate, start_instant

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_POLICY = ROOT / "deploy" / "policy.sample.toml"
DEFAULT_WEB_PORTS = (6066, 6067)
WEB_PORTS_ENV = "DUEWATCH_DEMO_WEB_PORTS"
#: Where the run's risk report goes (default: ``reports/`` under the working directory).
REPORT_DIR_ENV = "DUEWATCH_DEMO_REPORT_DIR"
WORKERS = 2
#: Partitions of the demo's topics unless DUEWATCH_PARTITIONS says otherwise (see the module doc).
DEMO_PARTITIONS = 6
READY_LINE = "wake-up index rebuilt"
READY_TIMEOUT = 180.0  # seconds for a worker to join and recover
QUIET = 3.0  # the outputs are done when nothing new arrived for this long ...
CATCH_UP_TIMEOUT = 600.0  # ... and the workers' consumer group has no lag (or this passed)
PLAIN_EVERY = 5.0  # seconds between progress lines without a terminal
BUCKETS = ("M1", "M2", "M3", "M4", "M5", "M6", "M7")
ROUTED = (names.NOTIFY, names.BUREAU, names.PARTNER, names.COLLECTIONS)

OPENED, CHANGED, CURED, WRITTEN_OFF = "OVERDUE_OPENED", "BUCKET_CHANGED", "OVERDUE_CURED", "WRITTEN_OFF"
RETRACTED = "OVERDUE_RETRACTED"
_TYPE_RANK = {OPENED: 0, CHANGED: 1, CURED: 2, WRITTEN_OFF: 3}

#: Appended to deploy/policy.sample.toml: the partners the synthetic book's loans name.
DEMO_PARTNERS = """
# --- added by `duewatch demo`: the two partners of the synthetic book (streams/dev/book.py) ---
# Demo-only keys (never use inline keys like these in production: use key_env).
[partners.P-ANTFIN]
key = "duewatch-demo-only-key-for-P-ANTFIN-0123456789"
mode = "REALTIME"

[partners.P-CITYBANK]
key = "duewatch-demo-only-key-for-P-CITYBANK-0123456789"
mode = "DIGEST"
digest_time = "07:00"
timezone = "Asia/Shanghai"
"""


class DemoError(RuntimeError):
    pass


def say(message: str) -> None:
    """A plain status line on stderr (before and after the live view)."""
    print(f"demo: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- broker


@dataclass
class BrokerHandle:
    """The broker the demo uses; ``started`` is the one it must stop at the end."""

    bootstrap: str
    started: devkafka.Broker | None = None
    temp_dir: Path | None = None

    def stop(self) -> None:
        if self.started is not None:
            say(f"stopping the Kafka broker the demo started ({self.started.bootstrap})")
            self.started.down(timeout=30)
            self.started = None
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None


def obtain_broker() -> BrokerHandle:
    """KAFKA_BOOTSTRAP_SERVERS, else the running local broker, else start one (see the module doc)."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        say(f"using the Kafka cluster at KAFKA_BOOTSTRAP_SERVERS={external}")
        return BrokerHandle(external)
    broker = devkafka.Broker()
    st = broker.status()
    if st.running:
        if not st.port_open:
            broker.up(timeout=60)  # it is starting: wait for it (not ours to stop)
        say(f"using the local Kafka broker that is already running ({devkafka.HOST}:{broker.port})")
        return BrokerHandle(f"{devkafka.HOST}:{st.port}")
    temp_dir = None
    if devkafka.port_open(broker.port) or devkafka.port_open(broker.controller_port):
        temp_dir = Path(tempfile.mkdtemp(prefix="duewatch-demo-kafka-"))
        port, controller = devkafka.free_ports(2)
        say(f"port {broker.port} or {broker.controller_port} is taken by another process: "
            f"starting a broker on free ports in {temp_dir}")  # fmt: skip
        broker = devkafka.Broker(temp_dir, port, controller)
    say(
        f"starting Kafka {devkafka.kafka_version() or ''} on {broker.bootstrap} (data in {broker.data_dir}) ..."
    )
    took = broker.up(timeout=90, die_with_parent=True)
    say(f"Kafka serving on {broker.bootstrap} ({took:.1f} s)")
    return BrokerHandle(broker.bootstrap, broker, temp_dir)


# --------------------------------------------------------------------------- workers


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return not devkafka.port_open(port)


def web_ports(n: int = WORKERS) -> list[int]:
    """``DUEWATCH_DEMO_WEB_PORTS`` (comma-separated), else 6066, 6067 … where free, else free ports."""
    raw = os.environ.get(WEB_PORTS_ENV, "").strip()
    if raw:
        ports = [int(p) for p in raw.split(",") if p.strip()]
        if len(ports) < n:
            raise DemoError(f"{WEB_PORTS_ENV} needs {n} ports, got {raw!r}")
        return ports[:n]
    wanted = list(DEFAULT_WEB_PORTS[:n])
    free = iter(devkafka.free_ports(n))
    return [p if _port_free(p) else next(free) for p in wanted]


async def wait_ready(workers: Sequence[WorkerProcess], timeout: float = READY_TIMEOUT) -> None:
    """Until every worker has logged its first wake-up index rebuild (it joined and recovered)."""
    deadline = time.monotonic() + timeout
    pending = list(workers)
    while pending:
        for w in list(pending):
            if READY_LINE in w.output():
                pending.remove(w)
            elif not w.running:
                raise DemoError(f"worker {w.name} exited ({w.proc.returncode}); its log:\n{w.tail()}")
        if pending and time.monotonic() > deadline:
            raise DemoError(
                f"worker {pending[0].name} not ready within {timeout:.0f} s:\n{pending[0].tail()}"
            )
        await asyncio.sleep(0.2)


# --------------------------------------------------------------------------- what the outputs say


def money(amount: int | None, currency: str | None) -> str:
    """Minor units as ``CNY 1,234.56``."""
    if amount is None:
        return "-"
    return f"{currency or ''} {amount / 100:,.2f}".strip()


def _local(value: str | None) -> str:
    if not value:
        return "-"
    return parse_instant(value).astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")


def _short(text: str, width: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def describe(topic: str, value: Mapping[str, Any]) -> str:
    """A routed record as one compact line."""
    if topic == names.NOTIFY:
        dropped = " DROPPED" if value.get("disposition") == "DROPPED" else ""
        return f"{value['kind']}{dropped} {value['loan_id']} via {value['channel']}: {value['text']}"
    if topic == names.BUREAU:
        extra = (" · correction" if value.get("corrects") else "") + (
            " · disputed" if value.get("disputed") else ""
        )
        return (f"{value['loan_id']} PBOC {value['pboc_status']} · Metro 2 {value['metro2_status']} · dpd {value['dpd']} · "
                f"{money(value.get('overdue_amount'), value.get('currency'))} · released {_local(value.get('released_at'))}{extra}")  # fmt: skip
    if topic == names.PARTNER:
        items = value.get("items") or []
        first = items[0] if items else {}
        what = (f"{first.get('loan_id')} ({str(first.get('borrower_token'))[:10]}…) {first.get('type')} "
                f"{first.get('bucket')} dpd {first.get('dpd')}") if first else "no items"  # fmt: skip
        return f"{value['partner_id']} {value['mode']} at {_local(value.get('as_of'))}, {len(items)} item(s): {what}"
    if topic == names.COLLECTIONS:
        window = value.get("contact_window") or {}
        line = (f"{value['loan_id']} {value['action']} ({value['reason']}) {value['bucket']} dpd {value['dpd']} · "
                f"{money(value.get('total_overdue'), value.get('currency'))}")  # fmt: skip
        if value["action"] != "CLOSE":
            line += f" · contact {window.get('start')}–{window.get('end')} {window.get('timezone')}, ≤{value.get('max_attempts_per_day')}/day"
        return line
    return str(value)


class BucketBook:
    """Loans by bucket from the standing OverdueEvents, as they arrive (retractions applied)."""

    def __init__(self) -> None:
        self.events: dict[
            str, dict[str, tuple[datetime, int, str]]
        ] = {}  # loan -> event id -> (as_of, rank, state)
        self.current: dict[str, str] = {}  # loan -> M1..M7 | WRITTEN_OFF (absent: M0)
        self.counts: Counter[str] = Counter()
        self.latest_open: str | None = None

    def add(self, value: Mapping[str, Any]) -> None:
        kind, loan = value["type"], value["loan_id"]
        if kind == RETRACTED:
            self.events.get(loan, {}).pop(value["retracts"], None)
        elif kind in _TYPE_RANK:
            state = {CURED: "M0", WRITTEN_OFF: "WRITTEN_OFF"}.get(kind, value["bucket"])
            self.events.setdefault(loan, {})[value["event_id"]] = (
                parse_instant(value["as_of"]),
                _TYPE_RANK[kind],
                state,
            )
        else:
            return
        entries = self.events.get(loan) or {}
        new = max(entries.values())[2] if entries else "M0"
        old = self.current.get(loan, "M0")
        if new != old:
            if old != "M0":
                self.counts[old] -= 1
            if new == "M0":
                self.current.pop(loan, None)
            else:
                self.counts[new] += 1
                self.current[loan] = new
        if new.startswith("M") and new != "M0" and kind in (OPENED, CHANGED):
            self.latest_open = loan

    def open_loan(self) -> str | None:
        """A loan that is overdue now (the latest one to open or age, if it still is)."""
        if self.latest_open is not None and self.latest_open in self.current:
            if self.current[self.latest_open] != "WRITTEN_OFF":
                return self.latest_open
        for loan, state in self.current.items():
            if state != "WRITTEN_OFF":
                self.latest_open = loan
                return loan
        return None


class Outputs:
    """Everything read from the output topics, and the live figures derived from it."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.overdue_types: Counter[str] = Counter()
        self.notify_kinds: Counter[str] = Counter()
        self.notify_dropped = 0
        self.overdue: list[dict[str, Any]] = []
        self.book = BucketBook()
        self.latest: dict[str, str] = {}
        self.latest_overdue: set[str] = set()
        self.read = 0
        self.last_read = time.monotonic()

    @property
    def dlq(self) -> int:
        return self.counts[names.DLQ]

    def add(self, topic: str, record: Mapping[str, Any]) -> None:
        self.read += 1
        self.last_read = time.monotonic()
        self.counts[topic] += 1
        value = record.get("value")
        if value is None:  # undecodable (the DLQ always is: original bytes)
            return
        if topic == names.OVERDUE:
            self.overdue.append(value)
            self.overdue_types[value["type"]] += 1
            self.book.add(value)
            return
        if topic == names.NOTIFY:
            self.notify_kinds[value["kind"]] += 1
            self.notify_dropped += value.get("disposition") == "DROPPED"
            # the latest per locale; a reminder only until something about an overdue came
            slot = f"notify {value.get('locale')}"
            if value["kind"] != "REMINDER" or slot not in self.latest_overdue:
                self.latest[slot] = describe(topic, value)
            if value["kind"] != "REMINDER":
                self.latest_overdue.add(slot)
        elif topic in ROUTED:
            self.latest[topic] = describe(topic, value)


async def read_outputs(cfg: Settings, outputs: Outputs, stop: asyncio.Event) -> None:
    """Read every partition of the output topics from the beginning (one consumer, no group)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic_of = {cfg.topic(t): t for t in names.OUTPUT_TOPICS}
    partitions = await kafkaio.topic_partitions(cfg, topic_of)
    consumer = AIOKafkaConsumer(**cfg.kafka_kwargs(), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(physical, p) for physical in topic_of for p in partitions[physical]]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=2000)
            for tp, messages in batch.items():
                logical = topic_of[tp.topic]
                for message in messages:
                    outputs.add(logical, kafkaio.render(logical, message))
            await asyncio.sleep(0)
    finally:
        await consumer.stop()


async def group_lag(
    cfg: Settings, group: str, admin: Any, probe: Any, partitions: dict[str, list[int]]
) -> int:
    """Records the workers' consumer group has not committed yet, over the topics it reads
    (``partitions``: the inputs' partitions, by physical topic)."""
    from aiokafka import TopicPartition

    committed = await admin.list_consumer_group_offsets(group)
    tps = set(committed)
    for physical, numbers in partitions.items():
        tps |= {TopicPartition(physical, p) for p in numbers}
    ends = await probe.end_offsets(sorted(tps))
    return sum(max(0, end - (committed[tp].offset if tp in committed else 0)) for tp, end in ends.items())


class FlowControl:
    """The simulator's throttle: hold the clock while the workers are too far behind.

    Measured from the workers' consumer group (committed offsets, which Faust writes every
    2.8 s): ticks not yet processed on the slowest clock.ticks partition, input records not yet
    processed, and records queued on the routers' internal topics (per borrower, per partner). Without it a slow machine gets
    ticks far ahead of the inputs (the gate then lets them through, causing retractions) and
    an ever longer wait at the end.
    """

    MAX_TICKS_BEHIND = 24  # ~6 s of clock at 0.25 s per step, beyond the commit interval
    MAX_UNREAD = 2_000  # input records not yet processed (a tick must not overtake them)
    MAX_QUEUED = 5_000  # routed events waiting in the internal topics

    def __init__(self, cfg: Settings, view: LiveView) -> None:
        self.cfg = cfg
        self.view = view
        self.admin: Any = None
        self.probe: Any = None
        self.held = 0.0  # seconds the clock was held

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        self.admin = AIOKafkaAdminClient(**self.cfg.kafka_kwargs())
        self.probe = AIOKafkaConsumer(**self.cfg.kafka_kwargs(), enable_auto_commit=False, group_id=None)
        await self.admin.start()
        await self.probe.start()

    async def stop(self) -> None:
        if self.probe is not None:
            await self.probe.stop()
        if self.admin is not None:
            await self.admin.close()

    async def measure(self, ticks_sent: int) -> tuple[int, int, int]:
        """(ticks the slowest tick partition is behind, input records unread, routed events queued)."""
        from aiokafka import TopicPartition

        from ..worker.tables import internal_topics

        committed = await self.admin.list_consumer_group_offsets(self.cfg.app_id)

        def done(tp: TopicPartition) -> int:
            return committed[tp].offset if tp in committed else 0

        def tps(*physical: str) -> list[TopicPartition]:
            return [TopicPartition(t, p) for t in physical for p in range(self.cfg.partitions)]

        ticks = tps(self.cfg.topic(names.TICKS))
        inputs = tps(self.cfg.topic(names.SCHEDULES), self.cfg.topic(names.REPAYMENTS))
        internal = tps(*internal_topics(self.cfg))
        ends = await self.probe.end_offsets(inputs + internal)
        unread = sum(max(0, ends[tp] - done(tp)) for tp in inputs)
        queued = sum(max(0, ends[tp] - done(tp)) for tp in internal)
        return ticks_sent - min(map(done, ticks), default=0), unread, queued

    async def __call__(self, ticks_sent: int) -> None:
        began = time.monotonic()
        phase = None
        while True:
            behind, unread, queued = await self.measure(ticks_sent)
            if behind <= self.MAX_TICKS_BEHIND and unread <= self.MAX_UNREAD and queued <= self.MAX_QUEUED:
                break
            if phase is None:
                phase = self.view.phase
            self.view.phase = (f"clock held for the workers: {behind} ticks behind, {unread:,} input records unread, "
                               f"{queued:,} routed events queued")  # fmt: skip
            await asyncio.sleep(0.25)
        if phase is not None:
            self.view.phase = phase
            self.held += time.monotonic() - began


# --------------------------------------------------------------------------- the replay side


def _replay_job(loans: int, start: date, days: int, seed: int, policy_path: str, result_path: str) -> None:
    """In a child process: replay the same book with the same policy; pickle what the check needs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates us
    with contextlib.suppress(OSError):
        os.nice(10)  # the workers come first
    from ..contracts import codec
    from ..policy_loader import load_policy
    from ..replay import replay

    records = generate(loans, start, days, seed)
    until = end_instant(start, days)
    began = time.monotonic()
    outputs = replay([r.as_line() for r in records], until, policy=load_policy(policy_path))
    result = {
        "overdue": [codec.to_json("OverdueEvent", o.value) for o in outputs if o.topic == names.OVERDUE],
        "routed": Counter(o.topic for o in outputs if o.topic in ROUTED),
        "dlq": sum(o.topic == names.DLQ for o in outputs),
        "seconds": time.monotonic() - began,
    }
    tmp = result_path + ".tmp"
    with open(tmp, "wb") as fh:
        pickle.dump(result, fh)
    os.replace(tmp, result_path)


class ReplayJob:
    """The background replay: started with the stream, awaited for the check."""

    def __init__(self, loans: int, start: date, days: int, seed: int, policy_path: Path, work: Path) -> None:
        self.result_path = work / "replay.pickle"
        ctx = multiprocessing.get_context("spawn")
        self.proc = ctx.Process(
            target=_replay_job,
            args=(loans, start, days, seed, str(policy_path), str(self.result_path)),
            daemon=True,
        )
        self.proc.start()

    async def result(self) -> dict[str, Any]:
        while self.proc.is_alive():
            await asyncio.sleep(0.2)
        self.proc.join()
        if self.proc.exitcode != 0 or not self.result_path.exists():
            raise DemoError(f"the replay process failed (exit code {self.proc.exitcode})")
        with open(self.result_path, "rb") as fh:
            return pickle.load(fh)

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(10)


# --------------------------------------------------------------------------- the view


@dataclass
class LiveView:
    """State of the run that the view shows."""

    loans: int
    days: int
    speed: float
    start: date
    web_ports: list[int]
    outputs: Outputs
    phase: str = "starting"
    progress: Progress | None = None
    produced_total: int = 0
    samples: deque = field(default_factory=lambda: deque(maxlen=64))

    def on_progress(self, p: Progress) -> None:
        self.progress = p
        if p.done:
            self.phase = "final tick sent; waiting for the workers to catch up"
        elif p.history:
            self.phase = (
                "fast-forwarding the clock across the book's history (loans disbursed before the start)"
            )
        else:
            self.phase = f"simulating at up to {self.speed:g} day(s)/s"

    def sample(self) -> tuple[float, float]:
        """Records in/s and out/s over the last ~2 s."""
        now = time.monotonic()
        produced = self.progress.produced if self.progress else 0
        self.samples.append((now, produced, self.outputs.read))
        while len(self.samples) > 2 and now - self.samples[0][0] > 2.0:
            self.samples.popleft()
        t0, p0, r0 = self.samples[0]
        span = now - t0
        if span <= 0.2:
            return 0.0, 0.0
        return (produced - p0) / span, (self.outputs.read - r0) / span

    def simulated(self) -> str:
        if self.progress is None:
            return "-"
        end = end_instant(self.start, self.days)
        at = min(self.progress.simulated, end).astimezone(SHANGHAI)
        day = (at - start_instant(self.start)).total_seconds() / 86400
        if day < 0:
            return f"{at:%Y-%m-%d %H:%M} Asia/Shanghai (history: {-day:.0f} days before the start)"
        return f"{at:%Y-%m-%d %H:%M} Asia/Shanghai (day {day:.1f} of {self.days})"

    def bucket_line(self) -> str:
        o = self.outputs.book
        known = self.progress.loans if self.progress else 0
        overdue = sum(o.counts[b] for b in BUCKETS)
        parts = [f"M0 {max(0, known - overdue - o.counts['WRITTEN_OFF']):,}"]
        parts += [f"{b} {o.counts[b]:,}" for b in BUCKETS]
        parts.append(f"written off {o.counts['WRITTEN_OFF']:,}")
        return "  ".join(parts)

    def urls(self) -> tuple[str, str]:
        base = f"http://127.0.0.1:{self.web_ports[0]}"
        loan = self.outputs.book.open_loan() or "L0000000"
        return f"{base}/metrics", f"{base}/loans/{loan}"

    def render(self) -> Any:
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table

        rate_in, rate_out = self.sample()
        o = self.outputs
        grid = Table.grid(padding=(0, 2), expand=True)
        grid.add_column(style="bold cyan", no_wrap=True, min_width=15)
        grid.add_column(overflow="ellipsis", no_wrap=True, ratio=1)
        p = self.progress
        grid.add_row("simulated", self.simulated())
        grid.add_row("status", self.phase)
        grid.add_row("records in", f"{rate_in:,.0f}/s   ({p.produced if p else 0:,} of {self.produced_total:,} produced, "
                                   f"{p.ticks if p else 0:,} ticks)")  # fmt: skip
        grid.add_row("records out", f"{rate_out:,.0f}/s   ({o.read:,} read: "
                                    + ", ".join(f"{t} {o.counts[t]:,}" for t in names.OUTPUT_TOPICS if o.counts[t]) + ")")  # fmt: skip
        grid.add_row("loans by bucket", self.bucket_line())
        grid.add_row("DLQ", f"{o.dlq:,}")
        for label, key in (("notify zh-CN", "notify zh-CN"), ("notify en", "notify en"), ("bureau", names.BUREAU),
                           ("partner", names.PARTNER), ("collections", names.COLLECTIONS)):  # fmt: skip
            grid.add_row(label, _short(o.latest.get(key, "-"), 160))
        metrics, loan = self.urls()
        grid.add_row("metrics", metrics)
        grid.add_row("a loan", loan)
        title = f"duewatch demo — {self.loans:,} loans, {self.days} days at {self.speed:g} simulated day(s)/s"
        return Group(Panel(grid, title=title, title_align="left"))

    def plain(self) -> str:
        rate_in, rate_out = self.sample()
        o = self.outputs
        loan = o.book.open_loan()
        see = f" | see {self.urls()[1]}" if loan else ""
        return (f"{self.simulated()} | in {rate_in:,.0f}/s out {rate_out:,.0f}/s | read {o.read:,} | "
                f"{self.bucket_line()} | DLQ {o.dlq:,}{see} | {self.phase}")  # fmt: skip


# --------------------------------------------------------------------------- summary


def roll_rates(values: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, int]]:
    """``(label, rolled, ever_in)`` for M1→M2 … M6→M7 over standing events (see the module doc)."""
    ever: dict[str, set[str]] = {b: set() for b in BUCKETS}
    rolled: Counter[str] = Counter()
    for v in values:
        if v["type"] in (OPENED, CHANGED) and v["bucket"] in ever:
            ever[v["bucket"]].add(v["loan_id"])
        if v["type"] == CHANGED and v["previous_bucket"] in ever:
            i = BUCKETS.index(v["previous_bucket"])
            if i + 1 < len(BUCKETS) and v["bucket"] == BUCKETS[i + 1]:
                rolled[v["previous_bucket"]] += 1
    return [(f"{a}→{b}", rolled[a], len(ever[a])) for a, b in zip(BUCKETS, BUCKETS[1:], strict=False)]


def summary_tables(outputs: Outputs, standing_values: Sequence[Mapping[str, Any]], begin: datetime,
                   replay_result: Mapping[str, Any] | None) -> list[Any]:  # fmt: skip
    """The summary as rich renderables."""
    from rich.table import Table

    window = [v for v in standing_values if parse_instant(v["as_of"]) >= begin]
    episodes = Table(title="Overdue episodes (standing events)", title_justify="left")
    episodes.add_column("")
    episodes.add_column("whole book", justify="right")
    episodes.add_column("in the simulated days", justify="right")
    for label, kind in (("opened", OPENED), ("bucket changes", CHANGED), ("cured", CURED), ("written off", WRITTEN_OFF),
                        ("due-soon reminders", "DUE_SOON")):  # fmt: skip
        episodes.add_row(label, f"{sum(v['type'] == kind for v in standing_values):,}",
                         f"{sum(v['type'] == kind for v in window):,}")  # fmt: skip
    episodes.add_row("retractions (stream)", f"{outputs.overdue_types[RETRACTED]:,}", "")

    rolls = Table(title="Roll rates (whole book)", title_justify="left")
    rolls.add_column("roll")
    rolls.add_column("rolled", justify="right")
    rolls.add_column("loans ever in", justify="right")
    rolls.add_column("rate", justify="right")
    for label, rolled, ever in roll_rates(standing_values):
        rolls.add_row(label, f"{rolled:,}", f"{ever:,}", f"{rolled / ever:.1%}" if ever else "-")

    sinks = Table(title="Messages per sink", title_justify="left")
    sinks.add_column("sink")
    sinks.add_column("stream", justify="right")
    sinks.add_column("replay", justify="right")
    replay_routed = replay_result["routed"] if replay_result else Counter()
    sinks.add_row(names.OVERDUE, f"{outputs.counts[names.OVERDUE]:,}", "")
    for topic in ROUTED:
        sinks.add_row(
            topic, f"{outputs.counts[topic]:,}", f"{replay_routed.get(topic, 0):,}" if replay_result else ""
        )
        if topic == names.NOTIFY:
            for kind, n in sorted(outputs.notify_kinds.items()):
                sinks.add_row(f"  {kind}", f"{n:,}", "")
            sinks.add_row("  (of which DROPPED by the daily cap)", f"{outputs.notify_dropped:,}", "")
    sinks.add_row(names.DLQ, f"{outputs.dlq:,}", f"{replay_result['dlq']:,}" if replay_result else "")
    return [episodes, rolls, sinks]


def explain_difference(got: Counter, want: Counter, limit: int = 5) -> list[str]:
    """Where stream and replay differ: loan, type, as_of, and the fields that differ."""
    import json

    missing = [json.loads(k) for k in (want - got).elements()]
    extra = [json.loads(k) for k in (got - want).elements()]
    lines = []
    by_key = {(e["loan_id"], e["type"], e["as_of"]): e for e in extra}
    for m in missing[:limit]:
        twin = by_key.get((m["loan_id"], m["type"], m["as_of"]))
        if twin is not None:
            fields = sorted(k for k in set(m) | set(twin) if m.get(k) != twin.get(k))
            diffs = ", ".join(f"{k}: stream {twin.get(k)!r} vs replay {m.get(k)!r}" for k in fields)
            lines.append(f"  differs: {m['loan_id']} {m['type']} at {m['as_of']}: {diffs}")
        else:
            lines.append(
                f"  missing in the stream: {m['loan_id']} {m['type']} at {m['as_of']} (bucket {m['bucket']}, dpd {m['dpd']})"
            )
    for e in extra[:limit]:
        lines.append(
            f"  unexpected in the stream: {e['loan_id']} {e['type']} at {e['as_of']} (bucket {e['bucket']}, dpd {e['dpd']})"
        )
    return lines


def write_demo_report(standing_values: Sequence[Mapping[str, Any]], records: Sequence[Any], until: datetime,
                      stamp: str) -> Path:  # fmt: skip
    """The risk report (SPEC §7.4) of the run, from the stream's standing events and the book's schedules.

    Written to ``$DUEWATCH_DEMO_REPORT_DIR`` (default ``reports/`` under the working directory),
    which outlives the demo's temporary directory; returns its absolute path.
    """
    from ..risk.figures import compute
    from ..risk.report import schedules_of, write_report

    directory = Path(os.environ.get(REPORT_DIR_ENV) or "reports")
    figures = compute(standing_values, schedules_of(r.as_line() for r in records), until)
    try:
        return write_report(figures, directory / f"demo-{stamp}.html", title="duewatch demo — risk report")
    except OSError as exc:
        raise DemoError(f"cannot write the risk report in {directory}: {exc}") from None


# --------------------------------------------------------------------------- the run


async def create_demo_topics(cfg: Settings, timeout: float = 60.0) -> list[str]:
    """Every topic the workers use, created before they start, and visible in the metadata.

    Besides SPEC §1's topics and the routers' repartition topics this creates the tables'
    changelog topics (compacted, as Faust would). A worker that creates them itself on its
    first start often has them missing from its metadata for the next 5 minutes (Faust:
    "Topic …-notifications-changelog not found in cluster metadata"; the routers' writes to
    those tables then fail with PartitionsMismatch and their records go to the DLQ).
    """
    from aiokafka import AIOKafkaClient

    from ..worker.tables import changelog_topics, internal_topics

    changelogs = changelog_topics(cfg)
    await kafkaio.create_topics(cfg, physical=internal_topics(cfg), compacted=changelogs)
    wanted = {cfg.topic(t) for t in names.ALL_TOPICS} | set(internal_topics(cfg)) | set(changelogs)
    client = AIOKafkaClient(**cfg.kafka_kwargs())
    await client.bootstrap()
    try:
        deadline = time.monotonic() + timeout
        while True:
            await client.force_metadata_update()
            missing = [
                t for t in wanted if len(client.cluster.partitions_for_topic(t) or ()) != cfg.partitions
            ]
            if not missing:
                return sorted(wanted)
            if time.monotonic() > deadline:
                raise DemoError(
                    f"topics not in the metadata after {timeout:.0f} s: {', '.join(sorted(missing))}"
                )
            await asyncio.sleep(0.2)
    finally:
        await client.close()


def demo_policy(work: Path) -> Path:
    """deploy/policy.sample.toml with the book's partners configured, written to ``work``."""
    path = work / "policy.toml"
    path.write_text(SAMPLE_POLICY.read_text(encoding="utf-8") + DEMO_PARTNERS, encoding="utf-8")
    return path


async def _delete_topics(cfg: Settings) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**cfg.kafka_kwargs())
    await admin.start()
    try:
        mine = [
            t
            for t in await admin.list_topics()
            if t.startswith(cfg.topic_prefix) or t.startswith(cfg.app_id + "-")
        ]
        if mine:
            await admin.delete_topics(mine)
        return len(mine)
    finally:
        await admin.close()


def start_workers(
    cfg: Settings, bootstrap: str, ports: list[int], work: Path, policy_path: Path
) -> list[WorkerProcess]:
    """The demo's `duewatch worker` processes, one per web port."""
    workers = []
    for i, port in enumerate(ports):
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "DUEWATCH_TOPIC_PREFIX": cfg.topic_prefix,
            "DUEWATCH_APP_ID": cfg.app_id,
            "DUEWATCH_PARTITIONS": str(cfg.partitions),
            "DUEWATCH_TICKER_ENABLED": "false",
            "DUEWATCH_MAX_TICK_AHEAD": "0",  # a simulated clock may run ahead of the wall clock
            "DUEWATCH_STATE_DIR": str(work / f"state-w{i + 1}"),
            "DUEWATCH_WEB_PORT": str(port),
            "DUEWATCH_WEB_BIND": "127.0.0.1",
            "DUEWATCH_WEB_HOST": "127.0.0.1",
            "DUEWATCH_POLICY_FILE": str(policy_path),
            "DUEWATCH_LOG_LEVEL": "info",
        }
        workers.append(
            WorkerProcess(f"w{i + 1}", duewatch_command("worker"), env, work / f"worker-{i + 1}.log")
        )
    return workers


async def shown(console: Any, view: LiveView, play: Any) -> bool:
    """Run ``play`` under the live view (a terminal) or with a plain line every few seconds."""
    if console.is_terminal:
        from rich.live import Live as RichLive

        with RichLive(get_renderable=view.render, console=console, refresh_per_second=4, transient=False):
            return bool(await play())

    async def plain() -> None:
        while True:
            await asyncio.sleep(PLAIN_EVERY)
            print(view.plain(), flush=True)

    printer = asyncio.create_task(plain())
    try:
        return bool(await play())
    finally:
        printer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await printer
        print(view.plain(), flush=True)


async def _run(
    bootstrap: str, loans: int, days: int, speed: float, seed: int, start: date, work: Path
) -> int:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 120), soft_wrap=True)
    stamp = f"{datetime.now():%Y%m%d%H%M%S}-{os.urandom(2).hex()}"
    base = from_env()
    partitions = base.partitions if os.environ.get("DUEWATCH_PARTITIONS") else DEMO_PARTITIONS
    cfg = replace(base, bootstrap_servers=bootstrap, topic_prefix=f"demo-{stamp}.", app_id=f"duewatch-demo-{stamp}",
                  ticker_enabled=False, partitions=partitions)  # fmt: skip
    policy_path = demo_policy(work)
    ports = web_ports()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)

    workers: list[WorkerProcess] = []
    replay_job: ReplayJob | None = None
    stop_reading = asyncio.Event()
    reader: asyncio.Task | None = None
    ok = False
    try:
        await create_demo_topics(cfg)
        say(
            f"topics created with prefix {cfg.topic_prefix} ({cfg.partitions} partitions); policy {policy_path}"
        )
        began = time.monotonic()
        workers += start_workers(cfg, bootstrap, ports, work, policy_path)
        say(f"starting {len(workers)} workers (web ports {', '.join(map(str, ports))}; logs in {work}) ...")
        records = generate(loans, start, days, seed)
        replay_job = ReplayJob(loans, start, days, seed, policy_path, work)
        await wait_ready(workers)
        say(f"workers ready ({time.monotonic() - began:.1f} s); simulating {days} days of a {loans:,}-loan book "
            f"({len(records):,} records) at {speed:g} day(s)/s")  # fmt: skip

        say(f"while it runs: http://127.0.0.1:{ports[0]}/metrics and http://127.0.0.1:{ports[0]}/loans/<loan id> "
            f"(either worker's port answers for any loan)")  # fmt: skip
        outputs = Outputs()
        view = LiveView(loans, days, speed, start, ports, outputs, produced_total=len(records))
        reader = asyncio.create_task(read_outputs(cfg, outputs, stop_reading))
        sim_began = time.monotonic()
        sim_seconds = 0.0
        final_tick_at = 0.0

        flow = FlowControl(cfg, view)

        async def play_and_settle() -> bool:
            nonlocal sim_seconds, final_tick_at
            await flow.start()
            try:
                await simulate(cfg, loans, days, speed, seed, start, on_progress=view.on_progress, records=records,
                               throttle=flow)  # fmt: skip
            finally:
                await flow.stop()
            sim_seconds = time.monotonic() - sim_began
            final_tick_at = time.monotonic()
            assert reader is not None
            return await wait_caught_up(cfg, outputs, view, reader)

        caught_up = await shown(console, view, play_and_settle)
        settled_after = time.monotonic() - final_tick_at
        stop_reading.set()
        await reader
        reader = None
        if not caught_up:
            say(f"the workers did not catch up within {CATCH_UP_TIMEOUT:.0f} s; comparing what there is")

        # summary
        say("waiting for the replay of the same records ...")
        replay_result = await replay_job.result()
        until = end_instant(start, days)
        standing_values = standing(outputs.overdue)
        standing_values = [v for v in standing_values if parse_instant(v["as_of"]) <= until]
        console.print()
        for table in summary_tables(outputs, standing_values, start_instant(start), replay_result):
            console.print(table)
        opened = sum(v["type"] == OPENED for v in standing_values)
        cured = sum(v["type"] == CURED for v in standing_values)
        written = sum(v["type"] == WRITTEN_OFF for v in standing_values)
        metrics_url, loan_url = view.urls()
        console.print(f"episodes: opened {opened:,} · cured {cured:,} · written off {written:,}")
        console.print(f"DLQ: {outputs.dlq:,}")
        console.print(
            f"timing: history and {days} days simulated in {sim_seconds:.1f} s of wall time (the clock was held "
            f"{flow.held:.1f} s for the workers); outputs settled "
            f"{settled_after:.1f} s after the final tick; {outputs.read:,} output records read; "
            f"replay took {replay_result['seconds']:.1f} s (in the background)"
        )
        console.print(f"while the workers ran: {metrics_url}  {loan_url}")
        report = write_demo_report(standing_values, records, until, stamp)
        console.print(f"risk report: {report}", markup=False, highlight=False, soft_wrap=True)
        got, want = compare(outputs.overdue, replay_result["overdue"], until)
        total = sum(want.values())
        if got == want:
            ok = True
            console.print(f"stream vs replay: equal ({total:,} events)", markup=False, highlight=False)
        else:
            missing, extra = sum((want - got).values()), sum((got - want).values())
            console.print(f"stream vs replay: NOT equal ({missing:,} missing, {extra:,} unexpected of {total:,})",
                          markup=False, highlight=False)  # fmt: skip
            for line in explain_difference(got, want):
                console.print(line, markup=False, highlight=False)
        return 0 if ok else 1
    finally:
        stop_reading.set()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        if replay_job is not None:
            replay_job.stop()
        if workers:
            say(f"stopping {len(workers)} workers (SIGTERM) ...")
        for w in workers:
            code = w.stop()
            if code not in (0, -signal.SIGTERM):
                say(f"worker {w.name} exited with {code}; log: {w.log_file}")
        with contextlib.suppress(Exception):
            deleted = await asyncio.wait_for(_delete_topics(cfg), 60)
            say(f"deleted the demo's {deleted} topics")


async def wait_caught_up(cfg: Settings, outputs: Outputs, view: LiveView, reader: asyncio.Task) -> bool:
    """After the final tick: until the workers' group has no lag and the outputs were quiet for QUIET s."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**cfg.kafka_kwargs())
    probe = AIOKafkaConsumer(**cfg.kafka_kwargs(), enable_auto_commit=False, group_id=None)
    await admin.start()
    await probe.start()
    try:
        inputs = await kafkaio.topic_partitions(
            cfg, [cfg.topic(t) for t in (names.SCHEDULES, names.REPAYMENTS, names.TICKS)]
        )
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        while time.monotonic() < deadline:
            if reader.done():
                reader.result()  # raises what stopped the reader
                raise DemoError("the output reader stopped")
            lag = await group_lag(cfg, cfg.app_id, admin, probe, inputs)
            quiet = time.monotonic() - outputs.last_read
            view.phase = (
                f"final tick sent; waiting for the workers to catch up (lag {lag:,}, quiet {quiet:.0f} s)"
            )
            if lag == 0 and quiet >= QUIET:
                view.phase = "done"
                return True
            await asyncio.sleep(0.5)
        return False
    finally:
        await probe.stop()
        await admin.close()


def run_demo(loans: int = 10_000, days: int = 90, speed: float = 1.0, seed: int = 7,
             start: date = date(2026, 3, 1)) -> int:  # fmt: skip
    """The whole demo (see the module doc); 0 only if the stream equals the replay."""
    if speed <= 0 or days < 1 or loans < 1:
        raise ValueError("--loans and --days must be ≥ 1 and --speed > 0")
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="duewatch-demo-"))
    broker: BrokerHandle | None = None
    code = 1
    interrupted = False
    try:
        broker = obtain_broker()
        code = asyncio.run(_run(broker.bootstrap, loans, days, speed, seed, start, work))
    except KeyboardInterrupt:
        say("interrupted; shut down")
        interrupted = True
    except asyncio.CancelledError:
        say("terminated; shut down")
        interrupted = True
    except (DemoError, devkafka.DevKafkaError) as exc:
        say(f"error: {exc}")
        code = 1
    finally:
        if broker is not None:
            broker.stop()
        if code == 0 or interrupted:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"worker logs kept in {work}")
        say(f"{'passed' if code == 0 else 'FAILED'} in {time.monotonic() - began:.0f} s "
            f"(exit status {code}) at {datetime.now(UTC).astimezone():%H:%M:%S}")  # fmt: skip
    return code


__all__ = ["run_demo", "roll_rates", "BucketBook", "Outputs"]
