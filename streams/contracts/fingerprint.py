"""The Avro specification's schema fingerprint of each record type, as SPEC §1's
``duewatch-schema-fingerprint`` header carries it.

CRC-64-AVRO of the writer schema's Parsing Canonical Form, its 8 bytes in little-endian order
as Avro's single-object encoding writes them, as 16 lowercase hex digits: any Avro library
(Java ``SchemaNormalization.parsingFingerprint64``, fastavro, Go's hamba/avro ...) computes
the same value from the ``.avsc`` file, so a consumer in any language can tell which schema
wrote a record without asking anyone. For the schema ``"int"`` it is ``8f5c393f1ad57572``.

The canonical form is fastavro's: the Apache ``avro`` Python package (1.12) keeps a logical
type's primitive as ``{"type":"long"}`` where the specification's [PRIMITIVES] rule (and
Java) write ``"long"``, so its fingerprints differ for every schema with a logical type
(docs/decisions.md).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from fastavro.schema import fingerprint as _fingerprint
from fastavro.schema import to_parsing_canonical_form

from . import codec

__all__ = ["canonical_form", "record_fingerprint", "schema_fingerprint"]


def canonical_form(schema: Any) -> str:
    """The Parsing Canonical Form of ``schema`` (JSON text, a parsed dict, or a primitive name)."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError:  # a bare primitive name such as int
            pass
    return to_parsing_canonical_form(schema)


def schema_fingerprint(schema: Any) -> str:
    """CRC-64-AVRO of ``schema``'s canonical form, little-endian, as 16 lowercase hex digits."""
    return _fingerprint(canonical_form(schema), "CRC-64-AVRO")


@cache
def record_fingerprint(record_type: str, version: int | None = None) -> str:
    """The fingerprint of duewatch record type ``record_type`` (current schema, or released
    ``version``); computed once per type and version."""
    return schema_fingerprint(codec.load_schema(record_type, version))
