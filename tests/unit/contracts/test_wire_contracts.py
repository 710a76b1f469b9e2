"""What goes on the wire beside the Avro body (SPEC §1, §6): the schema fingerprint, the output
headers (judged by the CloudEvents SDK's own Kafka binding) and the Confluent framing."""

from __future__ import annotations

import glob
import json
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings

from streams.contracts import codec, framing, headers
from streams.contracts import topics as names
from streams.contracts.fingerprint import canonical_form, record_fingerprint, schema_fingerprint
from streams.core import errors
from streams.core.routing import route_all
from tests.support.routing import loan_histories, make_policy
from tests.support.samples import SAMPLES
from tests.support.shared import EXAMPLES, REPO, need
from tests.support.wire import crc64_avro

ROOT = REPO
TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


# --------------------------------------------------------------------------- fingerprint
# An independent CRC-64-AVRO (tests/support/wire.py), transcribed from the Avro specification.


def _spec_fingerprint(canonical: str) -> str:
    """Little-endian, as single-object encoding writes it, in lowercase hex."""
    return struct.pack("<Q", crc64_avro(canonical.encode())).hex()


def test_the_spec_test_vector() -> None:
    assert schema_fingerprint("int") == "8f5c393f1ad57572"
    assert schema_fingerprint('"int"') == "8f5c393f1ad57572"
    assert _spec_fingerprint('"int"') == "8f5c393f1ad57572"


def test_the_canonical_form_follows_the_specification_rules() -> None:
    # [PRIMITIVES] a logical type's primitive is written by its simple name; [STRIP] doc,
    # defaults and logicalType go; [FULLNAMES] names are full; [ORDER] name, type, fields...
    schema = {
        "type": "record", "name": "T", "namespace": "a.b", "doc": "x",
        "fields": [
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}, "doc": "y"},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["X"]}, "default": "X"},
        ],
    }  # fmt: skip
    assert canonical_form(schema) == (
        '{"name":"a.b.T","type":"record","fields":[{"name":"at","type":"long"},'
        '{"name":"e","type":{"name":"a.b.E","type":"enum","symbols":["X"]}}]}'
    )


@pytest.mark.parametrize("name", codec.RECORD_TYPES)
def test_every_record_type_has_the_fingerprint_the_specification_gives(name: str) -> None:
    raw = json.loads((ROOT / "schemas" / f"{name}.avsc").read_text())
    assert record_fingerprint(name) == _spec_fingerprint(canonical_form(raw))
    assert (
        len(record_fingerprint(name)) == 16 and record_fingerprint(name) == record_fingerprint(name).lower()
    )
    for version in codec.released_versions(name):
        released = json.loads((ROOT / "schemas" / "released" / f"v{version}" / f"{name}.avsc").read_text())
        assert record_fingerprint(name, version) == _spec_fingerprint(canonical_form(released))


def test_a_doc_change_keeps_the_fingerprint_and_a_field_change_does_not() -> None:
    raw = json.loads((ROOT / "schemas" / "Tick.avsc").read_text())
    redoc = dict(raw, doc="another description")
    assert schema_fingerprint(redoc) == record_fingerprint("Tick")
    more = dict(raw, fields=[*raw["fields"], {"name": "n", "type": ["null", "int"], "default": None}])
    assert schema_fingerprint(more) != record_fingerprint("Tick")


# --------------------------------------------------------------------------- output headers


def _native(name: str, index: int = 0) -> dict:
    return codec.from_json(name, SAMPLES[name][index])


def _replay_outputs() -> list[tuple[str, dict]]:
    """Router and detector outputs as the core produces them (instants in the loan's zone)."""
    from streams.contracts import jsonform
    from streams.replay import replay

    records = []
    for path in sorted(glob.glob(str(need(EXAMPLES) / "*" / "input.jsonl")))[:6]:
        records += [jsonform.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not records:
        pytest.skip("the worked examples (../shared/examples) are not beside the checkout")
    outs = replay(records, policy=make_policy())
    return [(o.topic, o.value) for o in outs if o.topic in headers.OUTPUT_EVENTS]


def _as_dict(hs: list[tuple[str, bytes]]) -> dict[str, str]:
    names_seen = [k for k, _ in hs]
    assert len(names_seen) == len(set(names_seen)), names_seen  # no header twice
    return {k: v.decode() for k, v in hs}


def test_the_headers_of_an_overdue_event() -> None:
    value = _native("OverdueEvent")
    got = _as_dict(headers.output_headers(names.OVERDUE, value, "duewatch", TRACEPARENT))
    assert got == {
        "content-type": "application/avro",
        "duewatch-schema": "duewatch.OverdueEvent",
        "duewatch-schema-fingerprint": record_fingerprint("OverdueEvent"),
        "ce_specversion": "1.0",
        "ce_id": "ev-2b8f",
        "ce_source": "duewatch/duewatch",
        "ce_type": "duewatch.overdue.OVERDUE_OPENED",
        "ce_time": "2026-03-15T16:00:00Z",  # as_of 2026-03-16T00:00+08:00 in UTC
        "ce_subject": "L2",
        "traceparent": TRACEPARENT.decode(),
    }


@pytest.mark.parametrize(
    ("topic", "name", "ce_id", "ce_type", "ce_time", "ce_subject"),
    [
        (names.NOTIFY, "Notification", "n-1", "duewatch.notify.COLLECTION", "2026-03-15T16:00:00Z", "L2"),
        (names.BUREAU, "BureauRecord", "br-1", "duewatch.bureau.record", "2026-03-15T16:00:00Z", "L2"),
        (names.PARTNER, "PartnerShare", "ps-1", "duewatch.partner.DIGEST", "2026-03-16T23:00:00Z", "P-ALPHA"),
        (names.COLLECTIONS, "CollectionTask", "ct-1", "duewatch.collections.AUTO_REMINDER",
         "2026-03-15T16:00:00Z", "L2"),
    ],
)  # fmt: skip
def test_the_cloudevents_attributes_of_each_output_topic(
    topic, name, ce_id, ce_type, ce_time, ce_subject
) -> None:
    got = _as_dict(headers.output_headers(topic, _native(name), "dw-blue", registry_mode=True))
    assert got["content-type"] == "application/vnd.confluent.avro"
    assert got["duewatch-schema"] == f"duewatch.{name}"
    assert got["duewatch-schema-fingerprint"] == record_fingerprint(name)
    assert (got["ce_id"], got["ce_type"], got["ce_time"], got["ce_subject"]) == (
        ce_id,
        ce_type,
        ce_time,
        ce_subject,
    )
    assert got["ce_source"] == "duewatch/dw-blue" and got["ce_specversion"] == "1.0"
    assert "traceparent" not in got  # none given, none invented


def test_headers_of_the_records_the_core_produces() -> None:
    outputs = _replay_outputs()
    assert {topic for topic, _ in outputs} >= {names.OVERDUE, names.NOTIFY, names.BUREAU, names.COLLECTIONS}
    for topic, value in outputs:
        got = _as_dict(headers.output_headers(topic, value, "duewatch"))
        fields = headers.OUTPUT_EVENTS[topic]
        assert got["ce_id"] == value[fields.id_field]
        assert datetime.fromisoformat(got["ce_time"]) == value[fields.time_field]  # same instant
        assert got["ce_time"].endswith("Z")
        assert got["ce_subject"] == value[fields.subject_field]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(loan_histories())
def test_headers_of_every_router_output(history: tuple) -> None:
    events, until = history
    for topic, _, value in route_all(events, [], until, make_policy()):
        got = _as_dict(headers.output_headers(topic, value, "duewatch"))
        fields = headers.OUTPUT_EVENTS[topic]
        assert got["ce_id"] == value[fields.id_field]
        assert datetime.fromisoformat(got["ce_time"]) == value[fields.time_field]
        if fields.type_field:
            assert got["ce_type"] == fields.type_prefix + value[fields.type_field]


def test_ce_time_is_rfc3339_utc_with_microseconds_only_when_present() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    assert headers.rfc3339_utc(datetime(2026, 3, 16, 8, 0, tzinfo=shanghai)) == "2026-03-16T00:00:00Z"
    assert (
        headers.rfc3339_utc(datetime(2026, 3, 16, 8, 0, 0, 1500, tzinfo=shanghai))
        == "2026-03-16T00:00:00.001500Z"
    )
    assert headers.rfc3339_utc(0) == "1970-01-01T00:00:00Z"
    assert headers.rfc3339_utc(1_500_000) == "1970-01-01T00:00:01.500000Z"
    with pytest.raises(ValueError, match="naive"):
        headers.rfc3339_utc(datetime(2026, 3, 16))


@pytest.mark.parametrize(
    "given",
    [
        TRACEPARENT,
        TRACEPARENT.decode(),
        b"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future-field",  # a later version
    ],
)
def test_a_valid_traceparent_is_passed_through(given) -> None:
    got = dict(headers.output_headers(names.OVERDUE, _native("OverdueEvent"), "duewatch", given))
    assert got["traceparent"] == (given.encode() if isinstance(given, str) else given)


@pytest.mark.parametrize(
    "given",
    [
        b"",
        b"garbage",
        b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff is invalid
        b"00-00000000000000000000000000000000-b7ad6b7169203331-01",  # all-zero trace id
        b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # all-zero parent id
        b"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
        TRACEPARENT + b"-extra",  # version 00 has exactly four fields
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\n",
    ],
)
def test_a_malformed_traceparent_is_dropped(given) -> None:
    got = dict(headers.output_headers(names.OVERDUE, _native("OverdueEvent"), "duewatch", given))
    assert "traceparent" not in got


def test_only_output_topics_have_output_headers() -> None:
    for topic in (names.REPAYMENTS, names.DLQ, "overdue.event"):
        with pytest.raises(KeyError):
            headers.output_headers(topic, {}, "duewatch")


def test_headers_are_built_per_record_not_shared() -> None:
    maker = headers.OutputHeaders("duewatch")
    a = maker(names.OVERDUE, _native("OverdueEvent", 0))
    b = maker(names.OVERDUE, _native("OverdueEvent", 1))
    assert dict(a)["ce_type"] == b"duewatch.overdue.OVERDUE_OPENED"
    assert dict(b)["ce_type"] == b"duewatch.overdue.DUE_SOON"
    assert a is not b and dict(a)["ce_id"] != dict(b)["ce_id"]


# ---- judged by the CloudEvents SDK's Kafka binding


def _samples_per_topic() -> list[tuple[str, dict]]:
    return [(topic, _native(names.TOPIC_RECORD[topic], i))
            for topic in headers.OUTPUT_EVENTS for i in range(len(SAMPLES[names.TOPIC_RECORD[topic]]))]  # fmt: skip


@pytest.mark.parametrize("registry_mode", [False, True])
def test_our_headers_are_what_the_sdk_binding_writes(registry_mode: bool) -> None:
    from cloudevents.core.bindings import kafka
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    for topic, value in _samples_per_topic():
        body = codec.encode(names.TOPIC_RECORD[topic], value)
        attributes = headers.cloudevent_attributes(topic, value, "duewatch", registry_mode)
        message = kafka.to_binary(CloudEvent(attributes=attributes, data=body), JSONFormat())
        ours = dict(headers.output_headers(topic, value, "duewatch", TRACEPARENT, registry_mode))
        assert message.value == body
        assert {
            k: v for k, v in ours.items() if k.startswith("ce_") or k == "content-type"
        } == message.headers


def test_the_sdk_bindings_read_our_headers() -> None:
    from cloudevents.core.bindings import kafka
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.v1.kafka import KafkaMessage as LegacyMessage
    from cloudevents.v1.kafka import from_binary as legacy_from_binary

    for topic, value in _samples_per_topic():
        body = codec.encode(names.TOPIC_RECORD[topic], value)
        ours = dict(headers.output_headers(topic, value, "duewatch"))
        key = value[headers.OUTPUT_EVENTS[topic].subject_field].encode()
        event = kafka.from_binary(kafka.KafkaMessage(headers=ours, key=key, value=body), JSONFormat())
        expected = headers.cloudevent_attributes(topic, value, "duewatch")
        got = event.get_attributes()
        for attr, want in expected.items():
            assert got[attr] == want, (topic, attr)
        assert got["time"].utcoffset() == timedelta(0) and got["time"] == expected["time"].astimezone(UTC)
        assert event.get_data() == body
        # the SDK's older (v1) API, which most code in the wild still uses
        legacy = legacy_from_binary(LegacyMessage(ours, key, body), data_unmarshaller=lambda b: b)
        assert legacy["id"] == expected["id"] and legacy["type"] == expected["type"]
        assert legacy["datacontenttype"] == "application/avro" and legacy.get_data() == body


# --------------------------------------------------------------------------- framing


def test_framing_round_trip_and_layout() -> None:
    body = codec.encode("Tick", {"as_of": datetime(2026, 3, 16, tzinfo=UTC)})
    data = framing.frame(258, body)
    assert data[:5] == b"\x00\x00\x00\x01\x02" and data[5:] == body
    assert framing.framed(data)
    schema_id, rest = framing.unframe(data)
    assert schema_id == 258 and bytes(rest) == body
    assert framing.unframe(bytearray(data))[0] == 258
    assert framing.frame(0x7FFFFFFF, b"")[:5] == b"\x00\x7f\xff\xff\xff"


@pytest.mark.parametrize("data", [None, b"", b"\x00", b"\x00\x00\x00\x01", b"\x02\x00\x00\x00\x01x"])
def test_values_that_are_not_framed(data) -> None:
    assert not framing.framed(data)
    if data is not None:
        with pytest.raises(ValueError):
            framing.unframe(data)


@pytest.mark.parametrize("schema_id", [-1, 2**31])
def test_schema_ids_out_of_range_are_refused(schema_id: int) -> None:
    with pytest.raises(ValueError):
        framing.frame(schema_id, b"")


@pytest.mark.parametrize("name", ["LoanSchedule", "Repayment", "Dispute"])
def test_valid_plain_inputs_never_look_framed(name: str) -> None:
    for sample in SAMPLES[name]:
        assert not framing.framed(codec.encode(name, codec.from_json(name, sample)))


def test_the_registry_reasons_are_dead_letter_reasons() -> None:
    assert {"UNKNOWN_SCHEMA", "SCHEMA_MISMATCH"} <= errors.REASONS
    assert {"UNKNOWN_SCHEMA", "SCHEMA_MISMATCH"} <= codec.DECODE_REASONS
    errors.InvalidRecord(errors.UNKNOWN_SCHEMA, "schema id 7 is not in the registry")
