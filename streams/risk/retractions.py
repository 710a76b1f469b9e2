"""The overdue events a consumer holds after applying retractions (SPEC §4, late data).

A consumer of ``overdue.events`` drops every event an ``OVERDUE_RETRACTED`` names, and dedupes
by ``event_id`` (delivery is at least once). What is left is what every figure of the risk
report is computed from, and what "the stream equals the replay" compares. Works on events
in their native form (replay's) or their JSON form (read from the topic) alike: only
``type``, ``event_id`` and ``retracts`` are looked at.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

RETRACTED = "OVERDUE_RETRACTED"


def standing(values: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The events left after applying retractions, in first-seen order.

    Repeats of an ``event_id`` (at-least-once delivery) count once; an event named by any
    ``OVERDUE_RETRACTED`` is dropped, whether the retraction came before or after it; the
    retractions themselves are not standing events.
    """
    kept: dict[str, Mapping[str, Any]] = {}
    retracted: set[str] = set()
    for v in values:
        if v["type"] == RETRACTED:
            retracted.add(v["retracts"])
        else:
            kept.setdefault(v["event_id"], v)
    return [v for k, v in kept.items() if k not in retracted]


__all__ = ["RETRACTED", "standing"]
