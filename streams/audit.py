"""The command line's audit tools (SPEC §7.1, §7.2): `duewatch verify` and `duewatch standing`.

Both are thin: the decisions are the core's (``streams.core.chain`` verifies a chain,
``streams.core.standing`` computes a standing); this module reads what they need — the
``bureau.records`` topic, a replay file — and hands it over.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from typing import Any

from .contracts import codec
from .contracts.topics import BUREAU, EVENT_TIME_FIELD, REPAYMENTS, SCHEDULES
from .core.chain import Verification, Verifier
from .core.config import REPLAY_CONFIG, EngineConfig
from .core.dates import parse_instant
from .core.standing import NoSchedule, Standing, StandingUnknown, standing_at
from .replay import Replay
from .settings import Settings

# --- verify ----------------------------------------------------------------------------------------


def _native(record: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A consumed record's BureauRecord (native form), or None when its value does not decode."""
    value = record.get("value")
    if not isinstance(value, Mapping):
        return None
    try:
        return codec.from_json("BureauRecord", value)
    except codec.DecodeError:
        return None


async def _records(
    cfg: Settings, from_beginning: bool, timeout: float, idle_timeout: float
) -> AsyncIterator[Mapping[str, Any]]:
    from .kafkaio import consume, read_to_end

    if from_beginning:
        # Up to the end offsets when the command began: the answer is what the topic held then.
        for record in (await read_to_end(cfg, (BUREAU,), timeout))[BUREAU]:
            yield record
        return
    async for record in consume(cfg, BUREAU, False, idle_timeout):
        yield record


async def verify_topic(
    cfg: Settings, from_beginning: bool, timeout: float = 15.0, idle_timeout: float = 5.0
) -> Verification:
    """Verify ``bureau.records``: from its beginning (every chain whole, from chain_seq 1), or —
    without ``from_beginning``, as `duewatch consume` reads — the records appended from now on
    until ``idle_timeout`` seconds pass without one, each loan's first record read taken as given."""
    verifier = Verifier(anchored=not from_beginning)
    async for record in _records(cfg, from_beginning, timeout, idle_timeout):
        where = f"partition {record['partition']} offset {record['offset']}"
        verifier.add(_native(record), where, record.get("key"))
    return verifier.result()


# --- standing --------------------------------------------------------------------------------------


def _loan_record_time(record: Mapping[str, Any], loan_id: str) -> datetime | None:
    """The event time of a schedule or repayment of ``loan_id`` (a topic may carry a deployment's
    prefix), or None for any other record."""
    topic = str(record.get("topic", ""))
    logical = next((name for name in (SCHEDULES, REPAYMENTS) if topic.endswith(name)), None)
    value = record.get("value")
    if logical is None or not isinstance(value, Mapping) or value.get("loan_id") != loan_id:
        return None
    try:
        return parse_instant(value.get(EVENT_TIME_FIELD[logical]))
    except ValueError:
        return None


def standing_from_records(
    records: Iterable[Mapping[str, Any]], loan_id: str, at: datetime, cfg: EngineConfig = REPLAY_CONFIG
) -> Standing:
    """The loan's standing at ``at`` from replay input (SPEC §7.2 ``duewatch standing``).

    What holds at ``at`` depends only on records whose event time is at or before it (a later
    reversal or revision does not charge or refund past days, SPEC §3), so replay runs over the
    loan's schedules and repayments up to ``at`` — which also keeps it from folding the history
    before ``at``. Raises :class:`~streams.core.standing.StandingUnknown` when there is none.
    """
    mine = [r for r in records if (t := _loan_record_time(r, loan_id)) is not None and t <= at]
    replay = Replay(cfg=cfg)
    replay.run(mine, at)
    if loan_id in replay.aside:
        raise StandingUnknown("replay set the loan aside (INTERNAL_ERROR): see `duewatch replay`")
    state = replay.loans.get(loan_id)
    if state is None:
        raise NoSchedule(f"no schedule of loan {loan_id} is in effect at {at.isoformat()}")
    return standing_at(state, at, cfg)
