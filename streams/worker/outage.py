"""A worker without its broker (SPEC §6): it stays up, says it is not ready, carries on when the
broker returns, and stops within 20 s of SIGTERM whatever the broker does.

- **Readiness** (:class:`BrokerWatch`): every ``PROBE_EVERY`` seconds the worker asks the cluster
  for its metadata (one small request, bounded by ``PROBE_EVERY`` seconds); once no broker has
  answered for ``UNREACHABLE_AFTER`` seconds, ``/ready`` answers 503 and ``duewatch_ready`` is 0,
  so within 20 s of losing the broker. The first answer makes it ready again (unless a rebalance
  that the broker's return brings is still recovering). Nothing else changes: aiokafka retries
  its connections by itself, the agents wait for the acknowledgements they need, and the
  checkpoint sends a batch again rather than dead-letter it (``checkpoint.outage``).
- **Stopping** (:class:`Worker`): Faust's shutdown commits offsets, leaves the group and flushes
  the producer, and with no broker each of those waits for an answer that never comes (it was
  still waiting after a minute). Once a stop begins, a timer thread ends the process after
  ``STOP_DEADLINE`` seconds. Nothing is lost by that: what was not committed is processed again
  by the next owner, as after a SIGKILL, and RocksDB recovers from its write-ahead log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from .agents import Context

log = logging.getLogger("duewatch")

#: Seconds between two questions to the broker, and the longest one may take.
PROBE_EVERY = 5.0
#: Seconds without an answer from any broker after which the worker reports not ready.
UNREACHABLE_AFTER = 15.0
#: Seconds a stop may take before the process ends anyway (SPEC §6: within 20 s of SIGTERM).
STOP_DEADLINE = 15.0


class BrokerWatch:
    """Whether a broker answered lately; see the module docstring."""

    def __init__(
        self,
        ctx: Context,
        probe: Callable[[], Awaitable[Any]],
        clock: Callable[[], float] = time.monotonic,
        unreachable_after: float = UNREACHABLE_AFTER,
        timeout: float = PROBE_EVERY,
    ) -> None:
        """``probe``: a request any broker of the cluster answers (it raises when none does)."""
        self.ctx = ctx
        self.probe = probe
        self.clock = clock
        self.unreachable_after = unreachable_after
        self.timeout = timeout
        self.answered_at = clock()
        self._started = False

    async def start(self) -> None:
        """Start asking, once (a table's recovery callback: Faust starts its timers only when
        its startup has finished, which can be after the first recovery, and an outage then
        would go unnoticed)."""
        if not self._started:
            self._started = True
            self.ctx.app.add_future(self.run())

    async def run(self) -> None:
        """Ask every ``PROBE_EVERY`` seconds until the worker stops."""
        while True:
            await asyncio.sleep(PROBE_EVERY)
            await self.check()

    async def check(self) -> None:
        """Ask once; update ``ctx.broker_reachable`` and ``duewatch_ready``."""
        try:
            await asyncio.wait_for(self.probe(), self.timeout)
            self.answered_at = self.clock()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - any failure is "no answer"; aiokafka logs the cause
            pass
        silent = self.clock() - self.answered_at
        reachable = silent <= self.unreachable_after
        ctx = self.ctx
        if reachable != ctx.broker_reachable:
            if reachable:
                log.info("the Kafka broker answers again: ready once the partitions are recovered")
            else:
                log.warning("no answer from the Kafka broker for %.0f s: not ready (/ready answers 503); "
                            "retrying, nothing is dead-lettered meanwhile", silent)  # fmt: skip
        ctx.broker_reachable = reachable
        ctx.metrics.ready.set(1 if ctx.serving else 0)


class Worker(faust.Worker):
    """Faust's worker, whose stop ends the process after ``STOP_DEADLINE`` seconds at the latest."""

    stop_deadline: float = STOP_DEADLINE

    async def on_stop(self) -> None:
        """A stop began (SIGTERM, SIGINT, a crash): arm the deadline, then stop as Faust does."""
        arm_deadline(self.stop_deadline)
        await super().on_stop()


def arm_deadline(seconds: float) -> threading.Timer:
    """End the process in ``seconds`` unless it ended first (a daemon thread: the event loop
    may be stuck waiting for the broker)."""

    def expire() -> None:
        log.warning("stopping took longer than %.0f s (is the broker unreachable?): exiting now; "
                    "what was not committed is processed again", seconds)  # fmt: skip
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer
