"""`duewatch report --from-topic` on the real broker: the report of what the topics hold (SPEC §7.4).

The overdue events of a replay are put on ``overdue.events`` as a stream would leave them —
one repeated (at-least-once delivery), one withdrawn by an OVERDUE_RETRACTED — beside the
book's schedules on ``loan.schedules``. The report read from the topics must be, byte for
byte, the report of the standing events and the schedules.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from pathlib import Path

import pytest

from streams import kafkaio
from streams.cli import main
from streams.contracts import codec
from streams.contracts import topics as names
from streams.core.dates import parse_instant
from streams.dev.book import generate
from streams.replay import replay
from streams.risk.figures import compute
from streams.risk.report import schedules_of, write_report
from streams.settings import from_env

pytestmark = pytest.mark.integration


def test_the_report_from_the_topics_is_the_report_of_the_standing_events(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"report-{uuid.uuid4().hex[:8]}."
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("DUEWATCH_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("DUEWATCH_PARTITIONS", "3")
    cfg = from_env()

    book = [r.as_line() for r in generate(150, date(2026, 3, 1), 20, seed=11)]
    until = parse_instant("2026-03-21T00:00:00+08:00")
    events = [codec.to_json("OverdueEvent", o.value) for o in replay(book, until) if o.topic == names.OVERDUE]
    opened = next(e for e in events if e["type"] == "OVERDUE_OPENED")
    phantom = {**opened, "event_id": "phantom-1", "bucket": "M7", "dpd": 200, "total_overdue": 10**9}
    retraction = {**phantom, "event_id": "retraction-1", "type": "OVERDUE_RETRACTED", "retracts": "phantom-1"}
    on_topic = [*events[:10], phantom, *events[10:], events[3], retraction]
    schedules = [r for r in book if r["topic"] == names.SCHEDULES]

    async def put() -> None:
        await kafkaio.create_topics(cfg, topics=(names.OVERDUE, names.SCHEDULES))
        await kafkaio.produce(cfg, names.OVERDUE, [{"key": e["loan_id"], "value": e} for e in on_topic])
        await kafkaio.produce(
            cfg, names.SCHEDULES, [{"key": s["key"], "value": s["value"]} for s in schedules]
        )

    asyncio.run(put())
    out = tmp_path / "from-topic.html"
    assert main(["report", "--from-topic", "--out", str(out), "--timeout", "30"]) == 0

    as_of = max(parse_instant(e["as_of"]) for e in events)
    assert as_of > max(parse_instant(s["value"]["effective_at"]) for s in schedules)
    expected = write_report(compute(events, schedules_of(schedules), as_of), tmp_path / "expected.html")
    assert out.read_bytes() == expected.read_bytes()


def test_a_missing_topic_is_named_with_what_to_do(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("DUEWATCH_TOPIC_PREFIX", f"absent-{uuid.uuid4().hex[:8]}.")
    assert main(["report", "--from-topic", "--out", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert "overdue.events does not exist" in err and "duewatch topics create" in err
