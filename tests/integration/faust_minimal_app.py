"""A minimal Faust app for the broker integration test, run as a real worker process::

    python -m faust -A tests.integration.faust_minimal_app worker -l info

It counts records per key in a RocksDB-backed table and sends the new count for every
record to the output topic (key = the input key, value = the count as ASCII digits).

Configured by the environment (the test sets a unique app id and topics per test):
KAFKA_BOOTSTRAP_SERVERS, DW_TEST_APP_ID, DW_TEST_SOURCE, DW_TEST_SINK, DW_TEST_PARTITIONS,
DW_TEST_DATADIR, and optionally KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* / KAFKA_SSL_CAFILE.
"""

from __future__ import annotations

import os

import faust


def _credentials() -> faust.types.auth.CredentialsT | None:
    protocol = os.environ.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
    if protocol == "PLAINTEXT":
        return None
    from aiokafka.helpers import create_ssl_context

    ssl_context = None
    if protocol in ("SSL", "SASL_SSL"):
        ssl_context = create_ssl_context(cafile=os.environ.get("KAFKA_SSL_CAFILE") or None)
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context)
    return faust.SASLCredentials(
        username=os.environ.get("KAFKA_SASL_USERNAME"),
        password=os.environ.get("KAFKA_SASL_PASSWORD"),
        mechanism=os.environ.get("KAFKA_SASL_MECHANISM", "PLAIN"),
        ssl_context=ssl_context,
    )


PARTITIONS = int(os.environ.get("DW_TEST_PARTITIONS", "1"))

app = faust.App(
    os.environ.get("DW_TEST_APP_ID", "duewatch-faust-minimal"),
    broker=[f"kafka://{b}" for b in os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092").split(",")],
    broker_credentials=_credentials(),
    store="rocksdb://",
    datadir=os.environ.get("DW_TEST_DATADIR", "state/faust-minimal"),
    topic_partitions=PARTITIONS,
    topic_replication_factor=int(os.environ.get("KAFKA_TEST_REPLICATION_FACTOR", "1")),
    consumer_auto_offset_reset="earliest",
    processing_guarantee="at_least_once",
    web_enabled=False,
)

source = app.topic(
    os.environ.get("DW_TEST_SOURCE", "faust-minimal-in"),
    key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
    partitions=PARTITIONS,
)  # fmt: skip
sink = app.topic(
    os.environ.get("DW_TEST_SINK", "faust-minimal-out"),
    key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
    partitions=PARTITIONS,
)  # fmt: skip

counts = app.Table("counts", default=int, key_type=str, value_type=int, partitions=PARTITIONS)


@app.agent(source)
async def count(stream: faust.StreamT) -> None:
    async for key, _value in stream.items():
        name = key.decode()
        counts[name] += 1
        await sink.send(key=key, value=str(counts[name]).encode())
