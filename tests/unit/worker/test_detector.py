"""The detector's shell without Faust: DLQ routing, crash re-sends, catch-up gating."""

from __future__ import annotations

from datetime import UTC, datetime

from faust.types import TP

from streams.contracts import codec
from streams.contracts.partitioning import partition_of
from streams.core import statecodec
from streams.core.config import EngineConfig
from streams.worker.detector import Detector
from streams.worker.effects import Effects, Source
from streams.worker.gate import Gate
from streams.worker.tables import LOANS
from tests.support.builders import at, payment_dict, schedule_dict

NOW = datetime(2026, 11, 29, tzinfo=UTC)


class Table(dict):
    """A stand-in for the Faust table: what `perform` would have written."""

    def write(self, effects) -> None:
        for (table, loan_id), (state, _) in effects.writes.items():
            assert table == LOANS
            self[loan_id] = statecodec.dumps(state)

    def load(self, partition: int, loan_id: str) -> bytes | None:
        return self.get(loan_id)


def shell() -> tuple[Detector, Table]:
    table = Table()
    return Detector(EngineConfig(), table.load), table


def sched_bytes(**kw) -> bytes:
    return codec.encode("LoanSchedule", codec.from_json("LoanSchedule", schedule_dict(**kw)))


def pay_bytes(*args, **kw) -> bytes:
    return codec.encode("Repayment", codec.from_json("Repayment", payment_dict(*args, **kw)))


def tick_bytes(when: datetime) -> bytes:
    return codec.encode("Tick", {"as_of": when})


def handle(detector: Detector, topic: str, partition: int, offset: int, key: bytes | None, value: bytes,
           now: datetime) -> Effects:  # fmt: skip
    """One input record through the shell, as the agent hands it over."""
    return detector.handle(Source(topic, partition, offset, key, value), now)


def tick(detector: Detector, partition: int, as_of: datetime, now: datetime) -> Effects:
    """One tick of ``partition`` through the shell."""
    return detector.on_tick(Source("clock.ticks", partition, 0, None, tick_bytes(as_of)), as_of, now)


def headers(send) -> dict[str, str]:
    return {k: v.decode() for k, v in send.headers}


def test_undecodable_and_invalid_records_become_dlq_sends_with_their_source() -> None:
    detector, _ = shell()
    effects = handle(detector, "loan.repayments", 2, 41, b"L1", b"\x00garbage", NOW)
    [send] = effects.sends
    assert send.topic == "duewatch.dlq" and send.key == b"L1" and send.value == b"\x00garbage"
    assert headers(send) | {"detail": ""} == {
        "reason": "UNDECODABLE",
        "detail": "",
        "source_topic": "loan.repayments",
        "source_partition": "2",
        "source_offset": "41",
    }
    effects = handle(
        detector, "loan.repayments", 0, 1, b"L1", pay_bytes("p", 5, "2026-03-01", currency="XYZ"), NOW
    )
    assert headers(effects.sends[0])["reason"] == "UNKNOWN_CURRENCY" and not effects.writes
    effects = handle(detector, "loan.schedules", 0, 2, b"OTHER", sched_bytes(), NOW)
    assert headers(effects.sends[0])["reason"] == "KEY_MISMATCH"


def test_a_record_processed_again_after_a_crash_resends_what_it_caused() -> None:
    detector, table = shell()
    table.write(handle(detector, "loan.schedules", 0, 0, b"L1", sched_bytes(), NOW))
    table.write(tick(detector, 0, at("2026-03-19"), NOW))
    record = pay_bytes("p1", 100_000, "2026-03-18T10:00")
    first = handle(detector, "loan.repayments", 0, 7, b"L1", record, NOW)
    assert [e.type for e in first.events] == ["OVERDUE_CURED"]
    # Crash after the send, before the state write: the restarted worker finds the old state.
    restarted = Detector(EngineConfig(), table.load)
    restarted.clocks[0] = at("2026-03-19")
    again = handle(restarted, "loan.repayments", 0, 7, b"L1", record, NOW)
    assert [s.value for s in again.sends] != [] and [e.event_id for e in again.events] == [
        e.event_id for e in first.events
    ]
    # Crash after the state write: the repeat is recognised and causes nothing new.
    table.write(first)
    restarted = Detector(EngineConfig(), table.load)
    restarted.clocks[0] = at("2026-03-19")
    repeat = handle(restarted, "loan.repayments", 0, 7, b"L1", record, NOW)
    assert repeat.duplicate and not repeat.events and not repeat.writes


def test_tick_touches_only_due_loans_and_index_rebuilds_from_the_table() -> None:
    detector, table = shell()
    for n in range(50):
        loan = f"L{n}"
        table.write(handle(detector, "loan.schedules", 0, n, loan.encode(), sched_bytes(loan_id=loan), NOW))
    table.write(tick(detector, 0, at("2026-03-01"), NOW))
    assert tick(detector, 0, at("2026-03-02"), NOW).writes == {}  # nothing due: nothing touched
    fresh = Detector(EngineConfig(), table.load)
    assert fresh.rebuild((0, k.encode(), v) for k, v in table.items()) == 50
    effects = tick(fresh, 0, at("2026-03-12T09:01:01"), NOW)
    assert len(effects.writes) == 50 and {e.type for e in effects.events} == {"DUE_SOON"}


def test_gate_holds_a_tick_until_the_inputs_present_at_its_arrival_are_processed() -> None:
    gate = Gate()
    reps = TP("loan.repayments", 3)
    t1, t2 = at("2026-03-16"), at("2026-03-17")
    assert gate.hold(3, t1, {reps: 9})
    assert gate.note(reps, 5) is None
    assert gate.hold(3, t2, {reps: 20})  # newer tick, older targets kept
    assert gate.note(TP("loan.repayments", 4), 99) is None  # another partition
    assert gate.note(reps, 9) == t2
    assert not gate.hold(3, t2, {reps: 9})  # already processed that far


def test_gate_never_stops_the_clock() -> None:
    """A held tick whose inputs stop making progress (an unreachable target) is let through."""
    now = [0.0]
    gate = Gate(clock=lambda: now[0])
    reps = TP("loan.repayments", 0)
    assert gate.hold(0, at("2026-03-16"), {reps: 100})
    now[0] = Gate.STALL + 1
    assert not gate.hold(0, at("2026-03-17"), {reps: 100})


def test_gate_holds_any_number_of_ticks_while_the_backlog_moves() -> None:
    """After downtime a backlog of ticks can arrive before the inputs: count is not progress."""
    now = [0.0]
    gate = Gate(clock=lambda: now[0])
    reps = TP("loan.repayments", 0)
    for day in range(1, 29):
        assert gate.hold(0, at(f"2026-03-{day:02d}"), {reps: 100})
    for offset in range(0, 100, 10):
        now[0] += Gate.STALL - 1  # slow, but moving
        assert gate.note(reps, offset) is None
        assert gate.hold(0, at("2026-03-28"), {reps: 100})
    assert gate.note(reps, 100) == at("2026-03-28")


def test_partition_of_matches_kafkas_default_partitioner() -> None:
    # Values from Kafka's own murmur2 (org.apache.kafka.common.utils.Utils.murmur2) for these keys.
    from aiokafka.partitioner import DefaultPartitioner

    for key in (b"L1", b"L0000153", b"kiva-84"):
        assert partition_of(key, 12) == DefaultPartitioner()(key, list(range(12)), list(range(12)))


async def test_quiet_waits_for_the_batch_in_flight() -> None:
    """An index rebuilt while a batch awaits its acks would miss the batch's loans."""
    import asyncio

    from streams.worker.agents import Quiet

    quiet = Quiet()
    assert await quiet.wait(0.01)
    release = asyncio.Event()

    async def batch() -> None:
        async with quiet.busy():
            await release.wait()

    task = asyncio.create_task(batch())
    await asyncio.sleep(0)
    assert not await quiet.wait(0.01)
    release.set()
    assert await quiet.wait(1.0)
    await task


def test_a_tick_in_parts_emits_what_the_whole_tick_emits() -> None:
    """The agent ticks a catch-up's due loans a part at a time (bounded memory); same events."""
    whole, table_a = shell()
    parts, table_b = shell()
    for n in range(30):
        loan = f"L{n}"
        for detector, table in ((whole, table_a), (parts, table_b)):
            table.write(
                handle(detector, "loan.schedules", 0, n, loan.encode(), sched_bytes(loan_id=loan), NOW)
            )
    late = at("2026-06-01")
    expected = tick(whole, 0, late, NOW)
    parts.advance(0, late)
    source = Source("clock.ticks", 0, 0, None, tick_bytes(late))
    got, taken = [], 0
    while due := parts.due(0, 7):
        taken += len(due)
        got += parts.tick_loans(source, due, NOW).events
    assert taken == 30 and len(expected.events) > 60
    assert sorted(e.event_id for e in got) == sorted(e.event_id for e in expected.events)
