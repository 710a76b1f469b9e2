"""duewatch on a secured broker (issue 18): mutual TLS and SASL_SSL with SCRAM-SHA-512, for real.

The ``secured_kafka`` broker (tests/conftest.py) has a throwaway CA: its SSL listener requires a
client certificate of that CA, its SASL_SSL listener a SCRAM-SHA-512 user. Every command that
talks to Kafka and a `duewatch worker` run over each; a client certificate of another CA, a CA
that does not trust the broker, and a wrong password fail fast with one line; no secret shows
in any output.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streams.dev.broker import SecuredBroker
from streams.dev.procs import duewatch_command
from tests.integration.harness import (
    SETTLE,
    DuewatchCluster,
    book_lines,
    replayed,
    run_until_equal,
    ticks_between,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODES = ["mtls", "scram"]


def client_env(secured: SecuredBroker, mode: str) -> dict[str, str]:
    return secured.mtls_env() if mode == "mtls" else secured.scram_env()


def secrets_of(secured: SecuredBroker) -> list[str]:
    return [secured.scram_password, secured.tls.client_key_password]


def run_cli(env: Mapping[str, str], *args: str, stdin: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``duewatch <args>`` with ``env`` instead of any Kafka settings of the calling environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DUEWATCH_"))}
    return subprocess.run(duewatch_command(*args), env={**base, **env}, input=stdin, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def assert_no_secret(secured: SecuredBroker, *texts: str) -> None:
    for text in texts:
        for secret in secrets_of(secured):
            assert secret not in text


@pytest.mark.parametrize("mode", MODES)
def test_every_kafka_command_works_over_the_secured_listener(secured_kafka: SecuredBroker, mode: str,
                                                             tmp_path: Path) -> None:  # fmt: skip
    env = {**client_env(secured_kafka, mode), "DUEWATCH_TOPIC_PREFIX": f"sec-{mode}-{time.time_ns()}.",
           "DUEWATCH_PARTITIONS": "2"}  # fmt: skip
    lines, _, _ = book_lines(3, 30, seed=5)
    schedules = [{"key": x["key"], "value": x["value"]} for x in lines if x["topic"] == "loan.schedules"]
    book = tmp_path / "schedules.jsonl"
    book.write_text("".join(json.dumps(x) + "\n" for x in schedules))
    at = datetime(2026, 3, 20, 8, tzinfo=UTC)

    results = [
        created := run_cli(env, "topics", "create"),
        produced := run_cli(env, "produce", "loan.schedules", str(book)),
        ticked := run_cli(env, "tick", "--at", at.isoformat()),
        consumed := run_cli(env, "consume", "loan.schedules", "--from-beginning", "--idle-timeout", "3"),
        ticks := run_cli(env, "consume", "clock.ticks", "--from-beginning", "--idle-timeout", "3"),
    ]
    for result in results:
        assert result.returncode == 0, f"{result.args}: {result.stderr}"
        assert_no_secret(secured_kafka, result.stdout, result.stderr)
    assert f"created {env['DUEWATCH_TOPIC_PREFIX']}overdue.events" in created.stdout
    assert f"sent {len(schedules)} records" in produced.stderr
    assert "sent to 2 partitions" in ticked.stderr
    got = [json.loads(x) for x in consumed.stdout.splitlines()]
    assert sorted(r["key"] for r in got) == sorted(x["key"] for x in schedules)
    assert [datetime.fromisoformat(json.loads(x)["value"]["as_of"]) for x in ticks.stdout.splitlines()] == [
        at,
        at,
    ]


@pytest.mark.parametrize("mode", MODES)
async def test_a_worker_processes_a_book_over_the_secured_listener(secured_kafka: SecuredBroker, mode: str,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    env = client_env(secured_kafka, mode)
    lines, start, until = book_lines(30, 45, seed=21)
    expected = replayed(lines, until)
    assert any(e["type"] == "OVERDUE_OPENED" for e in expected)
    cluster = DuewatchCluster(env.pop("KAFKA_BOOTSTRAP_SERVERS"), tmp_path, partitions=2, **env)
    try:
        await cluster.create_topics()
        worker = cluster.start_worker()
        await cluster.produce(lines)
        await worker.ready(timeout=120)
        for t in ticks_between(start, until, timedelta(days=3)):
            await cluster.tick(t)
        await cluster.tick(until + SETTLE)
        got, want = await run_until_equal(cluster, expected, until, timeout=180)
        assert got == want
        opened = [r for r in cluster.readers[0].records if r["value"]["type"] == "OVERDUE_OPENED"]
        assert opened, "the worker read the book and detected overdue instalments"
        assert worker.running and "Traceback" not in worker.output()
        assert_no_secret(secured_kafka, worker.output())
    finally:
        await cluster.close()


def bad_credentials(secured: SecuredBroker, case: str) -> tuple[dict[str, str], str]:
    """Client settings that must be refused, and the secret-looking value they carry."""
    tls = secured.tls
    wrong = "Wr0ng-Pa55word-Xy7"
    if case == "certificate of another CA":
        return {**secured.mtls_env(), "KAFKA_SSL_CERTFILE": str(tls.rogue_cert),
                "KAFKA_SSL_KEYFILE": str(tls.rogue_key)}, wrong  # fmt: skip
    if case == "CA that does not trust the broker":
        return {**secured.mtls_env(), "KAFKA_SSL_CAFILE": str(tls.rogue_ca)}, wrong
    if case == "no client certificate":
        env = {**secured.mtls_env()}
        for name in ("KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE", "KAFKA_SSL_KEY_PASSWORD"):
            env.pop(name)
        return env, wrong
    if case == "wrong SCRAM password":
        return {**secured.scram_env(), "KAFKA_SASL_PASSWORD": wrong}, wrong
    assert case == "wrong key password"
    return {**secured.mtls_env(), "KAFKA_SSL_KEY_PASSWORD": wrong}, wrong


@pytest.mark.parametrize(
    "case, says",
    [
        ("certificate of another CA", "does it trust the client certificate"),
        ("CA that does not trust the broker", "CERTIFICATE_VERIFY_FAILED"),
        ("no client certificate", "does it require a client certificate"),
        ("wrong SCRAM password", "Authentication failed"),
        ("wrong key password", "KAFKA_SSL_KEY_PASSWORD"),
    ],
)
def test_wrong_credentials_fail_fast_with_one_line_and_no_secret(secured_kafka: SecuredBroker, case: str, says: str,
                                                                  tmp_path: Path) -> None:  # fmt: skip
    env, wrong = bad_credentials(secured_kafka, case)
    line = {"key": "L1", "value": "x"}
    began = time.monotonic()
    result = run_cli({**env, "DUEWATCH_TOPIC_PREFIX": "never."}, "produce", "loan.schedules", "-", "--raw",
                     stdin=json.dumps(line) + "\n", timeout=60)  # fmt: skip
    took = time.monotonic() - began
    assert result.returncode == 1, result.stderr
    assert took < 20, f"took {took:.1f} s to fail"
    errors = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(errors) == 1, result.stderr
    [error] = errors
    assert error.startswith("duewatch produce: ") and says in error, error
    assert "Traceback" not in result.stderr and "Unclosed" not in result.stderr
    assert_no_secret(secured_kafka, result.stdout, result.stderr)
    assert wrong not in result.stdout + result.stderr
