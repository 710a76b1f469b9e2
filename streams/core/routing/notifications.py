"""Notification router: a borrower's OverdueEvents → ``notify.requests`` (SPEC §5).

Kinds: DUE_SOON → REMINDER; OVERDUE_OPENED and an upward BUCKET_CHANGED → COLLECTION;
OVERDUE_CURED → CONFIRMATION; a retraction of an event whose request was already due →
CORRECTION. A downward BUCKET_CHANGED (partial cure) and WRITTEN_OFF send nothing from
this router (the bureau router's NOTICE covers a write-off's credit-record consequence).

State is keyed by ``borrower_id``: the agent re-keys ``overdue.events`` by borrower
(``group_by``) because the COLLECTION cap counts across all the borrower's loans. It is
small (the requests made in the last ``policy.retention``, and per local day the cap
decisions) and is pruned as the event clock moves on.

The cap and its one source of non-determinism. At most ``collection_cap_per_day``
COLLECTION requests per borrower per local day of ``created_at`` (the day in the event's
own loan time zone) are SEND; the rest are written with disposition DROPPED so the
decision is auditable. The intended order among the requests of one day is
(``created_at``, ``source_event_id``): the first N in that order are sent. Events of one
loan always arrive in that order, and ``route_all`` (replay) feeds same-instant events in
``source_event_id`` order, so replay decides exactly by that order. In the stream, two of
the borrower's loans live on different partitions and their events can reach the
re-keyed stream out of that order. A decision once written is never re-decided (the
request may already be on the borrower's phone, and re-deciding would break idempotent
ids): a request gets SEND iff fewer than N requests of its day are SEND so far, so the
cap is never exceeded, and a decision taken after one with a later (created_at, id) is
recorded with ``out_of_order=True`` in the state (see :func:`out_of_order_count`, for a
metric). Only the choice of *which* requests of an over-cap day were dropped can differ
from replay.

Retractions: the router remembers, per source event id, the requests it made. When that
event is retracted and a request was SEND and already due (``not_before`` ≤ the
retraction's ``as_of``), it writes a CORRECTION telling the borrower to disregard it; if
it was not yet due, or was DROPPED, it writes nothing. A retracted request keeps counting
towards its day's cap: it was written, and nothing tells the sender not to deliver it.

Retention: a request older than ``policy.retention`` (default 35 days) before the
retraction's ``as_of`` is forgotten and gets no CORRECTION (decided by those instants, so
the same in the stream and in replay).

Idempotence: a re-delivered event (same ``event_id``) re-emits exactly the requests it
made the first time (same ids and content) and changes nothing; this holds for as long
as the state remembers the event (``policy.retention``, default 35 days).

This router has no time-driven output: :func:`step_tick` does nothing and
:func:`next_due` is always None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from .common import (
    BUCKET_CHANGED,
    CLOSED,
    DUE_SOON,
    OVERDUE_CURED,
    OVERDUE_OPENED,
    OVERDUE_RETRACTED,
    Output,
    decode_state,
    encode_state,
    ev_instant,
    ev_int,
    ev_str,
    ev_zone,
    is_upward,
    later,
    local_day,
    make_id,
    utc,
)
from .messages import (
    COLLECTION,
    CONFIRMATION,
    DROPPED,
    REMINDER,
    SEND,
    as_output,
    build_notification,
    correction_for,
    event_params,
)
from .policy import Policy


@dataclass(frozen=True)
class CapDecision:
    """One COLLECTION request counted against its local day's cap, with the decision taken."""

    created_at: datetime
    source_event_id: str
    disposition: str
    out_of_order: bool = False


@dataclass(frozen=True)
class NotificationState:
    """A borrower's notification memory (JSON-able; see :func:`state_to_bytes`)."""

    clock: datetime | None = None
    days: dict[str, tuple[CapDecision, ...]] = field(default_factory=dict)
    emitted: dict[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)
    retracted: dict[str, datetime] = field(default_factory=dict)


EMPTY = NotificationState()


def classify(event: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, template id) of the request an event makes, or None when it makes none."""
    kind = ev_str(event, "type")
    if kind == DUE_SOON:
        return REMINDER, "due_soon"
    if kind == OVERDUE_OPENED:
        return COLLECTION, "overdue_opened"
    if kind == BUCKET_CHANGED:
        return (COLLECTION, "overdue_bucket_up") if is_upward(event) else None
    if kind == OVERDUE_CURED:
        remaining = ev_int(event, "total_overdue")
        if event.get("loan_status") == CLOSED and remaining > 0:
            return CONFIRMATION, "overdue_closed"
        if remaining > 0:
            return CONFIRMATION, "overdue_cured_in_grace"
        return CONFIRMATION, "overdue_cured"
    return None


def step_event(
    state: NotificationState, event: Mapping[str, Any], policy: Policy
) -> tuple[NotificationState, list[Output]]:
    """Route one OverdueEvent of this borrower; returns the new state and the requests to send."""
    event_id = ev_str(event, "event_id")
    if event_id in state.emitted:
        return state, [as_output(n) for n in state.emitted[event_id]]
    as_of = ev_instant(event, "as_of")
    state = replace(state, clock=later(state.clock, as_of))
    if ev_str(event, "type") == OVERDUE_RETRACTED:
        return _retract(state, event, as_of, policy)
    what = classify(event)
    if what is None:
        return _prune(state, policy), []
    kind, template = what

    disposition = SEND
    day_key = ""
    if kind == COLLECTION:
        day_key = local_day(as_of, ev_zone(event)).isoformat()
        sends = sum(1 for d in state.days.get(day_key, ()) if d.disposition == SEND)
        disposition = SEND if sends < policy.collection_cap_per_day else DROPPED

    notification = build_notification(
        policy,
        event,
        notification_id=make_id("ntf", kind.lower(), event_id),
        source_event_id=event_id,
        kind=kind,
        template=template,
        params_for=lambda locale: event_params(event, template, locale),
        created_at=as_of,
        disposition=disposition,
    )
    days = state.days
    if kind == COLLECTION:
        decisions = days.get(day_key, ())
        late = any((d.created_at, d.source_event_id) > (as_of, event_id) for d in decisions)
        decision = CapDecision(as_of, event_id, notification["disposition"], late)
        days = {**days, day_key: (*decisions, decision)}
    state = replace(state, days=days, emitted={**state.emitted, event_id: (notification,)})
    return _prune(state, policy), [as_output(notification)]


def _retract(
    state: NotificationState, event: Mapping[str, Any], as_of: datetime, policy: Policy
) -> tuple[NotificationState, list[Output]]:
    target = ev_str(event, "retracts")
    original = state.emitted.get(target)
    if original is not None and max(utc(n["created_at"]) for n in original) < as_of - policy.retention:
        original = None  # beyond retention: forgotten, whether or not pruning has run yet
    if original is None or target in state.retracted:
        return _prune(state, policy), []
    event_id = ev_str(event, "event_id")
    corrections = tuple(
        correction_for(policy, n, event, make_id("ntf", "correction", event_id, n["notification_id"]))
        for n in original
        if n["disposition"] == SEND and n["not_before"] <= as_of
    )
    emitted = {**state.emitted, event_id: corrections} if corrections else state.emitted
    state = replace(state, emitted=emitted, retracted={**state.retracted, target: as_of})
    return _prune(state, policy), [as_output(n) for n in corrections]


def _prune(state: NotificationState, policy: Policy) -> NotificationState:
    """Forget what is older than the retention period on the event clock (keeps the state small)."""
    if state.clock is None:
        return state
    cutoff = state.clock - policy.retention
    oldest_day = cutoff.date().toordinal() - 1  # one day of slack for the loans' different zones
    emitted = {
        k: v for k, v in state.emitted.items() if not v or max(utc(n["created_at"]) for n in v) >= cutoff
    }
    days = {k: v for k, v in state.days.items() if date.fromisoformat(k).toordinal() >= oldest_day}
    retracted = {k: v for k, v in state.retracted.items() if v >= cutoff}
    if (
        len(emitted) == len(state.emitted)
        and len(days) == len(state.days)
        and len(retracted) == len(state.retracted)
    ):
        return state
    return replace(state, emitted=emitted, days=days, retracted=retracted)


def step_tick(
    state: NotificationState, as_of: datetime, policy: Policy
) -> tuple[NotificationState, list[Output]]:
    """Ticks change nothing here: every request is written when its event arrives, with its not_before."""
    return state, []


def next_due(state: NotificationState) -> datetime | None:
    """Always None: no request of this router waits for the clock."""
    return None


def out_of_order_count(state: NotificationState) -> int:
    """How many remembered cap decisions were taken after a request that sorts later (for a metric)."""
    return sum(1 for decisions in state.days.values() for d in decisions if d.out_of_order)


def state_to_bytes(state: NotificationState) -> bytes:
    """The state as JSON bytes for the Faust table."""
    return encode_state(state)


def state_from_bytes(data: bytes) -> NotificationState:
    """The state back from :func:`state_to_bytes`."""
    return decode_state(NotificationState, data)
