"""Registry mode (SPEC §6) in the worker, on the real broker and a real registry (Apicurio):
inputs written by Confluent's AvroSerializer (the current schema, one version older, one with an
extra optional field) and plain ones are processed as replay says; every output is framed and
read by Confluent's AvroDeserializer; bad schema ids are dead-lettered with their reasons; a
registry that stops mid-run is an outage (not ready, nothing dead-lettered) and the worker
carries on when it returns."""

from __future__ import annotations

import asyncio
import io
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastavro import parse_schema, schemaless_writer

from streams.contracts import codec, framing
from streams.contracts import topics as names
from streams.contracts.registry import SchemaRegistry, subject_of
from streams.dev import broker as devkafka
from streams.dev import registry as devregistry
from streams.policy_loader import load_policy
from streams.replay import replay
from tests.integration.harness import (
    SETTLE,
    DuewatchCluster,
    book_lines,
    replayed,
    run_until_equal,
    ticks_between,
)
from tests.support.builders import at, payment_dict, schedule_dict
from tests.support.shared import REPO
from tests.support.wire import judged

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTPUTS = (names.OVERDUE, names.NOTIFY, names.BUREAU, names.PARTNER, names.COLLECTIONS)
POLICY = """
[partners.P-ANTFIN]
key = "ant-financial-test-key-0123456789abcdef"
mode = "REALTIME"

[partners.P-CITYBANK]
key = "city-bank-test-key-0123456789abcdef-xyz"
mode = "DIGEST"
"""


def _schema(record_type: str) -> dict[str, Any]:
    return json.loads((REPO / "schemas" / f"{record_type}.avsc").read_text(encoding="utf-8"))


def _older(record_type: str) -> dict[str, Any]:
    """The writer schema one version older: without its last field (optional, with a default)."""
    older = _schema(record_type)
    assert "default" in older["fields"][-1]
    older["fields"] = older["fields"][:-1]
    return older


def _with_extra_field(record_type: str) -> dict[str, Any]:
    newer = _schema(record_type)
    newer["fields"].append({"name": "upstream_reference", "type": ["null", "string"], "default": None})
    return newer


class Upstream:
    """An upstream team's producer on Confluent's tooling: AvroSerializer, its own writer schemas."""

    def __init__(self, registry_url: str, cluster: DuewatchCluster) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self.client = SchemaRegistryClient({"url": registry_url})
        self.cluster = cluster
        self.serializers: dict[str, Any] = {}

    def serialize(self, topic: str, writer: dict[str, Any], value: dict[str, Any]) -> bytes:
        from confluent_kafka.schema_registry.avro import AvroSerializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        text = json.dumps(writer)
        serializer = self.serializers.get(text)
        if serializer is None:
            serializer = self.serializers[text] = AvroSerializer(
                self.client, text, conf={"auto.register.schemas": True}
            )
        data = serializer(value, SerializationContext(self.cluster.cfg.topic(topic), MessageField.VALUE))
        assert framing.framed(data)
        return data

    async def send(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        producer = AIOKafkaProducer(**self.cluster.cfg.kafka_kwargs(), acks="all")
        await producer.start()
        try:
            futures = [await producer.send(self.cluster.cfg.topic(topic), v, key=k) for k, v in records]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()


async def _read_all(cluster: DuewatchCluster, topic: str, quiet: float = 2.0) -> list[Any]:
    """Every raw record of ``topic`` so far (until nothing new arrives for ``quiet`` seconds)."""
    consumer = AIOKafkaConsumer(**cluster.cfg.kafka_kwargs(), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        physical = cluster.cfg.topic(topic)
        tps = [TopicPartition(physical, p) for p in range(cluster.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                records += batch
                last = time.monotonic()
        return records
    finally:
        await consumer.stop()


async def test_registry_mode_inputs_in_either_framing_outputs_for_confluents_deserializer(
    kafka_bootstrap: str, schema_registry: str, tmp_path: Path
) -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY)
    lines, start, until = book_lines(30, 45, seed=15)
    expected = replayed(lines, until)
    routed = replay(lines, until, policy=load_policy(str(policy_file)))
    counts = {t: sum(1 for o in routed if o.topic == t) for t in OUTPUTS}
    assert all(counts.values()), counts

    (tmp_path / "c").mkdir()
    cluster = DuewatchCluster(kafka_bootstrap, tmp_path / "c", partitions=3,
                              DUEWATCH_SCHEMA_REGISTRY_URL=schema_registry, DUEWATCH_POLICY_FILE=str(policy_file))  # fmt: skip
    try:
        created = cluster.cli("topics", "create")  # creates the topics and registers every schema
        assert created.returncode == 0, created.stderr
        assert f"registered {cluster.prefix}{names.REPAYMENTS}-value" in created.stdout
        upstream = Upstream(schema_registry, cluster)
        # Schedules with the current schema; repayments one version older where they can be (no
        # `reverses`), else with an extra optional field; disputes as plain Avro (either framing).
        by_topic: dict[str, list[tuple[bytes | None, bytes]]] = {}
        for n, line in enumerate(lines):
            topic, record_type = line["topic"], names.TOPIC_RECORD[line["topic"]]
            value = codec.from_json(record_type, line["value"])
            if topic == names.SCHEDULES:
                data = upstream.serialize(topic, _schema(record_type), value)
            elif topic == names.REPAYMENTS and value["reverses"] is None and n % 2:
                data = upstream.serialize(topic, _older(record_type), value)
            elif topic == names.REPAYMENTS:
                data = upstream.serialize(
                    topic, _with_extra_field(record_type), dict(value, upstream_reference="X")
                )
            else:
                data = codec.encode(record_type, value)
            by_topic.setdefault(topic, []).append((line["key"].encode(), data))
        # Bad input: a schema id the registry does not know, and a writer schema that does not
        # resolve (amount as a string, registered by a misconfigured producer under its own subject).
        payment = codec.from_json(
            "Repayment", payment_dict("P-BAD", 1, "2026-03-02T10:00", loan_id="L0000001")
        )
        unknown = framing.frame(2_000_000_000, codec.encode("Repayment", payment))
        wrong = _schema("Repayment")
        next(f for f in wrong["fields"] if f["name"] == "amount")["type"] = "string"
        async with SchemaRegistry(schema_registry) as client:
            wrong_id = await client.register(subject_of(cluster.prefix + "elsewhere"), wrong)
        buf = io.BytesIO()
        schemaless_writer(buf, parse_schema(wrong), dict(payment, amount="1"))
        mismatched = framing.frame(wrong_id, buf.getvalue())
        for topic, records in by_topic.items():
            await upstream.send(topic, records)
        await upstream.send(names.REPAYMENTS, [(b"L0000001", unknown), (b"L0000001", mismatched)])

        worker = cluster.start_worker()
        await worker.ready()
        for t in ticks_between(start, until, timedelta(days=2)):
            await cluster.tick(t)
        await cluster.tick(until + SETTLE)
        got, want = await run_until_equal(
            cluster, expected, until
        )  # read through `duewatch consume`'s renderer
        assert got == want

        deserializer = AvroDeserializer(SchemaRegistryClient({"url": schema_registry}))
        app_id = cluster.env["DUEWATCH_APP_ID"]
        for topic in OUTPUTS:
            records = await _read_all(cluster, topic)
            assert len(records) >= counts[topic], topic
            ids = set()
            for message in records:
                assert framing.framed(message.value), topic
                schema_id, body = framing.unframe(message.value)
                ids.add(schema_id)
                assert dict(message.headers)["content-type"] == b"application/vnd.confluent.avro"
                judged(topic, message, app_id, bytes(body))
                context = SerializationContext(cluster.cfg.topic(topic), MessageField.VALUE)
                assert deserializer(message.value, context) == codec.decode(
                    names.TOPIC_RECORD[topic], bytes(body)
                )
            registered = SchemaRegistryClient({"url": schema_registry}).get_latest_version(
                subject_of(cluster.cfg.topic(topic))
            )
            assert ids == {registered.schema_id}, topic  # registered by `topics create`, used as is

        dlq = await _read_all(cluster, names.DLQ)
        reasons = sorted(dict(m.headers)["reason"].decode() for m in dlq)
        assert reasons == ["SCHEMA_MISMATCH", "UNKNOWN_SCHEMA"], reasons
        assert {bytes(m.value) for m in dlq} == {unknown, mismatched}  # the original bytes
    finally:
        await cluster.close()


@pytest.fixture
def own_registry(tmp_path: Path, schema_registry: str):
    """A registry of this test's own (the session's keeps running for the others), to stop and
    start again: its database is on disk, so its schemas and ids survive."""
    [port] = devkafka.free_ports(1)
    registry = devregistry.Registry(tmp_path / "registry", port)
    registry.up(timeout=120, die_with_parent=True)
    try:
        yield registry
    finally:
        registry.down(timeout=30)


async def test_a_registry_outage_stops_processing_without_dead_letters_until_it_returns(
    kafka_bootstrap: str, own_registry: devregistry.Registry, tmp_path: Path
) -> None:
    (tmp_path / "c").mkdir()
    cluster = DuewatchCluster(kafka_bootstrap, tmp_path / "c", partitions=1,
                              DUEWATCH_SCHEMA_REGISTRY_URL=own_registry.url)  # fmt: skip
    try:
        await cluster.create_topics()
        upstream = Upstream(own_registry.url, cluster)
        schedule = codec.from_json("LoanSchedule", schedule_dict("L1"))
        await upstream.send(
            names.SCHEDULES, [(b"L1", upstream.serialize(names.SCHEDULES, _schema("LoanSchedule"), schedule))]
        )
        worker = cluster.start_worker()
        await worker.ready()
        await cluster.tick(at("2026-03-19"))
        reader = cluster.reader()
        await reader.until(lambda rs: any(r["value"]["type"] == "OVERDUE_OPENED" for r in rs))
        # A repayment whose writer schema (one with an extra field) the worker has never seen:
        # serialized (and registered) while the registry is up, produced once it is down.
        payment = codec.from_json("Repayment", payment_dict("P1", 100_000, "2026-03-18T10:00"))
        cure = upstream.serialize(
            names.REPAYMENTS, _with_extra_field("Repayment"), dict(payment, upstream_reference="R")
        )
        assert own_registry.down(timeout=30)
        await upstream.send(names.REPAYMENTS, [(b"L1", cure)])
        deadline = time.monotonic() + 60
        while (await worker.get("/ready"))[0] != 503:
            assert time.monotonic() < deadline, "still ready with the registry down"
            await asyncio.sleep(0.5)
        await asyncio.sleep(5)  # a few retries
        assert (await worker.get("/ready"))[0] == 503 and worker.running
        assert await _read_all(cluster, names.DLQ, quiet=1.0) == []  # an outage is not bad input
        await reader.poll()
        assert not any(r["value"]["type"] == "OVERDUE_CURED" for r in reader.records)  # not processed
        assert "schema registry" in worker.output()

        own_registry.up(timeout=120, die_with_parent=True)  # the same database: the same ids
        await reader.until(lambda rs: any(r["value"]["type"] == "OVERDUE_CURED" for r in rs), timeout=120)
        await worker.ready(timeout=60)
        assert await _read_all(cluster, names.DLQ, quiet=1.0) == []
        assert "answers again" in worker.output()
    finally:
        await cluster.close()
