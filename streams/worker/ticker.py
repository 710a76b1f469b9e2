"""The clock (DESIGN.md "Time enters only as ticks"): on the group's leader, one Tick with the
current time to every partition of clock.ticks every ``DUEWATCH_TICK_INTERVAL`` seconds.

Each tick starts a trace of its own (SPEC §1): its copies carry one ``traceparent``, which
everything the tick causes passes on.

A Faust timer cannot write tables, so the clock is a stream of records like any other input;
the detector handles a partition's tick in that partition, for that partition's loans only.
"""

from __future__ import annotations

from datetime import UTC, datetime

import faust

from ..contracts import codec
from ..contracts import topics as names
from ..settings import Settings
from .tracing import Tracing


def add_ticker(app: faust.App, cfg: Settings, ticks: faust.TopicT, tracing: Tracing | None = None) -> None:
    """Register the ticker timer on ``app`` (it runs on the leader only)."""

    @app.timer(cfg.tick_interval, on_leader=True)
    async def ticker() -> None:
        """One Tick with the current time to every partition of clock.ticks."""
        if app.rebalancing:
            return
        payload = codec.encode("Tick", {"as_of": datetime.now(UTC)})
        headers = [("traceparent", (tracing or Tracing()).tick_traceparent())]
        count = app.consumer.topic_partitions(cfg.topic(names.TICKS)) or cfg.partitions
        for partition in range(count):
            await ticks.send(value=payload, partition=partition, headers=headers)
