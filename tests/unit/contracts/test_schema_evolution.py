"""Schema evolution judged as Avro judges it: the current schemas (schemas/*.avsc) against every
released version (schemas/released/vN/), with the Avro specification's resolution rules as the
Apache ``avro`` package implements them (``avro.compatibility``, a port of Java's
``SchemaCompatibility``).

- Every topic is BACKWARD (SPEC §6, the rule its registry subject carries): duewatch's current
  schema, as a reader, reads data written with any released version. For an input topic this
  is the whole story: duewatch is the reader, upstream may still write an older version.
- An output topic is FORWARD too: a consumer that still holds a released schema reads what
  duewatch writes now. duewatch cannot make every consumer upgrade first, so an output change
  must be readable by old readers (a new optional field with a default: yes; a new enum symbol
  in an enum without a default: no -- an old reader fails on the first record that uses it).

What these tests do not pin: anything a compatible change may change (field count, order of
new fields, docs). That is the job of the rules above, not of a list of expected fields.
"""

from __future__ import annotations

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from streams.contracts import codec
from streams.contracts import topics as names
from tests.support.shared import REPO

SCHEMAS = REPO / "schemas"
OUTPUT_TOPICS = [t for t in names.OUTPUT_TOPICS if t in names.TOPIC_RECORD]


def _schema(record_type: str, version: int | None = None) -> avro.schema.Schema:
    path = SCHEMAS / (f"{record_type}.avsc" if version is None else f"released/v{version}/{record_type}.avsc")
    return avro.schema.parse(path.read_text(encoding="utf-8"))


def _problems(reader: avro.schema.Schema, writer: avro.schema.Schema) -> str | None:
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return None
    kinds = ", ".join(sorted({kind.name for kind in result.incompatibilities})) or "incompatible"
    return f"{kinds}: {'; '.join(sorted(result.messages))}"


def _released(topics: list[str]) -> list[tuple[str, int]]:
    return [(t, v) for t in topics for v in codec.released_versions(names.TOPIC_RECORD[t])]


def test_every_topic_has_released_versions() -> None:
    for record_type in names.TOPIC_RECORD.values():
        assert codec.released_versions(record_type), record_type


@pytest.mark.parametrize(("topic", "version"), _released(list(names.TOPIC_RECORD)))
def test_backward_the_current_schema_reads_every_released_version(topic: str, version: int) -> None:
    record_type = names.TOPIC_RECORD[topic]
    problems = _problems(reader=_schema(record_type), writer=_schema(record_type, version))
    assert problems is None, (
        f"{topic}: schemas/{record_type}.avsc cannot read data written with released v{version}: {problems}"
    )


@pytest.mark.parametrize(("topic", "version"), _released(OUTPUT_TOPICS))
def test_forward_consumers_holding_a_released_version_read_our_outputs(topic: str, version: int) -> None:
    record_type = names.TOPIC_RECORD[topic]
    problems = _problems(reader=_schema(record_type, version), writer=_schema(record_type))
    assert problems is None, (
        f"{topic}: a consumer holding released v{version} of {record_type} cannot read what "
        f"schemas/{record_type}.avsc writes: {problems}"
    )


# ---- the judge itself judges (so that the tests above can fail)


def _variant(record_type: str, change) -> avro.schema.Schema:
    import json

    # from the first release, not the current schema: the judge is checked on fixed ground
    raw = json.loads((SCHEMAS / "released" / "v1" / f"{record_type}.avsc").read_text(encoding="utf-8"))
    change(raw)
    return avro.schema.parse(json.dumps(raw))


def _add_optional_field(raw: dict) -> None:
    raw["fields"].append({"name": "added", "type": ["null", "string"], "default": None, "doc": "x"})


def _add_enum_symbol(raw: dict) -> None:
    type_field = next(f for f in raw["fields"] if f["name"] == "type")
    type_field["type"]["symbols"].append("SYMBOL_ADDED_BY_THIS_TEST")


def _change_a_type(raw: dict) -> None:
    next(f for f in raw["fields"] if f["name"] == "dpd")["type"] = "string"


def _add_required_field(raw: dict) -> None:
    raw["fields"].append({"name": "added", "type": "string", "doc": "x"})


def test_the_checker_judges_as_the_avro_specification_does() -> None:
    released = _schema("OverdueEvent", 1)
    optional = _variant("OverdueEvent", _add_optional_field)
    assert _problems(reader=optional, writer=released) is None  # backward
    assert _problems(reader=released, writer=optional) is None  # forward: the old reader skips it
    symbol = _variant("OverdueEvent", _add_enum_symbol)
    assert _problems(reader=symbol, writer=released) is None  # a new reader knows the old symbols
    assert "SYMBOL_ADDED_BY_THIS_TEST" in (
        _problems(reader=released, writer=symbol) or ""
    )  # old readers do not
    retyped = _variant("OverdueEvent", _change_a_type)
    assert _problems(reader=retyped, writer=released) is not None
    required = _variant("OverdueEvent", _add_required_field)
    assert _problems(reader=required, writer=released) is not None  # old data has no value for it
    assert _problems(reader=released, writer=required) is None
