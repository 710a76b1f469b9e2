"""The routers on the real broker (issue 5): the routed topics carry what `duewatch replay` says."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from streams.contracts import codec
from streams.policy_loader import load_policy
from streams.replay import replay
from tests.integration.harness import SETTLE, DuewatchCluster, book_lines, ticks_between

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUTED = ("notify.requests", "bureau.records", "partner.shares", "collections.tasks")

POLICY = """
[notifications]
collection_cap_per_day = 2

[partners.P-ANTFIN]
key = "ant-financial-test-key-0123456789abcdef"
mode = "REALTIME"

[partners.P-CITYBANK]
key = "city-bank-test-key-0123456789abcdef-xyz"
mode = "DIGEST"
digest_time = "07:00"
"""


def normal(topic: str, value: dict[str, Any]) -> str:
    """A routed record in JSON form with every instant in UTC, for comparison."""
    record_type = codec.TOPIC_RECORD[topic]
    return json.dumps(
        codec.to_json(record_type, codec.from_json(record_type, value), tz="UTC"), sort_keys=True
    )


async def test_routed_topics_equal_replay(kafka_bootstrap: str, tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY)
    lines, start, until = book_lines(250, 60, seed=21)
    outputs = replay(lines, until, policy=load_policy(str(policy_file)))
    expected = {
        t: Counter(normal(t, codec.to_json(codec.TOPIC_RECORD[t], o.value)) for o in outputs if o.topic == t)
        for t in ROUTED
    }
    assert all(expected[t] for t in ROUTED), {t: sum(c.values()) for t, c in expected.items()}

    (tmp_path / "c").mkdir()
    cluster = DuewatchCluster(
        kafka_bootstrap, tmp_path / "c", partitions=3, DUEWATCH_POLICY_FILE=str(policy_file)
    )
    try:
        await cluster.create_topics()
        worker = cluster.start_worker()
        await cluster.produce(lines)
        await worker.ready()
        for t in ticks_between(start, until, timedelta(days=2)):
            await cluster.tick(t)
        await cluster.tick(until + SETTLE)
        for topic in ROUTED:
            reader = cluster.reader(topic)

            def seen(records: list[dict[str, Any]], topic: str = topic) -> Counter:
                return Counter(normal(topic, r["value"]) for r in records)

            records = await reader.until(lambda rs, topic=topic: seen(rs) == expected[topic], timeout=120)
            got = seen(records)
            # Replay stops at `until`; the stream's last tick is a settle delay later.
            extra = got - expected[topic]
            assert not (expected[topic] - got), f"{topic}: {sum((expected[topic] - got).values())} missing"
            assert all(_after(topic, json.loads(x), until) for x in extra), f"{topic}: unexpected records"
    finally:
        await cluster.close()


def _after(topic: str, value: dict[str, Any], until) -> bool:
    from streams.core.dates import parse_instant

    field = {"notify.requests": "created_at", "bureau.records": "released_at", "partner.shares": "as_of",
             "collections.tasks": "opened_at"}[topic]  # fmt: skip
    return parse_instant(value[field]) > until
