"""Catch-up gating of ticks (DESIGN.md "Time enters only as ticks").

Ticks and data travel on different topics, so nothing orders a tick against the records that
precede it in event time. After downtime, a tick read before the backlog of its partition would
emit overdues that the backlog's repayments cure a moment later (and retract). So a tick waits
while its partition's inputs still hold records that were there when it arrived.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime

from faust.types import TP

log = logging.getLogger("duewatch")


class Gate:
    """Catch-up gating of ticks, per partition (DESIGN.md "Time enters only as ticks").

    When a tick for partition p arrives while an input partition of p has records the worker
    has not processed yet (its offset is below the high-water mark seen then), the tick is held
    until those records are processed. A newer tick replaces a held one but keeps the older
    targets, so a steady stream of input can delay the clock but never stop it: a held tick is
    let through when its input partitions made no progress for ``STALL`` seconds (a target can
    be unreachable: the last offset may be a transaction marker no consumer ever sees). How
    many ticks arrive meanwhile does not matter: after downtime a whole backlog of ticks can
    arrive before the input records of the same partitions.
    """

    STALL = 10.0  # seconds without progress on a held tick's inputs before it is let through

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.processed: dict[TP, int] = {}
        # partition -> (held instant, targets, when its inputs last made progress)
        self.held: dict[int, tuple[datetime, dict[TP, int], float]] = {}
        self._clock = clock

    def hold(self, partition: int, as_of: datetime, targets: dict[TP, int]) -> bool:
        """Hold the tick if there are targets to reach; returns True when held."""
        held = self.held.get(partition)
        now = self._clock()
        progress_at = now
        if held is not None:
            as_of = max(as_of, held[0])
            targets = held[1] or targets
            progress_at = held[2]
        targets = {tp: end for tp, end in targets.items() if self.processed.get(tp, -1) < end}
        if not targets or now - progress_at > self.STALL:
            if targets:
                log.warning("tick for partition %d let through: its input made no progress for %.0f s",
                            partition, now - progress_at)  # fmt: skip
            self.held.pop(partition, None)
            return False
        self.held[partition] = (as_of, targets, progress_at)
        return True

    def note(self, tp: TP, offset: int) -> datetime | None:
        """Record that ``tp`` was processed up to ``offset``; returns a released tick, if any."""
        self.processed[tp] = offset
        held = self.held.get(tp.partition)
        if held is None:
            return None
        as_of, targets, _ = held
        if all(self.processed.get(t, -1) >= end for t, end in targets.items()):
            del self.held[tp.partition]
            return as_of
        if tp in targets:
            self.held[tp.partition] = (as_of, targets, self._clock())
        return None

    def forget(self, tps: Iterable[TP]) -> None:
        """Partitions were revoked: their positions and held ticks no longer apply here."""
        for tp in tps:
            self.processed.pop(tp, None)
            self.held.pop(tp.partition, None)
