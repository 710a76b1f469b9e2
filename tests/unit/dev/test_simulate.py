"""`simulate(..., out=FILE)` writes replay input that `duewatch replay` accepts; the demo's pure helpers."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

from streams.cli import main
from streams.contracts import codec
from streams.dev.book import generate
from streams.dev.compare import compare, standing
from streams.dev.demo import BucketBook, roll_rates
from streams.dev.simulate import Progress, end_instant, simulate, start_instant
from streams.replay import replay
from streams.settings import Settings


def test_simulate_out_writes_replay_input_that_replay_accepts(tmp_path: Path, capsys) -> None:
    out = tmp_path / "book.jsonl"
    seen: list[Progress] = []
    count = asyncio.run(
        simulate(Settings(), 60, 20, 1.0, 5, date(2026, 3, 1), out=out, on_progress=seen.append)
    )
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert count == len(lines) > 60
    assert seen and seen[-1].done and seen[-1].produced == count
    assert {line["topic"] for line in lines} <= {"loan.schedules", "loan.repayments"}
    assert all(
        set(line) == {"topic", "key", "value"} and line["key"] == line["value"]["loan_id"] for line in lines
    )
    # the same records as the book, in event-time order
    assert lines == [json.loads(json.dumps(r.as_line())) for r in generate(60, date(2026, 3, 1), 20, 5)]
    # `duewatch replay` takes it: overdue events, no DLQ
    result = tmp_path / "out.jsonl"
    until = end_instant(date(2026, 3, 1), 20).isoformat()
    assert main(["replay", "--input", str(out), "--until", until, "--out", str(result)]) == 0
    outputs = [json.loads(x) for x in result.read_text().splitlines()]
    topics = Counter(o["topic"] for o in outputs)
    assert topics["overdue.events"] > 0 and topics["duewatch.dlq"] == 0


def test_simulate_cli_out(tmp_path: Path) -> None:
    out = tmp_path / "b.jsonl"
    assert main(["simulate", "--loans", "20", "--days", "5", "--seed", "3", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == len(generate(20, date(2026, 3, 1), 5, 3))
    assert main(["simulate", "--speed", "0"]) == 2
    assert main(["demo", "--loans", "x"]) == 2


def test_clock_bounds_are_shanghai_midnights() -> None:
    assert start_instant(date(2026, 3, 1)).isoformat() == "2026-03-01T00:00:00+08:00"
    assert end_instant(date(2026, 3, 1), 90) - start_instant(date(2026, 3, 1)) == timedelta(days=90)


def _events(loans: int = 150, days: int = 30, seed: int = 11):
    records = generate(loans, date(2026, 3, 1), days, seed)
    until = end_instant(date(2026, 3, 1), days)
    outputs = replay([r.as_line() for r in records], until)
    return [codec.to_json("OverdueEvent", o.value) for o in outputs if o.topic == "overdue.events"], until


def test_compare_applies_retractions_and_reemitted_ids() -> None:
    values, until = _events()
    got, want = compare(values, values, until)
    assert got == want and sum(want.values()) == len(values)
    # a stream that emitted one event, retracted it and emitted it again with a new id
    victim = next(v for v in values if v["type"] == "OVERDUE_OPENED")
    retraction = dict(victim, type="OVERDUE_RETRACTED", event_id="r1", retracts=victim["event_id"])
    again = dict(victim, event_id="fresh-id")
    stream = [*values, retraction, again, values[0]]  # plus a repeat (at-least-once)
    got, want = compare(stream, values, until)
    assert got == want
    # missing and unexpected events are told apart
    got, want = compare(values[1:] + [dict(values[0], dpd=99)], values, until)
    assert sum((want - got).values()) == 1 and sum((got - want).values()) == 1
    assert len(standing(stream)) == len(values)


def test_bucket_book_and_roll_rates() -> None:
    values, _ = _events()
    book = BucketBook()
    for v in values:
        book.add(v)
    latest: dict[str, str] = {}
    for v in values:
        if v["type"] in ("OVERDUE_OPENED", "BUCKET_CHANGED"):
            latest[v["loan_id"]] = v["bucket"]
        elif v["type"] in ("OVERDUE_CURED",):
            latest.pop(v["loan_id"], None)
    assert dict(+book.counts) == dict(Counter(latest.values()))
    loan = book.open_loan()
    assert loan is None or loan in latest
    rates = roll_rates(values)
    assert [r[0] for r in rates] == ["M1→M2", "M2→M3", "M3→M4", "M4→M5", "M5→M6", "M6→M7"]
    assert rates[0][1] > 0 and rates[0][2] > 0
