"""Hostile input through the stream (SPEC §2): the chaos run's poison records mixed into a good
book give exactly the good loans' events while the worker stays ready, and a loan an
unexpected failure set aside comes back through `duewatch release` and `duewatch dlq redrive`."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from streams.contracts import codec
from streams.contracts.partitioning import partition_of
from streams.core import errors, statecodec
from streams.core.config import EngineConfig
from streams.core.loan import apply_schedule, new_loan, wake_at
from streams.core.records import parse_schedule
from streams.dev.book import generate
from streams.dev.compare import compare
from streams.kafkaio import create_topics
from streams.replay import replay
from streams.worker.tables import changelog_topics, internal_topics, stored
from tests.support import hostile

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SETTLE = timedelta(seconds=60)


def _events(lines: list[dict[str, Any]], until: datetime) -> list[dict[str, Any]]:
    return [
        codec.to_json("OverdueEvent", o.value) for o in replay(lines, until) if o.topic == "overdue.events"
    ]


def _reasons(records: list[dict[str, Any]]) -> Counter:
    return Counter(r["headers"].get("reason") for r in records)


def _equal(expected: list[dict[str, Any]], until: datetime, loan: str | None = None):
    """A test for ``Reader.until``: the standing events read so far equal ``expected``."""

    def test(records: list[dict[str, Any]]) -> bool:
        got, want = compare(
            [r["value"] for r in records if loan is None or r["key"] == loan], expected, until
        )
        return got == want

    return test


async def _metric(worker, name: str, value: float, timeout: float = 10.0) -> float:
    """The metric once it reads ``value`` (gauges are published once a second), or what it reads then."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (seen := await worker.metric(name)) != value and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.5)
    return seen


async def test_poison_records_leave_the_good_loans_events_exact_and_the_worker_ready(cluster) -> None:
    c = await cluster(DUEWATCH_MAX_TICK_AHEAD="86400")
    good = [r.as_line() for r in generate(40, date(2026, 3, 1), 60, seed=5)]
    until = datetime(2026, 5, 1, tzinfo=UTC)
    expected = _events(good, until)
    poison = [hostile.broken_schedule(i, f"POISON-{i}") for i in range(5)]
    poison += [
        hostile.too_large("BIG"),
        hostile.overlong_amount("POISON-0", "long"),
        hostile.truncated("L3", 40),
    ]
    worker = c.start_worker()
    await c.produce(good)
    for bad in poison:
        await c.produce_raw(bad.topic, [(None if bad.key is None else bad.key.encode(), bad.as_bytes())])
    await worker.ready()
    await c.tick(until + SETTLE)
    await c.tick(datetime.now(UTC) + timedelta(days=3))  # ahead of the wall clock: refused
    reader = c.reader()
    records = await reader.until(_equal(expected, until), timeout=180)
    got, want = compare([r["value"] for r in records], expected, until)
    assert got == want and len(expected) > 100
    dlq = c.reader("duewatch.dlq")
    wanted = Counter(b.reason for b in poison) + Counter({errors.TICK_AHEAD: c.partitions})
    dead = await dlq.until(lambda rs: _reasons(rs) >= wanted, timeout=60)
    assert _reasons(dead) == wanted
    for record in dead:
        assert "S3CR3T" not in str(record["headers"]) and len(record["headers"]["detail"]) <= 200
    assert (await worker.get("/ready"))[0] == 200
    assert await worker.metric("duewatch_loans_set_aside_total") == 0
    assert "Traceback" not in worker.output() and "S3CR3T" not in worker.output()


async def test_a_loan_set_aside_is_released_and_redriven_after_the_fix(cluster) -> None:
    """A stored state the worker cannot read (layout 99, as a newer release might write) makes its
    loan fail at the first tick: that loan alone is set aside, its later records are dead-lettered
    as LOAN_SET_ASIDE, the other loans go on. After the fix (here: the state readable again and
    the worker restarted), `duewatch release` and `duewatch dlq redrive --loan` bring it back,
    and its events are what replay says."""
    c = await cluster()
    cfg = EngineConfig(settle=SETTLE)
    await create_topics(c.cfg, physical=internal_topics(c.cfg), compacted=changelog_topics(c.cfg))
    changelog = f"{c.cfg.app_id}-loans-changelog"
    schedule = hostile.base_schedule("LX")
    state = apply_schedule(new_loan("LX"), parse_schedule(schedule), None, cfg).state
    readable = stored(state, wake_at(state, cfg), cfg)
    unreadable = readable.replace(b'[2,"LX"', b'[99,"LX"')
    assert unreadable != readable and statecodec.peek(unreadable) is not None
    partition = partition_of(b"LX", c.partitions)
    await c.produce_raw(changelog, [(b"LX", unreadable)], partition=partition)

    good = [r.as_line() for r in generate(20, date(2026, 3, 1), 60, seed=9)]
    payments = [{"topic": "loan.repayments", "key": "LX", "value": hostile.base_repayment("LX", "px1")},
                {"topic": "loan.repayments", "key": "LX",
                 "value": hostile.base_repayment("LX", "px2") | {"paid_at": "2026-05-20T09:00:00+08:00"}}]  # fmt: skip
    until = datetime(2026, 6, 1, tzinfo=UTC)
    worker = c.start_worker()
    await c.produce(good)
    await worker.ready()
    await c.tick(datetime(2026, 3, 2, tzinfo=UTC))  # LX is due at its effective_at: the read fails
    dlq = c.reader("duewatch.dlq")
    seen = await dlq.until(lambda rs: any(r["headers"].get("loan_id") == "LX" for r in rs), timeout=60)
    [failed] = [r for r in seen if r["headers"].get("loan_id") == "LX"]
    assert (
        failed["headers"]["reason"] == errors.INTERNAL_ERROR
        and failed["headers"]["source_topic"] == "clock.ticks"
    )
    await c.produce(payments)
    await c.tick(until + SETTLE)
    aside = await dlq.until(lambda rs: _reasons(rs)[errors.LOAN_SET_ASIDE] >= 2, timeout=60)
    assert _reasons(aside) == Counter({errors.INTERNAL_ERROR: 1, errors.LOAN_SET_ASIDE: 2})
    events = c.reader()
    expected = _events(good, until)
    records = await events.until(_equal(expected, until), timeout=120)
    got, want = compare([r["value"] for r in records], expected, until)
    assert got == want, "the other loans must go on"
    assert await worker.metric("duewatch_loans_set_aside_total") == 1
    assert await _metric(worker, "duewatch_loans_aside", 1) == 1
    listed = c.cli("dlq", "list")
    assert listed.returncode == 0 and "loans set aside by an unexpected failure (1): LX" in listed.stdout

    # The fix: the state is readable again (in real life: a release that reads layout 99).
    worker.stop()
    await c.produce_raw(changelog, [(b"LX", readable)], partition=partition)
    worker = c.start_worker("w1")
    await worker.ready()
    assert await _metric(worker, "duewatch_loans_aside", 1) == 1, "a restart keeps the loan aside"
    released = c.cli("release", "LX")
    assert released.returncode == 0, released.stderr
    await worker.wait_for("was released")
    redriven = c.cli("dlq", "redrive", "--loan", "LX")
    assert redriven.returncode == 0, redriven.stderr
    assert (
        "1  redriven to clock.ticks" in redriven.stdout
        and "2  redriven to loan.repayments" in redriven.stdout
    )
    await asyncio.sleep(2)
    await c.tick(until + SETTLE + timedelta(seconds=1))
    lx = _events([{"topic": "loan.schedules", "key": "LX", "value": schedule}, *payments], until)
    assert len(lx) >= 3
    records = await events.until(_equal(lx, until, "LX"), timeout=120)
    got, want = compare([r["value"] for r in records if r["key"] == "LX"], lx, until)
    assert got == want
    assert await worker.metric("duewatch_loans_released_total") == 1
    assert await _metric(worker, "duewatch_loans_aside", 0) == 0
    # Nothing of LX went to the DLQ again.
    assert _reasons(await dlq.settle(quiet=2)) == Counter(
        {errors.INTERNAL_ERROR: 1, errors.LOAN_SET_ASIDE: 2}
    )


async def test_no_id_or_value_reaches_the_log_even_at_debug(cluster) -> None:
    """At DEBUG the Kafka client once dumped whole records into the worker log: ids, borrower ids,
    contact data. Its loggers stay at DUEWATCH_KAFKA_LOG_LEVEL (WARNING) whatever
    DUEWATCH_LOG_LEVEL says, and duewatch's own lines name records by topic, partition, offset."""
    c = await cluster(DUEWATCH_LOG_LEVEL="debug")
    lines = [{"topic": "loan.schedules", "key": "LOAN-SECRET-1",
              "value": hostile.base_schedule("LOAN-SECRET-1") | {"borrower_id": "BORROWER-SECRET-1"}},
             {"topic": "loan.repayments", "key": "LOAN-SECRET-1",
              "value": hostile.base_repayment("LOAN-SECRET-1", "PAYMENT-SECRET-1")},
             {"topic": "loan.schedules", "key": "LOAN-SECRET-2",
              "value": hostile.base_schedule("LOAN-SECRET-2") | {"timezone": "Mars/SECRET"}}]  # fmt: skip
    worker = c.start_worker()
    await worker.ready()
    await c.produce(lines)
    await c.tick(datetime(2026, 6, 1, tzinfo=UTC))
    await c.reader().until(lambda rs: any(r["value"]["type"] == "OVERDUE_OPENED" for r in rs), timeout=60)
    await c.reader("duewatch.dlq").until(lambda rs: len(rs) >= 1, timeout=60)
    log = worker.output()
    assert "DEBUG" in log, "the worker logged at DEBUG"
    assert "SECRET" not in log
