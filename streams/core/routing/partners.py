"""Partner router: OverdueEvents → ``partner.shares`` for the partners each loan is shared with (SPEC §5).

Privacy first (PIPL Art. 6 and 23): a loan goes only to the partners listed in its
``partners`` (the borrower's consent) *and* configured in the policy with a key; a
partner named by a loan but missing from the policy receives nothing (see
:func:`unconfigured_partners` for a metric). The borrower appears only as
``borrower_token`` = HMAC-SHA256(partner key, borrower_id), hex: stable per partner,
unlinkable across partners, and never with the real id or contact data. Items carry
exactly ``loan_id, borrower_token, type, dpd, bucket, total_overdue, currency, as_of``.

Two stages, because the rules are per loan and per partner:

1. Per loan (keyed by ``loan_id``, co-partitioned with ``overdue.events``):
   :func:`step_fan_out` turns an event into one *envelope* per partner. OPENED,
   BUCKET_CHANGED (either way), CURED and WRITTEN_OFF are shared; a retraction of a shared
   event becomes a RETRACTED item for the same partners that echoes the withdrawn item
   (its ``as_of``, ``dpd``, ``bucket``, ``total_overdue``), so the partner knows exactly
   which item to disregard; the items that now hold follow as their own events. The
   small per-loan :class:`ShareLedger` remembers what was shared for that. The stateless
   :func:`fan_out` does the same for everything but retractions. An envelope is
   ``{partner_id, source_event_id, retracts, as_of, item}`` (``as_of`` is the event's);
   it contains no borrower_id and no contact, so it may cross the repartition topic.
2. Per partner (the agent re-keys envelopes by ``partner_id``): :func:`step_item`.
   REALTIME partners get one share per envelope at once (``as_of`` = the event's).
   DIGEST partners get one share per local day (partner's time zone, default
   Asia/Shanghai) at the digest time of the next day (default 07:00), listing that day's
   items in (event ``as_of``, source event id) order, sent by :func:`step_tick` once the
   tick clock reaches it; a day without items sends nothing. A day with more than
   ``DIGEST_PART_ITEMS`` items is sent as several shares (``part`` 1..``parts``), in order. A retraction whose ``as_of``
   is before the digest instant of the withdrawn item's day removes the item from that
   digest instead of adding a RETRACTED item (the partner never saw it); one at or after
   that instant is listed as a RETRACTED item of its own day. This is decided by the
   instants, not by whether the digest's tick happened to arrive first.

Late items. An item whose day's digest is already out (or due by the router's clock)
goes into a supplementary digest for that day, sent at the next tick, with the day's
digest instant as ``as_of`` and an id of its own; replay (which has no late items) puts
the same items in the day's one digest. Re-delivered envelopes are recognised for
``policy.digest_memory`` (default 3 days) after their day's digest went out.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from streams.core.dates import parse_instant, zone

from .common import (
    BUCKET_CHANGED,
    ONE_DAY,
    OVERDUE_CURED,
    OVERDUE_OPENED,
    OVERDUE_RETRACTED,
    PARTNER_TOPIC,
    WRITTEN_OFF,
    Output,
    at_local,
    decode_state,
    encode_state,
    ev_instant,
    ev_int,
    ev_partners,
    ev_str,
    ev_zone,
    later,
    local_day,
    make_id,
    utc,
)
from .policy import DIGEST, REALTIME, Policy

SHARED_TYPES = frozenset({OVERDUE_OPENED, BUCKET_CHANGED, OVERDUE_CURED, WRITTEN_OFF})
RETRACTED = "RETRACTED"
#: The most items one digest share lists. A longer day's digest is sent as several shares
#: (``part`` 1..``parts``), so no record comes near Kafka's 1 MB limit: an item is at most about
#: 200 bytes of Avro (a loan id of at most 64 characters, a 64-digit token, a bucket label and
#: four numbers), so a part stays under 100 KB, below the producer's 256 KB record batches too.
DIGEST_PART_ITEMS = 500
ITEM_FIELDS = ("loan_id", "borrower_token", "type", "dpd", "bucket", "total_overdue", "currency", "as_of")

Envelope = dict[str, Any]


def borrower_token(key: bytes, borrower_id: str) -> str:
    """The partner-specific pseudonym of a borrower: HMAC-SHA256 of the id under the partner's key, hex."""
    return hmac.new(key, borrower_id.encode("utf-8"), hashlib.sha256).hexdigest()


def _base_item(event: Mapping[str, Any]) -> dict[str, Any]:
    """An item without its token: the only event fields a partner ever sees."""
    return {
        "loan_id": ev_str(event, "loan_id"),
        "type": ev_str(event, "type"),
        "dpd": ev_int(event, "dpd"),
        "bucket": ev_str(event, "bucket"),
        "total_overdue": ev_int(event, "total_overdue"),
        "currency": ev_str(event, "currency"),
        "as_of": ev_instant(event, "as_of").astimezone(ev_zone(event)),
    }


def _envelope(
    partner_id: str,
    key: bytes,
    borrower_id: str,
    base: Mapping[str, Any],
    *,
    source_event_id: str,
    retracts: str | None,
    as_of: datetime,
) -> Envelope:
    item = {
        "loan_id": base["loan_id"],
        "borrower_token": borrower_token(key, borrower_id),
        "type": base["type"],
        "dpd": base["dpd"],
        "bucket": base["bucket"],
        "total_overdue": base["total_overdue"],
        "currency": base["currency"],
        "as_of": base["as_of"],
    }
    return {
        "partner_id": partner_id,
        "source_event_id": source_event_id,
        "retracts": retracts,
        "as_of": as_of,
        "item": item,
    }


def unconfigured_partners(event: Mapping[str, Any], policy: Policy) -> list[str]:
    """Partners a loan names that the policy has no key for (they receive nothing)."""
    return [p for p in ev_partners(event) if p not in policy.partners]


def fan_out(event: Mapping[str, Any], policy: Policy) -> list[tuple[str, Envelope]]:
    """One pseudonymised envelope per consented and configured partner, for a shared event type.

    Returns [] for types partners do not get, and for retractions (use :func:`step_fan_out`,
    which knows whether and to whom the withdrawn event was shared).
    """
    if ev_str(event, "type") not in SHARED_TYPES:
        return []
    base = _base_item(event)
    borrower_id = ev_str(event, "borrower_id")
    event_id = ev_str(event, "event_id")
    as_of = ev_instant(event, "as_of")
    return [
        (
            pid,
            _envelope(
                pid,
                policy.partners[pid].key,
                borrower_id,
                base,
                source_event_id=event_id,
                retracts=None,
                as_of=as_of,
            ),
        )
        for pid in ev_partners(event)
        if pid in policy.partners
    ]


@dataclass(frozen=True)
class SharedItem:
    """What one event shared: its item (without token) and the partners it went to."""

    item: dict[str, Any]
    partners: tuple[str, ...]


@dataclass(frozen=True)
class ShareLedger:
    """A loan's record of shared events, for RETRACTED items (keyed by loan_id; JSON-able)."""

    shared: dict[str, SharedItem] = field(default_factory=dict)
    retracted: dict[str, str] = field(default_factory=dict)


EMPTY_LEDGER = ShareLedger()


def step_fan_out(
    ledger: ShareLedger, event: Mapping[str, Any], policy: Policy
) -> tuple[ShareLedger, list[tuple[str, Envelope]]]:
    """Per-loan stage: envelopes for one event, remembering shared events so retractions can echo them."""
    kind = ev_str(event, "type")
    if kind in SHARED_TYPES:
        envelopes = fan_out(event, policy)
        event_id = ev_str(event, "event_id")
        if envelopes and event_id not in ledger.shared:
            base = _base_item(event)
            ledger = replace(
                ledger, shared={**ledger.shared, event_id: SharedItem(base, tuple(p for p, _ in envelopes))}
            )
        return ledger, envelopes
    if kind != OVERDUE_RETRACTED:
        return ledger, []
    target = ev_str(event, "retracts")
    event_id = ev_str(event, "event_id")
    original = ledger.shared.get(target)
    if original is None or ledger.retracted.get(target, event_id) != event_id:
        return ledger, []
    ledger = replace(ledger, retracted={**ledger.retracted, target: event_id})
    base = {**original.item, "type": RETRACTED}
    as_of = ev_instant(event, "as_of")
    borrower_id = ev_str(event, "borrower_id")
    return ledger, [
        (
            pid,
            _envelope(
                pid,
                policy.partners[pid].key,
                borrower_id,
                base,
                source_event_id=event_id,
                retracts=target,
                as_of=as_of,
            ),
        )
        for pid in original.partners
        if pid in policy.partners
    ]


# --- per partner ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestEntry:
    """One item waiting for its day's digest."""

    source_event_id: str
    as_of: datetime
    item: dict[str, Any]


@dataclass(frozen=True)
class DigestDay:
    """A day's digest not yet sent (``supplement``: the day's digest already went out)."""

    day: date
    due: datetime
    supplement: bool
    entries: tuple[DigestEntry, ...] = ()
    seen: tuple[str, ...] = ()


@dataclass(frozen=True)
class SentDay:
    """A digest sent, remembered for ``digest_memory`` to recognise re-delivered items."""

    day: date
    due: datetime
    seen: tuple[str, ...]


@dataclass(frozen=True)
class PartnerState:
    """One partner's digest memory (keyed by partner_id; JSON-able)."""

    pending: tuple[DigestDay, ...] = ()
    sent: tuple[SentDay, ...] = ()
    clock: datetime | None = None
    last_tick: datetime | None = None
    last_tick_outputs: tuple[tuple[str, str, dict[str, Any]], ...] = ()


EMPTY = PartnerState()


def digest_instant(day: date, partner_id: str, policy: Policy) -> datetime:
    """When the digest of local ``day`` is due: the digest time on the next day, partner's zone."""
    partner = policy.partners[partner_id]
    return utc(at_local(day + ONE_DAY, partner.digest_time, zone(partner.timezone)))


def _seen(state: PartnerState, source_event_id: str) -> bool:
    return any(source_event_id in d.seen for d in state.pending) or any(
        source_event_id in d.seen for d in state.sent
    )


def step_item(
    state: PartnerState, partner_id: str, envelope: Mapping[str, Any], policy: Policy
) -> tuple[PartnerState, list[Output]]:
    """Per-partner stage: a REALTIME share now, or the envelope's item queued for its day's digest."""
    partner = policy.partners.get(partner_id)
    if partner is None:
        return state, []
    source_event_id = envelope["source_event_id"]
    as_of = parse_instant(envelope["as_of"])
    tz = zone(partner.timezone)
    if partner.mode == REALTIME:
        share = {
            "share_id": make_id("shr", "realtime", partner_id, source_event_id),
            "partner_id": partner_id,
            "mode": REALTIME,
            "as_of": as_of.astimezone(tz),
            "items": [dict(envelope["item"])],
            "part": 1,
            "parts": 1,
        }
        return state, [(PARTNER_TOPIC, partner_id, share)]
    if _seen(state, source_event_id):
        return state, []
    pending = list(state.pending)
    retracts = envelope.get("retracts")
    if retracts:
        for index, day in enumerate(pending):
            # Decided by instants, not by whether the digest's tick came first: a retraction from
            # before the digest instant takes the item out; one at or after it is listed itself.
            if utc(as_of) < day.due and any(e.source_event_id == retracts for e in day.entries):
                entries = tuple(e for e in day.entries if e.source_event_id != retracts)
                pending[index] = replace(day, entries=entries, seen=(*day.seen, source_event_id))
                return replace(state, pending=tuple(pending)), []
    local = local_day(as_of, tz)
    entry = DigestEntry(source_event_id, as_of, dict(envelope["item"]))
    for index, waiting in enumerate(pending):
        if waiting.day == local:
            pending[index] = replace(
                waiting, entries=(*waiting.entries, entry), seen=(*waiting.seen, source_event_id)
            )
            return replace(state, pending=tuple(pending)), []
    due = digest_instant(local, partner_id, policy)
    supplement = any(s.day == local for s in state.sent) or (state.clock is not None and due <= state.clock)
    pending.append(DigestDay(local, due, supplement, (entry,), (source_event_id,)))
    return replace(state, pending=tuple(pending)), []


def step_tick(
    state: PartnerState, partner_id: str, as_of: datetime, policy: Policy
) -> tuple[PartnerState, list[Output]]:
    """The tick clock reached ``as_of``: send every digest due by then (each dated at its digest instant).

    The same tick again re-sends what that instant sent, unless something new is due by it: an
    item that arrives after its day's digest was sent at that very instant queues a supplement
    due then, and answering with the old outputs left it queued; the shells, which tick a
    partner until nothing is due, then looped forever."""
    as_of = utc(as_of)
    earlier = state.last_tick_outputs if state.last_tick == as_of else ()
    if earlier and all(d.due > as_of for d in state.pending):
        return state, list(earlier)
    tz = zone(policy.partners[partner_id].timezone) if partner_id in policy.partners else UTC
    due = sorted((d for d in state.pending if d.due <= as_of), key=lambda d: (d.due, d.day, d.supplement))
    outputs: list[Output] = []
    for day in due:
        if day.entries:
            outputs += _digest_parts(partner_id, day, day.due.astimezone(tz))
    horizon = as_of - policy.digest_memory
    sent = tuple(s for s in state.sent if s.due >= horizon) + tuple(
        SentDay(d.day, d.due, d.seen) for d in due if d.due >= horizon
    )
    state = replace(
        state,
        pending=tuple(d for d in state.pending if d.due > as_of),
        sent=sent,
        clock=later(state.clock, as_of),
    )
    if outputs:
        state = replace(state, last_tick=as_of, last_tick_outputs=(*earlier, *outputs))
    return state, outputs


def _digest_parts(partner_id: str, day: DigestDay, as_of: datetime) -> list[Output]:
    """The shares of one day's digest (or supplement): its items in (event ``as_of``, source
    event id) order, ``DIGEST_PART_ITEMS`` to a share. A digest of one part keeps the id it
    always had; the parts of a longer one each add their number and the count to it, so every
    part has an id of its own, the same in every run."""
    entries = sorted(day.entries, key=lambda e: (e.as_of, e.source_event_id))
    if day.supplement:
        base = (
            "digest-supplement",
            partner_id,
            day.day.isoformat(),
            *sorted(e.source_event_id for e in entries),
        )
    else:
        base = ("digest", partner_id, day.day.isoformat())
    parts = -(-len(entries) // DIGEST_PART_ITEMS)
    outputs: list[Output] = []
    for part in range(1, parts + 1):
        chunk = entries[(part - 1) * DIGEST_PART_ITEMS : part * DIGEST_PART_ITEMS]
        share_id = make_id("shr", *base) if parts == 1 else make_id("shr", *base, "part", f"{part}/{parts}")
        share = {"share_id": share_id, "partner_id": partner_id, "mode": DIGEST, "as_of": as_of,
                 "items": [dict(e.item) for e in chunk], "part": part, "parts": parts}  # fmt: skip
        outputs.append((PARTNER_TOPIC, partner_id, share))
    return outputs


def next_due(state: PartnerState) -> datetime | None:
    """The next digest instant of this partner, or None."""
    return min((d.due for d in state.pending), default=None)


def envelope_to_bytes(envelope: Mapping[str, Any]) -> bytes:
    """An envelope as JSON bytes for the repartition topic (instants keep their zone)."""
    return encode_state(envelope)


def envelope_from_bytes(data: bytes) -> Envelope:
    """An envelope back from :func:`envelope_to_bytes`."""
    envelope: Envelope = decode_state(dict, data)
    return envelope


def ledger_to_bytes(ledger: ShareLedger) -> bytes:
    """The per-loan ledger as JSON bytes for the Faust table."""
    return encode_state(ledger)


def ledger_from_bytes(data: bytes) -> ShareLedger:
    """The ledger back from :func:`ledger_to_bytes`."""
    return decode_state(ShareLedger, data)


def state_to_bytes(state: PartnerState) -> bytes:
    """The per-partner state as JSON bytes for the Faust table."""
    return encode_state(state)


def state_from_bytes(data: bytes) -> PartnerState:
    """The state back from :func:`state_to_bytes`."""
    return decode_state(PartnerState, data)
