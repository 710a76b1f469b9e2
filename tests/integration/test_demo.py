"""`duewatch demo` end to end, reduced: broker (the session's), workers, simulated book, summary, check.

The demo runs as a subprocess, as `make demo` runs it, against the session's broker (so it does
not start its own) and with free web ports (so it never collides with a demo on 6066).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streams.dev import broker as devkafka
from tests.conftest import kafka_client_kwargs, run_sync
from tests.support.shared import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = REPO


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def test_reduced_demo_runs_end_to_end_and_stream_equals_replay(kafka_bootstrap: str, tmp_path: Path) -> None:
    ports = devkafka.free_ports(2)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DUEWATCH_DEMO_WEB_PORTS": ",".join(map(str, ports)),
        "TMPDIR": str(tmp_path),  # worker state and logs (kept there if the demo fails)
        "COLUMNS": "160",
        "DUEWATCH_DEMO_REPORT_DIR": str(tmp_path / "reports"),
    }
    duewatch = Path(sys.executable).with_name("duewatch")
    proc = subprocess.run(
        [str(duewatch), "demo", "--loans", "300", "--days", "20", "--speed", "5"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=480,
    )  # fmt: skip
    out, err = proc.stdout, proc.stderr
    context = f"--- stdout:\n{out[-6000:]}\n--- stderr:\n{err[-4000:]}"
    assert proc.returncode == 0, context
    # the one-line check
    equal = re.search(r"^stream vs replay: equal \(([\d,]+) events\)$", out, re.M)
    assert equal and _number(equal.group(1)) > 0, context
    # the run's risk report, named on the line before the check
    report = re.search(r"^risk report: (\S+)\nstream vs replay", out, re.M)
    assert report and Path(report.group(1)).is_file(), context
    assert Path(report.group(1)).parent == tmp_path / "reports", context
    assert 'data-charts="chart-book' in Path(report.group(1)).read_text(encoding="utf-8"), context
    # a summary with overdue episodes opened and cured, and every sink used
    episodes = re.search(r"episodes: opened ([\d,]+) · cured ([\d,]+) · written off ([\d,]+)", out)
    assert episodes, context
    assert _number(episodes.group(1)) > 0 and _number(episodes.group(2)) > 0, context
    for sink in ("notify.requests", "bureau.records", "partner.shares", "collections.tasks", "Roll rates"):
        assert sink in out, context
    # plain progress lines without a terminal (no live view spam), and the URLs to look at
    assert f"http://127.0.0.1:{ports[0]}/metrics" in out, context
    assert "Asia/Shanghai" in out and "\x1b[" not in out, context
    # the session's broker was used, not started or stopped
    assert "starting Kafka" not in err and "stopping the Kafka broker" not in err, context
    # clean shutdown: the run's topics are gone
    prefix = re.search(r"topics created with prefix (\S+) ", err)
    assert prefix, context

    async def leftovers() -> list[str]:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**kafka_client_kwargs(kafka_bootstrap))
        await admin.start()
        try:
            app_id = "duewatch-" + prefix.group(1).rstrip(".")
            return [
                t for t in await admin.list_topics() if t.startswith(prefix.group(1)) or t.startswith(app_id)
            ]
        finally:
            await admin.close()

    assert run_sync(leftovers) == [], context
