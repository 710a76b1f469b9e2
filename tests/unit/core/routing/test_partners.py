"""Partner router: consent and configuration, pseudonyms, REALTIME and DIGEST modes, retractions."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from typing import Any

from streams.core.routing import partners as pr
from streams.core.routing.policy import PartnerPolicy
from tests.support.routing import KEY_DG, KEY_RT, at, bucket_of, event, make_policy, retraction

POLICY = make_policy()
D = date(2026, 3, 15)
FACTS = dict(total=105000, oldest=D, first_delinquency=date(2026, 3, 16))


def opened(when: str = "2026-03-16T00:00:00+08:00", **kw: Any) -> dict[str, Any]:
    return event("OVERDUE_OPENED", when, dpd=1, previous_bucket="M0", **{**FACTS, **kw})


def aged(dpd: int, **kw: Any) -> dict[str, Any]:
    when = datetime.fromisoformat("2026-03-16T00:00:00+08:00") + timedelta(days=dpd - 1)
    return event("BUCKET_CHANGED", when, dpd=dpd, previous_bucket=bucket_of(dpd - 1), **{**FACTS, **kw})


class Run:
    """A loan-side ledger per loan and a state per partner, as the two agents keep them."""

    def __init__(self, policy=POLICY) -> None:
        self.policy = policy
        self.ledgers: dict[str, pr.ShareLedger] = {}
        self.states: dict[str, pr.PartnerState] = {}
        self.out: list[dict[str, Any]] = []

    def ev(self, e: dict[str, Any]) -> list[dict[str, Any]]:
        ledger = self.ledgers.get(e["loan_id"], pr.EMPTY_LEDGER)
        self.ledgers[e["loan_id"]], envelopes = pr.step_fan_out(ledger, e, self.policy)
        out = []
        for partner_id, envelope in envelopes:
            assert envelope["partner_id"] == partner_id
            state = self.states.get(partner_id, pr.EMPTY)
            self.states[partner_id], emitted = pr.step_item(state, partner_id, envelope, self.policy)
            assert all(t == "partner.shares" and k == partner_id for t, k, _ in emitted)
            out += [v for _, _, v in emitted]
        self.out += out
        return out

    def tick(self, when: str | datetime) -> list[dict[str, Any]]:
        instant = at(when) if isinstance(when, str) else when
        out = []
        for partner_id in sorted(self.states):
            self.states[partner_id], emitted = pr.step_tick(
                self.states[partner_id], partner_id, instant, self.policy
            )
            out += [v for _, _, v in emitted]
        self.out += out
        return out


def test_only_consented_and_configured_partners_get_items() -> None:
    e = opened(partners=("P-RT", "P-UNKNOWN", "P-RT"))
    envelopes = pr.fan_out(e, POLICY)
    assert [p for p, _ in envelopes] == ["P-RT"]
    assert pr.unconfigured_partners(e, POLICY) == ["P-UNKNOWN"]
    assert pr.fan_out(opened(partners=()), POLICY) == []


def test_items_carry_only_the_pseudonym_and_the_listed_fields() -> None:
    e = opened(borrower="CUST-000123")
    [(_, rt), (_, dg)] = pr.fan_out(e, POLICY)
    for envelope, key in ((rt, KEY_RT), (dg, KEY_DG)):
        item = envelope["item"]
        assert tuple(item) == pr.ITEM_FIELDS
        assert item["borrower_token"] == hmac.new(key, b"CUST-000123", hashlib.sha256).hexdigest()
        assert "CUST-000123" not in repr(envelope)
        assert "borrower_id" not in envelope and "contact" not in envelope
    assert rt["item"]["borrower_token"] != dg["item"]["borrower_token"]  # unlinkable across partners
    assert rt["item"]["type"] == "OVERDUE_OPENED" and rt["item"]["as_of"] == at("2026-03-16T00:00:00+08:00")


def test_due_soon_is_never_shared() -> None:
    e = event("DUE_SOON", "2026-03-12T09:00:00+08:00", due_seq=1, due_date=D, amount_due=1)
    assert pr.fan_out(e, POLICY) == []
    assert Run().ev(e) == []


def test_realtime_share_per_event() -> None:
    run = Run()
    [share] = run.ev(opened(partners=("P-RT",)))
    assert share["mode"] == "REALTIME" and share["partner_id"] == "P-RT"
    assert share["as_of"] == at("2026-03-16T00:00:00+08:00") and len(share["items"]) == 1
    assert set(share) == {"share_id", "partner_id", "mode", "as_of", "items", "part", "parts"}
    assert (share["part"], share["parts"]) == (1, 1)
    [again] = Run().ev(opened(partners=("P-RT",)))
    assert again["share_id"] == share["share_id"]
    run.ev(aged(31, partners=("P-RT",)))
    kinds = [s["items"][0]["type"] for s in run.out]
    assert kinds == ["OVERDUE_OPENED", "BUCKET_CHANGED"]


def test_daily_digest_at_seven_the_next_morning() -> None:
    run = Run()
    assert run.ev(opened(partners=("P-DG",))) == []
    assert run.ev(opened("2026-03-16T18:00:00+08:00", loan="L2", borrower="B2", partners=("P-DG",))) == []
    state = run.states["P-DG"]
    assert pr.next_due(state) == at("2026-03-17T07:00:00+08:00")
    assert run.tick("2026-03-17T06:59:59+08:00") == []
    [share] = run.tick("2026-03-17T09:00:00+08:00")
    assert share["mode"] == "DIGEST" and share["as_of"] == at("2026-03-17T07:00:00+08:00")
    assert [i["loan_id"] for i in share["items"]] == ["L1", "L2"]
    assert pr.next_due(run.states["P-DG"]) is None
    assert run.tick("2026-03-18T09:00:00+08:00") == []  # a day without changes sends nothing


def test_digest_items_are_in_event_order_whatever_the_arrival() -> None:
    a = opened("2026-03-16T00:00:00+08:00", loan="LA", partners=("P-DG",))
    b = opened("2026-03-16T05:00:00+08:00", loan="LB", partners=("P-DG",))
    one, two = Run(), Run()
    one.ev(a), one.ev(b)
    two.ev(b), two.ev(a)
    assert one.tick("2026-03-18T00:00:00+08:00") == two.tick("2026-03-18T00:00:00+08:00")


def test_digest_days_follow_the_partners_zone() -> None:
    policy = make_policy()
    policy = replace(
        policy,
        partners={
            **policy.partners,
            "P-DG": PartnerPolicy("P-DG", KEY_DG, "DIGEST", time(6), "Europe/London"),
        },
    )
    run = Run(policy)
    # 06:00 Shanghai on the 17th is still the 16th in London.
    run.ev(opened("2026-03-17T06:00:00+08:00", partners=("P-DG",)))
    assert pr.next_due(run.states["P-DG"]) == datetime.fromisoformat("2026-03-17T06:00:00+00:00")


def test_realtime_retraction_echoes_the_withdrawn_item() -> None:
    run = Run()
    o = opened(partners=("P-RT",))
    [share] = run.ev(o)
    [retracted] = run.ev(retraction(o, at("2026-03-16T10:00:00+08:00")))
    item = retracted["items"][0]
    assert item["type"] == "RETRACTED" and item["as_of"] == share["items"][0]["as_of"]
    assert item["borrower_token"] == share["items"][0]["borrower_token"] and item["loan_id"] == "L1"
    assert retracted["as_of"] == at("2026-03-16T10:00:00+08:00")
    assert retracted["share_id"] != share["share_id"]


def test_digest_retraction_before_the_digest_removes_the_item() -> None:
    run = Run()
    o = opened(partners=("P-DG",))
    run.ev(o)
    run.ev(retraction(o, at("2026-03-16T10:00:00+08:00")))
    assert run.tick("2026-03-18T00:00:00+08:00") == []


def test_digest_retraction_after_the_digest_lists_a_retracted_item() -> None:
    run = Run()
    o = opened(partners=("P-DG",))
    run.ev(o)
    run.tick("2026-03-17T07:00:00+08:00")
    run.ev(retraction(o, at("2026-03-17T10:00:00+08:00")))
    [share] = run.tick("2026-03-18T07:00:00+08:00")
    assert [i["type"] for i in share["items"]] == ["RETRACTED"]


def test_retraction_of_an_unshared_event_sends_nothing() -> None:
    run = Run()
    reminder = event("DUE_SOON", "2026-03-12T09:00:00+08:00", due_seq=1, due_date=D, amount_due=1)
    run.ev(reminder)
    assert run.ev(retraction(reminder, at("2026-03-16T10:00:00+08:00"))) == []


def test_late_item_goes_into_a_supplementary_digest() -> None:
    run = Run()
    run.ev(opened(partners=("P-DG",)))
    [digest] = run.tick("2026-03-17T07:00:00+08:00")
    run.ev(opened("2026-03-16T20:00:00+08:00", loan="L9", partners=("P-DG",)))  # arrives late
    [supplement] = run.tick("2026-03-17T07:00:01+08:00")
    assert supplement["as_of"] == digest["as_of"] and supplement["share_id"] != digest["share_id"]
    assert [i["loan_id"] for i in supplement["items"]] == ["L9"]


def test_redelivery_is_recognised() -> None:
    run = Run()
    o = opened()
    first = run.ev(o)
    assert run.ev(o) == first  # REALTIME re-sends the same share (same id); DIGEST queues nothing new
    shares = run.tick("2026-03-17T07:00:00+08:00")
    assert len(shares) == 1 and len(shares[0]["items"]) == 1
    assert run.tick("2026-03-17T07:00:00+08:00") == shares  # a re-delivered tick re-sends
    run.ev(o)  # re-delivered after its digest went out: still recognised
    assert run.tick("2026-03-18T07:00:00+08:00") == []


def test_envelopes_survive_the_repartition_topic() -> None:
    [(_, envelope), _] = pr.fan_out(opened(), POLICY)
    back = pr.envelope_from_bytes(pr.envelope_to_bytes(envelope))
    assert back == envelope
    assert pr.step_item(pr.EMPTY, "P-RT", back, POLICY) == pr.step_item(pr.EMPTY, "P-RT", envelope, POLICY)


def test_state_and_ledger_round_trip() -> None:
    run = Run()
    run.ev(opened())
    state = run.states["P-DG"]
    assert pr.state_from_bytes(pr.state_to_bytes(state)) == state
    ledger = run.ledgers["L1"]
    assert pr.ledger_from_bytes(pr.ledger_to_bytes(ledger)) == ledger


def test_a_late_item_for_a_digest_sent_at_that_very_instant_is_sent_by_that_instant() -> None:
    """The shells tick a partner at its next_due until nothing is due. A supplement due at the
    instant of the last tick used to get that tick's outputs back and stay queued: the worker's
    partner stage looped forever."""
    run = Run()
    run.ev(opened(partners=("P-DG",)))
    digest_at = at("2026-03-17T07:00:00+08:00")
    [digest] = run.tick(digest_at)
    run.ev(opened("2026-03-16T20:00:00+08:00", loan="L9", partners=("P-DG",)))  # arrives late
    assert pr.next_due(run.states["P-DG"]) == digest_at
    [supplement] = run.tick(digest_at)
    assert [i["loan_id"] for i in supplement["items"]] == ["L9"] and supplement["share_id"] != digest[
        "share_id"
    ]
    assert pr.next_due(run.states["P-DG"]) is None
    assert run.tick(digest_at) == [digest, supplement]  # the same tick once more re-sends all it sent


def _big_day(loans: int, seed_order: list[int]) -> Run:
    """A DIGEST partner's day with ``loans`` loans opening, their events arriving in ``seed_order``."""
    run = Run()
    start = at("2026-03-16T00:00:00+08:00")
    for i in seed_order:
        when = start + timedelta(seconds=37 * i)  # all on the 16th, local time
        run.ev(opened(when.isoformat(), loan=f"LOAN-{i:05d}", borrower=f"B{i}", partners=("P-DG",)))
    return run


def test_a_big_digest_is_split_into_parts_in_order_with_stable_ids() -> None:
    from streams.contracts import codec

    loans = 2 * pr.DIGEST_PART_ITEMS + 37
    run = _big_day(loans, list(range(loans)))
    shares = run.tick("2026-03-17T09:00:00+08:00")
    assert [(s["part"], s["parts"]) for s in shares] == [(1, 3), (2, 3), (3, 3)]
    assert all(len(s["items"]) <= pr.DIGEST_PART_ITEMS for s in shares)
    assert [len(s["items"]) for s in shares] == [pr.DIGEST_PART_ITEMS, pr.DIGEST_PART_ITEMS, 37]
    listed = [i["loan_id"] for s in shares for i in s["items"]]
    assert listed == [f"LOAN-{i:05d}" for i in range(loans)]  # every item once, in event order
    assert len({s["share_id"] for s in shares}) == 3
    assert {s["as_of"] for s in shares} == {at("2026-03-17T07:00:00+08:00")}
    for share in shares:  # each part is a record well under Kafka's 1 MB default limit
        assert len(codec.encode("PartnerShare", share)) < 100_000
    # another run, the events arriving in another order: the same parts with the same ids
    again = _big_day(loans, list(reversed(range(loans)))).tick("2026-03-17T09:00:00+08:00")
    assert again == shares


def test_a_digest_within_the_bound_is_one_share_with_the_id_it_always_had() -> None:
    from streams.core.routing.common import make_id

    [share] = _big_day(pr.DIGEST_PART_ITEMS, list(range(pr.DIGEST_PART_ITEMS))).tick(
        "2026-03-17T09:00:00+08:00"
    )
    assert (share["part"], share["parts"]) == (1, 1) and len(share["items"]) == pr.DIGEST_PART_ITEMS
    assert share["share_id"] == make_id("shr", "digest", "P-DG", "2026-03-16")
