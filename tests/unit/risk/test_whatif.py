"""What-if (SPEC §7.3): the same book under two policies, on real and worked-example data."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.cli import main
from streams.core.config import REPLAY_CONFIG
from streams.policy_loader import load_policy
from streams.replay import Replay, load_input, replay
from streams.risk.metrics import book_metrics, rows
from streams.risk.outcomes import worst_delinquency
from streams.risk.overrides import OverrideError, apply_overrides, overrides_from, parse_override
from streams.risk.whatif import Side, run_whatif
from tests.support.builders import payment_dict, record, schedule_dict
from tests.support.kiva import load_loans, to_records
from tests.support.shared import KIVA, example_dirs, example_params, need

TRANSITIONS = ("OVERDUE_OPENED", "BUCKET_CHANGED", "OVERDUE_CURED", "WRITTEN_OFF")
KIVA_UNTIL = datetime(2015, 1, 5, tzinfo=UTC)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def kiva_records() -> list[dict[str, Any]]:
    return [r for loan in load_loans(need(KIVA)) for r in to_records(loan)]


def with_grace(records: Iterable[Mapping[str, Any]], days: int) -> list[dict[str, Any]]:
    """The input rewritten by hand: every schedule revision with ``grace_days`` = ``days``."""
    out = []
    for r in records:
        r = json.loads(json.dumps(r))
        if r["topic"] == "loan.schedules":
            r["value"]["grace_days"] = days
        out.append(r)
    return out


def outcomes_by_direct_replay(
    records: list[dict[str, Any]], until: datetime
) -> dict[str, list[tuple[str, datetime]]]:
    """Each loan's (type, as_of) over the four transitions, straight from `replay` (it never retracts)."""
    out: dict[str, list[tuple[str, datetime]]] = {}
    for o in replay(records, until):
        if o.topic == "overdue.events" and o.value["type"] in TRANSITIONS:
            out.setdefault(o.value["loan_id"], []).append((o.value["type"], o.value["as_of"].astimezone(UTC)))
    return out


def changed_by_direct_replay(
    records: list[dict[str, Any]], rewritten: list[dict[str, Any]], until: datetime
) -> set[str]:
    before, after = outcomes_by_direct_replay(records, until), outcomes_by_direct_replay(rewritten, until)
    return {loan for loan in set(before) | set(after) if before.get(loan, []) != after.get(loan, [])}


def all_zero(metrics: Mapping[str, Any]) -> bool:
    return all(value == 0 for _, value in rows(metrics))


@pytest.fixture(scope="module")
def policy():
    return load_policy(None)


# --------------------------------------------------------------------------- identity


def test_an_identity_scenario_on_the_kiva_book_differs_in_nothing(policy) -> None:
    result = run_whatif(kiva_records(), Side(policy), Side(policy), KIVA_UNTIL)
    doc = result.to_json()
    assert all_zero(doc["difference"])
    assert doc["changed_loans"] == {"count": 0, "first": []}
    assert doc["baseline"] == doc["scenario"]
    # Not an empty book: the comparison had something to compare.
    assert (
        doc["baseline"]["episodes"]["opened"] > 100
        and doc["baseline"]["notifications"]["COLLECTION"]["SEND"] > 100
    )


@pytest.mark.parametrize("example", example_params(), ids=lambda p: p.name)
def test_an_identity_scenario_on_a_worked_example_differs_in_nothing(example: Path, policy) -> None:
    until = datetime.fromisoformat((example / "until").read_text().strip())
    doc = run_whatif(read_jsonl(example / "input.jsonl"), Side(policy), Side(policy), until).to_json()
    assert all_zero(doc["difference"]) and doc["changed_loans"]["count"] == 0


# --------------------------------------------------------------------------- --set grace_days=3


def test_three_days_grace_on_the_kiva_book_changes_exactly_the_loans_a_rewritten_replay_changes(
    policy,
) -> None:
    records = kiva_records()
    result = run_whatif(records, Side(policy), Side(policy, {"grace_days": 3}), KIVA_UNTIL)
    expected = changed_by_direct_replay(records, with_grace(records, 3), KIVA_UNTIL)
    assert len(expected) > 50  # real loans paid one to three days late: grace matters here
    assert set(result.changed) == expected
    doc = result.to_json()
    assert doc["changed_loans"]["count"] == len(expected)
    assert [x["loan_id"] for x in doc["changed_loans"]["first"]] == sorted(expected)[:20]
    # Grace only delays or avoids openings; the lateness itself (worst DPD) is the borrowers'.
    assert doc["difference"]["episodes"]["opened"] < 0
    for loan in doc["changed_loans"]["first"]:
        assert loan["scenario"]["episodes_opened"] <= loan["baseline"]["episodes_opened"]
        assert loan["scenario"]["worst_dpd"] == loan["baseline"]["worst_dpd"]


@pytest.mark.parametrize("example", example_params(), ids=lambda p: p.name)
def test_three_days_grace_on_a_worked_example_changes_exactly_what_a_rewritten_replay_changes(
    example: Path, policy
) -> None:
    records = read_jsonl(example / "input.jsonl")
    until = datetime.fromisoformat((example / "until").read_text().strip())
    result = run_whatif(records, Side(policy), Side(policy, {"grace_days": 3}), until)
    assert set(result.changed) == changed_by_direct_replay(records, with_grace(records, 3), until)


def test_three_days_grace_changes_some_worked_examples_and_not_others(policy) -> None:
    changed = set()
    for example in example_dirs():
        until = datetime.fromisoformat((example / "until").read_text().strip())
        changed |= set(run_whatif(read_jsonl(example / "input.jsonl"), Side(policy),
                                  Side(policy, {"grace_days": 3}), until).changed)  # fmt: skip
    assert {"L2", "L4", "L9"} <= changed  # opened at DPD 1: with grace they open at DPD 4, or never
    assert not changed & {"L1", "L11", "L12"}  # never late


# --------------------------------------------------------------------------- routing policy


def two_loans_one_borrower() -> list[dict[str, Any]]:
    """Borrower B1's two loans fall due the same day unpaid: two COLLECTION messages that midnight."""
    out = []
    for loan in ("L1", "L2"):
        s = schedule_dict(loan, [("2026-03-15", 100_000), ("2026-04-15", 100_000)], borrower_id="B1")
        out.append(record("loan.schedules", s))
    out.append(record("loan.repayments", payment_dict("p1", 100_000, "2026-03-20T10:00", "L1")))
    return out


def test_a_tighter_collection_cap_shows_as_dropped_notifications(tmp_path: Path, policy) -> None:
    tight = tmp_path / "tight.toml"
    tight.write_text("[notifications]\ncollection_cap_per_day = 1\n", encoding="utf-8")
    until = datetime.fromisoformat("2026-03-31T00:00:00+08:00")
    doc = run_whatif(two_loans_one_borrower(), Side(policy), Side(load_policy(str(tight))), until).to_json()
    assert doc["baseline"]["notifications"]["COLLECTION"] == {"DROPPED": 0, "SEND": 2}
    assert doc["scenario"]["notifications"]["COLLECTION"] == {"DROPPED": 1, "SEND": 1}
    assert doc["difference"]["notifications"]["COLLECTION"] == {"DROPPED": 1, "SEND": -1}
    # The cap is a routing decision: the detector's outcome of every loan is the same.
    assert doc["changed_loans"]["count"] == 0 and doc["difference"]["episodes"]["opened"] == 0


def test_the_json_has_specs_structure_with_the_same_names_in_all_three(policy) -> None:
    until = datetime.fromisoformat("2026-03-31T00:00:00+08:00")
    doc = run_whatif(two_loans_one_borrower(), Side(policy), Side(policy, {"grace_days": 3}), until).to_json()
    assert list(doc) == ["baseline", "scenario", "difference", "changed_loans"]
    names = [[name for name, _ in rows(doc[side])] for side in ("baseline", "scenario", "difference")]
    assert names[0] == names[1] == names[2]
    assert set(doc["baseline"]) == {"events", "episodes", "loans_ever", "penalty_accrued", "late_fees", "notifications",
                                    "bureau_records", "collections_tasks", "partner_shares"}  # fmt: skip
    assert doc["changed_loans"] == {
        "count": 2,
        "first": [
            {"loan_id": "L1", "baseline": {"episodes_opened": 1, "worst_dpd": 5, "worst_bucket": "M1"},
             "scenario": {"episodes_opened": 1, "worst_dpd": 5, "worst_bucket": "M1"}},
            {"loan_id": "L2", "baseline": {"episodes_opened": 1, "worst_dpd": 16, "worst_bucket": "M1"},
             "scenario": {"episodes_opened": 1, "worst_dpd": 16, "worst_bucket": "M1"}},
        ],
    }  # fmt: skip


def test_two_processes_give_the_same_answer_as_one(policy) -> None:
    records = two_loans_one_borrower()
    until = datetime.fromisoformat("2026-03-31T00:00:00+08:00")
    args = (records, Side(policy), Side(policy, {"grace_days": 3, "late_fee": 1_000}), until)
    one = run_whatif(*args, with_figures=True, parallel=False)
    two = run_whatif(*args, with_figures=True, parallel=True)
    assert one.to_json() == two.to_json()
    assert one.baseline.figures == two.baseline.figures and one.scenario.figures == two.scenario.figures


# --------------------------------------------------------------------------- pieces


def example_loan(name: str) -> tuple[Any, datetime]:
    example = next((p for p in example_dirs() if p.name == name), None)
    if example is None:
        pytest.skip("../shared/examples not present")
    until = datetime.fromisoformat((example / "until").read_text().strip())
    run = Replay()
    run.run(read_jsonl(example / "input.jsonl"), until)
    (state,) = run.loans.values()
    return state, until


@pytest.mark.parametrize(
    ("example", "worst"),
    [
        (
            "02-late-then-cured",
            (5, "M1"),
        ),  # paid on 03-20, five days after the due date: the cure reports DPD 0
        ("09-penalty-late-fee-write-off", (203, "M7")),  # the DPD at write-off; nothing counts after it
        ("10-paid-at-the-cut-off", (0, "M0")),  # paid exactly at the cut-off: never past due
        ("12-already-past-due-at-import", (46, "M2")),  # 40 at import (due 03-15), cured six days later
        ("11-prepaid-and-overpaid", (0, "M0")),
    ],
)
def test_the_worst_dpd_a_loan_reached(example: str, worst: tuple[int, str]) -> None:
    state, until = example_loan(example)
    assert worst_delinquency(state, until, REPLAY_CONFIG) == worst


def test_an_episode_counts_as_written_off_only_when_the_write_off_ends_an_open_one() -> None:
    events = [
        {"type": "OVERDUE_OPENED", "loan_id": "L1", "bucket": "M1"},
        {"type": "BUCKET_CHANGED", "loan_id": "L1", "bucket": "M3"},
        {"type": "WRITTEN_OFF", "loan_id": "L1", "bucket": "M3", "first_delinquency_date": "2026-01-02"},
        {"type": "WRITTEN_OFF", "loan_id": "L2", "bucket": "M0", "first_delinquency_date": None},
        {"type": "OVERDUE_OPENED", "loan_id": "L3", "bucket": "M2"},
        {"type": "DUE_SOON", "loan_id": "L4", "bucket": "M5"},
    ]
    m = book_metrics(events, charges={"L1": ("CNY", 10, 2000), "L2": ("CNY", 5, 0), "L5": ("USD", 7, 1)})
    assert m["episodes"] == {"opened": 2, "cured": 0, "written_off": 1}
    assert m["loans_ever"] == {"M1+": 2, "M3+": 1}  # L4's DUE_SOON is not an episode
    assert m["penalty_accrued"] == {"CNY": 15, "USD": 7} and m["late_fees"] == {"CNY": 2000, "USD": 1}


def test_settable_terms_and_their_bounds() -> None:
    assert parse_override("grace_days=3") == ("grace_days", 3)
    assert parse_override(" penalty_rate_bps = 100000 ") == ("penalty_rate_bps", 100_000)
    assert overrides_from(["tolerance=100", "late_fee=0", "tolerance=200"]) == {
        "tolerance": 200,
        "late_fee": 0,
    }
    for bad in ("grace_days", "=3", "currency=USD", "grace_days=-1", "grace_days=1.5", "grace_days=3651",
                "penalty_rate_bps=100001", "late_fee=1e3", "tolerance=٣"):  # fmt: skip
        with pytest.raises(OverrideError):
            parse_override(bad)


def test_overrides_touch_every_schedule_revision_and_nothing_else() -> None:
    records = [
        record("loan.schedules", schedule_dict("L1", revision=1)),
        record("loan.schedules", schedule_dict("L1", revision=2, effective_at="2026-03-01T00:00")),
        {"topic": "demo.loan.schedules", "key": "L2", "value": schedule_dict("L2")},
        record("loan.repayments", payment_dict("p1", 100, "2026-03-01T10:00")),
        {"topic": "loan.schedules", "key": "L3", "value": "not an object"},
    ]
    before = json.dumps(records, sort_keys=True)
    out = list(apply_overrides(records, {"grace_days": 3, "late_fee": 500}))
    assert [r["value"]["grace_days"] for r in out[:3]] == [3, 3, 3]
    assert [r["value"]["late_fee"] for r in out[:3]] == [500, 500, 500]
    assert out[3] == records[3] and out[4] == records[4]
    assert json.dumps(records, sort_keys=True) == before  # the baseline's records are untouched


# --------------------------------------------------------------------------- the command


def test_the_command_writes_the_same_json_and_html_at_every_run(tmp_path: Path, capsys) -> None:
    path = tmp_path / "book.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in two_loans_one_borrower()), encoding="utf-8")
    outs = []
    for n in (1, 2):
        args = ["whatif", "--input", str(path), "--until", "2026-03-31T00:00:00+08:00", "--set", "grace_days=3",
                "--json", str(tmp_path / f"w{n}.json"), "--html", str(tmp_path / f"w{n}.html")]  # fmt: skip
        assert main(args) == 0
        outs.append(capsys.readouterr().out)
    assert (tmp_path / "w1.json").read_bytes() == (tmp_path / "w2.json").read_bytes()
    assert (tmp_path / "w1.html").read_bytes() == (tmp_path / "w2.html").read_bytes()
    assert outs[0] == outs[1]
    assert "Loans whose outcome changed: 2" in outs[0] and "episodes · opened" in outs[0]
    doc = json.loads((tmp_path / "w1.json").read_text())
    assert doc["changed_loans"]["count"] == 2


@pytest.mark.parametrize("bad", ["foo=1", "grace_days=-1", "grace_days=4000", "grace_days"])
def test_a_bad_set_is_a_usage_error(tmp_path: Path, bad: str, capsys) -> None:
    path = tmp_path / "book.jsonl"
    path.write_text("", encoding="utf-8")
    assert main(["whatif", "--input", str(path), "--set", bad]) == 2
    assert "--set" in capsys.readouterr().err


def test_a_bad_policy_file_fails_with_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "book.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in two_loans_one_borrower()), encoding="utf-8")
    policy = tmp_path / "p.toml"
    policy.write_text("[notifications]\ncollection_cap_per_day = 'many'\n", encoding="utf-8")
    assert main(["whatif", "--input", str(path), "--policy", str(policy)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "p.toml" in err[0]


def test_a_bad_line_of_the_input_is_dead_lettered_with_its_file_line_number(tmp_path: Path) -> None:
    path = tmp_path / "book.jsonl"
    good = json.dumps(two_loans_one_borrower()[0])
    path.write_text(f"{good}\n\n{{not json\n", encoding="utf-8")
    records = load_input(path)
    assert records[1] == {"topic": "", "key": None, "value": {"raw": "{not json", "line": 3},
                          "undecodable": "line 3 is not JSON"}  # fmt: skip
