"""Failover benchmark (issue 18): how soon a crashed worker's partitions detect again.

``python -m streams.dev.bench failover [--seed N] [--keep] [--no-write]`` (``make bench`` runs it
last). It is the chaos run (``streams.dev.chaos.run``) reduced to what is timed: one broker
(``KAFKA_BOOTSTRAP_SERVERS``, or one started on free ports like the e2e benchmark's), two
`duewatch worker` processes with the failover defaults (``DUEWATCH_SESSION_TIMEOUT`` 10 s,
``DUEWATCH_HEARTBEAT_INTERVAL`` 1 s, a static member id each), the chaos run's random book
played one simulated day per second, and two SIGKILLs of a worker:

1. **takeover**: the worker stays down past the session timeout; measured from the SIGKILL
   until the other worker has emitted an event on every partition the victim held;
2. **restart**: a worker is started again 2 s after its SIGKILL, over its state and with its
   member id (it takes its partitions back without a rebalance); measured from its start until
   it has emitted an event on every partition it holds (the time from the SIGKILL is given too).

Both are judged against issue 18's target: a crashed worker's partitions detect again within
15 s. Each figure includes up to about a second of waiting for the next event on a partition
(ticks come every 0.5 s, and something is due on every partition most simulated hours). The
outputs are checked against replay as in `make chaos`: figures of a run that lost or changed
records would mean nothing, so such a run says FAILED and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from .. import broker as devkafka
from .. import chaos

SECTION = "Failover (one broker, two workers): streams.dev.bench.failover"
TARGET_S = 15.0
KILL_AT = 10.0  # seconds after the clock started: the workers have settled after the history


def config(seed: int) -> chaos.Config:
    """The run: a book big enough that every partition has events every simulated hour or so,
    played long enough for both kills and their recoveries."""
    return replace(chaos.Config(), loans=800, days=100, workers=2, seed=seed, deadline=420.0)


def actions(cfg: chaos.Config) -> list[chaos.Action]:
    """The takeover kill, then (once the victim is back and the group has settled) the restart kill."""
    away = cfg.session_timeout + 8
    return [
        chaos.Action(KILL_AT, chaos.KILL, back=away),
        chaos.Action(KILL_AT + away + 25, chaos.KILL, back=2.0),
    ]


def verdict(seconds: float | None) -> str:
    """PASS within the target; a figure the run could not measure shows nothing met: MISS too."""
    return "PASS" if seconds is not None and seconds <= TARGET_S else "**MISS**"


def _show(seconds: float | None) -> str:
    return "not seen" if seconds is None else f"{seconds:.1f} s"


def _figure(values: Sequence[float]) -> float | None:
    return max(values) if values else None


def report(result: chaos.Result) -> str:
    """The BENCHMARKS.md section body."""
    f = result.figures
    takeover, restart = _figure(f.takeovers), _figure(f.restarts)
    restart_kills = [h for h in result.happened if h.kind == chaos.KILL and not h.skipped and h.back <= 5]
    from_kill = restart + restart_kills[0].back if restart is not None and restart_kills else None
    state = (
        "equal to replay's, nothing lost" if result.passed else "**FAILED**: the outputs differ from replay's"
    )
    gap = max((d.seconds for d in f.delays if d.due >= f.started), default=None)
    lines = [
        f"Seed {result.config.seed}: {result.config.loans:,} loans ({result.sends:,} records), "
        f"{result.config.days} simulated days at one a second; one broker, 2 workers, "
        f"{result.config.partitions} partitions; DUEWATCH_SESSION_TIMEOUT {result.config.session_timeout:g} s, "
        f"DUEWATCH_HEARTBEAT_INTERVAL 1 s, static group membership.",
        "",
        "| measure | result | target | |",
        "|---|---|---|---|",
        f"| takeover: SIGKILL → the other worker has emitted on every partition of the victim | {_show(takeover)} "
        f"| ≤ {TARGET_S:.0f} s | {verdict(takeover)} |",
        f"| restart: start → the restarted worker has emitted on every partition of its own "
        f"(from the SIGKILL: {_show(from_kill)}) | {_show(restart)} | ≤ {TARGET_S:.0f} s | {verdict(restart)} |",
        f"| longest detection gap of the run (an event's wait beyond its inputs and tick) | {_show(gap)} | | |",
        f"| outputs of the five topics after retractions | {state} | | |",
        "",
        "What happened (seconds after the clock started):",
        "",
        *(f"- +{when:.0f} s: {what}: {figure}" for when, what, figure in f.rows),
    ]  # fmt: skip
    lines += [f"- PROBLEM: {p}" for p in f.problems]
    lines += [
        "",
        f"Rebalances while the clock ran: {result.rebalances} (consumer group generations). The "
        "takeover is bounded by the session timeout (the group notices the dead member only when "
        "its session expires), then a rebalance and the survivor's recovery of the victim's "
        "tables from the standby replicas; the restart needs no rebalance, only the worker's own "
        "start and the recovery of its tables from its state directory.",
    ]
    return "\n".join(lines) + "\n"


async def _run(cfg: chaos.Config, work: Path) -> chaos.Result:
    """On ``KAFKA_BOOTSTRAP_SERVERS``, or on a broker of its own (whose log gives the rebalances' reasons)."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        return await chaos.run(cfg, work, external, actions(cfg))
    port, controller_port = devkafka.free_ports(2)
    broker = devkafka.Broker(work / "kafka", port, controller_port)
    await asyncio.to_thread(broker.up, 90.0, True)
    try:
        return await chaos.run(cfg, work, broker.bootstrap, actions(cfg), broker_logs=[broker.server_log])
    finally:
        await asyncio.to_thread(broker.down, 30.0)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m streams.dev.bench failover", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seed", type=int, default=18, help="book and kills (default 18)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work dir (worker and broker logs, state)"
    )
    parser.add_argument("--no-write", action="store_true", help="print the report, leave BENCHMARKS.md alone")
    return parser.parse_args(list(argv))


def main(write_section: Callable[[str, str], None], argv: Sequence[str] | None = None) -> int:
    """Run, print, write the BENCHMARKS.md section; ``argv`` defaults to what follows ``failover``."""
    if argv is None:
        argv = sys.argv[sys.argv.index("failover") + 1 :] if "failover" in sys.argv else []
    args = parse_args(argv)
    cfg = config(args.seed)
    devkafka.ensure_jars()
    work = Path(tempfile.mkdtemp(prefix="duewatch-bench-failover-"))
    chaos.say(f"failover: seed {cfg.seed}; work directory {work}")
    try:
        result = asyncio.run(asyncio.wait_for(_run(cfg, work), cfg.deadline))
    except TimeoutError:
        chaos.say(f"failover: FAILED, the run took more than {cfg.deadline:.0f} s; logs in {work}")
        return 1
    body = report(result)
    print(body)
    if not args.no_write:
        write_section(SECTION, body)
    if result.passed and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        chaos.say(f"failover: logs and state kept in {work}")
    return 0 if result.passed else 1
