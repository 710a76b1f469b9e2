"""The end-to-end benchmark's arithmetic and report, without a broker (the run itself is `make bench`)."""

from __future__ import annotations

import math
from pathlib import Path

from streams.dev.bench import e2e


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert e2e.percentile(values, 0.5) == 50
    assert e2e.percentile(values, 0.99) == 99
    assert e2e.percentile(values, 1.0) == 100
    assert e2e.percentile([7.0], 0.99) == 7
    assert math.isnan(e2e.percentile([], 0.5))


def test_intake_rate_runs_between_commit_instants() -> None:
    # nothing for 2 s, first commit of 1,000 at t=3, all 10,000 at t=12
    samples = [(0.0, 0), (2.0, 0), (3.0, 1_000), (6.0, 4_000), (12.0, 10_000), (12.2, 10_000)]
    rate, seconds, records, complete = e2e.intake_rate(samples, 10_000)
    assert (seconds, records, complete) == (9.0, 9_000, True)
    assert rate == 1_000


def test_intake_rate_of_an_unfinished_intake_uses_the_last_sample() -> None:
    rate, seconds, records, complete = e2e.intake_rate([(1.0, 100), (5.0, 500)], 10_000)
    assert (rate, seconds, records, complete) == (100, 4.0, 400, False)
    assert e2e.intake_rate([(0.0, 0), (1.0, 0)], 10)[0] == 0


def test_report_says_pass_and_miss_with_the_numbers() -> None:
    r = e2e.Result(loans=100_000, partitions=12, schedules=100_000, repayments=400_000)
    r.baseline = {"rate": 100_000.0, "seconds": 5.0, "consume_seconds": 3.0, "cpu_seconds": 4.0}
    r.worker_rate, r.worker_seconds, r.worker_records, r.worker_complete = 70_000.0, 17.0, 490_000, True
    r.cpu = {"worker": 1.0, "broker": 0.5, "bench": 0.1, "others": 0.0}
    r.worker_ready_s = 3.0
    r.catch_up = {"at": "2026-03-24T23:59:00+08:00", "transitions": 500_000, "seconds": 50.0, "rate": 10_000.0,
                 "idle_s": 60.0}  # fmt: skip
    r.midnight = {
        "at": "2026-03-25T00:01:01+08:00", "transitions": 1_000, "seconds": 0.05, "rate": 20_000.0,
        "first_s": 0.01, "p50": 0.02, "p99": 0.2, "max": 0.25, "processing_p99": 0.15, "delivery_p99": 0.05,
        "types": {"OVERDUE_OPENED": 900, "BUCKET_CHANGED": 100}, "outside": 0,
    }  # fmt: skip
    r.restart = {"seconds": 4.0, "stop_seconds": 1.0, "failed": False, "loans": 100_000, "lines": [100_000],
                 "failures": 0, "error": None}  # fmt: skip
    body = e2e.report(r)
    # the wall-clock rate is shown, not judged: the intake is judged per worker CPU second
    assert "| worker intake (`duewatch worker`, 1 process), wall clock | 70,000 records/s |  |  |" in body
    assert "| worker / plain loop, wall clock | 70.0 % |  |  |" in body
    assert "| worker intake per worker CPU second | 70,000 records | ≥ 40,000 records | PASS |" in body
    assert "20,000 transitions/s (→ 0.50 s)" in body
    assert "p99 < 100 ms | **MISS** |" in body  # 200 ms
    assert "1.00 % of the book" in body
    assert "| 4.0 s (→ ~13 s at 1,000,000) | < 30 s at 1,000,000 loans | PASS |" in body
    assert "two workers" not in body  # not measured: no row
    r.worker_seconds = 3.0  # known to ±2.8 s: a rate, no verdict
    body = e2e.report(r)
    assert "| 70,000 records/s (a 3.0 s window: too short to judge) |  |  |" in body
    assert "| 70,000 records (window too short to judge) | ≥ 40,000 records | n/a |" in body


def test_report_compares_two_workers_with_one() -> None:
    r = e2e.Result(loans=10_000, partitions=12, schedules=10_000, repayments=40_000)
    r.baseline = {"rate": 100_000.0, "seconds": 0.5, "consume_seconds": 0.3, "cpu_seconds": 0.4}
    r.worker_rate, r.worker_seconds, r.worker_records, r.worker_complete = 5_000.0, 30.0, 150_000, True
    r.pair = {"rate": 9_500.0, "seconds": 15.8, "records": 149_000, "complete": True, "settled": 12.0}
    body = e2e.report(r)
    assert "| 9,500 records/s = 1.90× | ≥ 1.8× | PASS |" in body
    assert "12.0 s after they started" in body
    r.pair = {**r.pair, "rate": 6_000.0, "complete": False}
    assert "| 6,000 records/s = 1.20× (not finished) | ≥ 1.8× | **MISS** |" in e2e.report(r)
    r.worker_seconds = 3.0  # known to ±2.8 s: no verdict
    assert "= 1.20× (not finished) (a 3.0 s window: too short to compare) | ≥ 1.8× | n/a |" in e2e.report(r)


def test_report_of_a_failed_rebuild_and_a_capped_intake() -> None:
    r = e2e.Result(loans=10, partitions=3, schedules=10, repayments=30)
    r.baseline = {"rate": 1_000.0}
    r.worker_rate, r.worker_seconds = 10.0, 150.0
    r.restart = {"seconds": 2.0, "stop_seconds": 1.0, "failed": True, "loans": 0, "lines": [], "failures": 1,
                 "error": "faust.exceptions.KeyDecodeError: bad key"}  # fmt: skip
    r.notes.append("intake capped")
    body = e2e.report(r)
    assert "rebuild **failed** after 2.0 s: `faust.exceptions.KeyDecodeError: bad key`" in body
    assert "| 1.0 % |  |  |" in body  # the wall-clock ratio: shown, never judged
    assert "**Note**: intake capped" in body
    assert "midnight tick" not in body


def test_profile_summary(tmp_path: Path) -> None:
    raw = tmp_path / "p.raw"
    raw.write_text("main (a.py:1);f (b.py:2) 3\nmain (a.py:1);g (c.py:3) 1\n")
    summary = e2e.summarize_profile(raw)
    assert "4 samples" in summary
    assert " 75.0%  f (b.py:2)" in summary
    assert "100.0%  main (a.py:1)" in summary


def test_profiles_go_into_the_report_in_a_block_each() -> None:
    text = e2e.profiles({"intake": "4 samples", "midnight tick": "2 samples"}, 20.0)
    assert (
        "during the intake (py-spy at 200 Hz, non-blocking, at most 20 s from the worker being ready)" in text
    )
    assert "during the midnight tick (py-spy at 200 Hz, non-blocking, at most 20 s from the tick)" in text
    assert text.count("```") == 4
    assert e2e.profiles({}, 20.0) == ""


def test_arguments() -> None:
    args = e2e.parse_args(["--loans", "2000", "--full"])
    assert (args.loans, args.full, args.budget) == (2000, True, 600.0)
    assert e2e.parse_args([]).loans == 100_000


def test_section_names() -> None:
    assert e2e.section_name(e2e.parse_args([])) == e2e.SECTION
    assert (
        e2e.section_name(e2e.parse_args(["--loans", "10000", "--full"]))
        == f"{e2e.SECTION} --loans 10000 --full"
    )


def test_a_small_midnight_is_scaled_up_to_one_percent_of_the_book() -> None:
    r = e2e.Result(loans=10_000, partitions=12, schedules=10_000, repayments=40_000)
    r.baseline = {"rate": 100_000.0}
    r.midnight = {"at": "x", "transitions": 50, "seconds": 0.6, "rate": 50 / 0.6, "first_s": 0.1, "p50": 0.3,
                  "p99": 0.6, "max": 0.6, "processing_p99": 0.5, "delivery_p99": 0.1}  # fmt: skip
    body = e2e.report(r)
    assert "| 600 ms (→ 1,200 ms for 100) | < 1 s for 100 (1 % of 10,000) | **MISS** |" in body


def test_the_pair_settles_on_the_lines_a_worker_logs_today() -> None:
    """The two-worker phase waits for each worker's assignment and index rebuild in its log; the
    worker no longer logs aiokafka's assignment line (make bench hung 600 s on it)."""
    log = (
        "[2026-12-07 08:08:12,276] [14828] [INFO] Executing _on_partitions_assigned \n"
        "[2026-12-07 08:08:15,863] [14828] [INFO] wake-up index rebuilt: 0 loans in 0 partitions \n"
    )
    assert e2e.ASSIGNED.search(log) and e2e.REBUILT.search(log)
