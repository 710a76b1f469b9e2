"""The worked examples of ../shared/examples: the spec made executable."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import UTC
from pathlib import Path

import pytest

from streams.core.dates import parse_instant
from streams.replay import replay
from tests.support.builders import standing
from tests.support.shared import EXAMPLES, REPO, example_params, need


def _norm(event: dict, fields: list[str]) -> tuple:
    out = []
    for f in fields:
        value = event.get(f)
        if f == "as_of" and value is not None:
            value = parse_instant(value).astimezone(UTC).isoformat()
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        out.append(json.dumps(value, sort_keys=True))
    return tuple(out)


@pytest.mark.parametrize("example", example_params(), ids=lambda p: p.name)
def test_worked_example_in_process(example: Path) -> None:
    expected = [
        json.loads(line) for line in (example / "expected.jsonl").read_text().splitlines() if line.strip()
    ]
    records = [
        json.loads(line) for line in (example / "input.jsonl").read_text().splitlines() if line.strip()
    ]
    until = parse_instant((example / "until").read_text().strip())
    outputs = replay(records, until)
    events = standing([o.value for o in outputs if o.topic == "overdue.events"])
    fields = sorted({k for e in expected for k in e}) or ["type"]
    assert Counter(_norm(e, fields) for e in events) == Counter(_norm(e, fields) for e in expected)
    assert not [o for o in outputs if o.topic == "duewatch.dlq"]


def test_worked_examples_through_the_command_line() -> None:
    """The examples' own checker, run against the installed `duewatch` command."""
    need(EXAMPLES / "check.py")
    duewatch = Path(sys.executable).with_name("duewatch")
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "check.py"), str(duewatch)], capture_output=True, text=True, cwd=REPO
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "12 passed, 0 failed" in run.stdout
