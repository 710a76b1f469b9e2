"""The floor loop's workload from a worker's run, its per-batch step and its report lines,
without a broker (the loop against the real broker: tests/integration/test_bench_floor.py)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.stores.rocksdb import RocksDBOptions

from streams.contracts import codec
from streams.contracts import topics as names
from streams.dev.bench import e2e, floor
from streams.dev.book import generate


def observed(outputs: dict[str, int], taken: int, ends: dict[int, int] | None = None) -> floor.Observed:
    return floor.Observed("app-loans-changelog", ends or {0: 3, 1: 1}, outputs, taken)


def test_a_small_changelog_is_read_whole() -> None:
    assert floor.windows({0: 5, 1: 0, 2: 7}, limit=100) == [(0, 0, 5), (2, 0, 7)]


def test_a_large_changelog_is_sampled_in_even_windows_of_every_partition() -> None:
    ranges = floor.windows({0: 10_000, 1: 20_000, 2: 0}, limit=1_000, per_partition=5)
    assert [r for r in ranges if r[0] == 0] == [(0, s, s + 100) for s in (0, 2_000, 4_000, 6_000, 8_000)]
    assert [r[1] for r in ranges if r[0] == 1] == [0, 4_000, 8_000, 12_000, 16_000]
    assert sum(stop - start for _, start, stop in ranges) == 1_000
    # a partition smaller than its share is read whole
    assert floor.windows({0: 50, 1: 100_000}, limit=1_000, per_partition=5)[0] == (0, 0, 50)


def test_the_state_is_a_real_one_at_the_mean_size() -> None:
    values = [b"a" * 100, b"b" * 300, b"c" * 210]  # mean 203.3: the closest is c's
    work = floor.workload(values, observed({names.OVERDUE: 0, names.DLQ: 0}, 10), b"event")
    assert work.state == b"c" * 203
    assert (work.state_bytes, work.sampled, work.changelog_records) == (203, 3, 4)
    assert floor.fit(b"abc", 7) == b"abcabca"
    assert floor.fit(b"abcdef", 2) == b"ab"


def test_the_output_fraction_counts_events_and_dead_letters_over_what_was_committed() -> None:
    work = floor.workload([b"x"], observed({names.OVERDUE: 30, names.DLQ: 10}, 1_000), b"event")
    assert work.output_fraction == 0.04
    assert (work.event, work.event_from_worker) == (b"event", True)
    assert floor.workload([b"x"], observed({names.OVERDUE: 5_000}, 1_000), b"e").output_fraction == 1.0
    assert floor.workload([b"x"], observed({names.OVERDUE: 5}, 0), b"e").output_fraction == 0.0


def test_without_an_event_of_the_worker_the_core_makes_one() -> None:
    work = floor.workload([], observed({}, 10), None)
    assert not work.event_from_worker
    assert work.state == b""
    assert codec.decode("OverdueEvent", work.event)["loan_id"]


def test_outputs_go_to_the_measured_share_of_records_spread_evenly() -> None:
    for fraction, n in ((0.0, 1_000), (0.04, 1_000), (1 / 3, 999), (0.5, 7), (1.0, 50)):
        chosen = [i for i in range(n) if floor.causes_output(i, fraction)]
        assert len(chosen) == int(n * fraction + 1e-9), (fraction, n)
    chosen = [i for i in range(1_000) if floor.causes_output(i, 0.04)]
    assert {b - a for a, b in zip(chosen, chosen[1:], strict=False)} == {25}


def _records(topic: str, partition: int, book: list, kind: str) -> list[ConsumerRecord]:
    out = []
    for offset, r in enumerate(x for x in book if x.topic == kind):
        record_type = codec.TOPIC_RECORD[kind]
        value = codec.encode(record_type, codec.from_json(record_type, r.value))
        out.append(
            ConsumerRecord(topic, partition, offset, 0, 0, r.key.encode(), value, None, 0, len(value), ())
        )
    return out


def test_a_step_decodes_reads_and_says_what_to_send_and_write(tmp_path: Path) -> None:
    book = generate(5, date(2026, 3, 1), 60)
    schedules = _records("in.schedules", 1, book, names.SCHEDULES)
    repayments = _records("in.repayments", 2, book, names.REPAYMENTS)
    options = RocksDBOptions()
    dbs = {p: options.open(tmp_path / f"loans-{p}.db") for p in (1, 2)}
    try:
        step = floor.Loop(
            types={"in.schedules": "LoanSchedule", "in.repayments": "Repayment"}, state=b"s" * 40, fraction=0.5,
            event=codec.decode("OverdueEvent", floor.sample_event()), dbs=dbs,
        )  # fmt: skip
        batch = {TopicPartition("in.schedules", 1): schedules, TopicPartition("in.repayments", 2): repayments}
        outputs, changelog, writes = step.step(batch)
        n = len(schedules) + len(repayments)
        assert step.seen == n and step.outputs == n // 2
        assert sum(len(v) for v in outputs.values()) == n // 2
        assert [k for k, _ in changelog[1]] == [m.key for m in schedules]
        assert {v for records in changelog.values() for _, v in records} == {b"s" * 40}
        key, value = outputs[1][0]
        assert codec.decode("OverdueEvent", value)["loan_id"] == key.decode()
        for partition, batch_ in writes.items():
            dbs[partition].write(batch_)
        assert dbs[1].get(schedules[0].key) == b"s" * 40
    finally:
        for db in dbs.values():
            db.close()


FLOOR = {
    "records": 500_000, "outputs": 20_000, "seconds": 10.0, "rate": 50_000.0, "cpu_seconds": 8.0,
    "per_cpu": 62_500.0, "state_bytes": 560, "databases": 12, "batch_max": 2000, "sampled": 50_000,
    "changelog_records": 230_000, "output_fraction": 0.04, "caused": {names.OVERDUE: 20_000, names.DLQ: 0},
    "taken": 500_000, "event_from_worker": True,
}  # fmt: skip


def test_rows_judge_the_worker_per_cpu_second_and_against_the_floor() -> None:
    rows = floor.rows(45_000.0, True, FLOOR)
    assert rows[0] == ("worker intake per worker CPU second", "45,000 records", "≥ 40,000 records", True)
    assert rows[1][:2] == (floor.NAME, "50,000 records/s; 62,500 records per CPU second")
    assert rows[2] == ("worker / floor loop, per CPU second", "72.0 %", "≥ 50 %", True)
    rows = floor.rows(30_000.0, True, FLOOR)
    assert (rows[0][3], rows[2][1:]) == (False, ("48.0 %", "≥ 50 %", False))
    assert [r[3] for r in floor.rows(30_000.0, False, FLOOR)] == [None, None, None]  # too short a window
    assert floor.rows(None, True, FLOOR)[2][1:] == ("not known", "≥ 50 %", None)
    failed = floor.rows(30_000.0, True, {"error": "TimeoutError: read 3 of 5"})
    assert failed[1] == (floor.NAME, "failed: `TimeoutError: read 3 of 5`", "", None)
    assert len(floor.rows(30_000.0, True, {})) == 1  # no floor run (--no-floor)


def test_the_description_says_where_the_workload_came_from() -> None:
    text = floor.describe(FLOOR, 2.8)
    assert "State size 560 B: the mean size of the worker's loans-changelog values" in text
    assert "50,000 of them, in 10 evenly spaced windows of each partition" in text
    assert "Outputs: 20,000 (4.00 % of the records)" in text
    assert "(overdue.events 20,000, duewatch.dlq 0) ÷ the 500,000 input records" in text
    assert "is one the worker sent" in text
    assert "all 9 of them" in floor.describe({**FLOOR, "sampled": 9, "changelog_records": 9}, 2.8)
    assert floor.describe({}, 2.8) == ""


def test_the_e2e_section_has_the_floor_rows_with_pass_and_miss() -> None:
    r = e2e.Result(loans=100_000, partitions=12, schedules=100_000, repayments=400_000)
    r.baseline = {
        "records": 500_000,
        "rate": 100_000.0,
        "seconds": 5.0,
        "consume_seconds": 3.0,
        "cpu_seconds": 4.0,
    }
    r.worker_rate, r.worker_seconds, r.worker_records, r.worker_complete = 30_000.0, 17.0, 490_000, True
    r.cpu = {"worker": 1.0}
    r.floor = FLOOR
    body = e2e.report(r)
    assert "| 100,000 records/s; 125,000 records per CPU second |  |  |" in body  # the plain loop, beside
    assert "| worker intake per worker CPU second | 30,000 records | ≥ 40,000 records | **MISS** |" in body
    assert f"| {floor.NAME} | 50,000 records/s; 62,500 records per CPU second |  |  |" in body
    assert "| worker / floor loop, per CPU second | 48.0 % | ≥ 50 % | **MISS** |" in body
    assert "- Floor loop: after the worker has stopped" in body
    r.worker_rate = 45_000.0
    body = e2e.report(r)
    assert "| 45,000 records | ≥ 40,000 records | PASS |" in body
    assert "| 72.0 % | ≥ 50 % | PASS |" in body
    r.floor, r.cpu = {}, {}
    assert "floor" not in e2e.report(r).lower()
    assert e2e.parse_args(["--no-floor"]).no_floor
