"""The command line fails like a tool (SPEC §6): one line on standard error and exit 1 for every
expected failure, 2 for a usage error, nothing waits longer than ``--timeout``.

Each command runs as the ``duewatch`` console script in a subprocess, as a user runs it; the
broker here is absent (a closed port) or silent (a local socket that accepts connections and
never answers). The tests with a real broker (a topic that does not exist) are in
tests/integration/test_cli_kafka.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from streams.cli import build_parser
from streams.dev import broker as devkafka
from streams.dev.procs import duewatch_command
from streams.settings import VARIABLES, Settings
from tests.support.builders import record, schedule_dict

#: Every command that talks to Kafka, with arguments that would otherwise succeed.
KAFKA_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("produce", "loan.schedules", "{book}"),
    ("consume", "loan.schedules"),
    ("tick",),
    ("topics", "create"),
    ("release", "L1"),
    ("dlq", "list"),
    ("dlq", "redrive"),
    ("report", "--from-topic", "--out", "{tmp}/r.html"),
)


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(duewatch_command(*args), env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


async def run_async(*args: str, env: dict[str, str]) -> tuple[int, str, float]:
    """(exit status, standard error, seconds) of ``duewatch <args>``, the loop free meanwhile."""
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *duewatch_command(*args), env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, err.decode(), time.monotonic() - began


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def book(tmp_path: Path) -> Path:
    path = tmp_path / "book.jsonl"
    line = record(
        "loan.schedules", schedule_dict("L1", [("2026-01-15", 100_000)], effective_at="2025-12-15T10:00")
    )
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    return path


def commands(tmp_path: Path) -> list[Sequence[str]]:
    path = str(book(tmp_path))
    return [[a.format(book=path, tmp=tmp_path) for a in c] for c in KAFKA_COMMANDS]


@pytest.fixture
async def silent_broker() -> AsyncIterator[str]:
    """host:port of a socket that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # kept open, never written to

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_silent_broker_fails_every_kafka_command_within_its_timeout(
    silent_broker: str, tmp_path: Path
) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": silent_broker}
    for command in commands(tmp_path):
        status, err, took = await run_async(*command, "--timeout", "2", env=env)
        assert status == 1, (command, err)
        line = one_line(err)
        assert line.startswith(f"duewatch {command[0]}: ") and silent_broker in line, line
        assert "no answer" in line, line
        assert took < 2 + 8, (command, took)  # the timeout, plus starting Python


async def test_an_absent_broker_fails_every_kafka_command_at_once(tmp_path: Path) -> None:
    [port] = devkafka.free_ports(1)
    env = {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}
    for command in commands(tmp_path):
        status, err, _ = await run_async(*command, env=env)
        assert status == 1, (command, err)
        line = one_line(err)
        assert f"127.0.0.1:{port}" in line, line


async def test_a_worker_without_a_broker_at_start_says_so_in_one_line(tmp_path: Path) -> None:
    [port] = devkafka.free_ports(1)
    env = {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "DUEWATCH_STATE_DIR": str(tmp_path)}
    status, err, _ = await run_async("worker", env=env)
    assert status == 1
    assert "cannot connect to Kafka at" in one_line(err)


def test_at_debug_the_traceback_comes_too(tmp_path: Path) -> None:
    [port] = devkafka.free_ports(1)
    done = run("tick", env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "DUEWATCH_LOG_LEVEL": "DEBUG"})
    assert done.returncode == 1
    assert (
        "Traceback" in done.stderr
        and f"duewatch tick: cannot connect to Kafka at 127.0.0.1:{port}" in done.stderr
    )


def test_a_bad_json_line_is_named_by_its_file_line_before_anything_is_sent(tmp_path: Path) -> None:
    path = book(tmp_path)
    good = path.read_text()
    path.write_text(f'{good}\n\n{{"key": "L2", "value": {{oops}}\n', encoding="utf-8")
    [port] = devkafka.free_ports(1)  # no broker: the file is judged first
    done = run("produce", "loan.schedules", str(path), env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"})
    assert done.returncode == 1
    assert one_line(done.stderr).startswith(f"duewatch produce: {path} line 4: not JSON")
    path.write_text(f"{good}[1, 2]\n", encoding="utf-8")
    done = run("produce", "loan.schedules", str(path))
    assert one_line(done.stderr) == f"duewatch produce: {path} line 2: not a JSON object"
    path.write_text(good + json.dumps({"key": "L3", "value": {"loan_id": "L3"}}) + "\n", encoding="utf-8")
    done = run("produce", "loan.schedules", str(path))
    assert done.returncode == 1
    assert one_line(done.stderr).startswith(f"duewatch produce: {path} line 2: ")


def test_a_line_of_another_topic_is_refused_with_its_line_number(tmp_path: Path) -> None:
    path = book(tmp_path)
    done = run("produce", "loan.repayments", str(path))
    assert done.returncode == 1
    assert "line 1: a record of loan.schedules, not of loan.repayments" in one_line(done.stderr)


@pytest.mark.parametrize(
    "args, says",
    [
        (("consume", "loan.schedules", "--max", "0"), "--max: must be at least 1"),
        (("consume", "loan.schedules", "--max", "many"), "--max: not an integer"),
        (("consume", "loan.schedules", "--idle-timeout", "0"), "--idle-timeout: must be more than 0"),
        (("tick", "--timeout", "-1"), "--timeout: must be more than 0"),
        (("tick", "--timeout", "nan"), "--timeout: must be more than 0"),
        (("tick", "--at", "yesterday"), "--at: not an instant"),
        (("produce", "loan.schedules"), "the following arguments are required: file"),
        (("simulate", "--loans", "0"), "--loans: must be at least 1"),
        (("nonsense",), "invalid choice"),
    ],
)
def test_bad_arguments_are_a_usage_error(args: tuple[str, ...], says: str) -> None:
    done = run(*args)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["produce", "consume"])
def test_an_unknown_topic_is_a_usage_error_naming_the_known_ones(command: str, tmp_path: Path) -> None:
    args = (
        (command, "loan.repayment", str(book(tmp_path)))
        if command == "produce"
        else (command, "loan.repayment")
    )
    done = run(*args)
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert "unknown topic 'loan.repayment'" in line and "loan.repayments" in line


def test_the_version() -> None:
    done = run("--version")
    assert done.returncode == 0 and done.stdout.strip().startswith("duewatch ")
    from importlib.metadata import version

    assert done.stdout.strip() == f"duewatch {version('duewatch')}"


def test_worker_help_lists_every_variable_with_the_default_the_settings_have() -> None:
    done = run("worker", "--help")
    assert done.returncode == 0
    listed = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("  ") and
              line.split()[0].startswith(("KAFKA_", "DUEWATCH_"))}  # fmt: skip
    assert set(listed) == {v.name for v in VARIABLES}
    assert listed["DUEWATCH_PARTITIONS"].endswith(f"[{Settings().partitions}]")
    assert listed["DUEWATCH_WEB_BIND"].endswith("[127.0.0.1]")
    assert listed["KAFKA_BOOTSTRAP_SERVERS"].endswith(f"[{Settings().bootstrap_servers}]")
    assert listed["DUEWATCH_SCHEMA_REGISTRY_URL"].endswith("[none: plain Avro]")


def test_every_setting_is_read_from_one_variable() -> None:
    import dataclasses

    fields = [f.name for f in dataclasses.fields(Settings)]
    assert sorted(v.field for v in VARIABLES) == sorted(fields)
    assert len({v.name for v in VARIABLES}) == len(VARIABLES)


def test_every_kafka_command_takes_a_timeout() -> None:
    parser = build_parser()
    for command in KAFKA_COMMANDS:
        args = parser.parse_args([*(a.format(book="b", tmp="t") for a in command), "--timeout", "7"])
        assert args.timeout == 7.0, command


def test_replay_calls_a_line_that_is_not_json_undecodable(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("not json\n\n[1]\n", encoding="utf-8")
    done = run("replay", "--input", str(path))
    assert done.returncode == 0
    out = [json.loads(x) for x in done.stdout.splitlines()]
    assert [(o["headers"]["reason"], o["headers"]["detail"]) for o in out] == [
        ("UNDECODABLE", "line 1 is not JSON"),
        ("UNDECODABLE", "line 3 is not a JSON object"),
    ]


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    done = run("replay", "--input", str(tmp_path / "absent.jsonl"))
    assert done.returncode == 1
    assert "absent.jsonl" in one_line(done.stderr)
    done = run("produce", "loan.schedules", str(tmp_path / "absent.jsonl"))
    assert done.returncode == 1
    assert "absent.jsonl" in one_line(done.stderr)


def test_a_bad_setting_is_one_line() -> None:
    done = run("tick", env={"DUEWATCH_PARTITIONS": "many"})
    assert done.returncode == 1
    assert "DUEWATCH_PARTITIONS" in one_line(done.stderr)
