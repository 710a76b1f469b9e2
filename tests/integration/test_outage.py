"""A worker that loses its broker (SPEC §6, issue 16): it stays up, reports not ready, carries on
by itself when the broker returns, dead-letters nothing for the outage, and stops within 20 s
of SIGTERM while the broker is away.

These tests stop and start a broker of their own (``streams.dev.broker.Broker`` on free ports),
not the session's.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from streams.contracts import topics as names
from streams.dev import broker as devkafka
from streams.worker.outage import PROBE_EVERY, STOP_DEADLINE, UNREACHABLE_AFTER
from tests.integration import harness

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devkafka.Broker]:
    port, controller_port = devkafka.free_ports(2)
    broker = devkafka.Broker(tmp_path_factory.mktemp("kafka-outage"), port, controller_port)
    broker.up(timeout=90, die_with_parent=True)
    try:
        yield broker
    finally:
        broker.down(timeout=30)


async def ready_status(worker: harness.Worker) -> int | None:
    try:
        return (await worker.get("/ready"))[0]
    except OSError:
        return None


async def until_status(worker: harness.Worker, status: int, timeout: float) -> float:
    """Seconds until ``/ready`` answers ``status``; fails if the worker exits or it takes longer."""
    began = time.monotonic()
    while await ready_status(worker) != status:
        assert worker.running, f"the worker exited:\n{worker.tail()}"
        assert time.monotonic() - began < timeout, (
            f"/ready not {status} within {timeout:g} s:\n{worker.tail()}"
        )
        await asyncio.sleep(0.5)
    return time.monotonic() - began


async def test_without_its_broker_a_worker_is_not_ready_then_carries_on_as_replay_says(
    own_broker: devkafka.Broker, tmp_path: Path
) -> None:
    lines, start, until = harness.book_lines(120, 40, seed=31)
    expected = harness.replayed(lines, until)
    c = harness.DuewatchCluster(own_broker.bootstrap, tmp_path, partitions=3)
    await c.create_topics()
    try:
        worker = c.start_worker()
        first = [x for x in lines if x["topic"] == names.SCHEDULES]
        await c.produce(first)
        await worker.ready()
        ticks = harness.ticks_between(start, until, timedelta(days=2))
        for t in ticks[: len(ticks) // 2]:
            await c.tick(t)

        own_broker.down(timeout=30)
        await until_status(worker, 503, UNREACHABLE_AFTER + 3 * PROBE_EVERY)
        # not at the first failed request: after the documented interval without an answer
        silent = re.search(r"no answer from the Kafka broker for (\d+) s", worker.output())
        assert silent and int(silent.group(1)) > UNREACHABLE_AFTER, worker.tail()
        await asyncio.sleep(2 * PROBE_EVERY)
        assert worker.running and await ready_status(worker) == 503

        own_broker.up(timeout=90, die_with_parent=True)
        await until_status(worker, 200, 120)  # by itself: nobody restarts it
        await c.produce([x for x in lines if x["topic"] == names.REPAYMENTS])
        for t in ticks[len(ticks) // 2 :]:
            await c.tick(t)
        await c.tick(until + harness.SETTLE)
        got, want = await harness.run_until_equal(c, expected, until)
        assert got == want
        assert not await c.reader(names.DLQ).settle(quiet=2.0), "nothing is dead-lettered for an outage"
        log = worker.output()
        assert "no answer from the Kafka broker" in log and "the Kafka broker answers again" in log
        # aiokafka's own complaints are held to one line per kind every 30 s
        assert log.count("Unable connect to node") < 20
    finally:
        own_broker.up(timeout=90, die_with_parent=True)  # whatever failed, the next test has its broker
        await c.close()


async def test_sigterm_stops_a_worker_within_20_s_while_its_broker_is_away(
    own_broker: devkafka.Broker, tmp_path: Path
) -> None:
    c = harness.DuewatchCluster(own_broker.bootstrap, tmp_path, partitions=3)
    await c.create_topics()
    worker = c.start_worker()
    try:
        await worker.ready()
        own_broker.down(timeout=30)
        await until_status(worker, 503, UNREACHABLE_AFTER + 3 * PROBE_EVERY)
        began = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        try:
            worker.proc.wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 20 s after SIGTERM:\n{worker.tail()}")
        assert time.monotonic() - began <= STOP_DEADLINE + 3
        assert "stopping took longer than" in worker.output()
    finally:
        worker.stop()
        own_broker.up(timeout=90, die_with_parent=True)
        await c.close()
