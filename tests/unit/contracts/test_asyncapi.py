"""schemas/asyncapi.yaml: valid AsyncAPI 3.0 by the official parser (@asyncapi/parser with its
Avro schema parser, installed by `make asyncapi-tools`), naming exactly the topics the code
creates and the record types the code writes to them, with the headers the code sends."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest
import yaml

from streams.contracts import codec, headers
from streams.contracts import topics as names
from streams.settings import Settings
from tests.support.shared import REPO, missing

ROOT = REPO
DOCUMENT = ROOT / "schemas" / "asyncapi.yaml"
TOOLS = ROOT / "tools" / "asyncapi"
ERROR, WARNING = 0, 1  # Spectral's severities; 2 (information) and 3 (hint) are advice


@cache
def _parsed() -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        missing("node (Node.js) is not on PATH; it runs the AsyncAPI parser")
    if not (TOOLS / "node_modules" / "@asyncapi" / "parser").is_dir():
        missing("the AsyncAPI parser is not installed: make asyncapi-tools")
    res = subprocess.run([node, str(TOOLS / "validate.js"), str(DOCUMENT)], capture_output=True, text=True,
                         timeout=180)  # fmt: skip
    if not res.stdout.strip():
        pytest.fail(f"validate.js printed nothing (exit {res.returncode}): {res.stderr}")
    return json.loads(res.stdout)


@pytest.fixture
def parsed() -> dict[str, Any]:
    return _parsed()


def _code_topics() -> set[str]:
    """Every topic the code creates (`duewatch topics create`), with the default app id."""
    from streams.worker.tables import changelog_topics, internal_topics  # the worker's own definitions

    cfg = Settings()
    return set(names.ALL_TOPICS) | set(internal_topics(cfg)) | set(changelog_topics(cfg))


def _avsc_fields() -> dict[tuple[str, ...], str]:
    """The field list of each record type's .avsc -> the record type."""
    return {tuple(f["name"] for f in json.loads((ROOT / "schemas" / f"{name}.avsc").read_text())["fields"]): name
            for name in codec.RECORD_TYPES}  # fmt: skip


def _record_type(message: dict[str, Any]) -> str | None:
    if message["payloadType"] != "object":
        return None
    fields = tuple(message["payloadFields"])
    assert fields in _avsc_fields(), f"{message['id']}: its payload is none of the .avsc records: {fields}"
    return _avsc_fields()[fields]


def _channels(parsed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["address"]: c for c in parsed["channels"]}


def test_the_document_is_valid_asyncapi_3_0(parsed: dict[str, Any]) -> None:
    problems = [d for d in parsed["diagnostics"] if d["severity"] in (ERROR, WARNING)]
    assert not problems, "\n".join(
        f"{d['code']}: {d['message']} at {'/'.join(map(str, d['path']))}" for d in problems
    )
    assert yaml.safe_load(DOCUMENT.read_text())["asyncapi"].startswith("3.0.")
    assert parsed["channels"] and parsed["operations"]


def test_the_document_names_exactly_the_topics_the_code_creates(parsed: dict[str, Any]) -> None:
    documented = set(_channels(parsed))
    code = _code_topics()
    assert documented == code, (
        f"missing from schemas/asyncapi.yaml: {sorted(code - documented)}; "
        f"documented but not created by the code: {sorted(documented - code)}"
    )
    for channel in parsed["channels"]:
        kafka = channel["bindings"]["kafka"]
        assert kafka["topic"] == channel["address"]
        assert kafka["partitions"] == Settings().partitions  # DUEWATCH_PARTITIONS' default
        compacted = kafka["topicConfiguration"]["cleanup.policy"] == ["compact"]
        assert compacted == channel["address"].endswith("-changelog"), channel["address"]
        required = names.TOPIC_CONFIGS.get(channel["address"], {})  # e.g. bureau.records kept forever
        documented_configs = {k: str(v) for k, v in kafka["topicConfiguration"].items() if k in required}
        assert documented_configs == required, channel["address"]
    operated = {c for op in parsed["operations"] for c in op["channels"]}
    assert operated == {c["id"] for c in parsed["channels"]}  # every channel is read or written


def test_each_topic_carries_the_record_type_the_code_writes_to_it(parsed: dict[str, Any]) -> None:
    channels = _channels(parsed)
    seen = set()
    for topic, record_type in names.TOPIC_RECORD.items():
        messages = channels[topic]["messages"]
        assert {_record_type(m) for m in messages} == {record_type}, topic
        by_type = {m["contentType"]: m for m in messages}
        assert set(by_type) == {headers.AVRO, headers.CONFLUENT_AVRO}, topic  # plain and registry mode
        framed = by_type[headers.CONFLUENT_AVRO]["bindings"]["kafka"]
        assert (framed["schemaIdLocation"], framed["schemaIdPayloadEncoding"]) == ("payload", "confluent")
        assert framed["schemaLookupStrategy"] == "TopicNameStrategy"  # subject <topic>-value
        assert "schemaIdLocation" not in by_type[headers.AVRO]["bindings"]["kafka"]
        seen.add(record_type)
    for address in _code_topics() - set(names.TOPIC_RECORD):
        for message in channels[address]["messages"]:
            found = _record_type(message)
            if found is not None:
                seen.add(found)
    assert seen == set(codec.RECORD_TYPES)


def test_keys_are_documented_as_the_code_keys_them(parsed: dict[str, Any]) -> None:
    channels = _channels(parsed)
    for topic in names.KEY_FIELD:
        for message in channels[topic]["messages"]:
            assert message["bindings"]["kafka"]["key"]["x-parser-schema-id"] == "LoanIdKey", topic
    for message in channels[names.TICKS]["messages"]:
        assert message["bindings"]["kafka"]["key"]["type"] == "null"


def test_the_payloads_are_the_avsc_files() -> None:
    raw = yaml.safe_load(DOCUMENT.read_text())
    refs = {name: schema["schema"]["$ref"] for name, schema in raw["components"]["schemas"].items()
            if isinstance(schema, dict) and "schemaFormat" in schema}  # fmt: skip
    assert refs == {name: f"./{name}.avsc" for name in codec.RECORD_TYPES}
    for schema in raw["components"]["schemas"].values():
        if "schemaFormat" in schema:
            assert schema["schemaFormat"].startswith("application/vnd.apache.avro")


def _sample_output(topic: str) -> dict[str, Any]:
    from tests.support.samples import SAMPLES

    return codec.from_json(names.TOPIC_RECORD[topic], SAMPLES[names.TOPIC_RECORD[topic]][0])


def _header_schema(message: dict[str, Any]) -> tuple[set[str], set[str], dict[str, Any]]:
    """(documented header names, required names, per-message constants) of an output message."""
    base, specific = message["headers"]["allOf"]
    consts = {k: v["const"] for k, v in specific["properties"].items() if "const" in v}
    return set(base["properties"]) | set(specific["properties"]), set(base["required"]), consts


@pytest.mark.parametrize("registry_mode", [False, True])
def test_output_headers_are_documented_as_the_code_writes_them(
    parsed: dict[str, Any], registry_mode: bool
) -> None:
    channels = _channels(parsed)
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    content_type = headers.CONFLUENT_AVRO if registry_mode else headers.AVRO
    for topic in headers.OUTPUT_EVENTS:
        [message] = [m for m in channels[topic]["messages"] if m["contentType"] == content_type]
        documented, required, consts = _header_schema(message)
        sent = dict(headers.output_headers(topic, _sample_output(topic), "duewatch", trace, registry_mode))
        assert set(sent) <= documented, f"{topic}: undocumented headers {set(sent) - documented}"
        assert required == set(sent) - {headers.TRACEPARENT}, topic  # traceparent only when given
        for name, value in consts.items():
            assert sent[name].decode() == value, (topic, name)
        assert consts[headers.SCHEMA] == f"duewatch.{names.TOPIC_RECORD[topic]}"
        pattern = next(p for p in message["headers"]["allOf"][1]["properties"]["ce_type"].values()
                       if isinstance(p, str) and p.startswith("^"))  # fmt: skip
        assert re.fullmatch(pattern, sent["ce_type"].decode()), (topic, pattern)
        assert datetime.fromisoformat(sent["ce_time"].decode()).tzinfo == UTC
    for topic in set(names.INPUT_TOPICS):
        for message in channels[topic]["messages"]:
            assert set(message["headers"]["properties"]) == {headers.TRACEPARENT}
