"""Failover settings reach the Kafka consumer Faust builds (docs/reliability.md): the session
timeout and heartbeat from duewatch's settings, the static member id, and nothing from
variables of Faust's own that duewatch does not document."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streams.settings import Settings, default_instance_id
from streams.worker.app import create_app


async def consumer_of(cfg: Settings):
    """The aiokafka consumer Faust would start for the worker (not started: no broker needed)."""
    app = create_app(cfg)
    return app, app.consumer._thread._create_consumer(loop=asyncio.get_running_loop())


async def test_the_consumer_gets_the_failover_settings(tmp_path: Path) -> None:
    cfg = Settings(state_dir=str(tmp_path), session_timeout=8.0, heartbeat_interval=0.5, instance_id="dw-7")
    _, kafka = await consumer_of(cfg)
    try:
        assert (kafka._session_timeout_ms, kafka._heartbeat_interval_ms) == (8000, 500)
        assert kafka._group_instance_id == "dw-7"
    finally:
        await kafka.stop()


async def test_without_an_id_the_member_is_its_host_and_state_dir(tmp_path: Path) -> None:
    cfg = Settings(state_dir=str(tmp_path / "a"))
    _, kafka = await consumer_of(cfg)
    try:
        assert kafka._group_instance_id == cfg.group_instance_id
        assert cfg.group_instance_id == Settings(state_dir=str(tmp_path / "a")).group_instance_id
        assert cfg.group_instance_id != Settings(state_dir=str(tmp_path / "b")).group_instance_id
    finally:
        await kafka.stop()


async def test_faust_reads_none_of_its_own_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Kubernetes service links put WEB_PORT=tcp://... into a pod for a Service named "web"; Faust
    # would parse it as its web port and crash, or take a session timeout nobody documented.
    monkeypatch.setenv("WEB_PORT", "tcp://10.0.0.1:80")
    monkeypatch.setenv("BROKER_SESSION_TIMEOUT", "55")
    monkeypatch.setenv("CONSUMER_GROUP_INSTANCE_ID", "someone-else")
    monkeypatch.setenv("WEB_HOST", "elsewhere")
    app, kafka = await consumer_of(Settings(state_dir=str(tmp_path), web_host="w1.example", instance_id="w1"))
    try:
        assert app.conf.web_port == 6066 and app.conf.web_host == "w1.example"
        assert (kafka._session_timeout_ms, kafka._group_instance_id) == (10_000, "w1")
    finally:
        await kafka.stop()


def test_a_default_id_is_a_valid_kafka_group_instance_id() -> None:
    made = default_instance_id("my host/ü.example", "/var/lib/duewatch/state")
    assert made.startswith("my-host--.example-") and len(made) <= 249
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in made)
