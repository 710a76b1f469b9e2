"""Micro-benchmark of the core alone: schedules, repayments and ticks on a generated book.

Drives ``streams.core.loan`` exactly as the detector agent does — records applied with the
tick clock at their event time, ticks every simulated minute-after-midnight and reminder
time touching only the loans the wake-up index says are due — but with no Kafka, no Avro
and no table, so it measures the decision logic's own cost per record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from ...core.config import EngineConfig
from ...core.loan import LoanState, apply_repayment, apply_schedule, new_loan, tick
from ...core.records import LoanSchedule, parse_repayment, parse_schedule
from ...core.statecodec import dumps, loads
from ...core.wakeups import WakeIndex
from ..book import generate


@dataclass
class CoreResult:
    loans: int
    schedules: int
    repayments: int
    schedule_rate: float
    repayment_rate: float
    ticks: int
    transitions: int
    transition_rate: float
    empty_tick_us: float
    state_bytes: float
    dumps_us: float
    loads_us: float


def run(loans: int = 10_000, days: int = 90, seed: int = 7) -> CoreResult:
    """Apply a ``loans``-loan book's ``days`` of records in event-time order, ticking as the stream would."""
    cfg = EngineConfig()
    start = date(2026, 3, 1)
    book = generate(loans, start, days, seed)
    parsed = [
        (
            r.event_time.astimezone(UTC),  # the worker's clock and records are UTC instants
            r.topic,
            parse_schedule(r.value) if r.topic == "loan.schedules" else parse_repayment(r.value),
        )
        for r in book
    ]
    states: dict[str, LoanState] = {}
    index = WakeIndex()
    tz = book[0].event_time.tzinfo
    first_day = min(r.event_time for r in book).date()
    tick_times = []
    for n in range((start + timedelta(days=days) - first_day).days + 1):
        day = first_day + timedelta(days=n)
        for hh, mm in ((0, 1), (9, 1)):
            tick_times.append(datetime(day.year, day.month, day.day, hh, mm, 1, tzinfo=tz).astimezone(UTC))
    schedule_s = repayment_s = tick_s = 0.0
    schedules = repayments = transitions = ticks = 0
    t_index = 0
    for event_time, _topic, record in parsed:
        while t_index < len(tick_times) and tick_times[t_index] <= event_time:
            now = tick_times[t_index]
            t0 = time.perf_counter()
            for loan_id in index.pop_due(now):
                outcome = tick(states[loan_id], now, cfg)
                states[loan_id] = outcome.state
                index.set(loan_id, outcome.wake_at)
                transitions += len(outcome.events)
            tick_s += time.perf_counter() - t0
            ticks += 1
            t_index += 1
        loan_id = record.loan_id
        state = states.get(loan_id) or new_loan(loan_id)
        t0 = time.perf_counter()
        if isinstance(record, LoanSchedule):
            outcome = apply_schedule(state, record, event_time, cfg)
            schedule_s += time.perf_counter() - t0
            schedules += 1
        else:
            outcome = apply_repayment(state, record, event_time, cfg)
            repayment_s += time.perf_counter() - t0
            repayments += 1
        states[loan_id] = outcome.state
        index.set(loan_id, outcome.wake_at)
        transitions += len(outcome.events)
    # A tick with nothing due, on the full book's index.
    now = tick_times[t_index - 1] if t_index else parsed[-1][0]
    index.pop_due(now)
    t0 = time.perf_counter()
    for _ in range(10_000):
        index.pop_due(now)
    empty_tick_us = (time.perf_counter() - t0) / 10_000 * 1e6
    sample = list(states.values())[:2000]
    blobs = [dumps(s) for s in sample]
    t0 = time.perf_counter()
    for s in sample:
        dumps(s)
    dumps_us = (time.perf_counter() - t0) / len(sample) * 1e6
    t0 = time.perf_counter()
    for b in blobs:
        loads(b)
    loads_us = (time.perf_counter() - t0) / len(blobs) * 1e6
    return CoreResult(
        loans=len(states),
        schedules=schedules,
        repayments=repayments,
        schedule_rate=schedules / schedule_s,
        repayment_rate=repayments / repayment_s,
        ticks=ticks,
        transitions=transitions,
        transition_rate=transitions / tick_s if tick_s else 0.0,
        empty_tick_us=empty_tick_us,
        state_bytes=sum(map(len, blobs)) / len(blobs),
        dumps_us=dumps_us,
        loads_us=loads_us,
    )


def report(r: CoreResult) -> str:
    """The BENCHMARKS.md section."""
    return "\n".join(
        [
            f"Book: {r.loans:,} loans, {r.schedules:,} schedules and {r.repayments:,} repayments over 90 days;",
            f"{r.ticks:,} ticks (00:01:01 and 09:01:01 daily) emitted {r.transitions:,} events in all.",
            "",
            "| operation | rate |",
            "|---|---|",
            f"| apply schedule (new loan) | {r.schedule_rate:,.0f} records/s |",
            f"| apply repayment | {r.repayment_rate:,.0f} records/s |",
            f"| tick, loans due (transitions emitted) | {r.transition_rate:,.0f} transitions/s |",
            f"| tick with nothing due (index head check) | {r.empty_tick_us:.2f} µs |",
            f"| loan state size / dumps / loads | {r.state_bytes:,.0f} B / {r.dumps_us:.1f} µs / {r.loads_us:.1f} µs |",
        ]
    )
