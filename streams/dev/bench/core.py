"""Micro-benchmark of the core alone: schedules, repayments and ticks on a generated book.

Drives ``streams.core.loan`` exactly as the detector agent does — records applied with the
tick clock at their event time, ticks every simulated minute-after-midnight and reminder
time touching only the loans the wake-up index says are due — but with no Kafka, no Avro
and no table, so it measures the decision logic's own cost per record.

Each operation is timed on the process's CPU clock (``time.process_time_ns``, less the cost of
reading it), not the wall clock: these machines are shared, and time spent descheduled is not
the operation's. The targets are issue 19's: an ordinary repayment ≤ 8 µs, a tick that changes
nothing for a loan ≤ 5 µs, a tick with nothing due < 1 ms.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ...core.config import EngineConfig
from ...core.loan import LoanState, apply_repayment, apply_schedule, new_loan, tick
from ...core.records import LoanSchedule, parse_repayment, parse_schedule
from ...core.statecodec import dumps, loads
from ...core.wakeups import WakeIndex
from ..book import generate

REPAYMENT_TARGET_US = 8.0
QUIET_TICK_TARGET_US = 5.0
EMPTY_TICK_TARGET_US = 1000.0


@dataclass
class CoreResult:
    loans: int
    schedules: int
    repayments: int
    ticks: int
    transitions: int
    schedule_us: float  # CPU µs per schedule applied (a new loan)
    repayment_us: float  # CPU µs per repayment applied
    quiet_tick_us: float  # CPU µs per loan ticked that emitted nothing
    quiet_ticks: int
    eventful_tick_us: float  # CPU µs per loan ticked that emitted something
    eventful_ticks: int
    transition_rate: float  # transitions per CPU second of the ticks that emitted them
    empty_tick_us: float
    state_bytes: float
    dumps_us: float
    loads_us: float
    memory_per_loan: float  # bytes the live states take, per loan


def _clock_cost() -> int:
    """Nanoseconds one pair of CPU-clock reads adds to a measurement."""
    clock = time.process_time_ns
    best = 1 << 62
    for _ in range(5):
        t0 = clock()
        for _ in range(10_000):
            clock()
        best = min(best, (clock() - t0) // 10_000)
    return int(best)


def _tick_times(book: list[Any], start: date, days: int) -> list[datetime]:
    """00:01:01 and 09:01:01 local every day of the book, as UTC instants (the worker's clock)."""
    tz = book[0].event_time.tzinfo
    first_day = min(r.event_time for r in book).date()
    times = []
    for n in range((start + timedelta(days=days) - first_day).days + 1):
        day = first_day + timedelta(days=n)
        for hh, mm in ((0, 1), (9, 1)):
            times.append(datetime(day.year, day.month, day.day, hh, mm, 1, tzinfo=tz).astimezone(UTC))
    return times


def run(loans: int = 10_000, days: int = 90, seed: int = 7) -> CoreResult:
    """Apply a ``loans``-loan book's ``days`` of records in event-time order, ticking as the stream would."""
    cfg = EngineConfig()
    start = date(2026, 3, 1)
    book = generate(loans, start, days, seed)
    parsed = [
        (
            r.event_time.astimezone(UTC),  # the worker's clock and records are UTC instants
            parse_schedule(r.value) if r.topic == "loan.schedules" else parse_repayment(r.value),
        )
        for r in book
    ]
    tick_times = _tick_times(book, start, days)
    clock, overhead = time.process_time_ns, _clock_cost()
    states: dict[str, LoanState] = {}
    index = WakeIndex()
    spent = {"schedule": 0, "repayment": 0, "quiet": 0, "eventful": 0}
    counts = dict.fromkeys(spent, 0)
    transitions = ticks = 0
    t_index = 0
    gc.collect()
    for event_time, record in parsed:
        while t_index < len(tick_times) and tick_times[t_index] <= event_time:
            now = tick_times[t_index]
            for loan_id in index.pop_due(now):
                t0 = clock()
                outcome = tick(states[loan_id], now, cfg)
                took = clock() - t0 - overhead
                kind = "eventful" if outcome.events else "quiet"
                spent[kind] += took
                counts[kind] += 1
                states[loan_id] = outcome.state
                index.set(loan_id, outcome.wake_at)
                transitions += len(outcome.events)
            ticks += 1
            t_index += 1
        loan_id = record.loan_id
        state = states.get(loan_id) or new_loan(loan_id)
        if isinstance(record, LoanSchedule):
            t0 = clock()
            outcome = apply_schedule(state, record, event_time, cfg)
            spent["schedule"] += clock() - t0 - overhead
            counts["schedule"] += 1
        else:
            t0 = clock()
            outcome = apply_repayment(state, record, event_time, cfg)
            spent["repayment"] += clock() - t0 - overhead
            counts["repayment"] += 1
        states[loan_id] = outcome.state
        index.set(loan_id, outcome.wake_at)
        transitions += len(outcome.events)
    # A tick with nothing due, on the full book's index.
    now = tick_times[t_index - 1] if t_index else parsed[-1][0]
    index.pop_due(now)
    w0 = time.perf_counter()
    for _ in range(10_000):
        index.pop_due(now)
    empty_tick_us = (time.perf_counter() - w0) / 10_000 * 1e6
    sample = list(states.values())[:2000]
    blobs = [dumps(s) for s in sample]
    w0 = time.perf_counter()
    for s in sample:
        dumps(s)
    dumps_us = (time.perf_counter() - w0) / len(sample) * 1e6
    w0 = time.perf_counter()
    for b in blobs:
        loads(b)
    loads_us = (time.perf_counter() - w0) / len(blobs) * 1e6

    def per(kind: str) -> float:
        return spent[kind] / counts[kind] / 1000 if counts[kind] else 0.0

    return CoreResult(
        loans=len(states),
        schedules=counts["schedule"],
        repayments=counts["repayment"],
        ticks=ticks,
        transitions=transitions,
        schedule_us=per("schedule"),
        repayment_us=per("repayment"),
        quiet_tick_us=per("quiet"),
        quiet_ticks=counts["quiet"],
        eventful_tick_us=per("eventful"),
        eventful_ticks=counts["eventful"],
        transition_rate=transitions / (spent["eventful"] / 1e9) if spent["eventful"] else 0.0,
        empty_tick_us=empty_tick_us,
        state_bytes=sum(map(len, blobs)) / len(blobs),
        dumps_us=dumps_us,
        loads_us=loads_us,
        memory_per_loan=memory_per_loan(min(loans, 2000), days, seed),
    )


def memory_per_loan(loans: int, days: int, seed: int) -> float:
    """Bytes of Python heap the live states of a ``loans``-loan book hold, per loan: what the
    detector's cache of decoded states costs (tracemalloc; the states with their memos, after
    the book's records and ticks, freed at the end to see what only they held)."""
    cfg = EngineConfig()
    start = date(2026, 3, 1)
    book = generate(loans, start, days, seed)
    records = [
        (
            r.event_time.astimezone(UTC),
            parse_schedule(r.value) if r.topic == "loan.schedules" else parse_repayment(r.value),
        )
        for r in book
    ]
    tick_times = _tick_times(book, start, days)
    del book
    tracemalloc.start()
    try:
        states: dict[str, LoanState] = {}
        index = WakeIndex()
        t_index = 0
        for event_time, record in records:
            while t_index < len(tick_times) and tick_times[t_index] <= event_time:
                for loan_id in index.pop_due(tick_times[t_index]):
                    outcome = tick(states[loan_id], tick_times[t_index], cfg)
                    states[loan_id] = outcome.state
                    index.set(loan_id, outcome.wake_at)
                t_index += 1
            state = states.get(record.loan_id) or new_loan(record.loan_id)
            if isinstance(record, LoanSchedule):
                outcome = apply_schedule(state, record, event_time, cfg)
            else:
                outcome = apply_repayment(state, record, event_time, cfg)
            states[record.loan_id] = outcome.state
            index.set(record.loan_id, outcome.wake_at)
        del records, index
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        count = len(states)
        del states
        gc.collect()
        return (held - tracemalloc.get_traced_memory()[0]) / count
    finally:
        tracemalloc.stop()


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "**MISS**"


def report(r: CoreResult) -> str:
    """The BENCHMARKS.md section."""
    ops = r.schedules + r.repayments
    return "\n".join(
        [
            f"Book: {r.loans:,} loans, {r.schedules:,} schedules and {r.repayments:,} repayments over 90 days;",
            f"{r.ticks:,} ticks (00:01:01 and 09:01:01 daily) touched {r.quiet_ticks + r.eventful_ticks:,} loans "
            f"and emitted {r.transitions:,} events in all. CPU time per operation (process clock).",
            "",
            "| operation | cost | target | |",
            "|---|---|---|---|",
            f"| apply schedule (new loan) | {r.schedule_us:.1f} µs |  |  |",
            f"| apply repayment (an ordinary one: the clock at its event time) | {r.repayment_us:.1f} µs "
            f"| ≤ {REPAYMENT_TARGET_US:.0f} µs | {_verdict(r.repayment_us <= REPAYMENT_TARGET_US)} |",
            f"| tick a due loan that changes nothing ({r.quiet_ticks:,}) | {r.quiet_tick_us:.1f} µs "
            f"| ≤ {QUIET_TICK_TARGET_US:.0f} µs | {_verdict(r.quiet_tick_us <= QUIET_TICK_TARGET_US)} |",
            f"| tick a due loan that emits ({r.eventful_ticks:,}) | {r.eventful_tick_us:.1f} µs |  |  |",
            f"| transitions per CPU second of those ticks | {r.transition_rate:,.0f} |  |  |",
            f"| tick with nothing due (index head check) | {r.empty_tick_us:.2f} µs "
            f"| < 1 ms | {_verdict(r.empty_tick_us < EMPTY_TICK_TARGET_US)} |",
            f"| records per CPU second, decisions only ({ops:,} records) "
            f"| {ops / ((r.schedules * r.schedule_us + r.repayments * r.repayment_us) / 1e6):,.0f} |  |  |",
            f"| loan state size / dumps / loads | {r.state_bytes:,.0f} B / {r.dumps_us:.1f} µs / {r.loads_us:.1f} µs |  |  |",
            f"| memory per cached loan (decoded state with its memos, tracemalloc) | {r.memory_per_loan / 1024:.1f} KiB |  |  |",
        ]
    )
