"""All four routers driven in-process: what ``duewatch replay`` (and the tests) run.

:class:`Routers` holds every router state in plain dicts, keyed as the stream keys its
Faust tables, and calls the same pure ``step_*`` functions the agents call; it keeps an
index of the instants at which a tick has something to do (held bureau records, partner
digests), so a tick costs O(due), not O(keys). :func:`route_all` feeds it a whole
history and fires a tick at every instant something is due, up to ``until``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from streams.core.dates import parse_instant

from . import bureau, collections, notifications, partners
from .common import (
    BUREAU_TOPIC,
    COLLECTIONS_TOPIC,
    NOTIFY_TOPIC,
    OVERDUE_RETRACTED,
    PARTNER_TOPIC,
    Output,
    ev_instant,
    ev_str,
)
from .policy import Policy

_BUREAU = "bureau"
_PARTNER = "partner"


def emission_instant(topic: str, value: Mapping[str, Any]) -> datetime:
    """The event-time instant at which a routed record is sent (its position in replay's order)."""
    field = {NOTIFY_TOPIC: "created_at", BUREAU_TOPIC: "released_at", PARTNER_TOPIC: "as_of",
             COLLECTIONS_TOPIC: "opened_at"}[topic]
    return value[field]


def _notification_order(event: Mapping[str, Any]) -> tuple[bool, str]:
    """Within one instant: (created_at, source_event_id) order, retractions after what they retract."""
    return ev_str(event, "type") == OVERDUE_RETRACTED, ev_str(event, "event_id")


class Routers:
    """The notification, bureau, partner and collections routers over in-memory state."""

    def __init__(self, policy: Policy) -> None:
        """Empty states; ``policy`` must carry templates (``load_policy``) to render messages."""
        self.policy = policy
        self.notifications: dict[str, notifications.NotificationState] = {}
        self.bureau: dict[str, bureau.BureauState] = {}
        self.collections: dict[str, collections.CollectionsState] = {}
        self.ledgers: dict[str, partners.ShareLedger] = {}
        self.partners: dict[str, partners.PartnerState] = {}
        self._due: list[tuple[datetime, int, str, str]] = []
        self._seq = itertools.count()

    # -- index of time-driven work --

    def _index(self, router: str, key: str, due: datetime | None) -> None:
        if due is not None:
            heapq.heappush(self._due, (due, next(self._seq), router, key))

    def _current_due(self, router: str, key: str) -> datetime | None:
        if router == _BUREAU:
            return bureau.next_due(self.bureau[key])
        return partners.next_due(self.partners[key])

    def next_due(self) -> datetime | None:
        """The earliest instant at which a tick would send something, or None."""
        while self._due:
            due, _, router, key = self._due[0]
            if self._current_due(router, key) == due:
                return due
            heapq.heappop(self._due)  # stale entry: the state moved on
        return None

    # -- inputs --

    def on_events(self, events: Sequence[Mapping[str, Any]]) -> list[Output]:
        """A batch of OverdueEvents (one instant's, in emission order), router by router."""
        policy = self.policy
        out: list[Output] = []
        for event in sorted(events, key=_notification_order):
            key = ev_str(event, "borrower_id")
            state = self.notifications.get(key, notifications.EMPTY)
            self.notifications[key], emitted = notifications.step_event(state, event, policy)
            out += emitted
        for event in events:
            key = ev_str(event, "loan_id")
            state = self.bureau.get(key, bureau.EMPTY)
            self.bureau[key], emitted = bureau.step_event(state, event, policy)
            self._index(_BUREAU, key, bureau.next_due(self.bureau[key]))
            out += emitted
        for event in events:
            key = ev_str(event, "loan_id")
            ledger = self.ledgers.get(key, partners.EMPTY_LEDGER)
            self.ledgers[key], envelopes = partners.step_fan_out(ledger, event, policy)
            for partner_id, envelope in envelopes:
                state = self.partners.get(partner_id, partners.EMPTY)
                self.partners[partner_id], emitted = partners.step_item(state, partner_id, envelope, policy)
                self._index(_PARTNER, partner_id, partners.next_due(self.partners[partner_id]))
                out += emitted
        for event in events:
            key = ev_str(event, "loan_id")
            state = self.collections.get(key, collections.EMPTY)
            self.collections[key], emitted = collections.step_event(state, event, policy)
            out += emitted
        return out

    def on_event(self, event: Mapping[str, Any]) -> list[Output]:
        """One OverdueEvent."""
        return self.on_events([event])

    def on_dispute(self, dispute: Mapping[str, Any]) -> list[Output]:
        """One Dispute (bureau router only)."""
        key = dispute["loan_id"]
        state = self.bureau.get(key, bureau.EMPTY)
        self.bureau[key], emitted = bureau.step_dispute(state, dispute, self.policy)
        return emitted

    def on_tick(self, as_of: datetime) -> list[Output]:
        """The clock reached ``as_of``: fire, instant by instant, everything due by then."""
        out: list[Output] = []
        while (due := self.next_due()) is not None and due <= as_of:
            keys: set[tuple[str, str]] = set()
            while self._due and self._due[0][0] == due:
                _, _, router, key = heapq.heappop(self._due)
                if self._current_due(router, key) == due:
                    keys.add((router, key))
            for router, key in sorted(keys):
                if router == _BUREAU:
                    self.bureau[key], emitted = bureau.step_tick(self.bureau[key], due, self.policy)
                    self._index(router, key, bureau.next_due(self.bureau[key]))
                else:
                    self.partners[key], emitted = partners.step_tick(self.partners[key], key, due, self.policy)
                    self._index(router, key, partners.next_due(self.partners[key]))
                out += emitted
        return out


def _before(routers: Routers, instant: datetime) -> list[Output]:
    """Fire what is due strictly before ``instant``."""
    out: list[Output] = []
    while (due := routers.next_due()) is not None and due < instant:
        out += routers.on_tick(due)
    return out


def route_all(
    events: Iterable[Mapping[str, Any]],
    disputes: Iterable[Mapping[str, Any]],
    until: datetime,
    policy: Policy,
) -> list[tuple[str, str, dict[str, Any]]]:
    """Every router output for a whole history, in emission order (non-decreasing emission instant).

    ``events``: the OverdueEvents of all loans in the detector's order (as_of, then emission
    order); ``disputes``: Dispute records (ordered here by ``at``). Events and disputes after
    ``until`` are ignored. At one instant: disputes first, then the records due by the tick
    clock (held bureau records at their ``released_at``, digests at their digest time), then
    the events, router by router (notifications, bureau, partners, collections). Time-driven
    outputs due at or before ``until`` are included.
    """
    until = parse_instant(until)
    timed_events = sorted(((ev_instant(e, "as_of"), e) for e in events), key=lambda p: p[0])
    timed_disputes = sorted(((parse_instant(d["at"]), d) for d in disputes), key=lambda p: p[0])
    instants = sorted({t for t, _ in timed_events if t <= until} | {t for t, _ in timed_disputes if t <= until})
    by_event: dict[datetime, list[Mapping[str, Any]]] = {}
    for t, e in timed_events:
        by_event.setdefault(t, []).append(e)
    by_dispute: dict[datetime, list[Mapping[str, Any]]] = {}
    for t, d in timed_disputes:
        by_dispute.setdefault(t, []).append(d)

    routers = Routers(policy)
    out: list[Output] = []
    for instant in instants:
        out += _before(routers, instant)
        for dispute in by_dispute.get(instant, ()):
            out += routers.on_dispute(dispute)
        out += routers.on_tick(instant)
        out += routers.on_events(by_event.get(instant, []))
    out += routers.on_tick(until)
    return out
