"""``streams.worker.faust_internals.acknowledge`` against Faust's own commit bookkeeping (no broker needed: the
consumer object is created but never started)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import faust
import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from streams.worker import faust_internals as intake


def record(topic: str, partition: int, offset: int) -> ConsumerRecord:
    return ConsumerRecord(topic, partition, offset, 0, 0, b"k", b"v", None, 1, 1, ())


@pytest.fixture
def app() -> faust.App:
    return faust.App("intake-test", broker="kafka://127.0.0.1:1", store="memory://")


def test_acknowledged_offsets_are_what_faust_commits(app: faust.App) -> None:
    consumer = app.consumer
    a, b = TP("loan.repayments", 0), TP("loan.repayments", 1)
    consumer._committed_offset[a] = 10
    records = [record(a.topic, 0, o) for o in (9, 10, 11, 12)] + [record(b.topic, 1, o) for o in (0, 1)]
    intake.acknowledge(app, records)
    assert consumer._n_acked == 5  # offset 9 is below the committed offset: already done
    assert consumer._new_offset(a) == 13
    assert consumer._new_offset(b) == 2


def test_a_record_acknowledged_twice_counts_once(app: faust.App) -> None:
    consumer = app.consumer
    tp = TP("loan.schedules", 3)
    intake.acknowledge(app, [record(tp.topic, 3, 0), record(tp.topic, 3, 1)])
    intake.acknowledge(app, [record(tp.topic, 3, 1), record(tp.topic, 3, 2)])
    assert consumer._n_acked == 3
    assert consumer._new_offset(tp) == 3


def test_a_hole_holds_the_commit_back(app: faust.App) -> None:
    consumer = app.consumer
    tp = TP("clock.ticks", 0)
    consumer._committed_offset[tp] = 0
    intake.acknowledge(app, [record(tp.topic, 0, 0), record(tp.topic, 0, 2)])
    assert consumer._new_offset(tp) == 1  # offset 1 is not done: nothing past it is committed


def test_a_batch_of_an_older_generation_is_not_current(app: faust.App) -> None:
    app.flow_control.resume()
    assert intake.current(app, intake.Batch(app.consumer_generation_id, []))
    assert not intake.current(app, intake.Batch(app.consumer_generation_id + 1, []))
    app.flow_control.suspend()  # a rebalance began: nothing fetched before it is handled
    assert not intake.current(app, intake.Batch(app.consumer_generation_id, []))


def test_the_worker_collects_garbage_less_often() -> None:
    # In a process of its own: the tuning is for a worker's whole life, not pytest's.
    probe = (
        "import gc; from streams.cli import collect_garbage_less_often as tune; "
        "before = gc.get_threshold()[0]; tune(); print(before, gc.get_threshold()[0], gc.get_freeze_count())"
    )
    before, after, frozen = map(
        int, subprocess.check_output([sys.executable, "-c", probe], text=True).split()
    )
    assert after > before
    assert frozen > 0


async def _blocked_hand_over(app: faust.App) -> tuple[faust.ChannelT, asyncio.Task[bool]]:
    """A channel whose agent's queue is full and a ``hand_over`` waiting to put one more."""
    app.flow_control.resume()
    channel = app.channel(maxsize=1)
    subscriber = channel.clone(is_iterator=True)  # what an agent iterating the channel holds
    await channel.put(intake.Batch(0, []))  # type: ignore[arg-type]
    assert subscriber.queue.full()
    task = asyncio.ensure_future(intake.hand_over(channel, intake.Batch(0, [record("t", 0, 1)])))
    await asyncio.sleep(0.01)
    assert not task.done(), "the queue is full: hand_over waits"
    return subscriber, task


async def test_a_queue_cleared_for_a_rebalance_drops_the_waiting_batch(app: faust.App) -> None:
    # Found by the two-worker rebalance test: Faust clears its queues when a rebalance begins,
    # which cancels a waiting put; the fetcher took that for its own cancellation and crashed.
    subscriber, task = await _blocked_hand_over(app)
    app.flow_control.clear()
    assert await task is False
    assert subscriber.queue.empty()


async def test_stopping_the_fetcher_still_cancels_a_waiting_hand_over(app: faust.App) -> None:
    _, task = await _blocked_hand_over(app)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_every_private_member_the_fenced_module_relies_on_is_still_there(tmp_path) -> None:
    """An upgrade of Faust or aiokafka that moves one of these breaks the worker quietly (the
    batched intake, the commit bookkeeping, the direct table access): this says which."""
    import importlib
    from importlib.metadata import version

    import faust

    for package, checked in intake.CHECKED_AGAINST.items():
        assert version(package).startswith(checked + "."), (
            f"{package} {version(package)}: checked against {checked}"
        )
    for owner, member in intake.ASSUMED:
        module, _, name = owner.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        assert hasattr(cls, member), (
            f"{owner}.{member} is gone: streams/worker/faust_internals.py relies on it"
        )
    app = faust.App("assumptions", broker="kafka://127.0.0.1:1", datadir=str(tmp_path))
    for attribute in intake.CONSUMER_ATTRIBUTES:
        assert hasattr(app.consumer, attribute), f"Faust's consumer has no {attribute} any more"
    for attribute in intake.TABLES_ATTRIBUTES:
        assert hasattr(app.tables, attribute), f"Faust's table manager has no {attribute} any more"
    for attribute in intake.RECOVERY_ATTRIBUTES:
        assert hasattr(app.tables.recovery, attribute), f"Faust's recovery has no {attribute} any more"
    assert hasattr(faust.streams, "_current_event"), "faust.streams._current_event is gone"


def test_the_pins_match_what_the_fenced_module_was_checked_against() -> None:
    from tests.support.shared import REPO

    config = (REPO / "pyproject.toml").read_text()
    for package, checked in intake.CHECKED_AGAINST.items():
        major, minor = checked.split(".")
        if package == "mode-streaming":
            continue  # Faust's own dependency, pinned by it
        assert f">={checked}" in config and f"<{major}.{int(minor) + 1}" in config, package


# --- a static member that moved ------------------------------------------------------------------


def _assignment_for(app: faust.App, url: str):
    """What the broker hands back to a static member: the assignment made for ``url``."""
    import zlib

    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
    from faust.assignor.client_assignment import ClientAssignment, ClientMetadata

    client = ClientAssignment(actives={"loan.schedules": [0, 2]}, standbys={})
    metadata = ClientMetadata(
        assignment=client, url=url, changelog_distribution={url: {"t-loans-changelog": [0, 2]},
                                                            "http://other:6066": {"t-loans-changelog": [1]}},
    )  # fmt: skip
    return ConsumerProtocolMemberAssignment(0, [("loan.schedules", [0, 2])], zlib.compress(metadata.dumps()))


def test_a_static_member_back_at_another_url_takes_its_partitions(tmp_path, caplog) -> None:
    app = faust.App("moved", broker="kafka://127.0.0.1:1", datadir=str(tmp_path),
                    canonical_url="http://w1:7001")  # fmt: skip
    stale = _assignment_for(app, "http://w1:6066")
    with pytest.raises(AssertionError):  # Faust alone: aiokafka's coordinator task would die of it
        app.assignor.on_assignment(stale)
    intake.accept_moved_member(app)
    app.assignor.on_assignment(stale)
    assert app.assignor.assigned_actives() == {TP("loan.schedules", 0), TP("loan.schedules", 2)}
    assert set(app.assignor.changelog_distribution) == {"http://w1:7001", "http://other:6066"}
    assert "at another URL" in caplog.text
    app.assignor.on_assignment(_assignment_for(app, "http://w1:7001"))  # the usual case: unchanged
    assert app.assignor.assigned_actives() == {TP("loan.schedules", 0), TP("loan.schedules", 2)}


# --- records read during a rebalance ----------------------------------------------------------------


async def test_a_batch_in_an_agents_channel_survives_faust_resuming_the_flow(app: faust.App) -> None:
    """Faust's recovery resumes the flow after seeking to the committed offsets, and that clears
    the agents' queues: a batch cleared then was never read again (the chaos run lost repayments)."""
    kept, plain = intake.KeptChannel(app, maxsize=4), app.channel(maxsize=4)
    agents = [channel.clone(is_iterator=True) for channel in (kept, plain)]  # what an agent reads
    batch = intake.Batch(app.consumer_generation_id, [record("loan.repayments", 0, 7)])
    app.flow_control.resume()  # a worker's steady state
    for channel in (kept, plain):
        await asyncio.wait_for(channel.put(batch), 5)
    assert [agent.queue.qsize() for agent in agents] == [1, 1]
    app.flow_control.suspend()  # a rebalance, and its recovery resuming the flow
    app.flow_control.resume()
    assert agents[0].queue.qsize() == 1 and await agents[0].queue.get() is batch
    assert agents[1].queue.qsize() == 0  # Faust's own channel: gone


async def test_records_read_before_a_rebalance_is_over_are_read_again(app: faust.App) -> None:
    consumer = app.consumer
    consumer.resume_flow()
    tp, other = TP("loan.repayments", 1), TP("loan.schedules", 1)
    consumer._read_offset[tp] = 158
    routes = {"loan.repayments": app.channel(), "loan.schedules": app.channel()}
    records = {tp: [record(tp.topic, 1, o) for o in range(158, 170)], other: [record(other.topic, 1, 42)]}
    app.rebalancing = True  # its recovery may still have to seek to the committed offsets
    batches, rewind = await intake._sort_fetch(app, records, None, routes, app.consumer_generation_id)
    assert batches == {} and rewind == {tp: 158, other: 42}
    assert consumer._read_offset[tp] == 158, "nothing was read"


# --- committing before a rebalance ----------------------------------------------------------------


async def test_a_rebalance_first_finishes_the_batch_in_flight_and_commits_it(app: faust.App) -> None:
    """Faust forgets the acknowledged offsets of revoked partitions: without this, the next owner
    reprocessed everything since the last periodic commit (and a late record could then come
    before a tick it had followed). The group's side (assignment, the commit request) is stood in
    for: no broker here."""
    from streams.worker.agents import Quiet

    consumer, quiet, tp = app.consumer, Quiet(), TP("loan.repayments", 0)
    consumer._committed_offset[tp] = 100
    intake.acknowledge(app, [record(tp.topic, 0, o) for o in (100, 101)])
    order: list[object] = []

    async def broker_commit(offsets, start_new_transaction=True):  # the request aiokafka would send
        order.append(("commit", dict(offsets)))
        return True

    async def faust_revocation(revoked):
        order.append(("revoked", set(revoked)))

    consumer._commit, consumer.on_partitions_revoked = broker_commit, faust_revocation
    consumer.assignment = lambda: {tp}
    intake.commit_before_revoke(app, quiet.wait, timeout=5.0)
    app.flow_control.resume()

    async def batch_in_flight() -> None:
        async with quiet.busy():
            await asyncio.sleep(0.2)  # its sends are being acknowledged
            intake.acknowledge(app, [record(tp.topic, 0, o) for o in (102, 103)])

    flying = asyncio.create_task(batch_in_flight())
    await asyncio.sleep(0.01)
    await consumer.on_partitions_revoked({tp})
    await flying
    assert order == [("commit", {tp: 104}), ("revoked", {tp})]
    assert not app.flow_control.is_active(), "no further batch is taken meanwhile"


async def test_a_standby_record_waiting_to_be_applied_survives_faust_resuming_the_flow(
    app: faust.App,
) -> None:
    """Faust's recovery resumes the flow once more after it has resumed the standby partitions,
    and that cleared the changelog records fetched and not yet applied: the standby copy lacked
    them for good, and the worker that took the partition over decided on older states (the
    chaos run lost schedules and repayments)."""
    from types import SimpleNamespace

    intake.keep_changelog_queue(app)
    queue = app.tables.changelog_queue
    plain = app.FlowControlQueue(maxsize=8, clear_on_resume=True)  # Faust's own
    standby, revoked = TP("app-loans-changelog", 1), TP("app-loans-changelog", 4)
    app.tables.recovery.standby_tps.add(standby)
    kept_event, gone_event = (
        SimpleNamespace(message=SimpleNamespace(tp=tp, offset=9)) for tp in (standby, revoked)
    )
    app.flow_control.resume()
    for q in (queue, plain):
        await q.put(gone_event)
        await q.put(kept_event)
    app.flow_control.suspend()  # a rebalance, and the recovery resuming the flow
    app.flow_control.resume()
    assert plain.qsize() == 0
    assert queue.qsize() == 2
    # a record of a partition the recovery no longer tracks is dropped, not applied to another table
    assert await asyncio.wait_for(queue.get(), 5) is kept_event
    with pytest.raises(RuntimeError):
        intake.keep_changelog_queue(app)


# --- records fetched and not taken are read again --------------------------------------------------


async def test_records_of_a_partition_paused_while_they_were_fetched_are_read_again(app: faust.App) -> None:
    """Faust pauses the changelogs it has recovered while the standby partitions, sought to their
    beginning, are in the same fetch: the fetch's records of a partition no longer active were
    dropped with the consumer's position past them, and the standby copy lacked a whole catch-up
    (its persisted offset moved on; the worker that later took the partition over decided on
    older states: the chaos run's forked bureau chains and repeated notices)."""
    consumer = app.consumer
    consumer.resume_flow()
    standby, active = TP("app-loans-changelog", 2), TP("app-loans-changelog", 0)
    delivered: list[int] = []

    async def callback(message):  # Faust's conductor, handing the record to the tables' queue
        delivered.append(message.offset)

    consumer.callback, consumer.highwater = callback, lambda tp: 0
    records = {
        standby: [record(standby.topic, 2, o) for o in range(0, 5)],
        active: [record(active.topic, 0, 7)],
    }
    batches, rewind = await intake._sort_fetch(app, records, {active}, {}, app.consumer_generation_id)
    assert batches == {} and rewind == {standby: 0}
    assert delivered == [7] and consumer._read_offset[standby] is None


async def test_the_rest_of_a_fetch_is_read_again_when_the_flow_stops(app: faust.App) -> None:
    consumer = app.consumer
    consumer.resume_flow()
    first, second = TP("app-bureau-changelog", 1), TP("app-bureau-changelog", 4)
    seen: list[tuple[int, int]] = []

    async def callback(message):
        seen.append((message.partition, message.offset))
        consumer.stop_flow()  # a rebalance begins while the first partition's records are handed over

    consumer.callback, consumer.highwater = callback, lambda tp: 0
    records = {
        first: [record(first.topic, 1, 80)],
        second: [record(second.topic, 4, 30), record(second.topic, 4, 31)],
    }
    batches, rewind = await intake._sort_fetch(app, records, None, {}, app.consumer_generation_id)
    assert seen == [(1, 80)] and rewind == {second: 30}


async def test_a_changelog_record_whose_hand_over_the_flow_stopped_is_read_again(app: faust.App) -> None:
    """Faust's conductor waits for the app's flow control before it queues a changelog record;
    a rebalance stopping the flow meanwhile cancelled the hand-over, and the record was skipped."""
    consumer = app.consumer
    consumer.resume_flow()
    tp = TP("app-notifications-changelog", 3)
    started = asyncio.Event()

    async def callback(message):  # waits as the conductor does while the flow is suspended
        if message.offset == 11:
            started.set()
            await asyncio.sleep(30)

    consumer.callback, consumer.highwater = callback, lambda tp: 0

    async def rebalance() -> None:
        await started.wait()
        consumer.stop_flow()

    stopping = asyncio.create_task(rebalance())
    records = {tp: [record(tp.topic, 3, o) for o in (10, 11, 12)]}
    batches, rewind = await asyncio.wait_for(
        intake._sort_fetch(app, records, None, {}, app.consumer_generation_id), 5
    )
    await stopping
    assert rewind == {tp: 11} and consumer._read_offset[tp] == 10


async def test_a_rewind_never_moves_a_partition_past_a_seek_made_since_the_fetch(
    app: faust.App, monkeypatch
) -> None:
    tp = TP("app-loans-changelog", 2)
    sought: list[int] = []

    async def seek(partition, offset):
        sought.append(offset)

    monkeypatch.setattr(app.consumer, "seek", seek)
    for position, expected in ((1302, [0]), (None, [0]), (0, [])):
        sought.clear()
        monkeypatch.setattr(intake, "fetch_position", lambda app, tp, at=position: at)
        await intake.rewind(app, tp, 0)
        assert sought == expected, position
    monkeypatch.setattr(intake, "fetch_position", lambda app, tp: 80)  # the recovery sought back to 80
    sought.clear()
    await intake.rewind(app, tp, 97)
    assert sought == [], "the recovery's seek wins: reading more again is harmless, less is a loss"


async def test_the_fetch_is_given_a_copy_of_the_active_partitions(app: faust.App) -> None:
    """aiokafka reads the partition set when its fetch wakes up and, finding it emptied (Faust
    pauses every partition between the recovery and the standby start), returns the records of
    every partition it has fetched: a snapshot keeps the fetch to what was asked."""
    consumer = app.consumer
    given: list[object] = []

    async def faust_getmany(active_partitions, timeout):
        given.append(active_partitions)
        return {}

    consumer._getmany = faust_getmany
    intake.install(app, {}, batch_max=10)
    live = {TP("app-loans-changelog", 0)}
    await consumer._getmany(active_partitions=live, timeout=0.1)
    assert given == [live] and given[0] is not live


async def test_the_broker_holds_an_empty_fetch_a_tenth_of_a_second(app: faust.App) -> None:
    """Faust makes it 1.5 s, and every offset request of a rebalance's recovery waited behind one
    on the broker's connection: about 6 s of each takeover."""
    intake.install(app, {}, batch_max=10)
    thread = app.consumer._thread
    client = thread._create_worker_consumer(app.transport)
    assert client._fetch_max_wait_ms == intake.FETCH_MAX_WAIT_MS == 100
