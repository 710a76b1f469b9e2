"""The chaos run's parts that need no broker: the late book, the bad records, the detection
delays, the plan, the DLQ check and the report (the run itself: tests/integration/test_chaos.py
and `make chaos`)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from streams.contracts import codec
from streams.contracts import topics as names
from streams.dev import chaos
from streams.dev.badrecords import KINDS, bad_records
from streams.dev.book import generate
from streams.dev.detection import Clock, Inputs, delays, percentile, worst_between
from streams.dev.latebook import LATE_DAYS, late_book, with_bad_records
from streams.replay import replay
from streams.settings import Settings

START = datetime(2026, 3, 1, tzinfo=UTC)


def test_late_data_keeps_each_loans_order_and_is_late() -> None:
    records = generate(200, date(2026, 3, 1), 60, seed=3)
    sends, summary = late_book(records, 0.3, random.Random(1), after=START)
    assert len(sends) == len(records) and summary["late_loans"] > 20
    assert summary["late_records"] == sum(s.late for s in sends) > 0
    by_loan: dict[str, list] = {}
    for s in sends:
        by_loan.setdefault(s.key, []).append(s)
    original = {}
    for r in records:
        original.setdefault(r.key, []).append(r.event_time)
    for loan, own in by_loan.items():
        assert [s.event_time for s in own] == original[loan], "a loan's records keep their order"
    assert [s.at for s in sends] == sorted(s.at for s in sends), "sent in the order of the clock"
    late = [s for s in sends if s.late and s.topic == names.REPAYMENTS]
    assert all(s.at - s.event_time <= timedelta(days=LATE_DAYS[1]) for s in late)


def test_every_bad_record_is_refused_with_its_reason() -> None:
    records = generate(40, date(2026, 3, 1), 60, seed=5)
    good = sorted((r.event_time, r.key) for r in records if r.topic == names.SCHEDULES)
    bad = bad_records(len(KINDS), good, (START, START + timedelta(days=30)), random.Random(2))
    assert Counter(b.reason for b in bad) == Counter(reason for _, _, reason, _ in KINDS)
    lines = [r.as_line() for r in records]
    for b in bad:
        record_type = codec.TOPIC_RECORD[b.topic]
        try:
            value = codec.to_json(record_type, codec.decode(record_type, b.value))
        except codec.DecodeError:
            assert b.reason == "UNDECODABLE"
            continue
        lines.append({"topic": b.topic, "key": b.key, "value": value})
    refused = Counter(
        o.headers["reason"] for o in replay(lines, START + timedelta(days=70)) if o.topic == names.DLQ
    )
    assert refused == Counter(b.reason for b in bad if b.reason != "UNDECODABLE")


def test_bad_records_mixed_into_the_sends_in_clock_order() -> None:
    records = generate(40, date(2026, 3, 1), 60, seed=5)
    sends, _ = late_book(records, 0.0, random.Random(1), after=START)
    mixed, bad = with_bad_records(sends, records, 12, (START, START + timedelta(days=50)), random.Random(4))
    assert len(mixed) == len(sends) + 12 and sum(s.reason is not None for s in mixed) == 12
    assert [s.at for s in mixed] == sorted(s.at for s in mixed)


def event(event_id: str, as_of: datetime, loan: str = "L1", kind: str = "DUE_SOON") -> dict:
    return {
        "event_id": event_id,
        "type": kind,
        "loan_id": loan,
        "as_of": as_of.isoformat(),
        "detected_at": "x",
    }


def test_a_detection_delay_runs_from_the_later_of_its_tick_and_its_inputs() -> None:
    clock, inputs = Clock(), Inputs()
    clock.sent(START, 100.0)
    clock.sent(START + timedelta(days=1), 101.0)
    inputs.sent("L1", START - timedelta(days=3), 90.0)
    inputs.sent("L2", START + timedelta(hours=1), 103.0)  # late: sent after the tick that passed it
    due_at_tick = event("a", START + timedelta(hours=2))
    due_after_input = event("b", START + timedelta(hours=2), loan="L2")
    never_due = event("c", START + timedelta(days=5))
    stream = [(101.5, 0, due_at_tick), (104.0, 1, due_after_input), (101.2, 0, event("z", START))]
    found = delays(stream, [due_at_tick, due_after_input, never_due], clock, inputs, timedelta(0))
    assert [(d.loan_id, d.due, d.seconds) for d in found] == [("L1", 101.0, 0.5), ("L2", 103.0, 1.0)]
    assert worst_between(found, 102.0, 110.0).loan_id == "L2" and worst_between(found, 0, 1) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0 and percentile([], 0.9) == 0.0


def test_an_event_emitted_again_after_a_retraction_is_found_by_its_content() -> None:
    clock, inputs = Clock(), Inputs()
    clock.sent(START + timedelta(days=1), 10.0)
    first = event("old", START)
    again = {**first, "event_id": "new"}  # the same content, a new id (docs/decisions.md #2)
    stream = [(10.1, 0, first), (12.0, 0, {"event_id": "r", "type": "OVERDUE_RETRACTED", "retracts": "old",
                                           "loan_id": "L1", "as_of": START.isoformat()}), (15.0, 0, again)]  # fmt: skip
    [found] = delays(stream, [first], clock, inputs, timedelta(0))
    assert found.seen == 15.0, "the copy that stands, not the withdrawn one"


def test_ticks_never_go_back() -> None:
    clock = Clock()
    clock.sent(START, 1.0)
    with pytest.raises(ValueError):
        clock.sent(START - timedelta(seconds=1), 2.0)


def test_the_plan_has_both_kinds_of_kill_a_broker_and_a_scale_down_and_up() -> None:
    config = chaos.Config()
    actions = chaos.plan(config, random.Random(config.seed))
    kinds = Counter(a.kind for a in actions)
    assert kinds[chaos.BROKER] == kinds[chaos.SCALE_DOWN] == kinds[chaos.SCALE_UP] == 1
    kills = [a for a in actions if a.kind == chaos.KILL]
    assert any(a.back < 5 for a in kills) and any(a.back > config.session_timeout for a in kills)
    assert all(b.at - a.at > 10 for a, b in zip(actions, actions[1:], strict=False))
    assert actions[-1].at < config.play
    down = next(a for a in actions if a.kind == chaos.SCALE_DOWN)
    assert next(a for a in actions if a.kind == chaos.SCALE_UP).at > down.at
    assert chaos.plan(config, random.Random(config.seed)) == actions, "a seed names a plan"
    assert chaos.BROKER not in {a.kind for a in chaos.plan(config, random.Random(1), broker=False)}


def test_the_dlq_check_wants_each_bad_record_once_with_its_reason() -> None:
    records = generate(10, date(2026, 3, 1), 30, seed=1)
    [a, b] = bad_records(2, sorted((r.event_time, r.key) for r in records if r.topic == names.SCHEDULES),
                         (START, START + timedelta(days=20)), random.Random(3))  # fmt: skip
    sent = {(a.topic, 0, 5): a, (b.topic, 1, 9): b}

    def dlq(topic: str, partition: int, offset: int, reason: str) -> dict:
        return {"headers": {"reason": reason, "source_topic": "p." + topic, "source_partition": str(partition),
                            "source_offset": str(offset)}}  # fmt: skip

    cfg = Settings(topic_prefix="p.")
    good = [dlq(a.topic, 0, 5, a.reason), dlq(a.topic, 0, 5, a.reason), dlq(b.topic, 1, 9, b.reason)]
    assert chaos.check_dlq(good, sent, cfg) == ((2, 0, 0, 1), [])
    (counts, problems) = chaos.check_dlq(
        [dlq(a.topic, 0, 5, "OTHER"), dlq("loan.repayments", 2, 3, "NO_SCHEDULE")], sent, cfg
    )
    assert counts == (2, 1, 2, 0) and len(problems) == 3


def test_the_report_goes_into_its_section_of_the_docs(tmp_path: Path) -> None:
    doc = tmp_path / "reliability.md"
    doc.write_text("# Reliability\n\nintro\n\n## Later section\n\nkept\n")
    chaos.write_docs("first report", doc)
    chaos.write_docs("second report", doc)
    text = doc.read_text()
    assert text.count(f"## {chaos.REPORT_SECTION}") == 1 and "second report" in text and "first" not in text
    assert "## Later section\n\nkept" in text and text.startswith("# Reliability\n\nintro")


def test_rebalance_reasons_come_from_the_coordinators_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    line = "[2026-12-07 05:04:{s},884] INFO [GroupCoordinator id=1] Preparing to rebalance group {g} in state X with old generation 1 (reason: {r}). (x)\n"  # fmt: skip
    log.write_text(line.format(s="10", g="g1", r="removing member m on heartbeat expiration.")
                   + line.format(s="20", g="g1", r="Adding new member m2 with group instance id g1-w2; client reason: x")
                   + line.format(s="30", g="other", r="Adding new member")
                   + line.format(s="01", g="g1", r="Adding new member early"))  # fmt: skip
    found = chaos.rebalances([log, tmp_path / "missing.log"], "g1", datetime(2026, 12, 7, 5, 4, 5))
    assert found == Counter({"a member's session expired": 1, "a member joined": 1})
