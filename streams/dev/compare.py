"""Stream versus replay: "the stream equals the replay" as SPEC §4 defines it.

A consumer of ``overdue.events`` applies retractions: an ``OVERDUE_RETRACTED`` withdraws the
event it names. What is left (the *standing* events) must equal what ``duewatch replay`` gives
on the same records, on every deterministic field — every field but ``detected_at``, the
``event_id`` included. One exception (docs/decisions.md #2): an event the stream retracted and
later emitted again carries a new id (incarnation 1), because consumers that applied the
retraction dropped the old id for good; such an event is compared without its id.

Pure functions over OverdueEvents in their JSON form (SPEC §1, e.g. ``kafkaio.render`` or
``codec.to_json``); instants may be written in any offset. Used by ``duewatch demo`` and the
stream tests. Applying retractions (``standing``) lives in :mod:`streams.risk.retractions`,
which the runtime's risk report uses too; it is re-exported here.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..core.dates import parse_instant
from ..risk.retractions import RETRACTED, standing

#: Fields that are not deterministic (the wall clock at emission).
WALL_CLOCK_FIELDS = frozenset({"detected_at"})


def comparable(value: Mapping[str, Any], with_id: bool = True) -> str:
    """An OverdueEvent (JSON form) as a canonical string for comparison.

    ``as_of`` is normalised to UTC (readers compare instants, not strings), ``detected_at``
    is left out, and so is ``event_id`` when ``with_id`` is false. Keys are sorted.
    """
    out: dict[str, Any] = {}
    for k, v in value.items():
        if k in WALL_CLOCK_FIELDS or (k == "event_id" and not with_id):
            continue
        if k == "as_of" and v is not None:
            v = parse_instant(v).astimezone(UTC).isoformat()
        out[k] = v
    return json.dumps(out, sort_keys=True)


def reemitted(values: Iterable[Mapping[str, Any]]) -> set[str]:
    """Contents (``comparable(v, with_id=False)``) the stream retracted at some point.

    If such content stands again at the end it was re-emitted with a fresh id
    (docs/decisions.md #2), so it is compared without the id.
    """
    values = list(values)
    retracted_ids = {v["retracts"] for v in values if v["type"] == RETRACTED}
    return {comparable(v, with_id=False) for v in values if v.get("event_id") in retracted_ids}


def compare(
    stream_values: Iterable[Mapping[str, Any]],
    replay_values: Iterable[Mapping[str, Any]],
    until: datetime,
) -> tuple[Counter, Counter]:
    """``(got, want)``: the stream's standing events with ``as_of`` ≤ ``until`` and the replay's.

    ``stream_values`` are everything read from ``overdue.events`` (retractions, repeats and
    all, in any order); ``replay_values`` are replay's OverdueEvents up to ``until`` (replay
    never retracts, so they all stand). Both sides are Counters of :func:`comparable` strings,
    with the id, except for contents the stream re-emitted after a retraction, which are
    compared without it on both sides. The stream equals the replay exactly when
    ``got == want``; ``want - got`` is what the stream is missing, ``got - want`` what it has
    that replay does not.
    """
    stream_values = list(stream_values)
    again = reemitted(stream_values)

    def key(v: Mapping[str, Any]) -> str:
        bare = comparable(v, with_id=False)
        return bare if bare in again else comparable(v)

    got = [v for v in standing(stream_values) if parse_instant(v["as_of"]) <= until]
    want = standing(replay_values)
    return Counter(map(key, got)), Counter(map(key, want))


__all__ = ["comparable", "compare", "reemitted", "standing"]
