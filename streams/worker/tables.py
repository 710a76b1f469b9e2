"""The worker's tables: their names, their changelog topics, and how each state becomes bytes.

Every table holds bytes (Faust's raw serializers); the states are encoded here, once per batch
for each key a batch changed. Two kinds of state carry their next wake-up in front of them, so
that a restart indexes a million of them from a header instead of decoding each:
the loans (``statecodec``'s summary) and the bureau and partner states (a 9-byte header).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..core import statecodec
from ..core.config import EngineConfig
from ..core.loan import LoanState, gauge_figures, wake_at
from ..core.routing import bureau, collections, notifications, partners
from ..core.routing.engine import BUREAU, COLLECTIONS, LEDGERS, NOTIFICATIONS, PARTNERS
from ..settings import Settings

LOANS = "loans"
ASIDE = "set-aside"  # the marks of loans set aside (``aside``), keyed by loan id
ROUTER_TABLES = (BUREAU, COLLECTIONS, LEDGERS, NOTIFICATIONS, PARTNERS)
TABLES = (LOANS, ASIDE, *ROUTER_TABLES)

#: The internal topics on which one router stage hands over to the next (``<app id>-<name>``).
NOTIFY_BY_BORROWER = "notify-by-borrower"
PARTNER_ITEMS = "partner-items"
STAGE_TOPICS = (NOTIFY_BY_BORROWER, PARTNER_ITEMS)
#: The internal topic through which the partition guard (``guard``) forwards a misrouted input
#: record to its key's partition (``<app id>-rekey``).
REKEY = "rekey"


def internal_topics(cfg: Settings) -> tuple[str, ...]:
    """The repartition topics the routers use and the re-key topic, in that order (created with
    the others before the worker starts)."""
    return tuple(f"{cfg.app_id}-{name}" for name in (*STAGE_TOPICS, REKEY))


def rekey_topic(cfg: Settings) -> str:
    """The physical name of the re-key topic."""
    return f"{cfg.app_id}-{REKEY}"


def changelog_topics(cfg: Settings) -> tuple[str, ...]:
    """The tables' changelog topics. Created before the worker starts: a fresh worker could
    otherwise look for one before it appears in its metadata (PartitionsMismatch, stalls)."""
    return tuple(f"{cfg.app_id}-{name}-changelog" for name in TABLES)


Contribution = tuple[tuple[str, str] | None, int, bool]


def contribution(state: LoanState | None) -> Contribution:
    """What one loan adds to the book gauges: its (bucket, currency) and overdue amount if open; held or not."""
    if state is None:
        return None, 0, False
    return _gauged(*gauge_figures(state))


def _gauged(bucket: str | None, currency: str | None, overdue: int, held: bool) -> Contribution:
    return ((bucket, currency) if bucket is not None and currency is not None else None), overdue, held


def stored(state: LoanState, wake: datetime | None, cfg: EngineConfig) -> bytes:
    """The table's bytes for a loan: its state with the summary a restart indexes it by."""
    return statecodec.dumps(state, statecodec.Summary.of(state, wake, cfg))


def indexed(raw: bytes, cfg: EngineConfig) -> tuple[datetime | None, Contribution]:
    """A stored loan's wake-up instant and gauge contribution, from its summary when that was
    computed with these settings (a header read), else from the decoded state."""
    summary = statecodec.peek(raw)
    if summary is not None and summary.fits(cfg):
        return summary.wake_at, _gauged(summary.bucket, summary.currency, summary.overdue, summary.held)
    state = statecodec.loads(raw)
    return wake_at(state, cfg), contribution(state)


# How each router table's states become bytes and back.
CODECS: dict[str, tuple[Callable[[bytes], Any], Callable[[Any], bytes]]] = {
    BUREAU: (bureau.state_from_bytes, bureau.state_to_bytes),
    COLLECTIONS: (collections.state_from_bytes, collections.state_to_bytes),
    LEDGERS: (partners.ledger_from_bytes, partners.ledger_to_bytes),
    NOTIFICATIONS: (notifications.state_from_bytes, notifications.state_to_bytes),
    PARTNERS: (partners.state_from_bytes, partners.state_to_bytes),
}
# The router tables whose states wake on ticks: their next wake-up is stored in front of the
# state (byte 0x02, then the instant in UTC epoch microseconds as a signed 8-byte big-endian
# integer, -1 for none; a state itself starts with "{").
NEXT_DUE: dict[str, Callable[[Any], datetime | None]] = {BUREAU: bureau.next_due, PARTNERS: partners.next_due}
_HEADED = 0x02


def encode_router(table: str, state: Any) -> bytes:
    """The bytes a router table stores for ``state``."""
    body = CODECS[table][1](state)
    next_due = NEXT_DUE.get(table)
    if next_due is None:
        return body
    due = next_due(state)
    us = -1 if due is None else statecodec.micros(due)
    return bytes((_HEADED,)) + us.to_bytes(8, "big", signed=True) + body


def decode_router(table: str, data: bytes) -> Any:
    """The state a router table's bytes hold (with or without the wake-up header)."""
    if data and data[0] == _HEADED:
        data = data[9:]
    return CODECS[table][0](data)


def stored_due(table: str, data: bytes) -> datetime | None:
    """The next wake-up of a stored router state: from its header when it has one, else decoded."""
    if data and data[0] == _HEADED:
        us = int.from_bytes(data[1:9], "big", signed=True)
        return None if us < 0 else statecodec.instant(us)
    return NEXT_DUE[table](decode_router(table, data))


def encode(table: str, value: Any, cfg: EngineConfig) -> bytes | None:
    """What ``table`` stores for a written value: a loan's (state, wake-up), a mark's bytes (None
    deletes it), a router state."""
    if table == LOANS:
        state, wake = value
        return stored(state, wake, cfg)
    if table == ASIDE:
        return value
    return encode_router(table, value)
