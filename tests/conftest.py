"""Shared fixtures: a real Kafka broker for the session, fresh topics, Faust worker processes.

- ``kafka_bootstrap``: "host:port". Uses $KAFKA_BOOTSTRAP_SERVERS when set, otherwise starts
  a single-node KRaft broker (streams/dev/broker.py) on free ports in a temp dir for the session.
- ``secured_kafka``: a second broker with mutual-TLS and SASL_SSL/SCRAM listeners, started on first use.
- ``kafka_config``: aiokafka client kwargs (bootstrap + the KAFKA_SECURITY_PROTOCOL/SASL/SSL env).
- ``new_topic``: ``await new_topic(partitions=3)`` creates a uniquely named topic, deleted at teardown
  (``new_topic.track(name)`` deletes other topics too, e.g. the ones a Faust worker created).
- ``schema_registry``: the URL of a Confluent-compatible schema registry (the value for
  DUEWATCH_SCHEMA_REGISTRY_URL). Uses $DUEWATCH_TEST_SCHEMA_REGISTRY_URL when set, otherwise
  starts Apicurio Registry (streams/dev/registry.py) on a free port for the session, only when
  a test asks for it. Without Java it skips, except under CI=true where it fails.
- ``faust_worker``: ``faust_worker("tests.integration.faust_minimal_app", env={...})`` runs a real
  ``python -m faust ... worker`` subprocess (no web server unless ``web_port=``), stopped
  (SIGTERM, then SIGKILL) at teardown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from streams.dev import broker as devkafka
from streams.dev import registry as devregistry
from streams.dev.procs import WorkerProcess
from tests.support.shared import missing

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def run_sync(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion in a private event loop on another thread.

    Safe from sync fixtures/teardowns: does not touch the loop pytest-asyncio installed.
    """
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_fn())).result()


def unique_name(prefix: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", prefix).strip("-")[:60] or "t"
    return f"{slug}-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- broker


def kafka_client_kwargs(bootstrap: str) -> dict[str, Any]:
    """aiokafka client kwargs for ``bootstrap`` plus the security settings from the environment."""
    kwargs: dict[str, Any] = {"bootstrap_servers": bootstrap}
    protocol = os.environ.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
    if protocol != "PLAINTEXT":
        kwargs["security_protocol"] = protocol
    if protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        kwargs["ssl_context"] = create_ssl_context(cafile=os.environ.get("KAFKA_SSL_CAFILE") or None)
    if protocol.startswith("SASL_"):
        kwargs["sasl_mechanism"] = os.environ.get("KAFKA_SASL_MECHANISM", "PLAIN")
        kwargs["sasl_plain_username"] = os.environ.get("KAFKA_SASL_USERNAME")
        kwargs["sasl_plain_password"] = os.environ.get("KAFKA_SASL_PASSWORD")
    return kwargs


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    port, controller_port = devkafka.free_ports(2)
    broker = devkafka.Broker(tmp_path_factory.mktemp("kafka"), port, controller_port)
    # die_with_parent: if pytest itself is killed, the kernel SIGTERMs the broker
    broker.up(timeout=60, die_with_parent=True)
    try:
        yield broker.bootstrap
    finally:  # also on test failures and KeyboardInterrupt (pytest tears down session fixtures)
        broker.down(timeout=30)


@pytest.fixture(scope="session")
def secured_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devkafka.SecuredBroker]:
    """A second local broker, started on first use, beside the plain one (which the rest of the
    suite keeps using): PLAINTEXT, SSL requiring client certificates (mutual TLS) and SASL_SSL
    with SCRAM-SHA-512, with a throwaway CA and certificates (streams.dev.certs).
    ``.mtls_env()`` and ``.scram_env()`` are the client settings for each."""
    port, controller_port, ssl_port, sasl_ssl_port = devkafka.free_ports(4)
    secured = devkafka.secured_broker(tmp_path_factory.mktemp("kafka-secured"), port, controller_port,
                                      ssl_port, sasl_ssl_port)  # fmt: skip
    secured.broker.up(timeout=90, die_with_parent=True)
    try:
        yield secured
    finally:
        secured.broker.down(timeout=30)


@pytest.fixture(scope="session")
def kafka_config(kafka_bootstrap: str) -> dict[str, Any]:
    return kafka_client_kwargs(kafka_bootstrap)


def _replication_factor() -> int:
    return int(os.environ.get("KAFKA_TEST_REPLICATION_FACTOR", "1"))


class TopicFactory:
    """``name = await new_topic(partitions=3, config={"cleanup.policy": "compact"})``.

    Creates a uniquely named topic with the admin client and returns once every partition
    has a leader. Created topics, and any passed to ``track()`` (e.g. the changelog topics a
    Faust worker created), are deleted when the test ends (best effort).
    """

    def __init__(self, kafka_config: dict[str, Any], default_prefix: str) -> None:
        self.kafka_config = kafka_config
        self.default_prefix = default_prefix
        self.created: list[str] = []

    async def __call__(self, partitions: int = 1, *, prefix: str | None = None,
                       config: Mapping[str, str] | None = None, timeout: float = 30.0) -> str:  # fmt: skip
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        name = unique_name(prefix or self.default_prefix)
        admin = AIOKafkaAdminClient(**self.kafka_config)
        await admin.start()
        try:
            topic = NewTopic(name, partitions, _replication_factor(), topic_configs=dict(config or {}))
            await admin.create_topics([topic])
            self.created.append(name)
            deadline = time.monotonic() + timeout
            while True:
                [desc] = await admin.describe_topics([name])
                parts = desc.get("partitions") or []
                if (
                    desc.get("error_code") == 0
                    and len(parts) == partitions
                    and all(p["leader"] >= 0 for p in parts)
                ):
                    return name
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topic {name} not ready after {timeout} s: {desc}")
                await asyncio.sleep(0.1)
        finally:
            await admin.close()

    def track(self, *names: str) -> None:
        self.created.extend(names)

    def cleanup(self) -> None:
        if not self.created:
            return
        from aiokafka.admin import AIOKafkaAdminClient

        async def delete() -> None:
            admin = AIOKafkaAdminClient(**self.kafka_config)
            await admin.start()
            try:
                await admin.delete_topics(self.created)
            finally:
                await admin.close()

        with contextlib.suppress(Exception):
            run_sync(delete)


@pytest.fixture
def new_topic(kafka_config: dict[str, Any], request: pytest.FixtureRequest) -> Iterator[TopicFactory]:
    """See TopicFactory: ``await new_topic(partitions=N)`` -> a fresh, uniquely named topic."""
    factory = TopicFactory(kafka_config, request.node.name)
    yield factory
    factory.cleanup()


# --------------------------------------------------------------------------- schema registry


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Confluent-compatible API URL of a real schema registry for the session."""
    external = os.environ.get("DUEWATCH_TEST_SCHEMA_REGISTRY_URL")
    if external:
        yield external.rstrip("/")
        return
    try:
        devkafka.java_bin()
    except devkafka.DevKafkaError as exc:
        missing(str(exc))
    if not devregistry.built() and not (os.environ.get("MVN") or shutil.which("mvn")):
        missing("the schema registry is not built (make registry-build) and mvn is not on PATH")
    [port] = devkafka.free_ports(1)
    registry = devregistry.Registry(tmp_path_factory.mktemp("registry"), port)
    registry.up(timeout=120, die_with_parent=True)
    try:
        yield registry.url
    finally:
        registry.down(timeout=30)


# --------------------------------------------------------------------------- faust workers


class FaustWorker(WorkerProcess):
    """A ``python -m faust -A <app> worker`` subprocess with its output in a log file."""

    def __init__(self, app: str, env: Mapping[str, str], log_file: Path, loglevel: str = "info",
                 web_port: int | None = None) -> None:  # fmt: skip
        cmd = [sys.executable, "-m", "faust", "-A", app, "worker", "-l", loglevel]
        # `faust worker` overrides App(web_enabled=...) with its --with-web default (on, port 6066),
        # so two workers would collide on 6066: no web server unless a port is asked for.
        if web_port is None:
            cmd.append("--without-web")
        else:
            cmd += ["--web-port", str(web_port), "--web-bind", devkafka.HOST, "--web-host", devkafka.HOST]
        self.app = app
        super().__init__(app, cmd, env, log_file)

    async def wait_for_output(self, pattern: str, timeout: float = 60.0) -> None:
        """Wait until the worker's log matches the regex ``pattern``."""
        await self.wait_for(pattern, timeout)


@pytest.fixture
def faust_worker(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Callable[..., FaustWorker]]:
    """Factory for Faust worker subprocesses; KAFKA_BOOTSTRAP_SERVERS is set for them."""
    workers: list[FaustWorker] = []

    def start(app: str, env: Mapping[str, str] | None = None, loglevel: str = "info",
              web_port: int | None = None) -> FaustWorker:  # fmt: skip
        log_file = tmp_path / f"worker-{len(workers)}.log"
        env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, **(env or {})}
        worker = FaustWorker(app, env, log_file, loglevel, web_port)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


# --------------------------------------------------------------------------- hypothesis

# `make test` runs each property with hypothesis' defaults; `make fuzz` (HYPOTHESIS_PROFILE=fuzz)
# twenty times as many examples, to keep finding inputs the bounds of SPEC §2 missed.
from hypothesis import settings as _hypothesis  # noqa: E402

_hypothesis.register_profile("fuzz", max_examples=2_000)
if os.environ.get("HYPOTHESIS_PROFILE"):
    _hypothesis.load_profile(os.environ["HYPOTHESIS_PROFILE"])
