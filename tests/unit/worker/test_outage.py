"""A worker without its broker, the parts that need no broker (SPEC §6): when it says it is not
ready, which failed sends are an outage rather than a refusal, the stop deadline, and the
damping of the Kafka client's repeated log lines."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
    RecordTooLargeError,
    UnknownTopicOrPartitionError,
)
from prometheus_client import CollectorRegistry

from streams.logs import RepeatFilter
from streams.worker.checkpoint import outage
from streams.worker.metrics import Metrics
from streams.worker.outage import UNREACHABLE_AFTER, BrokerWatch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_not_ready_once_no_broker_answered_for_the_interval_and_ready_at_the_first_answer() -> None:
    registry = CollectorRegistry()
    ctx = SimpleNamespace(ready=True, broker_reachable=True, metrics=Metrics(registry), serving=True)
    clock, up = Clock(), [True]

    async def probe() -> None:
        if not up[0]:
            raise KafkaConnectionError("Unable to bootstrap")

    watch = BrokerWatch(ctx, probe, clock)  # type: ignore[arg-type]

    def ready() -> float | None:
        return registry.get_sample_value("duewatch_ready")

    await watch.check()
    assert ctx.broker_reachable
    up[0] = False
    clock.now += UNREACHABLE_AFTER  # silent for exactly the interval: still reachable
    await watch.check()
    assert ctx.broker_reachable
    clock.now += 1
    ctx.serving = False  # what Context.serving says once broker_reachable is False
    await watch.check()
    assert not ctx.broker_reachable and ready() == 0
    up[0] = True
    clock.now += 600
    ctx.serving = True
    await watch.check()
    assert ctx.broker_reachable and ready() == 1


async def test_a_probe_that_never_answers_counts_as_no_answer() -> None:
    ctx = SimpleNamespace(
        ready=True, broker_reachable=True, metrics=Metrics(CollectorRegistry()), serving=False
    )
    clock = Clock()

    async def silent() -> None:
        await asyncio.sleep(3600)

    watch = BrokerWatch(ctx, silent, clock, timeout=0.05)  # type: ignore[arg-type]
    clock.now += UNREACHABLE_AFTER + 1
    began = time.monotonic()
    await watch.check()
    assert time.monotonic() - began < 5
    assert not ctx.broker_reachable


@pytest.mark.parametrize(
    "error",
    [
        KafkaTimeoutError(),
        KafkaConnectionError("closed"),
        NotLeaderForPartitionError(),
        NotEnoughReplicasError(),
    ],
)
def test_an_unreachable_or_busy_broker_is_an_outage(error: Exception) -> None:
    assert outage(error)


@pytest.mark.parametrize("error", [RecordTooLargeError(), ValueError("a bug"), KeyError("x")])
def test_a_refused_record_or_a_bug_is_not_an_outage(error: Exception) -> None:
    assert not outage(error)


def test_unknown_topic_is_retried_as_kafka_says() -> None:
    # Kafka calls it retriable (metadata may lag a topic's creation): the batch waits, it is not
    # dead-lettered; a deleted topic is an operator's error that /ready and the log show.
    assert outage(UnknownTopicOrPartitionError())


def test_a_stop_that_hangs_ends_at_the_deadline() -> None:
    code = "import time; from streams.worker.outage import arm_deadline; arm_deadline(0.5); time.sleep(30)"
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert done.returncode == 1
    assert time.monotonic() - began < 15


def test_the_same_kind_of_line_passes_once_per_interval_with_the_count_held_back() -> None:
    clock = Clock()
    repeat = RepeatFilter(30.0, clock)

    def line(msg: str, *args: object, name: str = "aiokafka.conn") -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)

    first = line("Unable connect to node with id %s: %s", 1, "refused")
    assert repeat.filter(first)
    assert not any(repeat.filter(line("Unable connect to node with id %s: %s", 1, n)) for n in range(50))
    assert repeat.filter(line("Unable to update metadata from %s", [1]))  # another kind
    assert repeat.filter(line("Unable connect to node with id %s: %s", 1, "x", name="aiokafka.client"))
    clock.now += 30
    later = line("Unable connect to node with id %s: %s", 1, "refused")
    assert repeat.filter(later)
    assert (
        later.getMessage() == "Unable connect to node with id 1: refused [50 more like this in the last 30 s]"
    )
