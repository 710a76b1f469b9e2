"""Credit-bureau router: a loan's OverdueEvents and disputes → ``bureau.records`` (SPEC §5).

One record whenever the loan's PBOC-style repayment status changes: ``1``…``7`` while an
episode is open (by bucket M1…M7; a bucket beyond M7 reports ``7``), ``N`` when it cures,
``C`` when it ends because the loan CLOSED, ``B`` at write-off. The Metro 2 account status
comes from the DPD at the record's ``as_of`` (11 below 30, then 71, 78, 80, 82, 83, 84 by
30-day steps), 97 for written off and 13 for closed.

Notice before negative data (PBOC Credit Reporting Regulation, Art. 15). When an episode
opens, the router writes a NOTICE to ``notify.requests`` (keyed by borrower_id) and holds
the episode's negative records (``1``…``7``, ``B``) until ``release_at`` = the NOTICE's
``created_at`` (or, with ``bureau.lead_time_from = "not_before"``, its quiet-hours
adjusted ``not_before``) plus the lead time (default 24 h). A held record carries that
instant as its ``released_at`` and is sent once the tick clock reaches it. If the episode
cures before ``release_at`` its held records are dropped, and since the bureau then never
saw anything negative the cure itself makes no ``N`` record either (a non-negative record
is made only when it differs from what the bureau last received). A write-off without an
open episode opens one for its ``B`` record: NOTICE first, then the lead time.

Determinism. The router's clock is the tick clock, and an event also proves the clock
reached its ``as_of`` (the detector emits nothing ahead of the ticks): before handling an
event at ``t`` every held record due at or before ``t`` is released, so a cure at exactly
``release_at`` comes after the release, in the stream and in replay alike. One race is
left: a cure whose ``as_of`` is before ``release_at`` may reach the router only after a
tick already released the records (a payment that reached the detector late). The router
then corrects each prematurely released record, so after applying corrections the
bureau holds what replay gives (nothing negative).

Records carry, beside SPEC's fields, the two audit fields of ``schemas/BureauRecord.avsc``:
``currency`` (of ``overdue_amount``) and ``source_event_id`` (the event the record was
made from; for a correction, the retraction or late cure that caused it).

Tamper evidence (SPEC §7.1, ``streams.core.chain``): each record the bureau receives is the next
link of the loan's hash chain (``chain_seq``, ``prev_hash``, ``hash``), numbered when it is
released, so held records that are dropped never get a number and corrections do. The state keeps
the chain's length and last hash; a redelivered event or tick re-sends its stored outputs, links
included, so a re-send after a crash is identical, not a fork.

Corrections. When a source event is retracted, its held record is dropped; a released
one gets a correction record: ``corrects`` names it, ``as_of``/``as_of_date`` are the
corrected record's, ``released_at`` is when the router learned, and the status fields say
what held at that instant without it (the loan's previous reported record, or ``N``).
The retraction's own state fields are not used (the detector repeats the withdrawn
event's). Retracting the event that opened an episode cancels the episode; if its NOTICE
was already due, the borrower gets a CORRECTION of it. Retracting the cure that ended an
episode reopens it and restores the records the cure had dropped.

Disputes (``bureau.disputes``): a record is ``disputed`` when a dispute of the loan is
OPEN at the record's ``released_at`` (opened at or before it, not resolved by then), as
far as the disputes received so far tell. A dispute alone makes no record.

State is keyed by ``loan_id``, co-partitioned with ``overdue.events`` and
``bureau.disputes``; it holds a handful of entries per episode and is never pruned by
time (a loan's episodes are few). Re-delivery: a repeated event re-emits what it emitted
the first time; a repeated tick re-emits what that tick released.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from streams.core.chain import ZERO_HASH, link
from streams.core.dates import parse_instant

from .common import (
    BUCKET_CHANGED,
    BUREAU_TOPIC,
    CLOSED,
    OVERDUE_CURED,
    OVERDUE_OPENED,
    OVERDUE_RETRACTED,
    WRITTEN_OFF,
    Output,
    RoutingError,
    bucket_rank,
    decode_state,
    encode_state,
    ev_date,
    ev_instant,
    ev_int,
    ev_str,
    ev_zone,
    later,
    make_id,
    next_allowed,
    utc,
)
from .messages import NOTICE, SEND, as_output, build_notification, correction_for, event_params
from .policy import LEAD_FROM_NOT_BEFORE, Policy

NEGATIVE = frozenset({"1", "2", "3", "4", "5", "6", "7", "B"})
_HANDLED = frozenset({OVERDUE_OPENED, BUCKET_CHANGED, OVERDUE_CURED, WRITTEN_OFF, OVERDUE_RETRACTED})


@dataclass(frozen=True)
class Episode:
    """A delinquency episode as the bureau sees it: its NOTICE, release instant and held records."""

    opened_by: str
    notice: dict[str, Any]
    release_at: datetime
    ended_by: str | None = None
    cancelled_by: str | None = None
    held: tuple[dict[str, Any], ...] = ()
    dropped: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Released:
    """What the bureau received: enough of a released record to correct it later."""

    record_id: str
    source_event_id: str
    episode: str | None
    as_of: datetime
    as_of_date: date
    released_at: datetime
    pboc_status: str
    dpd: int
    overdue_installments: int
    overdue_amount: int
    first_delinquency_date: date | None
    notice_id: str | None
    is_correction: bool = False
    voided_by: str | None = None


@dataclass(frozen=True)
class DisputeSpan:
    """One dispute's OPEN and RESOLVED instants (either may be unknown yet)."""

    dispute_id: str
    opened_at: datetime | None = None
    resolved_at: datetime | None = None


@dataclass(frozen=True)
class BureauState:
    """A loan's bureau memory (JSON-able; see :func:`state_to_bytes`)."""

    clock: datetime | None = None
    episodes: tuple[Episode, ...] = ()
    orphans: tuple[dict[str, Any], ...] = ()
    released: tuple[Released, ...] = ()
    sources: dict[str, tuple[tuple[str, str, dict[str, Any]], ...]] = field(default_factory=dict)
    record_of: dict[str, str] = field(default_factory=dict)
    retracted: dict[str, str] = field(default_factory=dict)
    disputes: tuple[DisputeSpan, ...] = ()
    disputes_seen: tuple[str, ...] = ()
    last_tick: datetime | None = None
    last_tick_outputs: tuple[tuple[str, str, dict[str, Any]], ...] = ()
    # The loan's hash chain (SPEC §7.1): how many records it has and the hash of the last one.
    chain_seq: int = 0
    chain_head: str = ZERO_HASH


EMPTY = BureauState()


# --- status codes ---------------------------------------------------------------------------------


def pboc_status(event: Mapping[str, Any]) -> str:
    """The PBOC-style repayment status an event establishes."""
    kind = ev_str(event, "type")
    if kind in (OVERDUE_OPENED, BUCKET_CHANGED):
        return str(min(7, max(1, bucket_rank(ev_str(event, "bucket")))))
    if kind == OVERDUE_CURED:
        return "C" if event.get("loan_status") == CLOSED else "N"
    if kind == WRITTEN_OFF:
        return "B"
    raise RoutingError(f"{kind} establishes no repayment status")


def metro2_status(pboc: str, dpd: int) -> str:
    """Metro 2 account status: 97 written off, 13 closed, else by DPD in 30-day steps from 30."""
    if pboc == "B":
        return "97"
    if pboc == "C":
        return "13"
    for limit, code in ((30, "11"), (60, "71"), (90, "78"), (120, "80"), (150, "82"), (180, "83")):
        if dpd < limit:
            return code
    return "84"


# --- helpers --------------------------------------------------------------------------------------


def disputed_at(state: BureauState, instant: datetime) -> bool:
    """True when a dispute received so far is OPEN at ``instant``."""
    return any(
        s.opened_at is not None
        and s.opened_at <= instant
        and (s.resolved_at is None or instant < s.resolved_at)
        for s in state.disputes
    )


def view_status(state: BureauState) -> str:
    """The status the bureau currently has: the latest record it received and was not told to void."""
    live = [
        (r.as_of, i, r) for i, r in enumerate(state.released) if r.voided_by is None and not r.is_correction
    ]
    return max(live, key=lambda x: x[:2])[2].pboc_status if live else "N"


def _record(event: Mapping[str, Any], status: str, notice_id: str | None) -> dict[str, Any]:
    """A BureauRecord for ``event`` (released_at and disputed are filled in at release)."""
    dpd = ev_int(event, "dpd")
    return {
        "record_id": make_id("bur", "record", ev_str(event, "event_id")),
        "loan_id": ev_str(event, "loan_id"),
        "borrower_id": ev_str(event, "borrower_id"),
        "as_of": ev_instant(event, "as_of").astimezone(ev_zone(event)),
        "as_of_date": ev_date(event, "as_of_date"),
        "released_at": None,
        "pboc_status": status,
        "metro2_status": metro2_status(status, dpd),
        "dpd": dpd,
        "overdue_installments": ev_int(event, "overdue_installments"),
        "overdue_amount": ev_int(event, "total_overdue"),
        "first_delinquency_date": ev_date(event, "first_delinquency_date"),
        "notice_id": notice_id,
        "disputed": None,
        "corrects": None,
        "currency": ev_str(event, "currency"),
        "source_event_id": ev_str(event, "event_id"),
    }


def _emit(
    state: BureauState, record: Mapping[str, Any], released_at: datetime, episode: str | None
) -> tuple[BureauState, Output]:
    """Release ``record`` at ``released_at``: fill the time-dependent fields, make it the next link
    of the loan's chain and remember it. Every record the bureau receives passes here, and only
    those: a held record that is dropped never gets a chain_seq."""
    value = dict(record)
    value["released_at"] = released_at.astimezone(record["as_of"].tzinfo)
    value["disputed"] = disputed_at(state, released_at)
    value = link(value, state.chain_seq + 1, state.chain_head)
    summary = Released(
        record_id=value["record_id"],
        source_event_id=value["source_event_id"],
        episode=episode,
        as_of=utc(value["as_of"]),
        as_of_date=value["as_of_date"],
        released_at=utc(released_at),
        pboc_status=value["pboc_status"],
        dpd=value["dpd"],
        overdue_installments=value["overdue_installments"],
        overdue_amount=value["overdue_amount"],
        first_delinquency_date=value["first_delinquency_date"],
        notice_id=value["notice_id"],
        is_correction=value["corrects"] is not None,
    )
    state = replace(
        state, released=(*state.released, summary), chain_seq=value["chain_seq"], chain_head=value["hash"]
    )
    return state, (BUREAU_TOPIC, value["loan_id"], value)


def _release_due(state: BureauState, until: datetime) -> tuple[BureauState, list[Output]]:
    """Release every held record whose episode's release instant is at or before ``until``.

    A held record's ``released_at`` is the release instant (or its own ``as_of`` if later):
    the instant it was due, whenever the tick that sends it arrives.
    """
    outputs: list[Output] = []
    episodes = list(state.episodes)
    for index, ep in enumerate(episodes):
        if ep.cancelled_by is None and ep.held and ep.release_at <= until:
            for record in ep.held:
                state, out = _emit(state, record, max(ep.release_at, utc(record["as_of"])), ep.opened_by)
                outputs.append(out)
            episodes[index] = replace(ep, held=())
            state = replace(state, episodes=tuple(episodes))
    return state, outputs


def _current(state: BureauState) -> tuple[int, Episode] | None:
    for index in range(len(state.episodes) - 1, -1, -1):
        ep = state.episodes[index]
        if ep.ended_by is None and ep.cancelled_by is None:
            return index, ep
    return None


def _with_episode(state: BureauState, index: int, ep: Episode) -> BureauState:
    episodes = list(state.episodes)
    episodes[index] = ep
    return replace(state, episodes=tuple(episodes))


def _open_episode(
    state: BureauState, event: Mapping[str, Any], as_of: datetime, policy: Policy, template: str
) -> tuple[BureauState, int, Output]:
    """Start an episode at ``event``: write its NOTICE and fix the instant its records may be released."""
    event_id = ev_str(event, "event_id")
    tz = ev_zone(event)
    base = as_of
    if policy.bureau_lead_time_from == LEAD_FROM_NOT_BEFORE:
        base = next_allowed(as_of, tz, policy.quiet_hours_start, policy.quiet_hours_end)
    release_at = utc(base) + policy.bureau_lead_time  # elapsed time, not wall time, across DST
    notice = build_notification(
        policy,
        event,
        notification_id=make_id("ntf", "notice", event_id),
        source_event_id=event_id,
        kind=NOTICE,
        template=template,
        params_for=lambda locale: event_params(event, template, locale, report_after=release_at),
        created_at=as_of,
    )
    episode = Episode(opened_by=event_id, notice=notice, release_at=release_at, held=state.orphans)
    state = replace(state, episodes=(*state.episodes, episode), orphans=())
    return state, len(state.episodes) - 1, as_output(notice)


def _place(
    state: BureauState, index: int, record: dict[str, Any], as_of: datetime
) -> tuple[BureauState, list[Output]]:
    """Hold a negative record until its episode's release instant; release at once if that has passed."""
    ep = state.episodes[index]
    state = replace(state, record_of={**state.record_of, record["source_event_id"]: record["record_id"]})
    state = _with_episode(state, index, replace(ep, held=(*ep.held, record)))
    if as_of >= ep.release_at:
        return _release_due(state, as_of)
    return state, []


def _correction(
    state: BureauState,
    target: Released,
    by_event: Mapping[str, Any],
    learned_at: datetime,
    voids: frozenset[str],
) -> tuple[BureauState, Output]:
    """A correction record voiding ``target``: what held at its ``as_of`` without it (and without ``voids``)."""
    prior = [
        r
        for r in state.released
        if r.voided_by is None
        and not r.is_correction
        and r.record_id not in voids
        and r.record_id != target.record_id
        and r.as_of <= target.as_of
    ]
    before = max(prior, key=lambda r: r.as_of) if prior else None
    status = before.pboc_status if before is not None else "N"
    negative = before is not None and status in NEGATIVE
    dpd = before.dpd if before is not None and negative else 0
    by_event_id = ev_str(by_event, "event_id")
    record_id = make_id("bur", "correction", by_event_id, target.record_id)
    tz = ev_zone(by_event)
    value = {
        "record_id": record_id,
        "loan_id": ev_str(by_event, "loan_id"),
        "borrower_id": ev_str(by_event, "borrower_id"),
        "as_of": target.as_of.astimezone(tz),
        "as_of_date": target.as_of_date,
        "released_at": None,
        "pboc_status": status,
        "metro2_status": metro2_status(status, dpd),
        "dpd": dpd,
        "overdue_installments": before.overdue_installments if before is not None and negative else 0,
        "overdue_amount": before.overdue_amount if before is not None and negative else 0,
        "first_delinquency_date": before.first_delinquency_date if before is not None and negative else None,
        "notice_id": target.notice_id,
        "disputed": None,
        "corrects": target.record_id,
        "currency": ev_str(by_event, "currency"),
        "source_event_id": by_event_id,
    }
    released = tuple(
        replace(r, voided_by=record_id) if r.record_id == target.record_id else r for r in state.released
    )
    state = replace(state, released=released)
    return _emit(state, value, max(utc(learned_at), target.released_at), target.episode)


# --- steps ----------------------------------------------------------------------------------------


def step_event(
    state: BureauState, event: Mapping[str, Any], policy: Policy
) -> tuple[BureauState, list[Output]]:
    """Route one OverdueEvent of this loan: NOTICEs to notify.requests, records to bureau.records."""
    kind = ev_str(event, "type")
    if kind not in _HANDLED:
        return state, []
    event_id = ev_str(event, "event_id")
    if event_id in state.sources:
        return state, list(state.sources[event_id])
    as_of = ev_instant(event, "as_of")
    state, outputs = _release_due(state, as_of)
    if kind == OVERDUE_RETRACTED:
        state, more = _retract(state, event, as_of, policy)
    elif kind == OVERDUE_CURED:
        state, more = _cure(state, event, as_of)
    else:
        state, more = _negative(state, event, as_of, policy)
    outputs += more
    sources = {**state.sources, event_id: tuple(outputs)}
    return replace(state, clock=later(state.clock, as_of), sources=sources), outputs


def _negative(
    state: BureauState, event: Mapping[str, Any], as_of: datetime, policy: Policy
) -> tuple[BureauState, list[Output]]:
    """OPENED, BUCKET_CHANGED or WRITTEN_OFF: a negative record, held behind the episode's NOTICE."""
    kind = ev_str(event, "type")
    outputs: list[Output] = []
    current = _current(state)
    if kind == OVERDUE_OPENED and current is not None:
        # A second opening without a cure should not happen; end the old episode, keep its records.
        state = _with_episode(state, current[0], replace(current[1], ended_by=ev_str(event, "event_id")))
        current = None
    if current is None:
        template = "write_off_notice" if kind == WRITTEN_OFF else "negative_report_notice"
        state, index, notice = _open_episode(state, event, as_of, policy, template)
        outputs.append(notice)
    else:
        index = current[0]
    ep = state.episodes[index]
    record = _record(event, pboc_status(event), ep.notice["notification_id"])
    state, released = _place(state, index, record, as_of)
    outputs.extend(released)
    if kind == WRITTEN_OFF:
        state = _with_episode(
            state, index, replace(state.episodes[index], ended_by=ev_str(event, "event_id"))
        )
    return state, outputs


def _cure(state: BureauState, event: Mapping[str, Any], as_of: datetime) -> tuple[BureauState, list[Output]]:
    """OVERDUE_CURED: drop what is still held, correct what a racing tick released too early, report N/C."""
    event_id = ev_str(event, "event_id")
    outputs: list[Output] = []
    current = _current(state)
    notice_id = None
    if current is not None:
        index, ep = current
        notice_id = ep.notice["notification_id"]
        early = [
            r
            for r in state.released
            if r.episode == ep.opened_by
            and r.voided_by is None
            and not r.is_correction
            and r.released_at > as_of
        ]
        voids = frozenset(r.record_id for r in early)
        for target in sorted(early, key=lambda r: r.as_of, reverse=True):
            state, out = _correction(state, target, event, as_of, voids)
            outputs.append(out)
        state = _with_episode(
            state, index, replace(state.episodes[index], ended_by=event_id, held=(), dropped=ep.held)
        )
    status = pboc_status(event)
    if status != view_status(state):
        record = _record(event, status, notice_id)
        state = replace(state, record_of={**state.record_of, event_id: record["record_id"]})
        state, out = _emit(state, record, as_of, current[1].opened_by if current else None)
        outputs.append(out)
    return state, outputs


def _retract(
    state: BureauState, event: Mapping[str, Any], as_of: datetime, policy: Policy
) -> tuple[BureauState, list[Output]]:
    """OVERDUE_RETRACTED: undo what the named event caused (drop, correct, cancel, reopen)."""
    target = ev_str(event, "retracts")
    event_id = ev_str(event, "event_id")
    if target in state.retracted or target not in state.sources:
        return state, []
    state = replace(state, retracted={**state.retracted, target: event_id})
    outputs: list[Output] = []
    record_id = state.record_of.get(target)
    if record_id is not None:
        keep = tuple(r for r in state.orphans if r["record_id"] != record_id)
        episodes = tuple(
            replace(
                ep,
                held=tuple(r for r in ep.held if r["record_id"] != record_id),
                dropped=tuple(r for r in ep.dropped if r["record_id"] != record_id),
            )
            for ep in state.episodes
        )
        state = replace(state, orphans=keep, episodes=episodes)
        for r in state.released:
            if r.record_id == record_id and r.voided_by is None:
                state, out = _correction(state, r, event, as_of, frozenset())
                outputs.append(out)
    for index, ep in enumerate(state.episodes):
        if ep.cancelled_by is not None:
            continue
        if ep.opened_by == target:
            # The episode never opened: no notice should have gone out; records still held wait for
            # the episode that now holds (their own events were not retracted).
            state = replace(state, orphans=(*state.orphans, *ep.held))
            state = _with_episode(state, index, replace(ep, cancelled_by=event_id, held=(), dropped=()))
            notice = ep.notice
            if notice["disposition"] == SEND and notice["not_before"] <= as_of:
                correction = correction_for(
                    policy, notice, event, make_id("ntf", "correction", event_id, notice["notification_id"])
                )
                outputs.append(as_output(correction))
        elif ep.ended_by == target:
            state = _with_episode(
                state, index, replace(ep, ended_by=None, held=(*ep.dropped, *ep.held), dropped=())
            )
            state, released = _release_due(state, as_of)
            outputs.extend(released)
    return state, outputs


def step_tick(state: BureauState, as_of: datetime, policy: Policy) -> tuple[BureauState, list[Output]]:
    """The tick clock reached ``as_of``: release the held records due by then (each at its own instant).

    The same tick again re-sends what that instant released (a redelivered tick repeats its
    outputs, as a redelivered event does), unless something new is due by it: late data can
    hold a record again at that very instant (a retracted opening, re-opened), and answering
    with the old outputs left it held; the shells, which tick a loan until nothing is due,
    then looped forever."""
    as_of = utc(as_of)
    earlier = state.last_tick_outputs if state.last_tick == as_of else ()
    due = next_due(state)
    if earlier and (due is None or due > as_of):
        return state, list(earlier)
    state, outputs = _release_due(state, as_of)
    state = replace(state, clock=later(state.clock, as_of))
    if outputs:
        state = replace(state, last_tick=as_of, last_tick_outputs=(*earlier, *outputs))
    return state, outputs


def step_dispute(
    state: BureauState, dispute: Mapping[str, Any], policy: Policy
) -> tuple[BureauState, list[Output]]:
    """A dispute OPEN/RESOLVED for this loan: changes the ``disputed`` mark of records released from then on."""
    dispute_id = dispute.get("dispute_id")
    status = dispute.get("status")
    if not isinstance(dispute_id, str) or not dispute_id or status not in ("OPEN", "RESOLVED"):
        raise RoutingError("a dispute needs a dispute_id and status OPEN or RESOLVED")
    try:
        at = parse_instant(dispute.get("at"))
    except ValueError as exc:
        raise RoutingError(f"dispute field 'at': {exc}") from None
    seen = f"{dispute_id}/{status}"
    if seen in state.disputes_seen:
        return state, []
    spans = {s.dispute_id: s for s in state.disputes}
    span = spans.get(dispute_id, DisputeSpan(dispute_id))
    if status == "OPEN":
        span = replace(span, opened_at=at if span.opened_at is None else min(span.opened_at, at))
    else:
        span = replace(span, resolved_at=at if span.resolved_at is None else max(span.resolved_at, at))
    spans[dispute_id] = span
    return replace(state, disputes=tuple(spans.values()), disputes_seen=(*state.disputes_seen, seen)), []


def next_due(state: BureauState) -> datetime | None:
    """The next instant a tick releases something for this loan, or None."""
    due = [ep.release_at for ep in state.episodes if ep.cancelled_by is None and ep.held]
    return min(due) if due else None


def is_disputed(state: BureauState, at: datetime) -> bool:
    """Whether records released at ``at`` would carry the dispute mark (for lookups and tests)."""
    return disputed_at(state, at)


def state_to_bytes(state: BureauState) -> bytes:
    """The state as JSON bytes for the Faust table."""
    return encode_state(state)


def state_from_bytes(data: bytes) -> BureauState:
    """The state back from :func:`state_to_bytes`."""
    return decode_state(BureauState, data)
