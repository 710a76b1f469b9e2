"""streams/dev/registry.py: the project's own schema registry starts, is found, keeps its
schemas across a restart and stops."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.contracts import codec, framing
from streams.contracts.registry import RegistryDecoder, RegistryUnavailable, SchemaRegistry
from streams.dev import broker as devkafka
from streams.dev import registry as devregistry
from tests.support.shared import missing

pytestmark = pytest.mark.integration


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


async def test_the_registry_starts_restarts_with_its_schemas_and_stops(tmp_path: Path) -> None:
    """Also the outage semantics of registry mode: while the registry is down a framed input
    is neither decoded nor bad input (RegistryUnavailable), and once it is back the same
    record decodes (its schema id kept across the restart)."""
    try:
        devkafka.java_bin()
    except devkafka.DevKafkaError as exc:
        missing(str(exc))
    [port] = devkafka.free_ports(1)
    registry = devregistry.Registry(tmp_path, port)
    assert devregistry.built()  # make test builds it first; a fresh machine does so in make
    assert not registry.status().running
    try:
        registry.up(timeout=120, die_with_parent=True)
        st = registry.status()
        assert st.running and st.ready and st.port == port
        assert registry.url == f"http://127.0.0.1:{port}/apis/ccompat/v7"
        # a second `up` finds the running one instead of starting another
        other = devregistry.Registry(tmp_path, port)
        other.up(timeout=30)
        assert other.status().pid == st.pid

        schema = (devregistry.ROOT / "schemas" / "Tick.avsc").read_text()
        first = _post(f"{registry.url}/subjects/t-value/versions", {"schema": schema})["id"]
        tick = {"as_of": datetime(2026, 3, 16, tzinfo=UTC)}
        framed = framing.frame(first, codec.encode("Tick", tick))
        assert registry.down(timeout=30)
        assert not registry.status().running and not devregistry.ready(registry.base_url, timeout=0.5)

        async with SchemaRegistry(registry.url, timeout=3) as client:  # a worker that starts meanwhile
            decoder = RegistryDecoder(client)
            with pytest.raises(RegistryUnavailable) as err:
                await decoder.decode_async("Tick", framed)
            assert not isinstance(err.value, codec.DecodeError)  # an outage, never dead-lettered
            assert not await client.reachable()

            registry.up(timeout=120, die_with_parent=True)
            assert await client.reachable()
            assert await decoder.decode_async("Tick", framed) == tick  # recovers, same id
        assert json.loads(_get(f"{registry.url}/schemas/ids/{first}")["schema"]) == json.loads(schema)
        assert _post(f"{registry.url}/subjects/t-value/versions", {"schema": schema})["id"] == first
        assert (tmp_path / "registry.out").stat().st_size > 0
    finally:
        registry.down(timeout=30)
    assert not registry.down()
