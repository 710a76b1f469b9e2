"""The command line against a real broker whose topics do not exist (SPEC §6): every command
fails at once, in one line naming the topic and `duewatch topics create`, and works once the
topics are there."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from streams.contracts import topics as names
from streams.dev.procs import duewatch_command
from streams.settings import from_env
from streams.worker.tables import changelog_topics, internal_topics
from tests.support.builders import record, schedule_dict

pytestmark = pytest.mark.integration


def run(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, float]:
    began = time.monotonic()
    done = subprocess.run(duewatch_command(*args), env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    return done, time.monotonic() - began


def test_a_missing_topic_fails_at_once_naming_topics_create(
    kafka_bootstrap: str, tmp_path: Path, new_topic: Any
) -> None:
    prefix = f"absent-{uuid.uuid4().hex[:8]}."
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "DUEWATCH_TOPIC_PREFIX": prefix, "DUEWATCH_PARTITIONS": "2",
           "DUEWATCH_APP_ID": prefix.rstrip(".")}  # fmt: skip
    cfg = from_env({**os.environ, **env})
    new_topic.track(*(cfg.topic(t) for t in names.ALL_TOPICS), *internal_topics(cfg), *changelog_topics(cfg))
    book = tmp_path / "book.jsonl"
    schedule = record(
        "loan.schedules", schedule_dict("L1", [("2026-01-15", 100_000)], effective_at="2025-12-15T10:00")
    )
    book.write_text(json.dumps(schedule) + "\n", encoding="utf-8")
    for args, topic in (
        (("produce", "loan.schedules", str(book)), "loan.schedules"),
        (("tick",), "clock.ticks"),
        (("consume", "loan.repayments"), "loan.repayments"),
        (("dlq", "list"), "duewatch.dlq"),
        (("release", "L1"), "duewatch.control"),
    ):
        done, took = run(env, *args, "--timeout", "30")
        assert done.returncode == 1, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, (args, done.stderr)  # not aiokafka's "not found in cluster metadata" lines
        assert f"topic {prefix}{topic} does not exist" in lines[0] and "duewatch topics create" in lines[0], (
            lines
        )
        assert took < 20, (args, took)  # at once, not after the 30 s timeout
    created, _ = run(env, "topics", "create")
    assert created.returncode == 0, created.stderr
    sent, _ = run(env, "produce", "loan.schedules", str(book))
    assert sent.returncode == 0 and "sent 1 records" in sent.stderr
    read, _ = run(env, "consume", "loan.schedules", "--from-beginning", "--idle-timeout", "2")
    assert read.returncode == 0 and json.loads(read.stdout)["key"] == "L1"
