"""How long overdue transitions waited to be emitted: the chaos run's measure of a failure's cost.

A transition cannot be emitted before the stream has everything it needs: a tick that carries
the clock past it (its ``as_of`` plus the settle delay: SPEC §4) and every record of its loan
whose event time is not after it. Its *detection delay* is the wall time from the later of those
two moments (when the tick, resp. the record, was acknowledged by the broker) to the moment a
reader of ``overdue.events`` first saw the event. Without failures it is the worker's latency,
tens of milliseconds; a crashed worker's loans wait for the takeover, a restarted worker's for
its restart. The *longest detection gap* of a run is the largest delay of any standing event.

Pure functions over wall times (``time.monotonic`` seconds) and events in their JSON form.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..core.dates import parse_instant
from .compare import comparable, reemitted, standing


@dataclass(frozen=True, slots=True)
class Delay:
    """One standing event's detection delay."""

    loan_id: str
    partition: int
    as_of: datetime
    due: float  # wall time everything it needs was there
    seen: float  # wall time a reader first saw it
    seconds: float  # seen - due, at least 0


class Clock:
    """The ticks sent, as (tick instant, wall time acknowledged), in sending order."""

    def __init__(self) -> None:
        self.instants: list[datetime] = []
        self.walls: list[float] = []

    def sent(self, instant: datetime, wall: float) -> None:
        """A tick at ``instant`` was acknowledged at ``wall`` (instants never go back)."""
        if self.instants and instant < self.instants[-1]:
            raise ValueError("ticks must not go back in time")
        self.instants.append(instant)
        self.walls.append(wall)

    def reached(self, instant: datetime) -> float | None:
        """Wall time of the first tick at or past ``instant`` (None: never reached)."""
        n = bisect.bisect_left(self.instants, instant)
        return self.walls[n] if n < len(self.walls) else None


class Inputs:
    """Per loan, its records' event times and the wall time each was acknowledged."""

    def __init__(self) -> None:
        self._loans: dict[str, list[tuple[datetime, float]]] = {}

    def sent(self, loan_id: str, event_time: datetime, wall: float) -> None:
        self._loans.setdefault(loan_id, []).append((event_time, wall))

    def complete(self, loan_id: str, instant: datetime) -> float:
        """Wall time by which every record of the loan with event time ≤ ``instant`` was sent."""
        return max((wall for at, wall in self._loans.get(loan_id, ()) if at <= instant), default=0.0)


def delays(
    stream: Sequence[tuple[float, int, Mapping[str, Any]]],
    expected: Iterable[Mapping[str, Any]],
    clock: Clock,
    inputs: Inputs,
    settle: timedelta,
) -> list[Delay]:
    """The detection delay of each of replay's standing events (``expected``) that the stream has.

    ``stream``: every record read from overdue.events as (wall time read, partition, value),
    retractions and repeats included. An event is found by its id, or (re-emitted after a
    retraction, so with a new id: docs/decisions.md #2) by its content without the id; the
    time it was first seen is its first copy's that still stands."""
    values = [v for _, _, v in stream]
    again = reemitted(values)
    standing_ids = {v["event_id"] for v in standing(values)}
    first: dict[str, tuple[float, int]] = {}
    for wall, partition, value in stream:
        if value["event_id"] not in standing_ids:
            continue
        bare = comparable(value, with_id=False)
        key = bare if bare in again else comparable(value)
        first.setdefault(key, (wall, partition))
    out: list[Delay] = []
    for event in expected:
        bare = comparable(event, with_id=False)
        found = first.get(bare if bare in again else comparable(event))
        if found is None:
            continue
        as_of = parse_instant(event["as_of"])
        ticked = clock.reached(as_of + settle)
        if ticked is None:
            continue  # the clock never got there: nothing was due
        due = max(ticked, inputs.complete(event["loan_id"], as_of))
        seen, partition = found
        out.append(Delay(event["loan_id"], partition, as_of, due, seen, max(0.0, seen - due)))
    return out


def worst_between(found: Iterable[Delay], start: float, end: float) -> Delay | None:
    """The longest delay among events due within [start, end) (wall times), or None."""
    inside = [d for d in found if start <= d.due < end]
    return max(inside, key=lambda d: d.seconds, default=None)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank ``q``-quantile (0..1); 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered)) - 1))]


__all__ = ["Clock", "Delay", "Inputs", "delays", "percentile", "worst_between"]
