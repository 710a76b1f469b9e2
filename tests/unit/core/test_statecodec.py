"""The loan state survives the table: what goes into RocksDB comes back equal and keeps working."""

from __future__ import annotations

from streams.core import statecodec
from tests.support.builders import at, payment, schedule
from tests.support.story import Stream


def test_round_trip_mid_episode_with_retractions() -> None:
    stream = Stream().run(
        [
            schedule(
                dues=[("2026-03-15", 100_000, 500, 100), ("2026-04-15", 100_000)],
                penalty_rate_bps=3650,
                late_fee=300,
                partners=["P1"],
            ),
            at("2026-03-20"),
            payment("p1", 100_600, "2026-03-15T18:00"),  # late: retracts the OPENED
            payment("r1", 100_600, "2026-03-19T18:00", kind="REVERSAL", reverses="p1"),
            at("2026-04-30"),
        ]
    )
    state = stream.state
    assert state.retracted and state.carry.open
    data = statecodec.dumps(state)
    assert statecodec.loads(data) == state
    assert len(data) < 2000


def test_a_restored_state_continues_exactly_like_the_original() -> None:
    a = Stream().run([schedule(dues=[("2026-03-15", 1000), ("2026-04-15", 1000)]), at("2026-03-20")])
    b = Stream()
    b.state = statecodec.loads(statecodec.dumps(a.state))
    b.now = a.now
    before = len(a.events)
    for stream in (a, b):
        stream.feed(payment("p1", 1000, "2026-03-25"))
        stream.tick(at("2026-06-01"))
    assert a.events[before:] == b.events and len(b.events) >= 4


def test_the_summary_header_is_read_without_the_state_and_matches_a_full_decode() -> None:
    """A restart indexes loans from the header; it must say what decoding the state would."""
    from datetime import timedelta

    from streams.core.config import EngineConfig
    from streams.core.loan import wake_at
    from streams.worker.tables import contribution, indexed, stored

    stream = Stream().run(
        [schedule(dues=[("2026-03-15", 100_000), ("2026-04-15", 100_000)]), at("2026-03-20")]
    )
    state, cfg = stream.state, EngineConfig()
    assert state.carry.open
    data = stored(state, wake_at(state, cfg), cfg)
    assert statecodec.loads(data) == state  # a header does not change the state
    summary = statecodec.peek(data)
    assert (
        summary is not None
        and summary.wake_at == wake_at(state, cfg)
        and summary.bucket == state.carry.bucket
    )
    assert indexed(data, cfg) == (wake_at(state, cfg), contribution(state))
    # Another settle delay: the stored wake-up is stale, so the state is decoded instead.
    other = EngineConfig(settle=timedelta(seconds=5))
    assert indexed(data, other) == (wake_at(state, other), contribution(state)) != indexed(data, cfg)
    # A state written before headers existed still reads.
    bare = statecodec.dumps(state)
    assert statecodec.peek(bare) is None and indexed(bare, cfg) == indexed(data, cfg)


def test_encoded_parts_kept_between_writes_give_the_bytes_of_a_fresh_encoding() -> None:
    """Schedules, repayments and the carry keep their stored form once encoded (a state is
    written after every record); at every step the bytes must be those of the same state built
    from new objects, and the memo must not make equal states unequal."""
    from dataclasses import replace

    from streams.core.loan import LoanState

    stream = Stream()
    items = [
        schedule(
            dues=[("2026-03-15", 100_000, 500, 100), ("2026-04-15", 100_000)],
            penalty_rate_bps=3650,
            late_fee=300,
        ),
        at("2026-03-20"),
        payment("p1", 100_600, "2026-03-15T18:00"),  # late: a recomputation with a new carry
        schedule(
            revision=2, dues=[("2026-03-15", 100_600), ("2026-05-15", 100_000)], effective_at="2026-03-21"
        ),
        at("2026-04-30"),
        payment("r1", 100_600, "2026-04-30T18:00", kind="REVERSAL", reverses="p1"),
        at("2026-05-20"),
    ]
    written = 0
    for item in items:
        stream.run([item])
        state = stream.state
        fresh = LoanState(
            state.loan_id,
            tuple(replace(s) for s in state.schedules),
            tuple(replace(r) for r in state.repayments),
            replace(state.carry),
            state.retracted,
        )
        assert fresh.schedules[0].stored_form is None and fresh == state
        assert statecodec.dumps(state) == statecodec.dumps(fresh)
        assert statecodec.dumps(state) == statecodec.dumps(fresh)  # the kept forms, on both
        written += 1
    assert written == len(items) and len(stream.state.schedules) == 2 and stream.state.carry.open


def test_kept_encoded_forms_hold_their_size_not_the_encoder_buffer() -> None:
    """orjson writes into a ~4 KB block and hands it back shrunk in place: kept for the life of a
    cached state, every repayment's form held ~4 KB (a 50,000-loan worker: 0.4 -> 1.4 GB).
    Measured in a fresh interpreter, by its resident memory around 20,000 kept forms."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        from datetime import UTC, datetime
        from streams.core import statecodec
        from streams.core.records import Repayment

        def resident() -> int:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096

        paid = datetime(2026, 3, 1, tzinfo=UTC)
        rs = [Repayment(f"P{i:07d}", "L1", 1000 + i, "CNY", paid, "app", "PAYMENT") for i in range(20_000)]
        before = resident()
        for r in rs:
            statecodec._stored(r, statecodec._repayment)
        print((resident() - before) // len(rs))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert int(out.stdout) < 1024, f"{out.stdout.strip()} bytes per kept repayment form"
