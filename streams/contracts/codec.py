"""Avro contracts of duewatch: schemas from ``schemas/``, binary encode/decode, the JSON form.

Three forms of a record:

- binary: schemaless Avro (no header, no schema id) as written to Kafka;
- native: what :func:`decode` returns and :func:`encode` takes -- instants as tz-aware
  :class:`~datetime.datetime` (decode gives UTC), dates as :class:`~datetime.date`, money as
  ``int`` minor units, enums as ``str``;
- JSON (SPEC §1, used by the command line): the same field names, instants as ISO-8601
  strings with an offset, dates as ``YYYY-MM-DD``, money as integers.

Every schema is parsed once and kept; the per-record cost of :func:`decode` is one dict
lookup plus fastavro. Anything that cannot be turned into a record raises
:class:`DecodeError` with a short ``reason`` code from :data:`DECODE_REASONS` (what the
dead-letter queue header carries) and a human ``detail``.

Schema evolution (see ``schemas/README.md``): a record is written with the current schema.
Kafka values carry no schema id, so a reader that knows the writer's released version
passes ``writer_version``; without it, data that does not decode with the current schema is
tried against each released version, newest first, and resolved to the current schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import cache, lru_cache
from io import BytesIO
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from .avrowriter import record_writer
from .topics import TOPIC_RECORD

__all__ = [
    "DECODE_REASONS",
    "RECORD_TYPES",
    "SCHEMA_DIR",
    "TOPIC_RECORD",
    "DecodeError",
    "EncodeError",
    "decode",
    "encode",
    "encode_by_fastavro",
    "from_json",
    "load_schema",
    "released_versions",
    "to_json",
]


#: ``schemas/`` sits next to the ``streams`` package (repo root, or the install prefix when
#: the schemas are shipped beside the package).
def _schema_dir() -> Path:
    """``schemas/`` beside the package (a checkout or editable install), else where a wheel puts it."""
    import sys

    beside = Path(__file__).resolve().parents[2] / "schemas"
    if beside.is_dir():
        return beside
    return Path(sys.prefix) / "share" / "duewatch" / "schemas"


SCHEMA_DIR: Path = _schema_dir()
NAMESPACE = "duewatch"

RECORD_TYPES: tuple[str, ...] = (
    "LoanSchedule",
    "Repayment",
    "Tick",
    "Dispute",
    "OverdueEvent",
    "Notification",
    "BureauRecord",
    "PartnerShare",
    "CollectionTask",
)

#: The closed set of :attr:`DecodeError.reason` codes.
#: UNDECODABLE: the bytes are not a record of the type (garbage, truncated, trailing bytes,
#: null value); MISSING_FIELD: a required field is absent (JSON); INVALID_FIELD: a field has
#: the wrong type or form, e.g. an instant without an offset (JSON); UNKNOWN_FIELD: the JSON
#: object has a field the schema does not define (a typo would otherwise be ignored silently).
#: Registry mode adds UNKNOWN_SCHEMA and SCHEMA_MISMATCH (streams.contracts.registry).
DECODE_REASONS: frozenset[str] = frozenset(
    {"UNDECODABLE", "MISSING_FIELD", "INVALID_FIELD", "UNKNOWN_FIELD", "UNKNOWN_SCHEMA", "SCHEMA_MISMATCH"}
)

_UTC = UTC
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_EPOCH_DATE = date(1970, 1, 1)
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


class DecodeError(ValueError):
    """A value that is not a valid record. ``reason`` is one of :data:`DECODE_REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.detail))


class EncodeError(ValueError):
    """A native value that cannot be written with its schema (a bug in the writer).

    ``reason``: UNENCODABLE, INVALID_FIELD (e.g. a naive datetime) or MISSING_FIELD.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.detail))


# --------------------------------------------------------------------------- schemas


def _check_name(name: str) -> None:
    if name not in RECORD_TYPES:
        raise ValueError(f"unknown record type {name!r}; expected one of {', '.join(RECORD_TYPES)}")


def _schema_path(name: str, version: int | None) -> Path:
    if version is None:
        return SCHEMA_DIR / f"{name}.avsc"
    return SCHEMA_DIR / "released" / f"v{int(version)}" / f"{name}.avsc"


@cache
def _raw_schema(name: str, version: int | None) -> dict[str, Any]:
    _check_name(name)
    path = _schema_path(name, version)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        what = "current schema" if version is None else f"released version {version}"
        raise FileNotFoundError(f"{name}: no {what} at {path}") from None
    raw = json.loads(text)
    full = f"{raw.get('namespace', '')}.{raw.get('name')}"
    if raw.get("type") != "record" or full != f"{NAMESPACE}.{name}":
        raise ValueError(f"{path}: expected record {NAMESPACE}.{name}, found {full}")
    return raw


def load_schema(name: str, version: int | None = None) -> dict[str, Any]:
    """The parsed fastavro schema of record type ``name``: the current one from ``schemas/``,
    or released version ``version`` from ``schemas/released/v<version>/``. Parsed once and
    shared: do not modify it."""
    return _parsed_schema(name, None if version is None else int(version))


@cache
def _parsed_schema(name: str, version: int | None) -> dict[str, Any]:
    parsed = parse_schema(_raw_schema(name, version))
    assert isinstance(parsed, dict)
    return parsed


@cache
def released_versions(name: str) -> tuple[int, ...]:
    """The released versions of record type ``name`` present under ``schemas/released``, ascending."""
    _check_name(name)
    base = SCHEMA_DIR / "released"
    found = []
    if base.is_dir():
        for d in base.iterdir():
            if d.name[:1] == "v" and d.name[1:].isdigit() and (d / f"{name}.avsc").is_file():
                found.append(int(d.name[1:]))
    return tuple(sorted(found))


# --------------------------------------------------------------------------- schema walking
#
# A converter is compiled once per schema from the parsed schema. ``_Bad`` carries a field
# path built on the way out (no path strings are built on the success path).


class _Bad(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message
        self.path: list[str] = []  # innermost first


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _resolve(schema: Any, named: Mapping[str, Any]) -> Any:
    if isinstance(schema, str) and schema in named:
        return named[schema]
    return schema


def _logical(schema: Any) -> str | None:
    return schema.get("logicalType") if isinstance(schema, dict) else None


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        t = schema["type"]
        return t if isinstance(t, str) else _kind(t)
    return schema


# ---- JSON -> native


def _from_string(v: Any) -> Any:
    if type(v) is str:
        return v
    raise _Bad("INVALID_FIELD", f"expected a string, got {_type_name(v)}")


def _from_boolean(v: Any) -> Any:
    if type(v) is bool:
        return v
    raise _Bad("INVALID_FIELD", f"expected true or false, got {_type_name(v)}")


def _int_converter(lo: int, hi: int, what: str) -> Callable[[Any], Any]:
    def conv(v: Any) -> Any:
        if type(v) is not int:
            raise _Bad("INVALID_FIELD", f"expected an integer ({what}), got {_type_name(v)}")
        if not lo <= v <= hi:
            raise _Bad("INVALID_FIELD", f"{v} is out of range for {what}")
        return v

    return conv


def _from_double(v: Any) -> Any:
    if type(v) in (int, float):
        return float(v)
    raise _Bad("INVALID_FIELD", f"expected a number, got {_type_name(v)}")


def _from_null(v: Any) -> Any:
    if v is None:
        return None
    raise _Bad("INVALID_FIELD", f"expected null, got {_type_name(v)}")


def _from_instant(v: Any) -> Any:
    if isinstance(v, datetime):
        dt = v
    elif type(v) is str:
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            raise _Bad("INVALID_FIELD", f"{v!r} is not an ISO-8601 instant") from None
    else:
        raise _Bad("INVALID_FIELD", f"expected an ISO-8601 instant string, got {_type_name(v)}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise _Bad("INVALID_FIELD", f"{v!r} is a naive instant: an offset is required (e.g. +08:00)")
    try:
        return dt.astimezone(_UTC)
    except (OverflowError, ValueError):
        raise _Bad("INVALID_FIELD", f"{v!r} is out of range") from None


def _from_date(v: Any) -> Any:
    if isinstance(v, date) and not isinstance(v, datetime):
        return v
    if type(v) is str and _DATE_RE.fullmatch(v):
        try:
            return date.fromisoformat(v)
        except ValueError:
            pass
        raise _Bad("INVALID_FIELD", f"{v!r} is not a valid date")
    raise _Bad("INVALID_FIELD", f"expected a date YYYY-MM-DD, got {v!r}")


def _from_json_converter(schema: Any, named: Mapping[str, Any]) -> Callable[[Any], Any]:
    schema = _resolve(schema, named)
    logical = _logical(schema)
    if logical == "timestamp-micros":
        return _from_instant
    if logical == "date":
        return _from_date
    kind = _kind(schema)
    composites: dict[str, Callable[[Any, Mapping[str, Any]], Callable[[Any], Any]]] = {
        "record": _from_json_record, "union": _from_json_union, "array": _from_json_array, "map": _from_json_map,
        "enum": _from_json_enum,
    }  # fmt: skip
    composite = composites.get(kind)
    if composite is not None:
        converter: Callable[[Any], Any] = composite(schema, named)
        return converter
    simple = {
        "string": _from_string,
        "boolean": _from_boolean,
        "int": _int_converter(_INT_MIN, _INT_MAX, "32-bit int"),
        "long": _int_converter(_LONG_MIN, _LONG_MAX, "64-bit long"),
        "double": _from_double,
        "float": _from_double,
        "null": _from_null,
    }
    if kind in simple:
        return simple[kind]
    raise TypeError(f"codec: Avro type {kind!r} has no JSON form here")


def _from_json_array(schema: Any, named: Mapping[str, Any]) -> Callable[[Any], Any]:
    item = _from_json_converter(schema["items"], named)

    def array(v: Any) -> Any:
        if not isinstance(v, list | tuple):
            raise _Bad("INVALID_FIELD", f"expected an array, got {_type_name(v)}")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except _Bad as e:
                e.path.append(f"[{i}]")
                raise
        return out

    return array


def _from_json_map(schema: Any, named: Mapping[str, Any]) -> Callable[[Any], Any]:
    value = _from_json_converter(schema["values"], named)

    def map_(v: Any) -> Any:
        if not isinstance(v, Mapping):
            raise _Bad("INVALID_FIELD", f"expected an object, got {_type_name(v)}")
        out = {}
        for k, x in v.items():
            if type(k) is not str:
                raise _Bad("INVALID_FIELD", f"map key {k!r} is not a string")
            try:
                out[k] = value(x)
            except _Bad as e:
                e.path.append(f"[{k!r}]")
                raise
        return out

    return map_


def _from_json_enum(schema: Any, named: Mapping[str, Any]) -> Callable[[Any], Any]:
    symbols = frozenset(schema["symbols"])
    listed = " | ".join(schema["symbols"])

    def enum(v: Any) -> Any:
        if type(v) is str and v in symbols:
            return v
        raise _Bad("INVALID_FIELD", f"{v!r} is not one of {listed}")

    return enum


def _from_json_union(branches: list[Any], named: Mapping[str, Any]) -> Callable[[Any], Any]:
    non_null = [b for b in branches if _resolve(b, named) != "null"]
    convs = [_from_json_converter(b, named) for b in non_null]
    nullable = len(non_null) < len(branches)
    if len(convs) == 1:
        only = convs[0]

        def optional(v: Any) -> Any:
            return None if v is None and nullable else only(v)

        return optional

    def union(v: Any) -> Any:
        if v is None and nullable:
            return None
        first: _Bad | None = None
        for conv in convs:
            try:
                return conv(v)
            except _Bad as e:
                first = first or e
        raise first or _Bad("INVALID_FIELD", f"unexpected {_type_name(v)}")

    return union


def _from_json_record(schema: dict[str, Any], named: Mapping[str, Any]) -> Callable[[Any], Any]:
    fields: list[tuple[str, Callable[[Any], Any], bool, Any]] = []
    for field in schema["fields"]:
        conv = _from_json_converter(field["type"], named)
        fields.append((field["name"], conv, "default" in field, field.get("default")))
    known = frozenset(name for name, _, _, _ in fields)

    def record(v: Any) -> Any:
        if not isinstance(v, Mapping):
            raise _Bad("INVALID_FIELD", f"expected an object, got {_type_name(v)}")
        out = {}
        for name, conv, has_default, default in fields:
            try:
                if name in v:
                    out[name] = conv(v[name])
                elif has_default:
                    out[name] = conv(default)  # a fresh value (e.g. a new list) each time
                else:
                    raise _Bad("MISSING_FIELD", "required field is missing")
            except _Bad as e:
                e.path.append(name)
                raise
        if len(out) != len(v):
            extra = sorted(str(k) for k in v if k not in known)
            if extra:
                raise _Bad("UNKNOWN_FIELD", f"the schema has no field {', '.join(extra)}")
        return out

    return record


# ---- native -> JSON


def _to_instant(v: Any, tz: tzinfo) -> Any:
    if type(v) is int:
        v = _EPOCH + timedelta(microseconds=v)
    elif not isinstance(v, datetime):
        raise _Bad("INVALID_FIELD", f"expected a datetime, got {_type_name(v)}")
    elif v.tzinfo is None:
        raise _Bad("INVALID_FIELD", "naive datetime: an instant must be timezone-aware")
    return v.astimezone(tz).isoformat()


def _to_date(v: Any, tz: tzinfo) -> Any:
    if type(v) is int:
        v = _EPOCH_DATE + timedelta(days=v)
    elif isinstance(v, datetime) or not isinstance(v, date):
        raise _Bad("INVALID_FIELD", f"expected a date, got {_type_name(v)}")
    return v.isoformat()


def _to_same(v: Any, tz: tzinfo) -> Any:
    return v


def _to_json_converter(schema: Any, named: Mapping[str, Any]) -> Callable[[Any, tzinfo], Any]:
    schema = _resolve(schema, named)
    logical = _logical(schema)
    if logical == "timestamp-micros":
        return _to_instant
    if logical == "date":
        return _to_date
    composite = {"record": _to_json_record, "union": _to_json_union, "array": _to_json_array,
                 "map": _to_json_map}.get(_kind(schema))  # fmt: skip
    return _to_same if composite is None else composite(schema, named)


def _to_json_record(schema: Any, named: Mapping[str, Any]) -> Callable[[Any, tzinfo], Any]:
    fields = []
    for field in schema["fields"]:
        conv = _to_json_converter(field["type"], named)
        ftype = field["type"]
        nullable = isinstance(ftype, list) and "null" in ftype
        fields.append((field["name"], conv, "default" in field or nullable, field.get("default")))

    def record(v: Any, tz: tzinfo) -> Any:
        out = {}
        for name, conv, optional, default in fields:
            try:
                if name in v:
                    out[name] = conv(v[name], tz)
                elif optional:
                    out[name] = json.loads(json.dumps(default))  # a fresh copy of the JSON default
                else:
                    raise _Bad("MISSING_FIELD", "required field is missing")
            except _Bad as e:
                e.path.append(name)
                raise
        return out

    return record


def _to_json_union(schema: Any, named: Mapping[str, Any]) -> Callable[[Any, tzinfo], Any]:
    branches = [_to_json_converter(b, named) for b in schema if _resolve(b, named) != "null"]
    if len(branches) == 1:
        only = branches[0]

        def optional(v: Any, tz: tzinfo) -> Any:
            return None if v is None else only(v, tz)

        return optional
    if all(b is _to_same for b in branches):
        return _to_same
    raise TypeError("codec: unions of several logical types have no JSON form here")


def _to_json_array(schema: Any, named: Mapping[str, Any]) -> Callable[[Any, tzinfo], Any]:
    item = _to_json_converter(schema["items"], named)
    if item is _to_same:
        return lambda v, tz: list(v)

    def array(v: Any, tz: tzinfo) -> Any:
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x, tz))
            except _Bad as e:
                e.path.append(f"[{i}]")
                raise
        return out

    return array


def _to_json_map(schema: Any, named: Mapping[str, Any]) -> Callable[[Any, tzinfo], Any]:
    value = _to_json_converter(schema["values"], named)
    if value is _to_same:
        return lambda v, tz: dict(v)
    return lambda v, tz: {k: value(x, tz) for k, x in v.items()}


# ---- naive-datetime guard for encode (fastavro would silently read a naive datetime as the
# machine's local time)


def _naive_checker(schema: Any, named: Mapping[str, Any]) -> Callable[[Any], None] | None:
    """A function raising ``_Bad`` on a naive datetime where an instant goes, or None when the
    schema has no instants."""
    schema = _resolve(schema, named)
    if _logical(schema) == "timestamp-micros":
        return _check_aware
    kind = _kind(schema)
    if kind == "record":
        return _naive_record(schema, named)
    if kind == "union":
        checks = [c for c in (_naive_checker(b, named) for b in schema) if c is not None]
        return checks[0] if len(checks) == 1 else None  # several record branches: not used here
    if kind in ("array", "map"):
        return _naive_each(schema, named, kind)
    return None


def _naive_record(schema: Any, named: Mapping[str, Any]) -> Callable[[Any], None] | None:
    checks = [(f["name"], c) for f in schema["fields"] if (c := _naive_checker(f["type"], named)) is not None]
    if not checks:
        return None

    def record(v: Any) -> None:
        get = v.get
        for name, check in checks:
            x = get(name)
            if x is not None:
                try:
                    check(x)
                except _Bad as e:
                    e.path.append(name)
                    raise

    return record


def _naive_each(schema: Any, named: Mapping[str, Any], kind: str) -> Callable[[Any], None] | None:
    check = _naive_checker(schema["items" if kind == "array" else "values"], named)
    if check is None:
        return None

    def each(v: Any) -> None:
        items = v.items() if kind == "map" else enumerate(v)
        for i, x in items:
            try:
                check(x)
            except _Bad as e:
                e.path.append(f"[{i!r}]")
                raise

    return each


def _check_aware(v: Any) -> None:
    if isinstance(v, datetime) and v.tzinfo is None:
        raise _Bad("INVALID_FIELD", "naive datetime: an instant must be timezone-aware")


def _timezone_path(schema: dict[str, Any], named: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Where a record keeps its IANA time zone: a string field ``timezone`` of the record, or
    failing that of a nested (non-repeated) record, breadth first."""
    queue: list[tuple[tuple[str, ...], dict[str, Any]]] = [((), schema)]
    while queue:
        prefix, rec = queue.pop(0)
        for field in rec["fields"]:
            if field["name"] == "timezone" and field["type"] == "string":
                return prefix + ("timezone",)
        for field in rec["fields"]:
            ftype = _resolve(field["type"], named)
            if isinstance(ftype, dict) and ftype.get("type") == "record":
                queue.append((prefix + (field["name"],), ftype))
    return None


@lru_cache(maxsize=256)
def _zone(name: str) -> tzinfo:
    if name in ("UTC", "Etc/UTC", "Z"):
        return _UTC
    try:
        return ZoneInfo(name)
    except Exception:  # noqa: BLE001 - ZoneInfoNotFoundError (a KeyError), ValueError, OSError
        return _UTC  # an invalid zone (dead-lettered input) is shown in UTC rather than failing


def _bad_detail(e: _Bad) -> str:
    path = ""
    for part in reversed(e.path):
        path += part if part.startswith("[") or not path else "." + part
    if e.reason == "MISSING_FIELD":
        return path
    return f"{path}: {e.message}" if path else e.message


def _failure(e: BaseException) -> str:
    """What went wrong, without the input: fastavro's messages can quote the bytes or values it
    met, and a DLQ header or log line must never carry an input value."""
    if isinstance(e, EOFError):
        return "truncated: the data ends inside the record"
    if isinstance(e, UnicodeDecodeError):
        return "a string is not valid UTF-8"
    return f"not a record of this type ({type(e).__name__})"


# ---- over-long numbers
#
# fastavro reads a varint of any length and keeps its low 64 bits: 2^64 + 1000 in a ``long``
# comes out as 1000, and an ``int`` can come out past 32 bits. Avro allows at most 10 bytes for
# a long (the 10th carrying one bit) and 5 for an int (the 5th carrying four). A long that
# wraps needs 9 continuation bytes in a row, so the bytes are scanned for such a run (timestamps
# of our era use 7) and only then walked field by field; an int that does not fit 32 bits is
# seen in the decoded value.

# Each byte as 1 when its continuation bit is set, else 0: a run of nine 1s is where a long
# could wrap (bytes.translate and find are C loops; a regular expression took four times as long).
_CONTINUATION = bytes(int(b >= 0x80) for b in range(256))
_NINE = b"\x01" * 9
OVERLONG = "a number is encoded in more bytes than its type allows"


class _Overlong(Exception):
    pass


def _varint(data: bytes, pos: int, most: int, last_max: int) -> tuple[int, int]:
    """(value, next position) of the zigzag varint at ``pos``; raises _Overlong past ``most``
    bytes or when the last allowed byte carries more than ``last_max``."""
    shift = n = 0
    for i in range(most):
        b = data[pos + i]
        if i == most - 1 and b > last_max:
            raise _Overlong
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return (n >> 1) ^ -(n & 1), pos + i + 1
        shift += 7
    raise _Overlong


def _long(data: bytes, pos: int) -> tuple[int, int]:
    return _varint(data, pos, 10, 0x01)


def _int(data: bytes, pos: int) -> tuple[int, int]:
    return _varint(data, pos, 5, 0x0F)


def _skipper(schema: Any, named: Mapping[str, Any]) -> Callable[[bytes, int], int]:
    """A function walking one value of ``schema`` in Avro bytes, checking every number's length."""
    schema = _resolve(schema, named)
    kind = _kind(schema)
    if kind == "record":
        return _skip_record([_skipper(f["type"], named) for f in schema["fields"]])
    if kind == "union":
        return _skip_union([_skipper(b, named) for b in schema])
    if kind in ("array", "map"):
        return _skip_blocks(
            _skipper(schema["items"] if kind == "array" else schema["values"], named), kind == "map"
        )
    if kind in ("string", "bytes"):
        return _skip_sized
    if kind in ("int", "enum"):
        return lambda data, pos: _int(data, pos)[1]
    if kind == "long":
        return lambda data, pos: _long(data, pos)[1]
    width = {"null": 0, "boolean": 1, "float": 4, "double": 8}.get(kind)
    if width is None and kind == "fixed":
        width = schema["size"]
    if width is None:
        raise TypeError(f"codec: Avro type {kind!r} cannot be walked")
    return lambda data, pos: pos + width


def _skip_record(steps: list[Callable[[bytes, int], int]]) -> Callable[[bytes, int], int]:
    def record(data: bytes, pos: int) -> int:
        for step in steps:
            pos = step(data, pos)
        return pos

    return record


def _skip_union(branches: list[Callable[[bytes, int], int]]) -> Callable[[bytes, int], int]:
    def union(data: bytes, pos: int) -> int:
        index, pos = _long(data, pos)
        return branches[index](data, pos)

    return union


def _skip_blocks(item: Callable[[bytes, int], int], keyed: bool) -> Callable[[bytes, int], int]:
    def blocks(data: bytes, pos: int) -> int:
        while True:
            count, pos = _long(data, pos)
            if count == 0:
                return pos
            if count < 0:
                count = -count
                _, pos = _long(data, pos)  # the block's size in bytes
            for _ in range(count):
                if keyed:
                    pos = _skip_sized(data, pos)
                pos = item(data, pos)

    return blocks


def _skip_sized(data: bytes, pos: int) -> int:
    size, pos = _long(data, pos)
    return pos + size


def _int_fields(schema: dict[str, Any], named: Mapping[str, Any]) -> Callable[[Any], bool] | None:
    """A function telling whether every plain ``int`` of a decoded record fits 32 bits (None when
    the record has none): the record's own int fields, and those of records in its arrays (an
    instalment's ``seq``). Logical ints (dates) fastavro converts, and refuses when they do not
    fit. Written flat: it runs on every record the worker reads."""

    def ints(rec: dict[str, Any]) -> list[str]:
        return [f["name"] for f in rec["fields"] if _resolve(f["type"], named) == "int"]

    top = ints(schema)
    nested = []
    for f in schema["fields"]:
        ftype = _resolve(f["type"], named)
        if _kind(ftype) == "array":
            item = _resolve(ftype["items"], named)
            if _kind(item) == "record" and ints(item):
                nested.append((f["name"], ints(item)))
    if not top and not nested:
        return None
    lo, hi = _INT_MIN, _INT_MAX

    def fits(v: Any) -> bool:
        for name in top:
            x = v[name]
            if x is not None and not lo <= x <= hi:
                return False
        for array, names in nested:
            items = v[array]
            for name in names:
                values = [item[name] for item in items]
                if values and not (lo <= min(values) and max(values) <= hi):
                    return False
        return True

    return fits


# --------------------------------------------------------------------------- per-record codec


class _RecordCodec:
    __slots__ = (
        "name", "schema", "fallbacks", "versions", "from_json", "to_json", "check", "tz_path", "walk", "ints",
        "write",
    )  # fmt: skip

    def __init__(self, name: str) -> None:
        self.name = name
        self.schema = load_schema(name)
        named = self.schema.get("__named_schemas", {})
        current = _raw_schema(name, None)
        # Released versions whose writer schema differs from the current one, newest first:
        # tried when data does not decode with the current schema.
        self.fallbacks = tuple(
            (v, load_schema(name, v))
            for v in reversed(released_versions(name))
            if _raw_schema(name, v) != current
        )
        # writer version -> (writer schema, reader schema or None when identical)
        self.versions: dict[Any, tuple[dict[str, Any], dict[str, Any] | None]] = {}
        self.from_json = _from_json_record(self.schema, named)
        self.to_json = _to_json_converter(self.schema, named)
        self.check = _naive_checker(self.schema, named)
        self.tz_path = _timezone_path(self.schema, named)
        self.walk = _skipper(self.schema, named)
        self.ints = _int_fields(self.schema, named)
        # fastavro's bytes from a writer generated for the schema (None: a construct it does not
        # write, fastavro writes the type); see streams/contracts/avrowriter.py
        self.write = record_writer(self.schema)

    def numbers_fit(self, data: bytes, record: Any) -> bool:
        """Whether every number of ``data`` (decoded as ``record``) was encoded within its type's
        length: see "over-long numbers" above."""
        if self.ints is not None and not self.ints(record):
            return False
        if data.translate(_CONTINUATION).find(_NINE) < 0:
            return True
        try:
            self.walk(data, 0)
        except (_Overlong, IndexError):
            return False
        return True

    def decode_fallback(self, data: bytes, first: str) -> dict[str, Any]:
        for _version, writer in self.fallbacks:
            fo = BytesIO(data)
            try:
                record = schemaless_reader(fo, writer, self.schema)
            except Exception:  # noqa: BLE001 - any failure means "not this version"
                continue
            if fo.tell() == len(data):
                return record  # type: ignore[return-value]  # a record schema reads a dict
        raise DecodeError("UNDECODABLE", f"{self.name}: {first}")

    def decode_version(self, data: bytes, version: int) -> dict[str, Any]:
        resolution = self.versions.get(version)
        if resolution is None:
            try:
                v = int(version)
                same = _raw_schema(self.name, v) == _raw_schema(self.name, None)
            except (FileNotFoundError, ValueError, TypeError):
                raise DecodeError("UNDECODABLE", f"{self.name}: unknown writer version {version!r}") from None
            resolution = (self.schema, None) if same else (load_schema(self.name, v), self.schema)
            self.versions[version] = resolution
        writer, reader = resolution
        try:
            fo = BytesIO(data)
            record = schemaless_reader(fo, writer, reader)
        except Exception as e:  # noqa: BLE001
            raise DecodeError("UNDECODABLE", f"{self.name} v{version}: {_failure(e)}") from e
        if fo.tell() != len(data):
            raise DecodeError(
                "UNDECODABLE", f"{self.name} v{version}: {len(data) - fo.tell()} trailing bytes"
            )
        return record  # type: ignore[return-value]  # a record schema reads a dict


_CODECS: dict[str, _RecordCodec] = {}


def _codec(name: str) -> _RecordCodec:
    codec = _CODECS.get(name)
    if codec is None:
        _check_name(name)
        codec = _CODECS[name] = _RecordCodec(name)
    return codec


# --------------------------------------------------------------------------- public API


def encode(name: str, value: Mapping[str, Any]) -> bytes:
    """Schemaless Avro bytes of the native ``value`` of record type ``name``.

    Raises :class:`EncodeError` if the value does not fit the schema (including a naive
    datetime for an instant, which fastavro would otherwise read as local time).

    The writer generated for the schema (:mod:`.avrowriter`) writes fastavro's bytes at a
    fraction of its cost; a value it does not take (a naive datetime, a wrong type, anything
    but the plain native types) goes to :func:`encode_by_fastavro`, as every value did before,
    so errors and the oddities fastavro accepts stay fastavro's."""
    codec = _CODECS.get(name) or _codec(name)
    write = codec.write
    if write is not None:
        try:
            return write(value)
        except Exception:  # noqa: BLE001, S110 - declined: fastavro decides below
            pass
    return _encode_by_fastavro(codec, name, value)


def encode_by_fastavro(name: str, value: Mapping[str, Any]) -> bytes:
    """What :func:`encode` returns or raises, written by fastavro's ``schemaless_writer`` after
    the naive-datetime check: where :func:`encode` sends the values the generated writers
    decline, and the reference they are measured against (``streams.dev.bench.codec``)."""
    return _encode_by_fastavro(_CODECS.get(name) or _codec(name), name, value)


def _encode_by_fastavro(codec: _RecordCodec, name: str, value: Mapping[str, Any]) -> bytes:
    check = codec.check
    if check is not None:
        try:
            check(value)
        except _Bad as e:
            raise EncodeError(e.reason, f"{name}.{_bad_detail(e)}") from None
        except Exception:  # noqa: BLE001, S110 - a shape the check cannot walk (None for a record,
            pass  # say): fastavro tells what is wrong with it, as UNENCODABLE
    fo = BytesIO()
    try:
        schemaless_writer(fo, codec.schema, value)
    except Exception as e:  # noqa: BLE001 - fastavro raises ValueError, TypeError, OverflowError, ...
        raise EncodeError("UNENCODABLE", f"{name}: {type(e).__name__}: {e}") from e
    return fo.getvalue()


def decode(
    name: str, data: bytes | bytearray | memoryview, *, writer_version: int | None = None
) -> dict[str, Any]:
    """The native record of type ``name`` in schemaless Avro ``data``.

    ``writer_version``: the released version the data was written with, when known (e.g. from
    a header); else the current schema is tried first, then each differing released version.
    Raises :class:`DecodeError` (reason ``UNDECODABLE``) for anything that is not exactly one
    record: garbage, truncated data, trailing bytes, a null value."""
    codec = _CODECS.get(name) or _codec(name)
    if data is None:
        raise DecodeError("UNDECODABLE", f"{name}: null value")
    raw = data if type(data) is bytes else bytes(data)
    if writer_version is not None:
        return codec.decode_version(raw, writer_version)
    try:
        fo = BytesIO(raw)
        record: dict[str, Any] = schemaless_reader(fo, codec.schema, None)  # type: ignore[assignment]
    except Exception as e:  # noqa: BLE001 - garbage can raise almost anything inside fastavro
        return codec.decode_fallback(raw, _failure(e))
    if fo.tell() != len(raw):
        return codec.decode_fallback(raw, f"{len(raw) - fo.tell()} trailing bytes after the record")
    if not codec.numbers_fit(raw, record):
        raise DecodeError("UNDECODABLE", f"{name}: {OVERLONG}")
    return record


def from_json(name: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The native record of type ``name`` from its JSON form (SPEC §1).

    Absent optional fields get their schema defaults. Raises :class:`DecodeError`:
    ``MISSING_FIELD`` (detail: the field path, e.g. ``contact.locale``), ``INVALID_FIELD``
    (a naive instant, a malformed date, a wrong type, a value out of range, an unknown enum
    symbol) or ``UNKNOWN_FIELD``."""
    codec = _CODECS.get(name) or _codec(name)
    try:
        return codec.from_json(obj)
    except _Bad as e:
        raise DecodeError(e.reason, _bad_detail(e)) from None


def to_json(name: str, value: Mapping[str, Any], *, tz: str | tzinfo | None = None) -> dict[str, Any]:
    """The JSON form (SPEC §1) of the native ``value`` of record type ``name``.

    Instants are written in the record's own time zone (its ``timezone`` field, or a nested
    record's, e.g. CollectionTask.contact_window.timezone), else in UTC; ``tz`` overrides.
    Absent optional fields are written with their defaults."""
    codec = _CODECS.get(name) or _codec(name)
    if tz is None:
        zone: tzinfo = _UTC
        path = codec.tz_path
        if path is not None:
            node: Any = value
            for part in path:
                node = node.get(part) if isinstance(node, Mapping) else None
            if isinstance(node, str):
                zone = _zone(node)
    elif isinstance(tz, str):
        zone = _zone(tz)
    else:
        zone = tz
    try:
        return codec.to_json(value, zone)
    except _Bad as e:
        raise EncodeError(e.reason, f"{name}.{_bad_detail(e)}") from None
