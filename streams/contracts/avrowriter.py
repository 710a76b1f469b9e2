"""Avro binary writers made for one record schema: the bytes fastavro's ``schemaless_writer``
writes, at a fraction of its cost.

Why: fastavro interprets the schema on every call (a dispatch on the type name per field, a
validation pass per union branch, a logical-type lookup per value); writing a worker's outputs
was about a third of its CPU in a catch-up tick. :func:`record_writer` reads the parsed schema
once and generates one flat Python function for it (source compiled with :func:`compile`): no
schema is looked at per call, small varints come from a table, each record's parts are joined
once.

The contract with :mod:`.codec`: the writer returns exactly the bytes fastavro writes for the
same value, or raises. It takes only values of the exact built-in types a native record has --
``dict`` records and maps with ``str`` keys, ``list``/``tuple`` arrays, ``str``, ``int`` within
its Avro type's range, ``bool``, tz-aware ``datetime`` (or ``int`` microseconds) for
``timestamp-micros``, ``date`` (or ``int`` days) for ``date``, ``str`` enum symbols -- for which
fastavro's behaviour is the plain one read from its source (``_write.pyx``,
``_logical_writers.pyx``, ``_validation.pyx``, 1.13):

- int and long: zig-zag varints; fastavro writes an ``int`` field as a 64-bit long (it does not
  check 32 bits), a union's ``int`` branch takes only 32-bit values: out of 32 bits the writer
  raises and fastavro decides;
- a union is written as fastavro picks its branch: the first that validates; only unions of
  ``null`` and one other branch are generated, where ``None`` is the null branch and anything
  else must be the other (a ``bool`` is not an ``int`` there; tuple notation is left to fastavro);
- ``timestamp-micros``: ``(value - epoch) // 1 µs`` for an aware datetime, as fastavro's
  ``(days * 86400 + seconds) * 10**6 + microseconds`` of the same difference; a naive one raises
  (fastavro would read it as local time; :mod:`.codec` refuses it);
- a missing field: ``value.get(name, default)`` when the field has a default or its type
  contains ``"null"`` -- fastavro's own expression -- else it raises;
- fields the schema does not name are ignored, as fastavro does without ``strict``.

Anything else (a ``bool`` where an ``int`` goes, a ``str`` subclass, a mapping that is not a
``dict``, a naive datetime, an unknown symbol, a number out of range...) raises, and the codec
hands the value to its checker and fastavro exactly as before, so every error and every oddity
fastavro accepts stays fastavro's. A schema using a construct not generated here (float, double,
bytes, fixed, decimal, other logical types, unions other than null-and-one, a recursive record)
gets no writer (``None``): the codec keeps fastavro for that record type.
``tests/unit/contracts/test_avrowriter.py`` compares the two byte for byte on generated values.
"""

from __future__ import annotations

import linecache
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

__all__ = ["Unfit", "Unsupported", "record_writer", "writer_source"]


class Unfit(Exception):
    """A value the generated writer leaves to fastavro (see the module docstring)."""


class Unsupported(Exception):
    """A schema construct the generator does not write (the codec keeps fastavro)."""


def _varint_of(z: int) -> bytes:
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


#: Every zig-zagged value below 2**14 (the varints of one and two bytes), and the varint of each
#: length below 2**13 (a length n is zig-zagged to 2n): most ints, lengths and counts of a record.
_SMALL = 1 << 14
_V: tuple[bytes, ...] = tuple(_varint_of(z) for z in range(_SMALL))
_VL: tuple[bytes, ...] = _V[::2]
#: The two varint bytes of each 14-bit group that is not a number's last: a longer number is
#: written 14 bits at a time (an amount of 100.00 in minor units already takes three bytes, an
#: instant in microseconds eight; a Python loop per 7 bits cost ~1 µs an instant).
_GROUP: tuple[bytes, ...] = tuple(bytes(((k & 0x7F) | 0x80, (k >> 7) | 0x80)) for k in range(_SMALL))


def _long(z: int) -> bytes:
    """The varint of zig-zagged ``z`` (>= 2**14) of a long; raises Unfit past 64 bits."""
    if z < 1 << 28:
        return _GROUP[z & 0x3FFF] + _V[z >> 14]
    if z < 1 << 42:
        return b"".join((_GROUP[z & 0x3FFF], _GROUP[(z >> 14) & 0x3FFF], _V[z >> 28]))
    if z < 1 << 56:
        return b"".join(
            (_GROUP[z & 0x3FFF], _GROUP[(z >> 14) & 0x3FFF], _GROUP[(z >> 28) & 0x3FFF], _V[z >> 42])
        )
    if z >> 64:
        raise Unfit("out of range for a long")
    return b"".join(
        (
            _GROUP[z & 0x3FFF],
            _GROUP[(z >> 14) & 0x3FFF],
            _GROUP[(z >> 28) & 0x3FFF],
            _GROUP[(z >> 42) & 0x3FFF],
            _V[z >> 56],
        )
    )


def _int(z: int) -> bytes:
    """The varint of zig-zagged ``z`` (>= 2**14) of an int; raises Unfit past 32 bits."""
    if z >> 32:
        raise Unfit("out of range for an int")
    return _long(z)


#: Names the generated source may use, besides its own constants.
_GLOBALS: dict[str, Any] = {
    "__builtins__": {},
    "type": type,
    "len": len,
    "dict": dict,
    "list": list,
    "tuple": tuple,
    "str": str,
    "int": int,
    "_Unfit": Unfit,
    "_V": _V,
    "_VL": _VL,
    "_long": _long,
    "_int": _int,
    "_datetime": datetime,
    "_date": date,
    "_EPOCH": datetime(1970, 1, 1, tzinfo=UTC),
    "_DAYS_SHIFT": date(1970, 1, 1).toordinal(),
}

_PRIMITIVE_NAMES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
#: Union branches generated besides null: those whose fastavro validation is a plain type test.
_UNION_KINDS = frozenset({"string", "int", "long", "boolean", "enum", "timestamp-micros", "date"})


class _Source:
    """The source of one writer, built by walking the parsed schema once.

    Each ``emit_*`` method appends the statements that encode the value held in local ``var``
    (at indentation ``depth``) and returns the locals holding its parts, in order; a record's
    parts are joined once at the end."""

    def __init__(self, named: Mapping[str, Any]) -> None:
        self.named = named
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self.count = 0
        self.active: set[str] = set()  # records being generated: a recursive one is Unsupported

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, value: Any, prefix: str) -> str:
        name = self.fresh(prefix)
        self.consts[name] = value
        return name

    def line(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    def unfit_unless(self, depth: int, condition: str) -> None:
        self.line(depth, f"if not ({condition}):")
        self.line(depth + 1, "raise _Unfit")

    # ---- dispatch

    def kind(self, schema: Any) -> tuple[str, Any]:
        """(kind, schema) of a parsed schema: named references resolved, logical types that are
        generated named by their logical type."""
        if isinstance(schema, str):
            if schema in _PRIMITIVE_NAMES:
                return schema, schema
            if schema in self.named:
                return self.kind(self.named[schema])
            raise Unsupported(f"unknown type {schema!r}")
        if isinstance(schema, list):
            return "union", schema
        if not isinstance(schema, dict) or not isinstance(schema.get("type"), str):
            raise Unsupported(f"schema {schema!r}")
        base = schema["type"]
        logical = schema.get("logicalType")
        if logical is None:
            return self.kind(base) if base in _PRIMITIVE_NAMES or base in self.named else (base, schema)
        # fastavro's logical writers are keyed by base type and logical type together
        if (base, logical) == ("long", "timestamp-micros"):
            return "timestamp-micros", schema
        if (base, logical) == ("int", "date"):
            return "date", schema
        raise Unsupported(f"logical type {base}/{logical}")

    def emit(self, schema: Any, var: str, depth: int) -> list[str]:
        kind, schema = self.kind(schema)
        emitter = _EMITTERS.get(kind)
        if emitter is None:
            raise Unsupported(f"type {kind!r}")
        return emitter(self, schema, var, depth)

    # ---- scalars

    def emit_string(self, schema: Any, var: str, depth: int) -> list[str]:
        encoded, length = self.fresh("b"), self.fresh("p")
        self.unfit_unless(depth, f"type({var}) is str")
        self.line(depth, f"{encoded} = {var}.encode()")
        self.line(depth, f"{length} = len({encoded})")
        self.line(depth, f"{length} = _VL[{length}] if {length} < {len(_VL)} else _long({length} + {length})")
        return [length, encoded]

    def emit_varint(self, var: str, bits: int, depth: int) -> list[str]:
        """The varint of int local ``var`` (already checked to be an int), within ``bits`` bits."""
        part = self.fresh("p")
        self.line(depth, f"{part} = ({var} << 1) ^ ({var} >> {bits - 1})")
        slow = "_int" if bits == 32 else "_long"
        self.line(depth, f"{part} = _V[{part}] if {part} < {_SMALL} else {slow}({part})")
        return [part]

    def emit_int(self, schema: Any, var: str, depth: int) -> list[str]:
        self.unfit_unless(depth, f"type({var}) is int")
        return self.emit_varint(var, 32, depth)

    def emit_long(self, schema: Any, var: str, depth: int) -> list[str]:
        self.unfit_unless(depth, f"type({var}) is int")
        return self.emit_varint(var, 64, depth)

    def emit_timestamp_micros(self, schema: Any, var: str, depth: int) -> list[str]:
        # a naive datetime minus the aware epoch raises TypeError: left to the codec's checker
        self.line(depth, f"if type({var}) is _datetime:")
        self.line(depth + 1, f"{var} = {var} - _EPOCH")
        self.line(
            depth + 1, f"{var} = {var}.days * 86400000000 + {var}.seconds * 1000000 + {var}.microseconds"
        )
        self.line(depth, f"elif type({var}) is not int:")
        self.line(depth + 1, "raise _Unfit")
        return self.emit_varint(var, 64, depth)

    def emit_date(self, schema: Any, var: str, depth: int) -> list[str]:
        self.line(depth, f"if type({var}) is _date:")
        self.line(depth + 1, f"{var} = {var}.toordinal() - _DAYS_SHIFT")
        self.line(depth, f"elif type({var}) is not int:")
        self.line(depth + 1, "raise _Unfit")
        return self.emit_varint(var, 32, depth)

    def emit_boolean(self, schema: Any, var: str, depth: int) -> list[str]:
        part = self.fresh("p")
        self.line(depth, f"if {var} is True:")
        self.line(depth + 1, f"{part} = b'\\x01'")
        self.line(depth, f"elif {var} is False:")
        self.line(depth + 1, f"{part} = b'\\x00'")
        self.line(depth, "else:")
        self.line(depth + 1, "raise _Unfit")
        return [part]

    def emit_enum(self, schema: Any, var: str, depth: int) -> list[str]:
        symbols = schema["symbols"]
        if len(set(symbols)) != len(symbols):
            raise Unsupported("an enum with a repeated symbol")
        index = self.const(
            {s: _V[2 * i] if 2 * i < _SMALL else _varint_of(2 * i) for i, s in enumerate(symbols)}, "_E"
        )
        part = self.fresh("p")
        self.unfit_unless(depth, f"type({var}) is str")
        self.line(depth, f"{part} = {index}[{var}]")  # KeyError for an unknown symbol
        return [part]

    # ---- composites

    def emit_record(self, schema: Any, var: str, depth: int) -> list[str]:
        name = schema.get("name", "")
        if name in self.active:
            raise Unsupported(f"recursive record {name}")
        self.active.add(name)
        self.unfit_unless(depth, f"type({var}) is dict")
        parts: list[str] = []
        for field in schema["fields"]:
            local = self.fresh("x")
            self.line(depth, f"{local} = {self.field_value(var, field)}")
            parts += self.emit(field["type"], local, depth)
        self.active.discard(name)
        return parts

    def field_value(self, var: str, field: Mapping[str, Any]) -> str:
        """How fastavro's ``write_record`` reads a field: ``get(name, default)`` when it has a
        default or its type contains "null" (a missing field is then written as that), else the
        field is required (here a KeyError)."""
        name = field["name"]
        if "default" in field:
            return f"{var}.get({name!r}, {self.const(field['default'], '_D')})"
        if "null" in field["type"]:
            return f"{var}.get({name!r})"
        return f"{var}[{name!r}]"

    def emit_array(self, schema: Any, var: str, depth: int) -> list[str]:
        self.unfit_unless(depth, f"type({var}) is list or type({var}) is tuple")
        return self.blocks(var, f"for {{item}} in {var}:", schema["items"], depth, keyed=False)

    def emit_map(self, schema: Any, var: str, depth: int) -> list[str]:
        self.unfit_unless(depth, f"type({var}) is dict")
        return self.blocks(
            var, f"for {{key}}, {{item}} in {var}.items():", schema["values"], depth, keyed=True
        )

    def blocks(self, var: str, loop: str, items: Any, depth: int, keyed: bool) -> list[str]:
        """Avro's blocks as fastavro writes them: one block of all the items (count, items),
        then the empty block; an empty array or map is the empty block alone."""
        part, count, out = self.fresh("p"), self.fresh("n"), self.fresh("q")
        item, key = self.fresh("y"), self.fresh("k")
        self.line(depth, f"{count} = len({var})")
        self.line(depth, f"if {count}:")
        self.line(depth + 1, f"{out} = [_VL[{count}] if {count} < {len(_VL)} else _long({count} + {count})]")
        self.line(depth + 1, loop.format(item=item, key=key))
        item_parts = self.emit_string(None, key, depth + 2) if keyed else []
        item_parts += self.emit(items, item, depth + 2)
        self.line(depth + 2, f"{out} += ({', '.join(item_parts)},)")
        self.line(depth + 1, f"{out}.append(b'\\x00')")
        self.line(depth + 1, f"{part} = b''.join({out})")
        self.line(depth, "else:")
        self.line(depth + 1, f"{part} = b'\\x00'")
        return [part]

    def emit_union(self, schema: Any, var: str, depth: int) -> list[str]:
        kinds = [self.kind(branch)[0] for branch in schema]
        if len(schema) != 2 or kinds.count("null") != 1:
            raise Unsupported("a union other than null and one branch")
        other = 1 - kinds.index("null")
        if kinds[other] not in _UNION_KINDS:
            raise Unsupported(f"a union of null and {kinds[other]}")
        index = self.fresh("p")
        self.line(depth, f"if {var} is None:")
        self.line(depth + 1, f"{index} = {_V[2 * (1 - other)]!r}")
        mark = len(self.lines)
        self.line(depth, "else:")
        parts = self.emit(schema[other], var, depth + 1)
        self.line(depth + 1, f"{index} = {_V[2 * other]!r}")
        # the null branch's parts are empty
        self.lines[mark:mark] = ["    " * (depth + 1) + f"{p} = b''" for p in parts]
        return [index, *parts]


_EMITTERS: dict[str, Callable[[_Source, Any, str, int], list[str]]] = {
    "string": _Source.emit_string,
    "int": _Source.emit_int,
    "long": _Source.emit_long,
    "boolean": _Source.emit_boolean,
    "enum": _Source.emit_enum,
    "timestamp-micros": _Source.emit_timestamp_micros,
    "date": _Source.emit_date,
    "record": _Source.emit_record,
    "array": _Source.emit_array,
    "map": _Source.emit_map,
    "union": _Source.emit_union,
}


def _generate(schema: Mapping[str, Any]) -> _Source:
    if schema.get("type") != "record":
        raise Unsupported("not a record schema")
    source = _Source(schema.get("__named_schemas", {}))
    source.line(0, "def write(v):")
    parts = source.emit_record(schema, "v", 1)
    source.line(1, f"return b''.join(({', '.join(parts)},))")
    return source


def writer_source(schema: Mapping[str, Any]) -> str:
    """The Python source of the writer of the parsed record ``schema`` (raises Unsupported)."""
    return "\n".join(_generate(schema).lines) + "\n"


def record_writer(schema: Mapping[str, Any]) -> Callable[[Any], bytes] | None:
    """The writer of the parsed (``fastavro.parse_schema``) record ``schema``: a function from a
    native value to its schemaless Avro bytes, which raises for any value it leaves to fastavro;
    None when the schema uses a construct not generated here."""
    try:
        source = _generate(schema)
    except Unsupported:
        return None
    text = "\n".join(source.lines) + "\n"
    filename = f"<avrowriter {schema.get('name', '?')}>"
    namespace = dict(_GLOBALS, **source.consts)
    exec(compile(text, filename, "exec"), namespace)  # source generated above from the schema alone
    # tracebacks and debuggers show the generated lines
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    write: Callable[[Any], bytes] = namespace["write"]
    return write
