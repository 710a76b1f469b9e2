"""The one orchestration of the four routers, for the stream and for replay alike.

Each function below is one step of one key's routers over a small storage port (get and put
of a router state), in the one fixed order: for a loan's OverdueEvent, the bureau, then
collections, then the partner fan-out, and the event goes on to its borrower's notifications
when that router cares about it. The stream's shell calls these functions from its agents
with a port on its tables (its stages are keyed by loan, borrower and partner, each on its own
partitions: what one stage hands the next travels on an internal topic); replay calls the very
same functions with an in-memory port (:class:`Routers`), handing over in-process. So a rule
is changed in one place, and "what would the stream have routed" is a function call.

:class:`Routers` also keeps an index of the instants at which a tick has something to do
(held bureau records, partner digests), so a tick costs O(due), not O(keys);
:func:`route_all` feeds it a whole history and fires a tick at every instant something is
due, up to ``until``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from streams.core.dates import parse_instant

from . import bureau, collections, notifications, partners
from .common import (
    BUREAU_TOPIC,
    COLLECTIONS_TOPIC,
    NOTIFY_TOPIC,
    OVERDUE_RETRACTED,
    PARTNER_TOPIC,
    Output,
    RoutingError,
    ev_instant,
    ev_str,
)
from .policy import Policy

#: The router states, by the name of the table that keeps them in the stream.
BUREAU = "bureau"
COLLECTIONS = "collections"
LEDGERS = "partner-ledgers"
NOTIFICATIONS = "notifications"
PARTNERS = "partners"


class StatePort(Protocol):
    """Where the routers' states live: the stream's tables or replay's dicts."""

    def get(self, table: str, key: str, empty: Any) -> Any:
        """The state of ``key`` in ``table``, or ``empty`` when it has none."""
        ...

    def put(self, table: str, key: str, state: Any) -> None:
        """Keep ``state`` as ``key``'s state in ``table``."""
        ...


@dataclass(frozen=True, slots=True)
class LoanRouted:
    """What one OverdueEvent makes the loan-keyed routers do."""

    outputs: list[Output]  # bureau records, NOTICE notifications, collections tasks
    envelopes: list[tuple[str, partners.Envelope]]  # for the partners' own stage, by partner id
    notify: bool  # whether the event goes on to its borrower's notifications
    bureau_due: datetime | None  # when the loan's bureau state next wants a tick


def wants_notification(event: Mapping[str, Any]) -> bool:
    """Whether the notification router has anything to do with ``event``."""
    return notifications.classify(event) is not None or ev_str(event, "type") == OVERDUE_RETRACTED


def route_loan_event(port: StatePort, policy: Policy, event: Mapping[str, Any]) -> LoanRouted:
    """One OverdueEvent through its loan's routers: bureau, collections, partner fan-out. Every
    step is computed before any state is put, so a router that fails leaves them all as they were."""
    loan_id = ev_str(event, "loan_id")
    bstate, bureau_out = bureau.step_event(port.get(BUREAU, loan_id, bureau.EMPTY), event, policy)
    cstate, collections_out = collections.step_event(
        port.get(COLLECTIONS, loan_id, collections.EMPTY), event, policy
    )
    ledger, envelopes = partners.step_fan_out(
        port.get(LEDGERS, loan_id, partners.EMPTY_LEDGER), event, policy
    )
    notify = wants_notification(event)
    port.put(BUREAU, loan_id, bstate)
    port.put(COLLECTIONS, loan_id, cstate)
    port.put(LEDGERS, loan_id, ledger)
    return LoanRouted(bureau_out + collections_out, envelopes, notify, bureau.next_due(bstate))


def route_dispute(
    port: StatePort, policy: Policy, dispute: Mapping[str, Any]
) -> tuple[list[Output], datetime | None]:
    """A Dispute (bureau router only); returns its outputs and the loan's next bureau wake-up."""
    loan_id = ev_str(dispute, "loan_id")
    state, out = bureau.step_dispute(port.get(BUREAU, loan_id, bureau.EMPTY), dispute, policy)
    port.put(BUREAU, loan_id, state)
    return out, bureau.next_due(state)


S = TypeVar("S")


def tick_through(
    state: S,
    clock: datetime,
    next_due: Callable[[S], datetime | None],
    step: Callable[[S, datetime], tuple[S, list[Output]]],
) -> tuple[S, list[Output], datetime | None]:
    """Tick ``state`` instant by instant, as replay's clock does, until nothing is due by
    ``clock``: the new state, what it sent, and its next wake-up. A step that leaves something
    due at its own instant would loop forever (it once did): that is a bug, raised."""
    outputs: list[Output] = []
    due = next_due(state)
    while due is not None and due <= clock:
        ticked = due
        state, out = step(state, ticked)
        outputs += out
        due = next_due(state)
        if due is not None and due <= ticked:
            raise RoutingError("a router's tick made no progress at its due instant")
    return state, outputs, due


def tick_loan(
    port: StatePort, policy: Policy, loan_id: str, clock: datetime
) -> tuple[list[Output], datetime | None]:
    """The loan's held bureau records due by ``clock``; returns them and its next wake-up."""
    state = port.get(BUREAU, loan_id, None)
    if state is None:
        return [], None
    state, out, due = tick_through(
        state, clock, bureau.next_due, lambda s, at: bureau.step_tick(s, at, policy)
    )
    port.put(BUREAU, loan_id, state)
    return out, due


def route_borrower_event(port: StatePort, policy: Policy, event: Mapping[str, Any]) -> list[Output]:
    """One OverdueEvent through its borrower's notifications (the daily cap spans their loans)."""
    borrower = ev_str(event, "borrower_id")
    state, out = notifications.step_event(
        port.get(NOTIFICATIONS, borrower, notifications.EMPTY), event, policy
    )
    port.put(NOTIFICATIONS, borrower, state)
    return out


def route_partner_item(
    port: StatePort, policy: Policy, partner_id: str, envelope: partners.Envelope
) -> tuple[list[Output], datetime | None]:
    """One fanned-out item at its partner: a real-time share now, or a place in a digest."""
    state, out = partners.step_item(
        port.get(PARTNERS, partner_id, partners.EMPTY), partner_id, envelope, policy
    )
    port.put(PARTNERS, partner_id, state)
    return out, partners.next_due(state)


def tick_partner(
    port: StatePort, policy: Policy, partner_id: str, clock: datetime
) -> tuple[list[Output], datetime | None]:
    """The partner's digests due by ``clock``; returns them and its next wake-up."""
    state = port.get(PARTNERS, partner_id, None)
    if state is None:
        return [], None
    step = lambda s, at: partners.step_tick(s, partner_id, at, policy)  # noqa: E731
    state, out, due = tick_through(state, clock, partners.next_due, step)
    port.put(PARTNERS, partner_id, state)
    return out, due


def emission_instant(topic: str, value: Mapping[str, Any]) -> datetime:
    """The event-time instant at which a routed record is sent (its position in replay's order)."""
    field = {NOTIFY_TOPIC: "created_at", BUREAU_TOPIC: "released_at", PARTNER_TOPIC: "as_of",
             COLLECTIONS_TOPIC: "opened_at"}[topic]  # fmt: skip
    instant: datetime = value[field]
    return instant


def _notification_order(event: Mapping[str, Any]) -> tuple[bool, str]:
    """Within one instant: (created_at, source_event_id) order, retractions after what they retract."""
    return ev_str(event, "type") == OVERDUE_RETRACTED, ev_str(event, "event_id")


class MemoryPort:
    """Router states in dicts: replay's storage."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Any]] = {}

    def get(self, table: str, key: str, empty: Any) -> Any:
        return self.tables.get(table, {}).get(key, empty)

    def put(self, table: str, key: str, state: Any) -> None:
        self.tables.setdefault(table, {})[key] = state


class Routers:
    """The four routers over in-memory state, handing over between stages in-process."""

    def __init__(self, policy: Policy) -> None:
        """Empty states; ``policy`` must carry templates (``load_policy``) to render messages."""
        self.policy = policy
        self.port = MemoryPort()
        self._due: list[tuple[datetime, int, str, str]] = []
        self._seq = itertools.count()

    # -- index of time-driven work --

    def _index(self, table: str, key: str, due: datetime | None) -> None:
        if due is not None:
            heapq.heappush(self._due, (due, next(self._seq), table, key))

    def _current_due(self, table: str, key: str) -> datetime | None:
        state = self.port.get(table, key, None)
        if state is None:
            return None
        return bureau.next_due(state) if table == BUREAU else partners.next_due(state)

    def next_due(self) -> datetime | None:
        """The earliest instant at which a tick would send something, or None."""
        while self._due:
            due, _, table, key = self._due[0]
            if self._current_due(table, key) == due:
                return due
            heapq.heappop(self._due)  # stale entry: the state moved on
        return None

    # -- inputs --

    def on_events(self, events: Sequence[Mapping[str, Any]]) -> list[Output]:
        """A batch of OverdueEvents (one instant's, in emission order): each through its loan's
        routers and its partners' stage, as the stream does; then the instant's notifications,
        ordered by (retraction last, event id), which is deterministic whatever order the loans
        came in (the stream's borrower stage decides in arrival order)."""
        policy = self.policy
        out: list[Output] = []
        handed: list[Mapping[str, Any]] = []
        for event in events:
            routed = route_loan_event(self.port, policy, event)
            self._index(BUREAU, ev_str(event, "loan_id"), routed.bureau_due)
            out += routed.outputs
            for partner_id, envelope in routed.envelopes:
                shared, due = route_partner_item(self.port, policy, partner_id, envelope)
                self._index(PARTNERS, partner_id, due)
                out += shared
            if routed.notify:
                handed.append(event)
        for event in sorted(handed, key=_notification_order):
            out += route_borrower_event(self.port, policy, event)
        return out

    def on_event(self, event: Mapping[str, Any]) -> list[Output]:
        """One OverdueEvent."""
        return self.on_events([event])

    def on_dispute(self, dispute: Mapping[str, Any]) -> list[Output]:
        """One Dispute (bureau router only)."""
        out, due = route_dispute(self.port, self.policy, dispute)
        self._index(BUREAU, ev_str(dispute, "loan_id"), due)
        return out

    def on_tick(self, as_of: datetime) -> list[Output]:
        """The clock reached ``as_of``: fire, instant by instant, everything due by then."""
        out: list[Output] = []
        while (due := self.next_due()) is not None and due <= as_of:
            keys: set[tuple[str, str]] = set()
            while self._due and self._due[0][0] == due:
                _, _, table, key = heapq.heappop(self._due)
                if self._current_due(table, key) == due:
                    keys.add((table, key))
            for table, key in sorted(keys):
                tick = tick_loan if table == BUREAU else tick_partner
                fired, after = tick(self.port, self.policy, key, due)
                self._index(table, key, after)
                out += fired
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
    the events (``Routers.on_events``). Time-driven outputs due at or before ``until`` are
    included.
    """
    until = parse_instant(until)
    timed_events = sorted(((ev_instant(e, "as_of"), e) for e in events), key=lambda p: p[0])
    timed_disputes = sorted(((parse_instant(d["at"]), d) for d in disputes), key=lambda p: p[0])
    instants = sorted(
        {t for t, _ in timed_events if t <= until} | {t for t, _ in timed_disputes if t <= until}
    )
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
