"""The four routers of SPEC §5 as pure policies: OverdueEvents in, routed records out.

Each router is a small state machine the Faust agent drives; the same functions run in
``duewatch replay`` through :func:`route_all`. Nothing here does I/O or reads a clock:
time arrives as ``as_of`` of events and ticks, the policy (with its template texts) is
passed in.

======================  ===========================  =========================================
router (module)         state key / Faust table      steps
======================  ===========================  =========================================
notifications           borrower_id (after group_by  ``step_event``; no tick work
                        borrower: the cap spans the
                        borrower's loans)
bureau                  loan_id (co-partitioned      ``step_event``, ``step_dispute``,
                        with overdue.events and      ``step_tick``, ``next_due``
                        bureau.disputes)
partners, stage 1       loan_id                      ``step_fan_out`` (or stateless ``fan_out``)
partners, stage 2       partner_id (after group_by   ``step_item``, ``step_tick``, ``next_due``
                        partner on the envelopes)
collections             loan_id                      ``step_event``; no tick work
======================  ===========================  =========================================

Every ``step_*`` returns ``(new_state, outputs)``; outputs are ``(topic, key, value)``
with the §5 field names (notifications add ``kind``). States are frozen dataclasses;
``state_to_bytes``/``state_from_bytes`` in each module give their table encoding
(tagged JSON). ``next_due(state)`` is the next instant a tick can make that state emit
something, so an agent can index its keys by it and touch only those due. A re-delivered
event re-emits what it emitted the first time (same ids, same content); a re-delivered
tick (same ``as_of``) re-emits what that tick sent. Ids are hashes of source event ids and
the output's role (:func:`make_id`), never of arrival time.

Determinism: every output depends on the events (after retractions) and the policy, and
on the tick clock only for *when* a time-driven record is sent, never for its content:
a held bureau record carries ``released_at`` = its NOTICE's ``created_at`` + lead time,
a digest carries its digest instant. Two documented exceptions, where the stream accepts
the arrival-order decision instead of re-deciding: which requests of an over-cap day are
DROPPED when a borrower's events arrive out of (created_at, id) order from different
partitions (see ``notifications``), and items arriving after their day's digest was sent
(a supplementary digest, see ``partners``). A cure that reaches the bureau router after
a tick released records it should have prevented is compensated by correction records.
"""

from __future__ import annotations

from .common import (
    BUREAU_TOPIC,
    COLLECTIONS_TOPIC,
    NOTIFY_TOPIC,
    PARTNER_TOPIC,
    Output,
    RoutingError,
    make_id,
)
from .engine import Routers, emission_instant, route_all
from .partners import borrower_token, fan_out
from .policy import DEFAULT_POLICY, LadderRung, PartnerPolicy, Policy, PolicyError, policy_from_mapping

__all__ = [
    "BUREAU_TOPIC",
    "COLLECTIONS_TOPIC",
    "DEFAULT_POLICY",
    "LadderRung",
    "NOTIFY_TOPIC",
    "Output",
    "PARTNER_TOPIC",
    "PartnerPolicy",
    "Policy",
    "PolicyError",
    "Routers",
    "RoutingError",
    "borrower_token",
    "emission_instant",
    "fan_out",
    "make_id",
    "policy_from_mapping",
    "route_all",
]
