"""Collections router: a loan's OverdueEvents → ``collections.tasks`` (SPEC §5).

A loan's collection *case* opens with its delinquency episode. Each task is the ladder's
current step for the case: one when the episode opens (reason OPENED) and one at each
upward BUCKET_CHANGED (reason ESCALATED), with the action from the policy ladder (default
M1 AUTO_REMINDER, M2 PHONE, M3–M6 AGENCY, M7 LEGAL), the contact window in the loan's
time zone (default 08:00–21:00) and the daily attempt cap (default 3, a rung may
override it). A downward BUCKET_CHANGED (partial cure) makes no task: the current step
stays in force. Exactly one CLOSE task ends the case: reason CURED (LOAN_CLOSED when the
cure is the loan closing) or WRITTEN_OFF. A CLOSE carries ``max_attempts_per_day = 0``:
no more contact. An OVERDUE_CURED always closes (a cure always ends an open episode,
even one this router never saw open); a WRITTEN_OFF closes only an open case or an
episode the event says was open (``first_delinquency_date`` set).

Retractions: retracting the event that opened the case closes it with reason RETRACTED
(the episode that now holds, if any, arrives as a new OVERDUE_OPENED). Retracting a
later escalation also closes it (RETRACTED) and re-issues the step that is in force
without it (reason REINSTATED). Retracting the cure or write-off that closed the case
reopens it with a REINSTATED task for the step in force before. The router uses its own
memory of the case for this, never the retraction's state fields.

Tasks carry, beside SPEC's fields, ``source_event_id`` (audit field of
``schemas/CollectionTask.avsc``): the event that caused the task (for a RETRACTED or
REINSTATED task, the retraction).

State is keyed by ``loan_id`` (co-partitioned with ``overdue.events``) and stays small:
the current case's steps, the last closed case's steps, and per source event the tasks
it made, for re-delivery. Nothing here waits for the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from .common import (
    BUCKET_CHANGED,
    CLOSED,
    COLLECTIONS_TOPIC,
    OVERDUE_CURED,
    OVERDUE_OPENED,
    OVERDUE_RETRACTED,
    WRITTEN_OFF,
    Output,
    decode_state,
    encode_state,
    ev_date,
    ev_instant,
    ev_int,
    ev_str,
    ev_zone,
    hhmm,
    is_upward,
    make_id,
)
from .policy import Policy

CLOSE = "CLOSE"
# Reasons.
OPENED = "OPENED"
ESCALATED = "ESCALATED"
CURED = "CURED"
LOAN_CLOSED = "LOAN_CLOSED"
WRITTEN_OFF_REASON = "WRITTEN_OFF"
RETRACTED = "RETRACTED"
REINSTATED = "REINSTATED"


@dataclass(frozen=True)
class Step:
    """One bucket the case moved into, as its event reported it."""

    source_event_id: str
    bucket: str
    dpd: int
    total_overdue: int
    currency: str
    tasked: bool


@dataclass(frozen=True)
class CollectionsState:
    """A loan's collections memory (JSON-able; see :func:`state_to_bytes`)."""

    case_open: bool = False
    steps: tuple[Step, ...] = ()
    closed_by: str | None = None
    closed_steps: tuple[Step, ...] = ()
    sources: dict[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)
    retracted: dict[str, str] = field(default_factory=dict)


EMPTY = CollectionsState()


def _task(
    event: Mapping[str, Any],
    policy: Policy,
    *,
    task_id: str,
    action: str,
    reason: str,
    bucket: str,
    dpd: int,
    total_overdue: int,
    currency: str,
    opened_at: datetime,
    attempts: int,
) -> dict[str, Any]:
    tz = ev_zone(event)
    return {
        "task_id": task_id,
        "loan_id": ev_str(event, "loan_id"),
        "borrower_id": ev_str(event, "borrower_id"),
        "action": action,
        "reason": reason,
        "bucket": bucket,
        "dpd": dpd,
        "total_overdue": total_overdue,
        "currency": currency,
        "opened_at": opened_at.astimezone(tz),
        "contact_window": {
            "start": hhmm(policy.contact_window_start),
            "end": hhmm(policy.contact_window_end),
            "timezone": tz.key,
        },
        "max_attempts_per_day": attempts,
        "source_event_id": ev_str(event, "event_id"),
    }


def _step_task(
    event: Mapping[str, Any], policy: Policy, step: Step, task_id: str, reason: str, opened_at: datetime
) -> dict[str, Any] | None:
    rung = policy.rung(step.bucket)
    if rung is None:
        return None
    attempts = policy.max_attempts_per_day if rung.max_attempts_per_day is None else rung.max_attempts_per_day
    return _task(
        event,
        policy,
        task_id=task_id,
        action=rung.action,
        reason=reason,
        bucket=step.bucket,
        dpd=step.dpd,
        total_overdue=step.total_overdue,
        currency=step.currency,
        opened_at=opened_at,
        attempts=attempts,
    )


def _close(
    event: Mapping[str, Any],
    policy: Policy,
    task_id: str,
    reason: str,
    as_of: datetime,
    step: Step | None = None,
) -> dict[str, Any]:
    """A CLOSE task; for a retraction ``step`` (what was retracted) supplies bucket, dpd and amount."""
    if step is None:
        step = _step_of(event, False)
    return _task(
        event,
        policy,
        task_id=task_id,
        action=CLOSE,
        reason=reason,
        bucket=step.bucket,
        dpd=step.dpd,
        total_overdue=step.total_overdue,
        currency=step.currency,
        opened_at=as_of,
        attempts=0,
    )


def _step_of(event: Mapping[str, Any], tasked: bool) -> Step:
    return Step(
        ev_str(event, "event_id"),
        ev_str(event, "bucket"),
        ev_int(event, "dpd"),
        ev_int(event, "total_overdue"),
        ev_str(event, "currency"),
        tasked,
    )


def step_event(
    state: CollectionsState, event: Mapping[str, Any], policy: Policy
) -> tuple[CollectionsState, list[Output]]:
    """Route one OverdueEvent of this loan; returns the new state and the tasks to send."""
    kind = ev_str(event, "type")
    if kind not in (OVERDUE_OPENED, BUCKET_CHANGED, OVERDUE_CURED, WRITTEN_OFF, OVERDUE_RETRACTED):
        return state, []
    event_id = ev_str(event, "event_id")
    if event_id in state.sources:
        return state, [(COLLECTIONS_TOPIC, t["loan_id"], t) for t in state.sources[event_id]]
    as_of = ev_instant(event, "as_of")
    tasks: list[dict[str, Any]] = []

    if kind == OVERDUE_OPENED:
        step = _step_of(event, True)
        task = _step_task(event, policy, step, make_id("tsk", "entry", event_id), OPENED, as_of)
        tasks += [task] if task else []
        state = replace(state, case_open=True, steps=(step,))
    elif kind == BUCKET_CHANGED:
        upward = is_upward(event)
        step = _step_of(event, upward)
        if upward:
            task = _step_task(
                event,
                policy,
                step,
                make_id("tsk", "entry", event_id),
                OPENED if not state.case_open else ESCALATED,
                as_of,
            )
            tasks += [task] if task else []
        state = replace(state, case_open=state.case_open or upward, steps=(*state.steps, step))
    elif kind == OVERDUE_CURED or (
        kind == WRITTEN_OFF and (state.case_open or ev_date(event, "first_delinquency_date") is not None)
    ):
        if kind == WRITTEN_OFF:
            reason = WRITTEN_OFF_REASON
        else:
            reason = LOAN_CLOSED if event.get("loan_status") == CLOSED else CURED
        tasks.append(_close(event, policy, make_id("tsk", "close", event_id), reason, as_of))
        state = replace(state, case_open=False, steps=(), closed_by=event_id, closed_steps=state.steps)
    elif kind == OVERDUE_RETRACTED:
        state, tasks = _retract(state, event, as_of, policy)

    state = replace(state, sources={**state.sources, event_id: tuple(tasks)})
    return state, [(COLLECTIONS_TOPIC, t["loan_id"], t) for t in tasks]


def _retract(
    state: CollectionsState, event: Mapping[str, Any], as_of: datetime, policy: Policy
) -> tuple[CollectionsState, list[dict[str, Any]]]:
    target = ev_str(event, "retracts")
    event_id = ev_str(event, "event_id")
    if target in state.retracted:
        return state, []
    state = replace(state, retracted={**state.retracted, target: event_id})
    tasks: list[dict[str, Any]] = []
    ids = [s.source_event_id for s in state.steps]
    if state.case_open and target in ids:
        position = ids.index(target)
        retracted_step = state.steps[position]
        remaining = state.steps[:position] + state.steps[position + 1 :]
        if position == 0:
            tasks.append(
                _close(event, policy, make_id("tsk", "close", event_id), RETRACTED, as_of, retracted_step)
            )
            return replace(state, case_open=False, steps=()), tasks
        state = replace(state, steps=remaining)
        if retracted_step.tasked:
            tasks.append(
                _close(event, policy, make_id("tsk", "close", event_id), RETRACTED, as_of, retracted_step)
            )
            task = _step_task(
                event, policy, remaining[-1], make_id("tsk", "reinstated", event_id), REINSTATED, as_of
            )
            tasks += [task] if task else []
        return state, tasks
    if not state.case_open and target in [s.source_event_id for s in state.closed_steps]:
        return replace(
            state, closed_steps=tuple(s for s in state.closed_steps if s.source_event_id != target)
        ), []
    if target == state.closed_by and not state.case_open and state.closed_steps:
        state = replace(state, case_open=True, steps=state.closed_steps, closed_by=None, closed_steps=())
        task = _step_task(
            event, policy, state.steps[-1], make_id("tsk", "reinstated", event_id), REINSTATED, as_of
        )
        tasks += [task] if task else []
    return state, tasks


def step_tick(
    state: CollectionsState, as_of: datetime, policy: Policy
) -> tuple[CollectionsState, list[Output]]:
    """Ticks change nothing here: tasks are made when their events arrive."""
    return state, []


def next_due(state: CollectionsState) -> datetime | None:
    """Always None: no task waits for the clock."""
    return None


def state_to_bytes(state: CollectionsState) -> bytes:
    """The state as JSON bytes for the Faust table."""
    return encode_state(state)


def state_from_bytes(data: bytes) -> CollectionsState:
    """The state back from :func:`state_to_bytes`."""
    return decode_state(CollectionsState, data)
