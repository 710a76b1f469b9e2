"""duewatch on a replicated cluster (issue 18): a broker SIGKILLed mid-run loses no overdue event.

Three combined broker+controller nodes (streams.dev.broker.Cluster: a quorum of 3, every topic
replicated 3 times, ``min.insync.replicas`` 2). The worker writes with acks=all and idempotence
(streams.worker.faust_internals.IdempotentProducer), so an acknowledged record is on 2 replicas at least. The node that
coordinates the worker's consumer group is killed while ticks are flowing and restarted after
the rest of the clock was sent; the standing overdue events must equal replay's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streams.contracts import topics as names
from streams.dev import broker as devkafka
from streams.dev.compare import comparable
from tests.integration.harness import (
    SETTLE,
    DuewatchCluster,
    book_lines,
    replayed,
    run_until_equal,
    ticks_between,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devkafka.Cluster]:
    cluster = devkafka.Cluster(tmp_path_factory.mktemp("kafka-3nodes"), nodes=3)
    cluster.up(timeout=180, die_with_parent=True)
    try:
        yield cluster
    finally:
        cluster.down(timeout=30)


async def partitions_of(c: DuewatchCluster, topics: list[str]) -> dict[str, list[dict]]:
    admin = AIOKafkaAdminClient(**c.cfg.kafka_kwargs())
    await admin.start()
    try:
        return {d["topic"]: d["partitions"] for d in await admin.describe_topics(topics)}
    finally:
        await admin.close()


async def coordinator_of(c: DuewatchCluster) -> int:
    admin = AIOKafkaAdminClient(**c.cfg.kafka_kwargs())
    await admin.start()
    try:
        return await admin.find_coordinator(c.env["DUEWATCH_APP_ID"])
    finally:
        await admin.close()


async def fully_replicated(c: DuewatchCluster, topics: list[str], timeout: float = 60.0) -> bool:
    """Wait until every partition of ``topics`` has its 3 replicas in sync again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = await partitions_of(c, topics)
        if all(len(p["isr"]) == 3 for parts in described.values() for p in parts):
            return True
        await asyncio.sleep(1)
    return False


async def test_a_broker_killed_mid_run_loses_no_overdue_event(
    three_nodes: devkafka.Cluster, tmp_path: Path
) -> None:
    lines, start, until = book_lines(200, 60, seed=31)
    expected = replayed(lines, until)
    c = DuewatchCluster(three_nodes.bootstrap, tmp_path, partitions=3, DUEWATCH_REPLICATION="3")
    try:
        await c.create_topics()
        worker = c.start_worker()
        await c.produce(lines)
        await worker.ready(timeout=120)
        # the topics duewatch and Faust created are replicated to all three nodes
        changelog = f"{c.env['DUEWATCH_APP_ID']}-loans-changelog"
        described = await partitions_of(
            c, [c.cfg.topic(names.OVERDUE), c.cfg.topic(names.SCHEDULES), changelog]
        )
        assert all(len(p["replicas"]) == 3 for parts in described.values() for p in parts), described

        ticks = ticks_between(start, until, timedelta(days=1))
        reader = c.reader()
        for t in ticks[: len(ticks) // 2]:
            await c.tick(t)
        await reader.until(lambda rs: len(rs) > 100, timeout=90)
        victim = await coordinator_of(c)  # the hardest node to lose: the group's coordinator
        three_nodes.kill(victim)
        for t in ticks[len(ticks) // 2 :]:
            await c.tick(t)  # acks=all with 2 of 3 replicas in sync: the writes go on
        await c.tick(until + SETTLE)
        three_nodes.restart(victim)
        got, want = await run_until_equal(c, expected, until, timeout=240)
        assert got == want
        assert worker.running, worker.tail()
        contents: dict[str, set[str]] = {}
        for r in reader.records:
            contents.setdefault(r["value"]["event_id"], set()).add(comparable(r["value"]))
        assert all(len(v) == 1 for v in contents.values()), "a repeated event_id must carry the same event"
        assert await fully_replicated(c, [c.cfg.topic(names.OVERDUE), changelog]), (
            "the restarted node caught up"
        )
    finally:
        await c.close()
