"""Bureau router: PBOC/Metro 2 statuses, NOTICE and lead time, cures, disputes, corrections, re-delivery."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from streams.core.routing import bureau as br
from tests.support.routing import at, bucket_of, event, make_policy, retraction

POLICY = make_policy()
D = date(2026, 3, 15)
OPEN_AT = "2026-03-16T00:00:00+08:00"
RELEASE_AT = at("2026-03-17T00:00:00+08:00")
FACTS = dict(total=105000, oldest=D, first_delinquency=date(2026, 3, 16))


def opened(**kw: Any) -> dict[str, Any]:
    return event("OVERDUE_OPENED", kw.pop("when", OPEN_AT), dpd=1, previous_bucket="M0", **{**FACTS, **kw})


def aged(dpd: int, **kw: Any) -> dict[str, Any]:
    when = datetime.fromisoformat(OPEN_AT) + timedelta(days=dpd - 1)
    return event("BUCKET_CHANGED", when, dpd=dpd, previous_bucket=bucket_of(dpd - 1), **{**FACTS, **kw})


def cured(when: str, **kw: Any) -> dict[str, Any]:
    return event(
        "OVERDUE_CURED",
        when,
        dpd=0,
        bucket="M0",
        previous_bucket="M1",
        **{**FACTS, "total": 0, "oldest": None, **kw},
    )


def written_off(when: str, dpd: int = 203, **kw: Any) -> dict[str, Any]:
    return event("WRITTEN_OFF", when, dpd=dpd, loan_status="WRITTEN_OFF", **{**FACTS, **kw})


class Run:
    """Drives the bureau router like the agent: events, ticks and disputes; collects outputs."""

    def __init__(self, policy=POLICY) -> None:
        self.state = br.EMPTY
        self.policy = policy
        self.out: list[tuple[str, str, dict[str, Any]]] = []

    def ev(self, e: dict[str, Any]) -> list[dict[str, Any]]:
        self.state, emitted = br.step_event(self.state, e, self.policy)
        self.out += emitted
        return [v for _, _, v in emitted]

    def tick(self, when: datetime | str) -> list[dict[str, Any]]:
        self.state, emitted = br.step_tick(
            self.state, at(when) if isinstance(when, str) else when, self.policy
        )
        self.out += emitted
        return [v for _, _, v in emitted]

    def dispute(self, status: str, when: str, dispute_id: str = "d1") -> None:
        self.state, emitted = br.step_dispute(
            self.state,
            {"dispute_id": dispute_id, "loan_id": "L1", "status": status, "at": when, "note": "n"},
            self.policy,
        )
        assert emitted == []

    def records(self) -> list[dict[str, Any]]:
        return [v for t, _, v in self.out if t == "bureau.records"]

    def notices(self) -> list[dict[str, Any]]:
        return [v for t, _, v in self.out if t == "notify.requests"]


@pytest.mark.parametrize(
    ("pboc", "dpd", "metro2"),
    [
        ("1", 1, "11"),
        ("1", 29, "11"),
        ("1", 30, "71"),
        ("2", 59, "71"),
        ("2", 60, "78"),
        ("3", 90, "80"),
        ("4", 120, "82"),
        ("5", 150, "83"),
        ("6", 179, "83"),
        ("7", 180, "84"),
        ("7", 400, "84"),
        ("N", 0, "11"),
        ("N", 2, "11"),
        ("C", 40, "13"),
        ("B", 200, "97"),
    ],
)
def test_metro2_status(pboc: str, dpd: int, metro2: str) -> None:
    assert br.metro2_status(pboc, dpd) == metro2


def test_opening_sends_a_notice_and_holds_the_record_for_the_lead_time() -> None:
    run = Run()
    [notice] = run.ev(opened())
    assert notice["kind"] == "NOTICE" and notice["template"] == "negative_report_notice"
    assert notice["created_at"] == at(OPEN_AT) and notice["not_before"] == at("2026-03-16T08:00:00+08:00")
    assert "2026年3月17日 00:00" in notice["text"] and "中国人民银行征信中心" in notice["text"]
    assert run.records() == []
    assert br.next_due(run.state) == RELEASE_AT
    assert run.tick(RELEASE_AT - timedelta(seconds=1)) == []
    [record] = run.tick(RELEASE_AT + timedelta(hours=3))  # a late tick: the record still says when it was due
    assert record["released_at"] == RELEASE_AT
    assert record["pboc_status"] == "1" and record["metro2_status"] == "11"
    assert record["notice_id"] == notice["notification_id"] and record["corrects"] is None
    assert record["as_of"] == at(OPEN_AT) and record["as_of_date"] == date(2026, 3, 16)
    assert record["overdue_amount"] == 105000 and record["overdue_installments"] == 1
    assert record["first_delinquency_date"] == date(2026, 3, 16) and record["disputed"] is False
    assert set(record) == {
        "record_id",
        "loan_id",
        "borrower_id",
        "as_of",
        "as_of_date",
        "released_at",
        "pboc_status",
        "metro2_status",
        "dpd",
        "overdue_installments",
        "overdue_amount",
        "first_delinquency_date",
        "notice_id",
        "disputed",
        "corrects",
        "currency",
        "source_event_id",
        "chain_seq",
        "prev_hash",
        "hash",
    }
    assert record["chain_seq"] == 1 and record["prev_hash"] == "0" * 64
    assert record["currency"] == "CNY" and record["source_event_id"] == opened()["event_id"]
    assert br.next_due(run.state) is None


def test_cure_within_the_lead_time_reports_nothing_negative() -> None:
    run = Run()
    run.ev(opened())
    assert run.ev(cured("2026-03-16T15:00:00+08:00")) == []
    assert br.next_due(run.state) is None
    assert run.tick("2026-03-20T00:00:00+08:00") == []
    assert run.records() == []


def test_cure_exactly_at_release_comes_after_the_release() -> None:
    run = Run()
    run.ev(opened())
    out = run.ev(cured("2026-03-17T00:00:00+08:00"))  # no tick yet: the event moves the clock
    assert [(r["pboc_status"], r["released_at"]) for r in out] == [("1", RELEASE_AT), ("N", RELEASE_AT)]


def test_cure_after_release_reports_n() -> None:
    run = Run()
    run.ev(opened())
    run.tick(RELEASE_AT)
    [record] = run.ev(cured("2026-03-20T11:30:00+08:00"))
    assert record["pboc_status"] == "N" and record["metro2_status"] == "11"
    assert record["released_at"] == record["as_of"] == at("2026-03-20T11:30:00+08:00")
    assert record["first_delinquency_date"] == date(2026, 3, 16)  # reported on the event that ends it


def test_aging_reports_every_bucket_at_once_after_release() -> None:
    run = Run()
    run.ev(opened())
    run.tick(RELEASE_AT)
    statuses = []
    for dpd in (31, 61, 91, 121, 151, 181):
        [record] = run.ev(aged(dpd))
        assert record["released_at"] == record["as_of"]
        statuses.append((record["pboc_status"], record["metro2_status"]))
    assert statuses == [("2", "71"), ("3", "78"), ("4", "80"), ("5", "82"), ("6", "83"), ("7", "84")]


def test_an_event_past_the_release_instant_releases_held_records_first() -> None:
    run = Run()
    run.ev(opened())
    out = run.ev(aged(31))  # no tick arrived in between
    assert [(r["pboc_status"], r["released_at"]) for r in out] == [
        ("1", RELEASE_AT),
        ("2", aged(31)["as_of"]),
    ]


def test_import_at_m2_then_bucket_change_within_the_lead_time_both_wait() -> None:
    run = Run()
    run.ev(event("OVERDUE_OPENED", "2026-04-24T10:00:00+08:00", dpd=40, previous_bucket="M0", **FACTS))
    assert (
        run.ev(
            event(
                "BUCKET_CHANGED",
                "2026-04-25T00:00:00+08:00",
                dpd=61,
                bucket="M3",
                previous_bucket="M2",
                **FACTS,
            )
        )
        == []
    )
    out = run.tick("2026-04-25T10:00:00+08:00")
    assert [r["pboc_status"] for r in out] == ["2", "3"]
    assert all(r["released_at"] == at("2026-04-25T10:00:00+08:00") for r in out)


def test_closed_cure_reports_c_even_within_the_lead_time() -> None:
    run = Run()
    run.ev(opened())
    [record] = run.ev(cured("2026-03-16T12:00:00+08:00", loan_status="CLOSED"))
    assert (record["pboc_status"], record["metro2_status"]) == ("C", "13")


def test_write_off_of_an_open_episode() -> None:
    run = Run()
    run.ev(opened())
    run.tick(RELEASE_AT)
    [record] = run.ev(written_off("2026-09-01T10:00:00+08:00"))
    assert (record["pboc_status"], record["metro2_status"]) == ("B", "97")


def test_write_off_without_an_episode_gets_its_own_notice_and_lead_time() -> None:
    run = Run()
    [notice] = run.ev(
        written_off("2026-06-01T10:00:00+08:00", dpd=0, total=0, oldest=None, first_delinquency=None)
    )
    assert notice["kind"] == "NOTICE" and notice["template"] == "write_off_notice"
    [record] = run.tick("2026-06-02T10:00:00+08:00")
    assert record["pboc_status"] == "B" and record["notice_id"] == notice["notification_id"]


def test_write_off_within_the_lead_time_is_still_reported_after_it() -> None:
    run = Run()
    run.ev(opened())
    assert run.ev(written_off("2026-03-16T12:00:00+08:00", dpd=1)) == []
    out = run.tick(RELEASE_AT)
    assert [r["pboc_status"] for r in out] == ["1", "B"]


def test_lead_time_and_its_origin_come_from_the_policy() -> None:
    run = Run(make_policy(bureau_lead_time=timedelta(hours=48), bureau_lead_time_from="not_before"))
    run.ev(opened())
    assert br.next_due(run.state) == at("2026-03-18T08:00:00+08:00")
    run = Run(make_policy(bureau_lead_time=timedelta(0)))
    out = run.ev(opened())
    assert [v.get("pboc_status") for v in out] == [None, "1"]  # notice, then the record at once


def test_lead_time_is_elapsed_time_across_dst() -> None:
    run = Run()
    run.ev(opened(when="2026-03-07T12:00:00-05:00", tz="America/New_York"))
    assert br.next_due(run.state) == at("2026-03-08T13:00:00-04:00")  # 24 real hours, not 23


def test_disputes_mark_records_released_while_open() -> None:
    run = Run()
    run.ev(opened())
    run.dispute("OPEN", "2026-03-16T20:00:00+08:00")
    run.dispute("OPEN", "2026-03-16T20:00:00+08:00")  # a repeat changes nothing
    [held] = run.tick(RELEASE_AT)
    assert held["disputed"] is True
    run.dispute("RESOLVED", "2026-04-10T00:00:00+08:00")
    [still] = run.ev(aged(31))  # 2026-04-15 is after the resolution
    assert still["disputed"] is False


def test_dispute_open_at_release_instant_marks_and_resolved_at_it_unmarks() -> None:
    run = Run()
    run.ev(opened())
    run.dispute("OPEN", "2026-03-17T00:00:00+08:00")
    [record] = run.tick(RELEASE_AT)
    assert record["disputed"] is True
    run.dispute("RESOLVED", "2026-04-15T00:00:00+08:00")
    [record] = run.ev(aged(31))
    assert record["disputed"] is False


def test_several_disputes_need_all_resolved() -> None:
    run = Run()
    run.dispute("OPEN", "2026-03-01T00:00:00+08:00", "a")
    run.dispute("OPEN", "2026-03-02T00:00:00+08:00", "b")
    run.dispute("RESOLVED", "2026-03-10T00:00:00+08:00", "a")
    assert br.is_disputed(run.state, at("2026-03-12T00:00:00+08:00"))
    run.dispute("RESOLVED", "2026-03-11T00:00:00+08:00", "b")
    assert not br.is_disputed(run.state, at("2026-03-12T00:00:00+08:00"))
    with pytest.raises(ValueError):
        br.step_dispute(run.state, {"dispute_id": "x", "status": "MAYBE", "at": OPEN_AT}, POLICY)


# --- retractions ----------------------------------------------------------------------------------


def test_retraction_of_a_held_record_drops_it_silently_before_the_notice_is_due() -> None:
    run = Run()
    o = opened()
    run.ev(o)
    assert run.ev(retraction(o, at("2026-03-16T07:00:00+08:00"))) == []
    assert br.next_due(run.state) is None
    assert run.tick("2026-03-18T00:00:00+08:00") == [] and run.records() == []


def test_retraction_of_a_held_record_after_the_notice_went_out_corrects_the_notice() -> None:
    run = Run()
    o = opened()
    [notice] = run.ev(o)
    [correction] = run.ev(retraction(o, at("2026-03-16T12:00:00+08:00")))
    assert correction["kind"] == "CORRECTION" and correction["template"] == "correction"
    assert correction["created_at"] == at("2026-03-16T12:00:00+08:00")
    assert notice["notification_id"] not in (correction["notification_id"],)
    assert run.tick("2026-03-18T00:00:00+08:00") == [] and run.records() == []


def test_retraction_of_a_released_record_corrects_it() -> None:
    run = Run()
    o = opened()
    run.ev(o)
    [released] = run.tick(RELEASE_AT)
    out = run.ev(retraction(o, at("2026-03-18T09:00:00+08:00")))
    records = [v for v in out if "record_id" in v]
    [correction] = records
    assert (
        correction["corrects"] == released["record_id"] and correction["record_id"] != released["record_id"]
    )
    assert correction["pboc_status"] == "N" and correction["overdue_amount"] == 0
    assert correction["as_of"] == released["as_of"]
    assert correction["released_at"] == at("2026-03-18T09:00:00+08:00")
    assert [v["kind"] for v in out if "kind" in v] == ["CORRECTION"]  # the notice is corrected too


def test_retraction_of_an_escalation_corrects_to_the_previous_status() -> None:
    run = Run()
    run.ev(opened())
    run.tick(RELEASE_AT)
    bc = aged(31)
    run.ev(bc)
    [correction] = run.ev(retraction(bc, at("2026-04-15T10:00:00+08:00")))
    assert correction["pboc_status"] == "1" and correction["dpd"] == 1 and correction["metro2_status"] == "11"


def test_retraction_of_a_cure_reopens_and_restores_dropped_records() -> None:
    run = Run()
    run.ev(opened())
    c = cured("2026-03-16T15:00:00+08:00")
    run.ev(c)
    assert br.next_due(run.state) is None
    assert run.ev(retraction(c, at("2026-03-16T18:00:00+08:00"))) == []  # back on hold
    assert br.next_due(run.state) == RELEASE_AT
    [record] = run.tick(RELEASE_AT)
    assert record["pboc_status"] == "1"


def test_retraction_of_a_cure_after_the_release_instant_releases_at_once() -> None:
    run = Run()
    run.ev(opened())
    c = cured("2026-03-16T15:00:00+08:00")
    run.ev(c)
    [record] = run.ev(retraction(c, at("2026-03-18T00:00:00+08:00")))
    assert record["pboc_status"] == "1" and record["released_at"] == RELEASE_AT


def test_retraction_of_a_reported_cure_corrects_the_n_record() -> None:
    run = Run()
    run.ev(opened())
    run.tick(RELEASE_AT)
    c = cured("2026-03-20T11:30:00+08:00")
    [n_record] = run.ev(c)
    [correction] = run.ev(retraction(c, at("2026-03-25T00:00:00+08:00")))
    assert correction["corrects"] == n_record["record_id"] and correction["pboc_status"] == "1"


def test_late_cure_after_a_racing_tick_corrects_the_premature_release() -> None:
    """A tick released at the release instant; the cure from before it arrives afterwards."""
    run = Run()
    run.ev(opened())
    [record] = run.tick("2026-03-17T00:05:00+08:00")
    out = run.ev(cured("2026-03-16T23:00:00+08:00"))
    [correction] = out
    assert correction["corrects"] == record["record_id"] and correction["pboc_status"] == "N"
    assert br.view_status(run.state) == "N"


def test_redelivery_of_events_and_ticks_repeats_the_same_outputs() -> None:
    run = Run()
    o = opened()
    first = run.ev(o)
    assert run.ev(o) == first
    released = run.tick(RELEASE_AT)
    assert run.tick(RELEASE_AT) == released  # the same tick again: re-send what it released
    assert run.tick(RELEASE_AT + timedelta(seconds=1)) == []
    c = cured("2026-03-20T11:30:00+08:00")
    out = run.ev(c)
    assert run.ev(c) == out
    assert len({r["record_id"] for r in run.records()}) == 2


def test_state_survives_serialisation_mid_episode() -> None:
    run = Run()
    run.dispute("OPEN", "2026-03-16T01:00:00+08:00")
    run.ev(opened())
    restored = br.state_from_bytes(br.state_to_bytes(run.state))
    assert restored == run.state
    a = br.step_tick(run.state, RELEASE_AT, POLICY)[1]
    b = br.step_tick(restored, RELEASE_AT, POLICY)[1]
    assert a == b and a[0][2]["disputed"] is True


def test_irrelevant_events_change_nothing() -> None:
    due_soon = event("DUE_SOON", "2026-03-12T09:00:00+08:00", due_seq=1, due_date=D, amount_due=105000)
    assert br.step_event(br.EMPTY, due_soon, POLICY) == (br.EMPTY, [])


def test_records_are_keyed_by_loan_and_notices_by_borrower() -> None:
    run = Run(replace(POLICY, bureau_lead_time=timedelta(0)))
    run.ev(opened(loan="L7", borrower="B9"))
    assert {(t, k) for t, k, _ in run.out} == {("notify.requests", "B9"), ("bureau.records", "L7")}


def test_a_record_held_again_at_the_instant_of_the_last_tick_is_released_by_that_instant() -> None:
    """Late data: the opening is retracted after its record went out and the loan opens again
    at the same instant, so a new record is held until the very instant of the last tick. The
    shells tick a loan at its next_due until nothing is due; that tick used to answer with its
    old outputs and leave the record held: the worker's detector agent looped forever (found by
    the stream-equals-replay property test in a clean clone)."""
    run = Run()
    first = opened()
    run.ev(first)
    [released] = run.tick(RELEASE_AT)
    run.ev(retraction(first, at("2026-03-17T10:00:00+08:00")))
    run.ev(opened(event_id="E-reopened"))
    assert br.next_due(run.state) == RELEASE_AT == run.state.last_tick
    again = run.tick(br.next_due(run.state))
    assert [r["record_id"] for r in again] != [released["record_id"]] and len(again) == 1
    assert br.next_due(run.state) is None  # progress: the shells' loop ends
    assert run.tick(RELEASE_AT) == [released, *again]  # the same tick once more re-sends all it released


def test_the_records_form_a_chain_numbered_at_release() -> None:
    """SPEC §7.1: held records that are dropped never get a chain_seq, corrections do, and a
    redelivered event or tick re-sends identical links."""
    from streams.core import chain

    run = Run()
    run.ev(opened())
    run.ev(cured("2026-03-16T15:00:00+08:00"))  # held record dropped: no number
    o = opened(when="2026-04-16T00:00:00+08:00", first_delinquency=date(2026, 4, 16))
    run.ev(o)
    [first] = run.tick(at("2026-04-17T00:00:00+08:00"))
    assert run.tick(at("2026-04-17T00:00:00+08:00")) == [first]  # redelivered tick: the same link
    [correction] = [v for v in run.ev(retraction(o, at("2026-04-18T09:00:00+08:00"))) if "record_id" in v]
    assert (first["chain_seq"], correction["chain_seq"]) == (1, 2)
    assert correction["prev_hash"] == first["hash"] and correction["corrects"] == first["record_id"]
    assert run.state.chain_seq == 2 and run.state.chain_head == correction["hash"]
    result = chain.verify((r, "", None) for r in run.records())
    assert result.holds and result.records == 3 and result.chains[0].length == 2
    restored = br.state_from_bytes(br.state_to_bytes(run.state))
    assert (restored.chain_seq, restored.chain_head) == (2, correction["hash"])
    assert br.state_from_bytes(b"{}") == br.EMPTY  # a state stored before the chain starts one at 1
