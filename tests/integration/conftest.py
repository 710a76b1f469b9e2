"""Fixtures of the integration tests: duewatch clusters on the session's real broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.harness import DuewatchCluster


@pytest.fixture
async def cluster(kafka_bootstrap: str, tmp_path: Path):
    clusters: list[DuewatchCluster] = []

    async def make(partitions: int = 3, **env: str) -> DuewatchCluster:
        c = DuewatchCluster(kafka_bootstrap, tmp_path / f"c{len(clusters)}", partitions, **env)
        (tmp_path / f"c{len(clusters)}").mkdir()
        clusters.append(c)
        await c.create_topics()
        return c

    yield make
    for c in clusters:
        for w in c.workers:
            if w.running and "Traceback" in w.output():
                print(f"--- {w.name} log ---\n{w.tail(120)}")
        await c.close()
