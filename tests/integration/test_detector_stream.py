"""The detector on the real broker (issue 4): the stream says what replay says.

Every test runs `duewatch worker` processes against the session's Kafka broker, produces
records like upstream would, sends the ticks itself (the ticker is off), and compares the
standing OverdueEvents (after applying retractions) with `duewatch replay` on every
deterministic field — the event id included.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams.core.dates import parse_instant
from streams.dev.compare import comparable, standing
from tests.integration import harness
from tests.support.kiva import load_loans, to_records
from tests.support.shared import EXAMPLES, KIVA, example_dirs, need

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SETTLE = harness.SETTLE
book_lines, replayed, run_until_equal, ticks_between = (
    harness.book_lines,
    harness.replayed,
    harness.run_until_equal,
    harness.ticks_between,
)
compared = harness.compared


def _pick(event: dict[str, Any], fields: list[str]) -> tuple:
    """The fields an expected.jsonl lists, instants compared as instants."""
    return tuple(
        parse_instant(event[f]).isoformat() if f == "as_of" else json.dumps(event.get(f)) for f in fields
    )


async def test_worked_examples_through_the_stream(cluster) -> None:
    examples = example_dirs()
    c = await cluster()
    lines, until_of, expected = [], {}, Counter()
    for example in examples:
        ex_lines = [json.loads(x) for x in (example / "input.jsonl").read_text().splitlines() if x.strip()]
        until = parse_instant((example / "until").read_text().strip())
        lines += ex_lines
        for line in ex_lines:
            until_of[line["key"]] = until
        expected += Counter(comparable(v) for v in replayed(ex_lines, until))
    worker = c.start_worker()
    await c.produce(lines)
    await worker.ready()
    last = max(until_of.values())
    await c.tick(last + SETTLE + timedelta(seconds=1))
    reader = c.reader()

    def by_example(records: list[dict[str, Any]]) -> Counter:
        values = standing([r["value"] for r in records])
        return Counter(comparable(v) for v in values if parse_instant(v["as_of"]) <= until_of[v["loan_id"]])

    records = await reader.until(lambda rs: by_example(rs) == expected, timeout=120)
    assert by_example(records) == expected
    # and each example's own expected.jsonl, on the fields it lists
    for example in examples:
        want = [json.loads(x) for x in (example / "expected.jsonl").read_text().splitlines() if x.strip()]
        loans = {
            json.loads(x)["key"] for x in (example / "input.jsonl").read_text().splitlines() if x.strip()
        }
        until = parse_instant((example / "until").read_text().strip())
        got = [
            v
            for v in standing([r["value"] for r in records])
            if v["loan_id"] in loans and parse_instant(v["as_of"]) <= until
        ]
        fields = sorted({k for e in want for k in e})
        assert Counter(_pick(e, fields) for e in got) == Counter(_pick(e, fields) for e in want), example.name


async def test_generated_book_records_before_ticks(cluster) -> None:
    lines, start, until = book_lines(300, 60, seed=11)
    c = await cluster()
    expected = replayed(lines, until)
    assert len(expected) > 500
    worker = c.start_worker()
    await c.produce(lines)
    await worker.ready()
    for t in ticks_between(start, until, timedelta(days=2)):
        await c.tick(t)
    await c.tick(until + SETTLE)
    got, want = await run_until_equal(c, expected, until)
    assert got == want
    assert not any(r["value"]["type"] == "OVERDUE_RETRACTED" for r in c.readers[0].records)


async def test_generated_book_with_ticks_running_ahead_of_repayments(cluster) -> None:
    # Every repayment arrives late here, so each one re-walks its loan and retracts/re-emits the
    # rest of its history (and the routers compensate each retraction): keep the book small.
    lines, start, until = book_lines(80, 45, seed=12)
    c = await cluster()
    expected = replayed(lines, until)
    worker = c.start_worker()
    await c.produce([x for x in lines if x["topic"] == "loan.schedules"])
    await worker.ready()
    ticks = ticks_between(start, until, timedelta(days=3))
    for t in ticks:
        await c.tick(t)  # the clock runs ahead: loans go overdue that have in fact paid
    # Let the detector act on those ticks first (otherwise catch-up gating would hold them
    # until the repayments below were read, and there would be no late data at all).
    reader = c.reader()
    await reader.until(lambda rs: sum(r["value"]["type"] == "OVERDUE_OPENED" for r in rs) > 25, timeout=120)
    await reader.settle(quiet=2.0)
    await c.produce([x for x in lines if x["topic"] == "loan.repayments"])
    await c.tick(until + SETTLE)
    got, want = await run_until_equal(c, expected, until)
    assert got == want
    retractions = [r for r in c.readers[0].records if r["value"]["type"] == "OVERDUE_RETRACTED"]
    assert retractions, "late repayments must have retracted something"


async def test_kiva_loans_through_the_stream(cluster) -> None:
    loans = load_loans(need(KIVA))
    lines = [r for loan in loans for r in to_records(loan)]
    until = datetime(2015, 1, 5, tzinfo=UTC)
    expected = replayed(lines, until)
    c = await cluster()
    worker = c.start_worker()
    await c.produce(lines)
    await worker.ready()
    for year in range(2006, 2015):
        await c.tick(datetime(year, 6, 30, tzinfo=UTC))
    await c.tick(until + SETTLE)
    got, want = await run_until_equal(c, expected, until, timeout=240)
    assert got == want


async def test_sigkill_mid_stream_loses_nothing_and_repeats_keep_their_ids(cluster) -> None:
    lines, start, until = book_lines(300, 60, seed=13)
    expected = replayed(lines, until)
    c = await cluster()
    worker = c.start_worker("a")
    await c.produce(lines)
    await worker.ready()
    ticks = ticks_between(start, until, timedelta(days=1))
    reader = c.reader()
    for t in ticks[: len(ticks) // 2]:
        await c.tick(t)
    await reader.until(lambda rs: len(rs) > 200, timeout=60)
    worker.kill(signal.SIGKILL)  # mid-stream: ticks are still queued behind it
    for t in ticks[len(ticks) // 2 :]:
        await c.tick(t)
    await c.tick(until + SETTLE)
    again = c.start_worker("a")  # same state dir, same group: recovers and resumes
    await again.ready()
    got, want = await run_until_equal(c, expected, until)
    assert got == want
    records = reader.records
    contents: dict[str, set[str]] = {}
    for r in records:
        contents.setdefault(r["value"]["event_id"], set()).add(comparable(r["value"]))
    assert all(len(v) == 1 for v in contents.values()), "a repeated event_id must carry the same event"


async def test_two_workers_share_the_book_and_survive_a_rebalance(cluster) -> None:
    lines, start, until = book_lines(400, 60, seed=14)
    expected = replayed(lines, until)
    c = await cluster(partitions=6)
    a, b = c.start_worker("a"), c.start_worker("b")
    await c.produce(lines)
    await a.ready()
    await b.ready()
    ticks = ticks_between(start, until, timedelta(days=1))
    reader = c.reader()
    for t in ticks[: len(ticks) // 2]:
        await c.tick(t)
    await reader.until(lambda rs: len(rs) > 200, timeout=90)
    # One worker leaves (SIGTERM; a slow graceful shutdown on a loaded machine ends in SIGKILL):
    # either way its partitions move to a, and the output must not change.
    b.stop(timeout=90)
    for t in ticks[len(ticks) // 2 :]:
        await c.tick(t)
    await c.tick(until + SETTLE)
    got, want = await run_until_equal(c, expected, until)
    assert got == want
    assert "wake-up index rebuilt" in a.output()


async def test_bad_records_go_to_the_dlq_and_the_stream_goes_on(cluster) -> None:
    c = await cluster()
    worker = c.start_worker()
    sched = json.loads((need(EXAMPLES / "02-late-then-cured/input.jsonl")).read_text().splitlines()[0])
    good = dict(sched, key="LDLQ", value=dict(sched["value"], loan_id="LDLQ"))
    pay = {
        "payment_id": "x1",
        "loan_id": "LDLQ",
        "amount": 105000,
        "currency": "CNY",
        "paid_at": "2026-03-20T11:30:00+08:00",
        "channel": "app",
        "kind": "PAYMENT",
        "reverses": None,
    }
    await c.produce([good])
    await c.produce([{"topic": "loan.repayments", "key": "LDLQ", "value": "\x00\x01garbage"}], raw=True)
    await c.produce(
        [
            {"topic": "loan.repayments", "key": "LDLQ", "value": dict(pay, payment_id="neg", amount=-5)},
            {"topic": "loan.repayments", "key": "LDLQ", "value": dict(pay, payment_id="cur", currency="XYZ")},
            {
                "topic": "loan.repayments",
                "key": "LDLQ",
                "value": dict(pay, payment_id="rev", kind="REVERSAL", reverses="nope"),
            },
            {"topic": "loan.repayments", "key": "LDLQ", "value": pay},
        ]
    )
    await worker.ready()
    await c.tick(parse_instant("2026-03-25T00:00:00+08:00"))
    dlq = await c.reader("duewatch.dlq").until(lambda rs: len(rs) >= 4, timeout=60)
    reasons = sorted(r["headers"]["reason"] for r in dlq)
    assert reasons == ["NON_POSITIVE_AMOUNT", "UNDECODABLE", "UNKNOWN_CURRENCY", "UNKNOWN_PAYMENT"]
    for r in dlq:
        assert r["key"] == "LDLQ" and r["headers"]["source_topic"] == "loan.repayments"
        assert r["headers"]["source_partition"].isdigit() and r["headers"]["source_offset"].isdigit()
        assert "value_b64" in r  # the original bytes, untouched
    events = await c.reader().until(
        lambda rs: any(r["value"]["type"] == "OVERDUE_CURED" for r in rs), timeout=60
    )
    assert [r["value"]["type"] for r in events][-2:] == ["OVERDUE_OPENED", "OVERDUE_CURED"]
    assert worker.running
