"""The generated Avro writers (streams/contracts/avrowriter.py) write fastavro's bytes.

Values are generated from each schema: plain native values with edge cases (int and long
bounds, varint length steps, empty and non-ASCII strings, instants at and before the epoch in
several zones and offsets, every union branch, empty and longer arrays and maps), the same with
naive instants, and values with odd parts (a bool for an int, a tuple for an array, a missing or
extra field, tuple notation for a union, numbers out of range, wrong types...). The reference is
fastavro's ``schemaless_writer`` and, for naive instants, the codec's check."""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from functools import cache
from io import BytesIO
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.contracts import avrowriter, codec
from streams.contracts.codec import EncodeError

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ZONES = (
    UTC,
    timezone(timedelta(hours=8)),
    timezone(-timedelta(hours=9, minutes=30)),
    timezone(timedelta(hours=5, seconds=12, microseconds=345678)),  # sub-minute offsets exist
    ZoneInfo("Asia/Shanghai"),
    ZoneInfo("America/New_York"),  # a fold and a gap every year
    ZoneInfo("Australia/Lord_Howe"),  # a half-hour DST shift
)
#: where a zig-zag varint grows a byte (and the first 14-bit group the writer's tables stop at)
STEPS = sorted({s * b + d for b in (1 << k for k in range(0, 63, 7)) for s in (1, -1) for d in (-1, 0, 1)})
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


class OddStr(str):
    pass


class OddInt(int):
    pass


class OddList(list):
    pass


class OddDatetime(datetime):
    pass


class NoOffset(tzinfo):
    """A tzinfo that is not one: ``utcoffset`` is None (Python treats the datetime as naive)."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None


# --------------------------------------------------------------------------- values from a schema
#
# A strategy gives (value, naive): naive when the value holds a naive datetime where an instant
# goes (the codec refuses those before writing).


def _kind(schema: Any, named: dict[str, Any]) -> tuple[str, Any]:
    if isinstance(schema, str):
        return _kind(named[schema], named) if schema in named else (schema, schema)
    if isinstance(schema, list):
        return "union", schema
    logical = schema.get("logicalType")
    if logical is not None:
        return logical, schema
    return schema["type"], schema


def _plain(st_: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, bool]]:
    return st_.map(lambda v: (v, False))


class Values:
    """Strategies of values of a parsed schema. ``odd``: a part now and then is an odd value
    (fastavro may take it or refuse it); ``naive``: an instant now and then is naive."""

    def __init__(self, schema: dict[str, Any], *, odd: bool = False, naive: bool = False) -> None:
        self.named = schema.get("__named_schemas", {})
        self.odd = odd
        self.naive = naive
        # about one part in a record's 2 x parts is odd, so that fastavro still takes many odd records
        self.one_in = 2 * self.parts(schema)

    def parts(self, schema: Any) -> int:
        kind, schema = _kind(schema, self.named)
        if kind == "record":
            return sum(self.parts(f["type"]) for f in schema["fields"])
        if kind in ("array", "map"):
            return 1 + self.parts(schema["items" if kind == "array" else "values"])
        return 1

    def of(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        kind, schema = _kind(schema, self.named)
        plain = getattr(self, "plain_" + kind.replace("-", "_"))(schema)
        if not self.odd:
            return plain
        odd = getattr(self, "odd_" + kind.replace("-", "_"))(schema)
        return st.integers(1, self.one_in).flatmap(lambda i: odd if i == 1 else plain)

    # ---- plain values

    def plain_string(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        edges = st.sampled_from(["", "é", "日本語", "😀 x", "a" * 64, "b" * 200, "c" * 9000])
        return _plain(st.one_of(st.text(max_size=20), edges))

    def plain_int(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        edges = st.sampled_from([s for s in STEPS if INT_MIN <= s <= INT_MAX] + [INT_MIN, INT_MAX])
        return _plain(st.one_of(st.integers(INT_MIN, INT_MAX), edges))

    def plain_long(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        edges = st.sampled_from(STEPS + [LONG_MIN, LONG_MAX])
        return _plain(st.one_of(st.integers(LONG_MIN, LONG_MAX), edges))

    def plain_boolean(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        return _plain(st.booleans())

    def plain_enum(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        return _plain(st.sampled_from(schema["symbols"]))

    def plain_date(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        edges = st.sampled_from([date(1970, 1, 1), date(1969, 12, 31), date.min, date.max, date(2026, 3, 1)])
        return _plain(st.one_of(st.dates(), edges))

    def plain_timestamp_micros(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        aware = st.datetimes(
            min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.sampled_from(ZONES)
        )
        us = timedelta(microseconds=1)
        edges = st.sampled_from(
            [EPOCH, EPOCH - us, EPOCH + us, EPOCH.astimezone(ZONES[2]) - us, EPOCH - 7 * us]
        )
        instants = _plain(st.one_of(aware, edges))
        if not self.naive:
            return instants
        naive = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
        return st.one_of(instants, naive.map(lambda v: (v, True)))

    def plain_union(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        return st.one_of(*(self.of(branch) for branch in schema))

    def plain_null(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        return st.just((None, False))

    def plain_array(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        items = st.lists(self.of(schema["items"]), max_size=4)
        return items.map(lambda xs: ([x for x, _ in xs], any(n for _, n in xs)))

    def plain_map(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        items = st.dictionaries(st.text(max_size=8), self.of(schema["values"]), max_size=4)
        return items.map(lambda d: ({k: x for k, (x, _) in d.items()}, any(n for _, n in d.values())))

    def plain_record(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        fields = st.fixed_dictionaries({f["name"]: self.of(f["type"]) for f in schema["fields"]})
        record = fields.map(lambda d: ({k: x for k, (x, _) in d.items()}, any(n for _, n in d.values())))
        if not self.odd:
            return record
        return st.one_of(record, fields.flatmap(lambda d: self.odd_record_shape(schema, d)))

    # ---- odd values (fastavro takes some: a bool for an int, a tuple for an array, ...)

    def odd_string(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        return _plain(st.sampled_from([OddStr("odd"), b"bytes", None, 5, "\ud800", 1.5]))

    def odd_int(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        odd = [True, False, INT_MIN - 1, INT_MAX + 1, LONG_MAX, LONG_MAX + 1, 1.0, None, "1", OddInt(7)]
        return _plain(st.sampled_from(odd))

    def odd_long(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        return _plain(st.sampled_from([True, LONG_MIN - 1, LONG_MAX + 1, 2.5, None, OddInt(-3), "9"]))

    def odd_boolean(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        return _plain(st.sampled_from([0, 1, None, "yes", "", 2.0]))

    def odd_enum(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        return _plain(
            st.sampled_from(["NOPE", None, OddStr(schema["symbols"][-1]), 3, schema["symbols"][0].lower()])
        )

    def odd_date(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        odd = [
            datetime(2026, 3, 1, 23, 30),  # a date field takes a datetime's date
            datetime(2026, 3, 1, 23, 30, tzinfo=ZONES[1]),
            "2026-03-01",
            "not a date",
            0,
            -1,
            INT_MAX,
            INT_MAX + 1,
            LONG_MIN - 1,
            None,
            True,
        ]
        return _plain(st.one_of(st.sampled_from(odd), st.integers(-(10**6), 3 * 10**6)))

    def odd_timestamp_micros(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        odd = [
            OddDatetime(2026, 3, 1, 12, tzinfo=UTC),
            datetime(2026, 3, 1, 12, tzinfo=NoOffset()),
            date(2026, 3, 1),
            "2026-03-01T00:00:00+00:00",
            LONG_MIN,
            LONG_MAX,
            LONG_MIN - 1,
            LONG_MAX + 1,
            True,
            1.5,
            None,
        ]
        return _plain(st.one_of(st.sampled_from(odd), st.integers(-(2**62), 2**62)))

    def odd_union(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        # fastavro's tuple notation: (branch name, value); a name not in the union is refused
        tagged = []
        for branch in schema:
            kind, resolved = _kind(branch, self.named)
            name = (
                resolved["name"]
                if kind == "enum"
                else (resolved if isinstance(resolved, str) else resolved["type"])
            )
            tagged.append(self.of(branch).map(lambda v, name=name: ((name, v[0]), v[1])))
        return st.one_of(*tagged, _plain(st.sampled_from([("boolean", True), [], 1.5, b"x"])))

    def odd_null(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        return _plain(st.just(0))

    def odd_array(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        items = st.lists(self.of(schema["items"]), max_size=3)
        shapes = st.sampled_from([tuple, OddList, lambda xs: "ab", lambda xs: None, lambda xs: {0: xs}])
        return st.tuples(items, shapes).map(lambda t: (t[1]([x for x, _ in t[0]]), False))

    def odd_map(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        values = st.lists(self.of(schema["values"]), max_size=3)
        shapes = st.sampled_from(
            [
                lambda xs: OrderedDict((str(i), x) for i, x in enumerate(xs)),
                lambda xs: {i: x for i, x in enumerate(xs)},
                lambda xs: MappingProxyType({str(i): x for i, x in enumerate(xs)}),
                lambda xs: [],
                lambda xs: None,
            ]
        )
        return st.tuples(values, shapes).map(lambda t: (t[1]([x for x, _ in t[0]]), False))

    def odd_record(self, schema: Any) -> st.SearchStrategy[tuple[Any, bool]]:
        return _plain(st.sampled_from([None, [], "record", 0]))

    def odd_record_shape(
        self, schema: Any, fields: dict[str, tuple[Any, bool]]
    ) -> st.SearchStrategy[tuple[Any, bool]]:
        """A record with every field, one missing (defaulted or refused), an extra key, or as an
        OrderedDict or a read-only mapping."""
        names = list(fields)

        def build(drop: str | None, extra: bool, shape: Any) -> tuple[Any, bool]:
            kept = {k: v for k, v in fields.items() if k != drop}
            value: Any = {k: x for k, (x, _) in kept.items()}
            if extra:
                value["not_in_the_schema"] = object()
            return shape(value), any(n for _, n in kept.values())

        return st.builds(
            build,
            st.one_of(st.none(), st.sampled_from(names)),
            st.booleans(),
            st.sampled_from([dict, dict, dict, OrderedDict, MappingProxyType]),
        )


# --------------------------------------------------------------------------- references


def fastavro_bytes(schema: dict[str, Any], value: Any) -> bytes | None:
    fo = BytesIO()
    try:
        schemaless_writer(fo, schema, value)
    except Exception:  # noqa: BLE001 - any refusal
        return None
    return fo.getvalue()


@cache
def _writer(name: str, version: int | None) -> Any:
    write = avrowriter.record_writer(codec.load_schema(name, version))
    assert write is not None
    return write


def generated(name: str, version: int | None, value: Any) -> bytes | None:
    write = _writer(name, version)
    try:
        return write(value)
    except Exception:  # noqa: BLE001 - declined: the codec asks fastavro
        return None


def declines(write: Any, value: Any) -> bool:
    try:
        write(value)
    except Exception:  # noqa: BLE001
        return True
    return False


def in_utc(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, dict):
        return {k: in_utc(v) for k, v in value.items()}
    if isinstance(value, list):
        return [in_utc(v) for v in value]
    return value


#: every current schema, and each released version that differs from it
SCHEMAS = [(name, None) for name in codec.RECORD_TYPES] + [
    (name, v)
    for name in codec.RECORD_TYPES
    for v in codec.released_versions(name)
    if codec._raw_schema(name, v) != codec._raw_schema(name, None)
]


@cache
def values(name: str, version: int | None, *, odd: bool = False, naive: bool = False) -> Any:
    """The strategy of values of a record type's schema (built once: it is a large tree)."""
    schema = codec.load_schema(name, version)
    return Values(schema, odd=odd, naive=naive).of(schema)


def _schema_id(case: tuple[str, int | None]) -> str:
    return case[0] if case[1] is None else f"{case[0]}-v{case[1]}"


# --------------------------------------------------------------------------- properties


def test_every_record_type_gets_a_generated_writer() -> None:
    for name, version in SCHEMAS:
        assert avrowriter.record_writer(codec.load_schema(name, version)) is not None, (name, version)


@pytest.mark.parametrize("case", SCHEMAS, ids=_schema_id)
@SETTINGS
@given(data=st.data())
def test_plain_values_are_written_as_fastavro_writes_them(
    case: tuple[str, int | None], data: st.DataObject
) -> None:
    name, version = case
    schema = codec.load_schema(name, version)
    value, _ = data.draw(values(name, version))
    expected = fastavro_bytes(schema, value)
    assert expected is not None
    assert generated(name, version, value) == expected  # written by the generated writer itself
    if version is None:
        assert codec.encode(name, value) == expected
    assert schemaless_reader(BytesIO(expected), schema, None) == in_utc(value)


@pytest.mark.parametrize("name", codec.RECORD_TYPES)
@SETTINGS
@given(data=st.data())
def test_naive_instants_are_refused_as_before(name: str, data: st.DataObject) -> None:
    schema = codec.load_schema(name)
    value, naive = data.draw(values(name, None, naive=True))
    if not naive:
        assert codec.encode(name, value) == fastavro_bytes(schema, value)
        return
    assert generated(name, None, value) is None
    with pytest.raises(EncodeError) as refused:
        codec.encode(name, value)
    assert refused.value.reason == "INVALID_FIELD"
    assert "naive datetime" in refused.value.detail and refused.value.detail.startswith(f"{name}.")


@pytest.mark.parametrize("name", codec.RECORD_TYPES)
@SETTINGS
@given(data=st.data())
def test_odd_values_get_fastavro_bytes_or_unencodable(name: str, data: st.DataObject) -> None:
    schema = codec.load_schema(name)
    value, naive = data.draw(values(name, None, odd=True))
    assert not naive
    expected = fastavro_bytes(schema, value)
    fast = generated(name, None, value)
    if fast is not None:
        assert fast == expected
    if expected is None:
        with pytest.raises(EncodeError) as refused:
            codec.encode(name, value)
        assert refused.value.reason == "UNENCODABLE"
    else:
        assert codec.encode(name, value) == expected


# --------------------------------------------------------------------------- examples


def test_varints_at_every_length_step() -> None:
    schema = parse_schema(
        {
            "type": "record",
            "name": "Numbers",
            "fields": [{"name": "long", "type": "long"}, {"name": "int", "type": ["null", "int"]}],
        }
    )
    write = avrowriter.record_writer(schema)
    assert write is not None
    for n in STEPS + [LONG_MIN, LONG_MAX]:
        small = n if INT_MIN <= n <= INT_MAX else None
        value = {"long": n, "int": small}
        assert write(value) == fastavro_bytes(schema, value), n
    for refused in (LONG_MIN - 1, LONG_MAX + 1, 2**64, -(2**64)):
        assert declines(write, {"long": refused, "int": None})
        assert fastavro_bytes(schema, {"long": refused, "int": None}) is None
    for beyond in (INT_MIN - 1, INT_MAX + 1):  # a union's int branch takes 32 bits only
        assert declines(write, {"long": 0, "int": beyond})
        assert fastavro_bytes(schema, {"long": 0, "int": beyond}) is None


def test_a_plain_int_beyond_32_bits_is_left_to_fastavro_which_writes_it() -> None:
    value = codec.from_json("CollectionTask", {**_collection_task(), "dpd": 5})
    value["dpd"] = 2**40
    schema = codec.load_schema("CollectionTask")
    assert generated("CollectionTask", None, value) is None
    assert codec.encode("CollectionTask", value) == fastavro_bytes(schema, value)


def test_instants_in_any_zone_are_the_same_microsecond() -> None:
    value = codec.from_json("Tick", {"as_of": "2026-03-08T01:59:59.999999-05:00"})
    for zone in ZONES:
        moved = {"as_of": value["as_of"].astimezone(zone)}
        assert (
            codec.encode("Tick", moved)
            == codec.encode("Tick", value)
            == fastavro_bytes(codec.load_schema("Tick"), moved)
        )
    before = {"as_of": EPOCH - timedelta(microseconds=1)}
    assert codec.encode("Tick", before) == b"\x01"  # -1 zig-zagged


def test_a_record_the_check_cannot_walk_is_unencodable() -> None:
    """An array of records holding a None: the naive-datetime check used to fail on it with a
    bare AttributeError instead of the codec's EncodeError."""
    share = codec.from_json(
        "PartnerShare",
        {
            "share_id": "s",
            "partner_id": "p",
            "mode": "REALTIME",
            "as_of": "2026-03-01T00:00:00Z",
            "items": [],
        },
    )
    share["items"] = [None]
    with pytest.raises(EncodeError) as refused:
        codec.encode("PartnerShare", share)
    assert refused.value.reason == "UNENCODABLE"


@pytest.mark.parametrize(
    "field",
    [
        {"name": "d", "type": "double"},
        {"name": "f", "type": {"type": "fixed", "name": "F", "size": 2}},
        {"name": "b", "type": "bytes"},
        {"name": "m", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "x", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}},
        {"name": "u", "type": ["null", "string", "long"]},
        {"name": "r", "type": ["null", {"type": "record", "name": "Inner", "fields": []}]},
        {"name": "s", "type": {"type": "array", "items": "Node"}},  # recursive
    ],
)
def test_constructs_not_generated_leave_the_record_to_fastavro(field: dict[str, Any]) -> None:
    schema = parse_schema(
        {"type": "record", "name": "Node", "fields": [{"name": "id", "type": "int"}, field]}
    )
    assert avrowriter.record_writer(schema) is None


def test_the_codec_writes_with_fastavro_when_there_is_no_generated_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    value = codec.from_json("CollectionTask", _collection_task())
    generated_bytes = codec.encode("CollectionTask", value)
    monkeypatch.setattr(codec._codec("CollectionTask"), "write", None)
    assert codec.encode("CollectionTask", value) == generated_bytes
    with pytest.raises(EncodeError):
        codec.encode("CollectionTask", dict(value, dpd="5"))


def _collection_task() -> dict[str, Any]:
    return {
        "task_id": "t1",
        "loan_id": "L1",
        "borrower_id": "B1",
        "action": "PHONE",
        "reason": "BUCKET_CHANGED",
        "bucket": "M2",
        "dpd": 35,
        "total_overdue": 123_456,
        "currency": "CNY",
        "opened_at": "2026-03-01T08:00:00+08:00",
        "contact_window": {"start": "09:00", "end": "21:00", "timezone": "Asia/Shanghai"},
        "max_attempts_per_day": 3,
        "source_event_id": None,
    }
