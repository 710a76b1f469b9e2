"""Routed topics after the routers' compensations, against replay (streams.dev.routed): what the
chaos run compares. Records are built in their JSON form, as a reader of the topics gets them."""

from __future__ import annotations

from typing import Any

from streams.contracts import codec
from streams.core.chain import ZERO_HASH, link
from streams.dev.routed import chains, compare_routed, duplicates, standing_items, standing_records, withdrawn

TZ = "+08:00"


def task(task_id: str, source: str, reason: str = "OPENED", action: str = "AUTO_REMINDER", loan: str = "L1",
         at: str = "2026-04-15T00:00:00") -> dict[str, Any]:  # fmt: skip
    return {
        "task_id": task_id, "loan_id": loan, "borrower_id": "B1", "action": action, "reason": reason,
        "bucket": "M1", "dpd": 1, "total_overdue": 100, "currency": "CNY", "opened_at": at + TZ,
        "contact_window": {"start": "08:00", "end": "21:00", "timezone": "Asia/Shanghai"},
        "max_attempts_per_day": 3, "source_event_id": source,
    }  # fmt: skip


def bureau(record_id: str, source: str, corrects: str | None = None, status: str = "1") -> dict[str, Any]:
    return {
        "record_id": record_id, "loan_id": "L1", "borrower_id": "B1", "as_of": "2026-04-15T00:00:00" + TZ,
        "as_of_date": "2026-04-15", "released_at": "2026-04-16T00:00:00" + TZ, "pboc_status": status,
        "metro2_status": "11", "dpd": 1, "overdue_installments": 1, "overdue_amount": 100,
        "first_delinquency_date": "2026-04-14", "notice_id": "ntf-n1", "disputed": False, "corrects": corrects,
        "currency": "CNY", "source_event_id": source,
    }  # fmt: skip


def share(
    share_id: str, item_type: str, mode: str = "REALTIME", at: str = "2026-04-15T00:00:00"
) -> dict[str, Any]:
    item = {"loan_id": "L1", "borrower_token": "t" * 64, "type": item_type, "dpd": 1, "bucket": "M1",
            "total_overdue": 100, "currency": "CNY", "as_of": "2026-04-15T00:00:00" + TZ}  # fmt: skip
    return {"share_id": share_id, "partner_id": "P1", "mode": mode, "as_of": at + TZ, "items": [item]}


def retraction(event_id: str, retracts: str, loan: str = "L1") -> dict[str, Any]:
    return {"type": "OVERDUE_RETRACTED", "event_id": event_id, "retracts": retracts, "loan_id": loan}


def test_a_withdrawn_event_and_its_compensation_leave_what_replay_has() -> None:
    overdue = [{"type": "OVERDUE_OPENED", "event_id": "e1", "loan_id": "L1"}, retraction("r1", "e1"),
               {"type": "OVERDUE_OPENED", "event_id": "e2", "loan_id": "L1"}]  # fmt: skip
    stream = [task("t1", "e1"), task("t2", "r1", reason="RETRACTED", action="CLOSE"), task("t3", "e2")]
    got, want = compare_routed("collections.tasks", stream, [task("t3", "e2")], overdue)
    assert got == want
    # without the retraction the first task would be one too many
    got, want = compare_routed("collections.tasks", stream[:1] + stream[2:], [task("t3", "e2")], overdue[2:])
    assert got != want and sum((got - want).values()) == 1


def test_loans_with_a_retraction_are_compared_without_ids() -> None:
    # e2 re-emitted what e1 said (a new id after a retraction): its task has another id than replay's
    overdue = [retraction("r1", "e1")]
    got, want = compare_routed("collections.tasks", [task("t-new", "e2")], [task("t-old", "e1")], overdue)
    assert got == want
    got, want = compare_routed("collections.tasks", [task("t-new", "e2")], [task("t-old", "e1")], [])
    assert got != want, "a loan without a retraction keeps its ids in the comparison"


def test_a_correction_cancels_the_record_it_names() -> None:
    # a late cure: the record released too early and its correction both go; nothing negative stands
    records = [bureau("b1", "e1"), bureau("b2", "e-cure", corrects="b1", status="N")]
    assert standing_records("bureau.records", records, set(), set()) == []
    assert len(standing_records("bureau.records", records[:1], set(), set())) == 1


def test_repeats_count_once_and_conflicts_are_named() -> None:
    first, again = task("t1", "e1"), task("t1", "e1")
    assert duplicates("collections.tasks", [first, again]) == (1, [])
    assert duplicates("collections.tasks", [first, {**again, "dpd": 9}]) == (1, ["t1"])
    events = [
        {"event_id": "e1", "type": "DUE_SOON", "detected_at": "a"},
        {"event_id": "e1", "type": "DUE_SOON", "detected_at": "b"},
    ]
    assert duplicates("overdue.events", events) == (1, []), "the wall clock of emission may differ"
    got, want = compare_routed("collections.tasks", [first, again], [task("t1", "e1")], [])
    assert got == want


def test_a_retracted_partner_item_cancels_the_item_it_echoes() -> None:
    shared = [share("s1", "OVERDUE_OPENED"), share("s2", "RETRACTED", at="2026-04-16T00:00:00")]
    assert standing_items(shared) == []
    digest = [share("d1", "OVERDUE_OPENED", mode="DIGEST", at="2026-04-16T07:00:00")]
    assert len(standing_items(digest)) == 1
    got, want = compare_routed("partner.shares", [*shared, *digest], digest, [])
    assert got == want


def test_withdrawn_lists_retracted_ids_retractions_and_loans() -> None:
    assert withdrawn([retraction("r1", "e1", "L7"), {"type": "DUE_SOON", "event_id": "e2", "loan_id": "L8"}]) == (
        {"e1"}, {"r1"}, {"L7"},
    )  # fmt: skip


def chained(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` of one loan linked into its bureau hash chain as the router links them."""
    out, prev = [], ZERO_HASH
    for seq, record in enumerate(records, 1):
        linked = link(codec.from_json("BureauRecord", record), seq, prev)
        prev = linked["hash"]
        out.append(codec.to_json("BureauRecord", linked))
    return out


def test_a_loan_with_a_retraction_is_compared_without_its_chain_positions() -> None:
    # The stream released b1 for e1, withdrew it (b2 corrects b1), then released b3 for e2 as the
    # third link of the loan's chain; replay released that record only, as the first link.
    stream = chained(
        [bureau("b1", "e1"), bureau("b2", "e-cure", corrects="b1", status="N"), bureau("b3", "e2")]
    )
    [replayed] = chained([bureau("b-old", "e1")])
    got, want = compare_routed("bureau.records", stream, [replayed], [retraction("r1", "e1")])
    assert got == want
    got, want = compare_routed("bureau.records", stream[2:], [replayed], [])
    assert got != want, "a loan without a retraction keeps its ids and its chain in the comparison"


def test_the_streams_chains_are_verified_on_their_own() -> None:
    stream = chained([bureau("b1", "e1"), bureau("b2", "e2")])
    verified = chains([stream[0], stream[0], stream[1]])  # a re-send after a crash is no fork
    assert verified.holds and len(verified.chains) == 1
    broken = chains([stream[0], {**stream[1], "prev_hash": "f" * 64}])
    assert [b.kind for b in broken.breaks] == ["HASH", "PREV_HASH"]
    assert [b.kind for b in chains(stream[1:]).breaks] == ["GAP"]


def test_a_loan_with_a_correction_keeps_its_ids_but_not_its_chain_positions() -> None:
    # A cure reached the router after the release: b1 released, b2 corrects it, b3 released later.
    stream = chained(
        [bureau("b1", "e1"), bureau("b2", "e-cure", corrects="b1", status="N"), bureau("b3", "e3")]
    )
    [replayed] = chained([bureau("b3", "e3")])
    got, want = compare_routed("bureau.records", stream, [replayed], [])
    assert got == want
    [other] = chained([bureau("b9", "e3")])
    got, want = compare_routed("bureau.records", stream, [other], [])
    assert got != want, "its ids are still compared"
