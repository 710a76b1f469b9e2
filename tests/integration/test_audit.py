"""Audit and compliance on real workers (SPEC §7.1, §7.2): the bureau records' hash chains through
a SIGKILL and late data, `duewatch verify` on a topic with breaks appended, bureau.records kept
forever, and GET /loans/{id}/standing answered by any worker as `duewatch standing` answers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import rfc8785
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams import kafkaio
from streams.audit import standing_from_records
from streams.contracts import codec
from streams.contracts import topics as names
from streams.core import chain
from streams.core.dates import parse_instant
from tests.integration.harness import (
    SETTLE,
    DuewatchCluster,
    book_lines,
    replayed,
    run_until_equal,
    ticks_between,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
INSTANTS = ("as_of", "released_at")  # BureauRecord's timestamp-micros fields


def recomputed(value: dict[str, Any]) -> str:
    """SPEC §7.1 done here, from the JSON form a consumer reads: hashlib and rfc8785 only."""
    fields = {k: v for k, v in value.items() if k != "hash"}
    for name in INSTANTS:
        fields[name] = (parse_instant(fields[name]) - EPOCH) // timedelta(microseconds=1)
    return hashlib.sha256(fields["prev_hash"].encode("utf-8") + rfc8785.dumps(fields)).hexdigest()


def chains_of(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each loan's chain from what the topic holds, asserting what SPEC §7.1 promises: every hash
    recomputes, chain_seq runs 1, 2, 3, … without a gap, each prev_hash is the hash before, and
    a chain_seq read twice is the same record (a re-send), never a fork."""
    by_seq: dict[tuple[str, int], dict[str, Any]] = {}
    for r in records:
        value = r["value"]
        assert recomputed(value) == value["hash"], value["record_id"]
        key = (value["loan_id"], value["chain_seq"])
        assert by_seq.setdefault(key, value) == value, f"fork at {key}"
    chains: dict[str, list[dict[str, Any]]] = {}
    for (loan_id, _), value in sorted(by_seq.items()):
        chains.setdefault(loan_id, []).append(value)
    for links in chains.values():
        assert [v["chain_seq"] for v in links] == list(range(1, len(links) + 1))
        assert [v["prev_hash"] for v in links] == ["0" * 64] + [v["hash"] for v in links[:-1]]
    return chains


def heads(chains: dict[str, list[dict[str, Any]]]) -> str:
    lines = sorted(f"{loan_id}:{links[-1]['hash']}\n" for loan_id, links in chains.items())
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def verify(c: DuewatchCluster, *args: str):
    return c.cli("verify", "bureau.records", *args, timeout=120)


async def test_chains_survive_a_sigkill_and_late_data_and_verify_finds_every_break(cluster) -> None:
    lines, start, until = book_lines(80, 50, seed=41)
    schedules = [x for x in lines if x["topic"] == "loan.schedules"]
    c = await cluster()
    worker = c.start_worker("a")
    # Schedules first, the clock runs ahead: loans go overdue that have in fact paid, and their
    # negative records are released after the notice's lead time.
    await c.produce(schedules)
    await worker.ready()
    c.reader()  # overdue.events, for run_until_equal
    bureau = c.reader(names.BUREAU)
    ticks = ticks_between(start, until, timedelta(days=2))
    for t in ticks[: len(ticks) // 2]:
        await c.tick(t)
    await bureau.until(lambda rs: len(rs) >= 10, timeout=120)
    worker.kill(signal.SIGKILL)  # mid-stream: ticks are still queued behind it
    for t in ticks[len(ticks) // 2 :]:
        await c.tick(t)
    await c.tick(until + SETTLE)
    again = c.start_worker("a")  # same state dir, same group: recovers and resumes
    await again.ready()
    # The restarted worker redoes what the killed one had sent but not committed, from the same
    # inputs, so it re-sends the same records. (New input arriving while it catches up would be
    # read before the held ticks, and it could then decide differently from what it had sent:
    # verify reports that as a fork, rightly: docs/decisions.md, "a crash, then new input".)
    got, want = await run_until_equal(c, replayed(schedules, until), until)
    assert got == want
    await bureau.settle(quiet=3.0)
    # Late data: the repayments, all behind the clock, retract what was reported.
    await c.produce([x for x in lines if x["topic"] == "loan.repayments"])
    records = await bureau.until(lambda rs: any(r["value"]["corrects"] for r in rs), timeout=180)
    records = await bureau.settle(quiet=5.0)

    chains = chains_of(records)
    corrected = [loan for loan, links in chains.items() if any(v["corrects"] for v in links)]
    assert corrected, "late repayments must have made corrections"
    assert any(links[-1]["corrects"] is None for links in chains.values())

    run = verify(c, "--from-beginning")
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout.splitlines()
    assert (
        out[-1] == f"verified {len(records)} records of {len(chains)} loans, 0 breaks, heads {heads(chains)}"
    )
    assert all(line.endswith("holds") for line in out[:-1])

    # Now break it, as a tamperer or a bug would: append to the topic itself.
    loans = sorted(chains, key=lambda loan: (-len(chains[loan]), loan))[:4]
    gap_loan, altered_loan, fork_loan, prev_loan = loans

    def native(value: dict[str, Any]) -> dict[str, Any]:
        return codec.from_json("BureauRecord", value)

    def nxt(loan: str, seq_step: int = 1) -> dict[str, Any]:
        last = native(chains[loan][-1])
        base = dict(last, record_id=f"tamper-{loan}", dpd=last["dpd"] + 1)
        return chain.link(base, last["chain_seq"] + seq_step, last["hash"])

    gap = nxt(gap_loan, seq_step=2)  # a record removed before it
    hashed = nxt(altered_loan)
    altered = dict(hashed, overdue_amount=hashed["overdue_amount"] + 1)  # changed after it was hashed
    forked = native(chains[fork_loan][-1])  # a second, well-linked history from the same point
    fork = chain.link(dict(forked, record_id=f"fork-{fork_loan}"), forked["chain_seq"], forked["prev_hash"])
    wrong_prev = chain.link(nxt(prev_loan), chains[prev_loan][-1]["chain_seq"] + 1, "f" * 64)
    appended = [gap, altered, fork, wrong_prev]
    await c.produce_raw(
        names.BUREAU, [(v["loan_id"].encode(), codec.encode("BureauRecord", v)) for v in appended]
    )

    run = verify(c, "--from-beginning")
    assert run.returncode == 1, run.stdout + run.stderr
    out = run.stdout.splitlines()
    found = {
        (line.split(" at ")[0].strip(), line.split("chain_seq ")[1].split(":")[0])
        for line in out
        if line.startswith("  ")
    }
    assert found == {
        ("GAP", str(gap["chain_seq"] - 1)),
        ("HASH", str(altered["chain_seq"])),
        ("FORK", str(fork["chain_seq"])),
        ("PREV_HASH", str(wrong_prev["chain_seq"])),
    }
    for loan in loans:
        [line] = [x for x in out if x.startswith(f"{loan}: ")]
        assert "1 break" in line
    new_heads = {loan: links[-1]["hash"] for loan, links in chains.items()}
    new_heads.update({gap_loan: gap["hash"], altered_loan: altered["hash"], prev_loan: wrong_prev["hash"]})
    digest = chain.heads_digest(new_heads)
    assert out[-1] == f"verified {len(records) + 4} records of {len(chains)} loans, 4 breaks, heads {digest}"
    # following new records only (as consume does), nothing is read when nothing is appended
    run = verify(c, "--idle-timeout", "1")
    assert run.returncode == 0 and run.stdout.splitlines()[-1] == (
        f"verified 0 records of 0 loans, 0 breaks, heads {hashlib.sha256(b'').hexdigest()}"
    )
    assert verify(c, "--from-beginning").returncode == 1
    wrong = c.cli("verify", "overdue.events")
    assert wrong.returncode == 2 and "bureau.records" in wrong.stderr


async def _retention(cfg, topic: str) -> dict[str, str]:
    async with kafkaio.started(AIOKafkaAdminClient(**cfg.kafka_kwargs())) as admin:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        return {entry[0]: entry[1] for entry in response.resources[0][4]}


async def test_topics_create_keeps_bureau_records_forever(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Also on a topic created before the requirement (an upgrade), keeping its other overrides."""
    c = DuewatchCluster(kafka_bootstrap, tmp_path)
    try:
        physical = c.cfg.topic(names.BUREAU)
        async with kafkaio.started(AIOKafkaAdminClient(**c.cfg.kafka_kwargs())) as admin:
            await admin.create_topics(
                [NewTopic(physical, 3, 1, topic_configs={"max.message.bytes": "2000000"})]
            )
        run = c.cli("topics", "create")
        assert run.returncode == 0, run.stderr
        for _ in range(50):  # the broker applies a config change to its metadata asynchronously
            configs = await _retention(c.cfg, physical)
            if configs["retention.ms"] == "-1":
                break
            await asyncio.sleep(0.2)
        assert configs["retention.ms"] == "-1" and configs["max.message.bytes"] == "2000000"
        assert (await _retention(c.cfg, c.cfg.topic(names.OVERDUE)))["retention.ms"] != "-1"
    finally:
        await c.close()


TOKEN = "audit-token-for-tests"


async def test_any_worker_answers_the_standing_as_duewatch_standing_does(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    lines, start, until = book_lines(40, 40, seed=42)
    expected = replayed(lines, until)
    (tmp_path / "c").mkdir()
    c = DuewatchCluster(kafka_bootstrap, tmp_path / "c", partitions=4, DUEWATCH_API_TOKEN=TOKEN,
                        DUEWATCH_WEB_HOST="127.0.0.1", DUEWATCH_WEB_BIND="127.0.0.1")  # fmt: skip
    try:
        await c.create_topics()
        a, b = c.start_worker("a"), c.start_worker("b")
        await c.produce(lines)
        await a.ready()
        await b.ready()
        for t in ticks_between(start, until, timedelta(days=2)):
            await c.tick(t)
        clock = until + SETTLE
        await c.tick(clock)
        got, want = await run_until_equal(c, expected, until)
        assert got == want
        book = tmp_path / "book.jsonl"
        book.write_text("".join(json.dumps(x) + "\n" for x in lines))
        events = [e for e in expected if e["type"] != "DUE_SOON"]
        asked = [(e["loan_id"], parse_instant(e["as_of"])) for e in events[:: max(1, len(events) // 12)]]
        asked += [(e["loan_id"], parse_instant(e["as_of"]) + timedelta(days=3, hours=5)) for e in events[:6]]
        asked += [(lines[0]["key"], clock)]
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as session:

            async def get(worker, loan_id: str, as_of: str, auth: bool = True) -> tuple[int, Any]:
                url = f"{worker.web}/loans/{loan_id}/standing"
                async with session.get(url, params={"as_of": as_of}, headers=headers if auth else {}) as r:
                    return r.status, await r.json()

            for n, (loan_id, at) in enumerate(asked):
                if at > clock:
                    continue
                want_json = standing_from_records(lines, loan_id, at).to_json()
                for worker in (a, b):  # one of them owns the loan, the other forwards
                    status, body = await get(worker, loan_id, at.isoformat())
                    assert (status, body) == (200, want_json), (loan_id, at)
                if n < 3:  # the command line itself, on the same records
                    run = c.cli(
                        "standing", "--input", str(book), "--loan", loan_id, "--as-of", at.isoformat()
                    )
                    assert run.returncode == 0, run.stderr
                    assert json.loads(run.stdout) == want_json
            loan_id = lines[0]["key"]
            status, body = await get(a, loan_id, (clock + timedelta(seconds=1)).isoformat())
            assert status == 422 and "tick clock" in body["error"]
            first = min(parse_instant(x["value"]["effective_at"]) for x in lines
                        if x["key"] == loan_id and x["topic"] == "loan.schedules")  # fmt: skip
            assert (await get(b, loan_id, (first - timedelta(seconds=1)).isoformat()))[0] == 404
            assert (await get(b, "NO-SUCH-LOAN", clock.isoformat()))[0] == 404
            assert (await get(a, loan_id, clock.isoformat(), auth=False))[0] == 401
            assert (await get(b, loan_id, "yesterday"))[0] == 400
    finally:
        await c.close()
