"""The Avro contracts (schemas/*.avsc) and streams.contracts.codec."""

from __future__ import annotations

import copy
import io
import json
import pickle
import random
import shutil
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import fastavro
import pytest

from streams.contracts import codec
from streams.contracts.codec import DecodeError, EncodeError, decode, encode, from_json, load_schema, to_json
from tests.support.samples import SAMPLES, SCHEMAS

ALL_SAMPLES = [(name, i) for name in codec.RECORD_TYPES for i in range(len(SAMPLES[name]))]
SAMPLE_IDS = [f"{name}-{i}" for name, i in ALL_SAMPLES]


def _walk_fields(schema, seen=None):
    """Yield (record name, field) for every field of every record reachable from ``schema``."""
    seen = set() if seen is None else seen
    if isinstance(schema, list):
        for branch in schema:
            yield from _walk_fields(branch, seen)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record" and schema["name"] not in seen:
            seen.add(schema["name"])
            for field in schema["fields"]:
                yield schema["name"], field
                yield from _walk_fields(field["type"], seen)
        elif kind == "array":
            yield from _walk_fields(schema["items"], seen)
        elif kind == "map":
            yield from _walk_fields(schema["values"], seen)


def _named_types(schema) -> list[dict]:
    out = []

    def walk(s):
        if isinstance(s, list):
            for b in s:
                walk(b)
        elif isinstance(s, dict):
            if s.get("type") in ("record", "enum"):
                out.append(s)
            for key in ("fields",):
                for f in s.get(key, []):
                    walk(f["type"])
            for key in ("items", "values"):
                if key in s:
                    walk(s[key])

    walk(schema)
    return out


def _versions() -> list[int]:
    return sorted(int(d.name[1:]) for d in (SCHEMAS / "released").iterdir() if d.name.startswith("v"))


# --------------------------------------------------------------------------- the schemas


def test_record_types_and_topics():
    assert set(codec.TOPIC_RECORD.values()) == set(codec.RECORD_TYPES)
    assert codec.TOPIC_RECORD["loan.repayments"] == "Repayment"
    assert codec.TOPIC_RECORD["collections.tasks"] == "CollectionTask"
    assert sorted(p.stem for p in SCHEMAS.glob("*.avsc")) == sorted(codec.RECORD_TYPES)
    assert 1 in _versions()


@pytest.mark.parametrize("name", codec.RECORD_TYPES)
def test_every_schema_parses_and_is_documented(name):
    for version in [None, *codec.released_versions(name)]:  # a release holds the types it changed
        path = (
            SCHEMAS / f"{name}.avsc"
            if version is None
            else SCHEMAS / "released" / f"v{version}" / f"{name}.avsc"
        )
        raw = json.loads(path.read_text(encoding="utf-8"))
        fastavro.parse_schema(raw)  # raises on an invalid schema
        assert raw["namespace"] == "duewatch" and raw["name"] == name
        for named in _named_types(raw):
            assert named.get("doc"), f"{path.name}: {named['name']} has no doc"
            assert named.get("namespace", "duewatch") == "duewatch"
        fields = list(_walk_fields(raw))
        assert fields
        for record, field in fields:
            assert field.get("doc"), f"{path.name}: {record}.{field['name']} has no doc"
            ftype = field["type"]
            if isinstance(ftype, list):
                # unions put null first and default to null
                assert ftype[0] == "null" and field.get("default", "absent") is None, (
                    f"{record}.{field['name']}"
                )
    assert codec.load_schema(name) is codec.load_schema(name)  # parsed once
    assert codec.load_schema(name, 1) is codec.load_schema(name, version=1)


def test_released_v1_is_complete():
    for name in codec.RECORD_TYPES:
        assert (SCHEMAS / "released" / "v1" / f"{name}.avsc").is_file()
        assert 1 in codec.released_versions(name)


def test_input_enum_like_fields_are_strings_and_defaults_match_spec():
    schedule = {f["name"]: f for f in json.loads((SCHEMAS / "LoanSchedule.avsc").read_text())["fields"]}
    for field in ("status", "business_day_convention"):
        assert schedule[field]["type"] == "string"
    defaults = {k: v.get("default", "<required>") for k, v in schedule.items()}
    assert defaults["timezone"] == "Asia/Shanghai"
    assert defaults["grace_days"] == 0 and defaults["tolerance"] == 0
    assert defaults["penalty_rate_bps"] == 0 and defaults["late_fee"] == 0
    assert defaults["business_day_convention"] == "NONE"
    assert defaults["calendar"] is None and defaults["partners"] == []
    assert defaults["loan_id"] == "<required>" and defaults["contact"] == "<required>"
    contact = schedule["contact"]["type"]
    assert {f["name"]: f["type"] for f in contact["fields"]} == {
        "locale": "string",
        "channels": {"type": "array", "items": "string"},
    }
    repayment = {f["name"]: f for f in json.loads((SCHEMAS / "Repayment.avsc").read_text())["fields"]}
    assert repayment["kind"]["type"] == "string" and repayment["reverses"]["default"] is None
    dispute = {f["name"]: f for f in json.loads((SCHEMAS / "Dispute.avsc").read_text())["fields"]}
    assert dispute["status"]["type"] == "string" and dispute["note"]["default"] is None


def test_overdue_event_has_every_spec_field():
    fields = {f["name"]: f["type"] for f in json.loads((SCHEMAS / "OverdueEvent.avsc").read_text())["fields"]}
    spec = (
        "event_id type loan_id borrower_id as_of as_of_date dpd bucket previous_bucket oldest_past_due_seq "
        "oldest_past_due_date first_delinquency_date overdue_installments overdue_principal overdue_interest "
        "overdue_fee total_overdue penalty_accrued late_fees currency schedule_revision loan_status timezone "
        "contact partners due_seq due_date amount_due retracts detected_at"
    ).split()
    assert set(spec) <= set(fields)
    for nullable in (
        "oldest_past_due_seq",
        "oldest_past_due_date",
        "first_delinquency_date",
        "due_seq",
        "due_date",
        "amount_due",
        "retracts",
    ):
        assert isinstance(fields[nullable], list) and fields[nullable][0] == "null", nullable


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(("name", "index"), ALL_SAMPLES, ids=SAMPLE_IDS)
def test_encode_decode_round_trip(name, index):
    native = from_json(name, SAMPLES[name][index])
    data = encode(name, native)
    assert isinstance(data, bytes)
    back = decode(name, data)
    assert back == native
    # instants come back tz-aware in UTC
    for record, field in _walk_fields(json.loads((SCHEMAS / f"{name}.avsc").read_text())):
        if field["name"] in back and isinstance(back[field["name"]], datetime):
            assert back[field["name"]].utcoffset() == timedelta(0), (record, field["name"])
    assert decode(name, bytearray(data)) == native
    assert decode(name, memoryview(data)) == native
    # a released version whose schema is the current one names the same writer (a release
    # in progress has none: the current schema then differs from every released one)
    for version in codec.released_versions(name):
        if fastavro.schema.to_parsing_canonical_form(load_schema(name, version)) == (
            fastavro.schema.to_parsing_canonical_form(load_schema(name))
        ):
            assert decode(name, data, writer_version=version) == native


@pytest.mark.parametrize(("name", "index"), ALL_SAMPLES, ids=SAMPLE_IDS)
def test_json_round_trip(name, index):
    obj = SAMPLES[name][index]
    native = from_json(name, obj)
    js = to_json(name, native)
    assert json.loads(json.dumps(js)) == js  # plain JSON types only
    again = from_json(name, js)
    assert again == native
    assert to_json(name, again) == js
    # every field of the schema is written, defaults included
    fields = [f["name"] for f in json.loads((SCHEMAS / f"{name}.avsc").read_text())["fields"]]
    assert list(js) == fields
    # given values survive unchanged, compared as instants where they are instants
    for key, value in obj.items():
        if isinstance(value, str) and key in (
            "as_of",
            "paid_at",
            "effective_at",
            "at",
            "detected_at",
            "created_at",
            "not_before",
            "released_at",
            "opened_at",
        ):
            assert datetime.fromisoformat(js[key]) == datetime.fromisoformat(value)
        elif key not in ("items",):
            assert js[key] == value, key


def test_from_json_applies_schema_defaults():
    minimal = {
        "loan_id": "L1",
        "borrower_id": "B1",
        "revision": 1,
        "effective_at": "2026-01-01T00:00:00+08:00",
        "currency": "CNY",
        "status": "ACTIVE",
        "installments": [{"seq": 1, "due_date": "2026-02-01", "principal": 1, "interest": 0, "fee": 0}],
        "contact": {"locale": "zh-CN", "channels": []},
    }
    a = from_json("LoanSchedule", minimal)
    assert a["timezone"] == "Asia/Shanghai"
    assert (a["grace_days"], a["tolerance"], a["penalty_rate_bps"], a["late_fee"]) == (0, 0, 0, 0)
    assert a["business_day_convention"] == "NONE" and a["calendar"] is None and a["partners"] == []
    b = from_json("LoanSchedule", minimal)
    a["partners"].append("X")
    assert b["partners"] == []  # defaults are fresh values, not shared
    rep = from_json(
        "Repayment",
        {
            "payment_id": "p",
            "loan_id": "L1",
            "amount": 5,
            "currency": "CNY",
            "paid_at": "2026-01-01T00:00:00Z",
            "channel": "app",
            "kind": "PAYMENT",
        },
    )
    assert rep["reverses"] is None
    assert (
        from_json(
            "Dispute", {"dispute_id": "d", "loan_id": "L", "status": "OPEN", "at": "2026-01-01T00:00:00Z"}
        )["note"]
        is None
    )


def test_unknown_input_enum_values_still_decode():
    """Input enum-like fields are strings: the core, not Avro, rejects an unknown value."""
    value = from_json(
        "LoanSchedule",
        dict(
            SAMPLES["LoanSchedule"][0],
            status="FROZEN",
            business_day_convention="MODIFIED_FOLLOWING",
            contact={"locale": "fr", "channels": ["pigeon"]},
        ),
    )
    back = decode("LoanSchedule", encode("LoanSchedule", value))
    assert back["status"] == "FROZEN" and back["contact"]["channels"] == ["pigeon"]
    rep = from_json("Repayment", dict(SAMPLES["Repayment"][0], kind="CHARGEBACK"))
    assert decode("Repayment", encode("Repayment", rep))["kind"] == "CHARGEBACK"


# --------------------------------------------------------------------------- evolution


@pytest.mark.parametrize(
    ("version", "name", "index"),
    [(v, n, i) for v in _versions() for n, i in ALL_SAMPLES if v in codec.released_versions(n)],
    ids=[f"v{v}-{n}-{i}" for v in _versions() for n, i in ALL_SAMPLES if v in codec.released_versions(n)],
)
def test_data_written_with_released_version_is_read_by_current(version, name, index):
    writer = fastavro.parse_schema(
        json.loads((SCHEMAS / "released" / f"v{version}" / f"{name}.avsc").read_text())
    )
    native = from_json(name, SAMPLES[name][index])
    fo = io.BytesIO()
    fastavro.schemaless_writer(fo, writer, native)
    data = fo.getvalue()
    resolved = fastavro.schemaless_reader(io.BytesIO(data), writer, load_schema(name))
    assert decode(name, data, writer_version=version) == resolved
    assert decode(name, data) == resolved
    for key, value in native.items():
        if key in resolved:
            assert resolved[key] == value


@pytest.fixture
def evolved_schemas(tmp_path, monkeypatch):
    """A copy of schemas/ whose current Repayment has a new optional field at the end."""
    root = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, root)
    raw = json.loads((root / "Repayment.avsc").read_text())
    raw["fields"].append(
        {
            "name": "reference",
            "type": ["null", "string"],
            "default": None,
            "doc": "Bank reference (added in v2).",
        }
    )
    (root / "Repayment.avsc").write_text(json.dumps(raw))

    def reset():
        codec._raw_schema.cache_clear()
        codec._parsed_schema.cache_clear()
        codec.released_versions.cache_clear()
        codec._CODECS.clear()

    reset()
    monkeypatch.setattr(codec, "SCHEMA_DIR", root)
    yield root
    monkeypatch.undo()
    reset()


def test_new_optional_field_reads_old_data(evolved_schemas):
    native = from_json("Repayment", SAMPLES["Repayment"][0])
    assert native["reference"] is None
    old = io.BytesIO()
    fastavro.schemaless_writer(old, load_schema("Repayment", 1), native)
    old_bytes = old.getvalue()
    assert decode("Repayment", old_bytes) == native  # falls back to v1, resolves to current
    assert decode("Repayment", old_bytes, writer_version=1) == native
    new_bytes = encode("Repayment", dict(native, reference="REF-1"))
    assert decode("Repayment", new_bytes)["reference"] == "REF-1"
    with pytest.raises(DecodeError) as err:
        decode("Repayment", new_bytes, writer_version=1)  # v1 sees trailing bytes
    assert err.value.reason == "UNDECODABLE"
    with pytest.raises(DecodeError):
        decode("Repayment", b"\x02")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", codec.RECORD_TYPES)
def test_garbage_bytes_raise_decode_error(name):
    good = encode(name, from_json(name, SAMPLES[name][0]))
    bad = [b"", b"\xff" * 11, b"\x80" * 20, good[:-1], good + b"\x00", b"\x01\x02\x03", None]
    rng = random.Random(7)
    bad += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60))) for _ in range(300)]
    for data in bad:
        # Avro itself is the oracle: bytes that are exactly one record of the current schema or
        # of a released version (e.g. 8 random bytes make a Tick; the current record less a
        # trailing optional field is a record of the version before) decode to what schema
        # resolution gives; anything else is a DecodeError.
        expected = None if data is None else _readable_as(name, data)
        if expected is None:
            with pytest.raises(DecodeError) as e:
                decode(name, data)
            assert e.value.reason == "UNDECODABLE" and e.value.reason in codec.DECODE_REASONS
            assert name in e.value.detail
        else:
            assert decode(name, data) == expected
    for data in bad[:7]:
        if data is None or _readable_as(name, data) is None:
            with pytest.raises(DecodeError):
                decode(name, data)


def _readable_as(name: str, data: bytes) -> dict | None:
    """What Avro schema resolution makes of ``data`` when it is exactly one record written with
    the current schema or a released version (in that order), else None."""
    reader = load_schema(name)
    for writer in [reader, *(load_schema(name, v) for v in reversed(codec.released_versions(name)))]:
        fo = io.BytesIO(data)
        try:
            record = fastavro.schemaless_reader(fo, writer, reader)
        except Exception:  # noqa: BLE001 - not a record of this writer
            continue
        if fo.tell() == len(data):
            return record
    return None


def test_decode_error_details():
    data = encode("Repayment", from_json("Repayment", SAMPLES["Repayment"][0]))
    with pytest.raises(DecodeError, match="trailing"):
        decode("Repayment", data + b"\x00\x00")
    with pytest.raises(DecodeError, match="truncated"):
        decode("Repayment", data[:5])
    err = DecodeError("UNDECODABLE", "x")
    again = pickle.loads(pickle.dumps(err))
    assert (again.reason, again.detail) == ("UNDECODABLE", "x")
    assert isinstance(err, ValueError)


def _schedule(**changes):
    value = copy.deepcopy(SAMPLES["LoanSchedule"][0])
    value.update(changes)
    return value


@pytest.mark.parametrize(
    ("name", "obj", "reason", "detail"),
    [
        ("LoanSchedule", _schedule(effective_at="2026-03-01T00:00:00"), "INVALID_FIELD", "effective_at"),
        ("Tick", {"as_of": "2026-03-01T00:00:00"}, "INVALID_FIELD", "naive"),
        ("Tick", {"as_of": "2026-03-01"}, "INVALID_FIELD", "as_of"),
        ("Tick", {"as_of": "yesterday"}, "INVALID_FIELD", "as_of"),
        ("Tick", {"as_of": 1772323200}, "INVALID_FIELD", "as_of"),
        ("Tick", {}, "MISSING_FIELD", "as_of"),
        ("Tick", {"as_of": "2026-03-01T00:00:00Z", "at": "x"}, "UNKNOWN_FIELD", "at"),
        (
            "LoanSchedule",
            {k: v for k, v in _schedule().items() if k != "currency"},
            "MISSING_FIELD",
            "currency",
        ),
        ("LoanSchedule", _schedule(contact={"channels": []}), "MISSING_FIELD", "contact.locale"),
        (
            "LoanSchedule",
            _schedule(
                installments=[{"seq": 1, "due_date": "2026-02-30", "principal": 1, "interest": 0, "fee": 0}]
            ),
            "INVALID_FIELD",
            "installments[0].due_date",
        ),
        (
            "LoanSchedule",
            _schedule(
                installments=[{"seq": 1, "due_date": "20260201", "principal": 1, "interest": 0, "fee": 0}]
            ),
            "INVALID_FIELD",
            "installments[0].due_date",
        ),
        (
            "LoanSchedule",
            _schedule(installments=[{"seq": 1, "due_date": "2026-02-01", "interest": 0, "fee": 0}]),
            "MISSING_FIELD",
            "installments[0].principal",
        ),
        ("LoanSchedule", _schedule(revision="1"), "INVALID_FIELD", "revision"),
        ("LoanSchedule", _schedule(revision=2**31), "INVALID_FIELD", "revision"),
        ("LoanSchedule", _schedule(tolerance=1.5), "INVALID_FIELD", "tolerance"),
        ("LoanSchedule", _schedule(tolerance=True), "INVALID_FIELD", "tolerance"),
        ("LoanSchedule", _schedule(partners="P1"), "INVALID_FIELD", "partners"),
        ("LoanSchedule", _schedule(loan_id=None), "INVALID_FIELD", "loan_id"),
        ("LoanSchedule", ["not", "an", "object"], "INVALID_FIELD", "object"),
        ("OverdueEvent", dict(SAMPLES["OverdueEvent"][0], type="OVERDUE_REOPENED"), "INVALID_FIELD", "type"),
        ("Repayment", dict(SAMPLES["Repayment"][0], amount=2**63), "INVALID_FIELD", "amount"),
    ],
)
def test_from_json_errors(name, obj, reason, detail):
    with pytest.raises(DecodeError) as err:
        from_json(name, obj)
    assert err.value.reason == reason
    assert err.value.reason in codec.DECODE_REASONS
    assert detail in err.value.detail
    if reason == "MISSING_FIELD":
        assert err.value.detail == detail


def test_encode_rejects_naive_datetimes_and_bad_values():
    value = from_json("Repayment", SAMPLES["Repayment"][0])
    with pytest.raises(EncodeError) as err:
        encode("Repayment", dict(value, paid_at=datetime(2026, 3, 1, 12, 0)))
    assert err.value.reason == "INVALID_FIELD" and "paid_at" in err.value.detail
    share = from_json("PartnerShare", SAMPLES["PartnerShare"][0])
    share["items"][1]["as_of"] = datetime(2026, 3, 1)
    with pytest.raises(EncodeError, match=r"items\[1\]\.as_of"):
        encode("PartnerShare", share)
    with pytest.raises(EncodeError):
        encode("Repayment", {k: v for k, v in value.items() if k != "amount"})
    with pytest.raises(EncodeError):
        encode("OverdueEvent", dict(from_json("OverdueEvent", SAMPLES["OverdueEvent"][0]), type="NOPE"))
    with pytest.raises(ValueError, match="unknown record type"):
        encode("Loan", value)


# --------------------------------------------------------------------------- time zones in JSON


def test_to_json_writes_instants_in_the_record_time_zone():
    schedule = from_json(
        "LoanSchedule", _schedule(timezone="Asia/Shanghai", effective_at="2026-02-28T16:00:00Z")
    )
    js = to_json("LoanSchedule", schedule)
    assert js["effective_at"] == "2026-03-01T00:00:00+08:00"
    assert datetime.fromisoformat(js["effective_at"]) == datetime(2026, 2, 28, 16, tzinfo=UTC)

    ny = from_json(
        "LoanSchedule", _schedule(timezone="America/New_York", effective_at="2026-03-08T07:30:00Z")
    )
    assert to_json("LoanSchedule", ny)["effective_at"] == "2026-03-08T03:30:00-04:00"  # after the DST change

    event = from_json("OverdueEvent", SAMPLES["OverdueEvent"][1])
    js = to_json("OverdueEvent", event)
    assert js["as_of"] == "2026-04-12T09:00:00+08:00"
    assert js["detected_at"] == "2026-04-12T09:01:00+08:00"
    assert js["due_date"] == "2026-04-15" and js["as_of_date"] == "2026-04-12"
    assert datetime.fromisoformat(js["as_of"]) == event["as_of"]

    tick = from_json("Tick", {"as_of": "2026-03-16T00:00:00+08:00"})
    assert to_json("Tick", tick)["as_of"] == "2026-03-15T16:00:00+00:00"  # no time zone field: UTC
    assert to_json("Tick", tick, tz="Asia/Shanghai")["as_of"] == "2026-03-16T00:00:00+08:00"
    assert to_json("Tick", tick, tz=ZoneInfo("Europe/Berlin"))["as_of"] == "2026-03-15T17:00:00+01:00"

    task = from_json("CollectionTask", SAMPLES["CollectionTask"][0])
    assert (
        to_json("CollectionTask", task)["opened_at"] == "2026-03-16T00:00:00+08:00"
    )  # contact_window.timezone

    share = from_json("PartnerShare", SAMPLES["PartnerShare"][0])
    assert to_json("PartnerShare", share)["items"][0]["as_of"] == "2026-03-15T16:00:00+00:00"

    # an invalid zone (e.g. a dead-lettered schedule) is written in UTC rather than failing
    bad = from_json("LoanSchedule", _schedule(timezone="Mars/Olympus", effective_at="2026-02-28T16:00:00Z"))
    assert to_json("LoanSchedule", bad)["effective_at"] == "2026-02-28T16:00:00+00:00"


def test_native_values_are_accepted_by_from_json_and_ints_by_to_json():
    tick = {"as_of": datetime(2026, 3, 16, tzinfo=ZoneInfo("Asia/Shanghai"))}
    assert from_json("Tick", tick)["as_of"] == datetime(2026, 3, 15, 16, tzinfo=UTC)
    assert to_json("Tick", {"as_of": 0})["as_of"] == "1970-01-01T00:00:00+00:00"
    ev = from_json("OverdueEvent", SAMPLES["OverdueEvent"][0])
    ev["as_of_date"] = (date(2026, 3, 16) - date(1970, 1, 1)).days
    assert to_json("OverdueEvent", ev)["as_of_date"] == "2026-03-16"


def test_unknown_writer_version_is_a_decode_error():
    data = encode("Tick", from_json("Tick", SAMPLES["Tick"][0]))
    for version in (999, "x"):
        with pytest.raises(DecodeError, match="unknown writer version"):
            decode("Tick", data, writer_version=version)
