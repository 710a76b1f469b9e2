"""SPEC §1 on the real broker: every output record of a small book carries the full header set
(judged by the CloudEvents SDK and an independent fingerprint), and a repayment's
``traceparent`` reaches the overdue event, the notification and the collections task it causes
through every stage of the worker; with an OTLP endpoint set, the worker exports spans."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.contracts import codec
from streams.contracts import topics as names
from streams.dev import broker as devkafka
from streams.policy_loader import load_policy
from streams.replay import replay
from tests.integration.harness import SETTLE, DuewatchCluster, book_lines, ticks_between
from tests.support.builders import at, payment_dict, schedule_dict
from tests.support.wire import judged

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTPUTS = (names.OVERDUE, names.NOTIFY, names.BUREAU, names.PARTNER, names.COLLECTIONS)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
REPAYMENT_TRACE = f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()
TICK_TRACE = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
POLICY = """
[partners.P-ANTFIN]
key = "ant-financial-test-key-0123456789abcdef"
mode = "REALTIME"

[partners.P-CITYBANK]
key = "city-bank-test-key-0123456789abcdef-xyz"
mode = "DIGEST"
"""


@pytest.fixture
async def otlp_receiver() -> AsyncIterator[tuple[str, list[Any]]]:
    """An OTLP/HTTP trace receiver of the test's own: (its base URL, the spans it received)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans: list[Any] = []

    async def receive(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        for resource in export.resource_spans:
            for scope in resource.scope_spans:
                spans.extend(scope.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    [port] = devkafka.free_ports(1)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", spans
    finally:
        await runner.cleanup()


async def _send(cluster: DuewatchCluster, topic: str, key: bytes | None, value: bytes, headers: list,
                partitions: range | None = None) -> None:  # fmt: skip
    producer = AIOKafkaProducer(**cluster.cfg.kafka_kwargs(), acks="all")
    await producer.start()
    try:
        for partition in partitions or [None]:
            await (await producer.send(cluster.cfg.topic(topic), value, key=key, partition=partition,
                                       headers=headers))  # fmt: skip
    finally:
        await producer.stop()


async def _read_all(cluster: DuewatchCluster, topic: str, enough, timeout: float = 120.0) -> list[Any]:
    """Every raw record of ``topic`` from the beginning, until ``enough(records)``."""
    consumer = AIOKafkaConsumer(**cluster.cfg.kafka_kwargs(), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(cluster.cfg.topic(topic), p) for p in range(cluster.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while not enough(records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: {len(records)} records, not enough within {timeout} s")
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records += batch
        return records
    finally:
        await consumer.stop()


def _of(records: list[Any], record_type: str, loan: str) -> list[tuple[dict[str, Any], dict[str, bytes]]]:
    out = []
    for message in records:
        value = codec.decode(record_type, message.value)
        if value.get("loan_id") == loan:
            out.append((value, dict(message.headers)))
    return out


async def test_outputs_carry_their_headers_and_a_repayments_trace_reaches_the_sms(
    kafka_bootstrap: str, tmp_path: Path, otlp_receiver: tuple[str, list[Any]]
) -> None:
    endpoint, spans = otlp_receiver
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY)
    lines, start, until = book_lines(40, 40, seed=11)
    traced = schedule_dict("L-TRACE", partners=["P-ANTFIN"])
    lines.append({"topic": names.SCHEDULES, "key": "L-TRACE", "value": traced})
    expected = replay(lines, until, policy=load_policy(str(policy_file)))
    counts = {t: sum(1 for o in expected if o.topic == t) for t in OUTPUTS}
    assert all(counts.values()), counts  # the book exercises every output topic

    (tmp_path / "c").mkdir()
    cluster = DuewatchCluster(
        kafka_bootstrap, tmp_path / "c", partitions=3, DUEWATCH_POLICY_FILE=str(policy_file),
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_BSP_SCHEDULE_DELAY="200", OTEL_SERVICE_NAME="dw-wire-test",
    )  # fmt: skip
    try:
        await cluster.create_topics()
        worker = cluster.start_worker()
        await cluster.produce(lines)
        await worker.ready()
        for t in ticks_between(start, at("2026-03-15"), timedelta(days=2)):  # before L-TRACE's due date
            await cluster.tick(t)
        # the tick that opens L-TRACE's episode has a trace: what it emits carries it
        tick = codec.encode("Tick", {"as_of": at("2026-03-19")})
        await _send(
            cluster, names.TICKS, None, tick, [("traceparent", TICK_TRACE)], range(cluster.partitions)
        )

        def opened(records: list[Any]) -> list[dict[str, bytes]]:
            return [h for v, h in _of(records, "OverdueEvent", "L-TRACE") if v["type"] == "OVERDUE_OPENED"]

        [headers] = opened(await _read_all(cluster, names.OVERDUE, opened))
        assert headers["traceparent"] == TICK_TRACE

        # the repayment that cures it, produced with a traceparent
        payment = payment_dict("P-TRACE", 100_000, "2026-03-18T10:00", loan_id="L-TRACE")
        value = codec.encode("Repayment", codec.from_json("Repayment", payment))
        await _send(cluster, names.REPAYMENTS, b"L-TRACE", value, [("traceparent", REPAYMENT_TRACE)])
        for topic, record_type, what in (
            (names.OVERDUE, "OverdueEvent", ("type", "OVERDUE_CURED")),
            (names.NOTIFY, "Notification", ("kind", "CONFIRMATION")),
            (names.COLLECTIONS, "CollectionTask", ("action", "CLOSE")),
        ):
            records = await _read_all(
                cluster, topic, lambda rs, rt=record_type, w=what: any(v[w[0]] == w[1] for v, _ in _of(rs, rt, "L-TRACE"))
            )  # fmt: skip
            [headers] = [h for v, h in _of(records, record_type, "L-TRACE") if v[what[0]] == what[1]]
            assert headers["traceparent"].decode().split("-")[1] == TRACE_ID, topic
        shares = await _read_all(cluster, names.PARTNER, lambda rs: any(
            codec.decode("PartnerShare", m.value)["items"][0]["type"] == "OVERDUE_CURED" for m in rs
            if codec.decode("PartnerShare", m.value)["partner_id"] == "P-ANTFIN"
            and codec.decode("PartnerShare", m.value)["items"][0]["loan_id"] == "L-TRACE"))  # fmt: skip
        [share] = [m for m in shares if codec.decode("PartnerShare", m.value)["items"][0]["loan_id"] == "L-TRACE"
                   and codec.decode("PartnerShare", m.value)["items"][0]["type"] == "OVERDUE_CURED"]  # fmt: skip
        assert dict(share.headers)["traceparent"] == REPAYMENT_TRACE

        # the rest of the book; then every record of every output topic is judged
        for t in ticks_between(at("2026-03-21"), until, timedelta(days=2)):
            await cluster.tick(t)
        await cluster.tick(until + SETTLE)
        app_id = cluster.env["DUEWATCH_APP_ID"]
        for topic in OUTPUTS:
            records = await _read_all(cluster, topic, lambda rs, n=counts[topic]: len(rs) >= n)
            for message in records:
                attributes = judged(topic, message, app_id)
                trace = dict(message.headers).get("traceparent")
                assert trace in (None, TICK_TRACE, REPAYMENT_TRACE), topic  # passed on, never invented

        # spans over OTLP: per tick and per batch (never per record), linked to the input traces
        deadline = time.monotonic() + 30
        while not any(TRACE_ID == link.trace_id.hex() for s in spans for link in s.links):
            assert time.monotonic() < deadline, (
                f"no span linked to the repayment's trace ({len(spans)} spans)"
            )
            await asyncio.sleep(0.5)
        names_seen = {s.name for s in spans}
        assert "duewatch detect batch" in names_seen and "duewatch notify batch" in names_seen
        assert len(spans) < sum(counts.values()) + 200  # per batch, not per record
        assert attributes  # the last record judged
    finally:
        await cluster.close()
