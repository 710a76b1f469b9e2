"""The Confluent wire format of registry mode (SPEC §6): byte 0 the magic byte 0, bytes 1-4 the
schema id (big-endian signed 32-bit, as the registry assigns it), then the Avro binary body.

This is what Confluent's serializers for Java, Go, .NET, Python (confluent-kafka), and
Apicurio's in Confluent-compatible mode, write and read, so a team on that tooling reads
duewatch's outputs and writes its inputs with no duewatch code.

Pure functions, no I/O: the registry client (:mod:`streams.contracts.registry`) turns ids
into schemas.
"""

from __future__ import annotations

import struct

__all__ = ["HEADER_SIZE", "MAGIC", "frame", "framed", "unframe"]

MAGIC = 0
HEADER_SIZE = 5
_HEADER = struct.Struct(">bI")
_ID = struct.Struct(">I")


def frame(schema_id: int, body: bytes) -> bytes:
    """``body`` (schemaless Avro) framed for registry mode under ``schema_id``."""
    if not 0 <= schema_id <= 0x7FFFFFFF:
        raise ValueError(f"schema id {schema_id} is not a registry id (0 .. 2^31-1)")
    return _HEADER.pack(MAGIC, schema_id) + body


def framed(data: bytes | bytearray | memoryview | None) -> bool:
    """True when ``data`` starts with the magic byte and is long enough to carry a schema id.

    SPEC §6 reads such a value as framed. A plain (unframed) duewatch input never starts with
    byte 0 unless its first field is an empty string or a zero number, which a valid schedule,
    repayment or dispute (ids of 1-64 characters) never has; a tick at exactly the epoch does,
    and is read as framed in registry mode (docs/decisions.md)."""
    return data is not None and len(data) >= HEADER_SIZE and data[0] == MAGIC


def unframe(data: bytes | bytearray | memoryview) -> tuple[int, memoryview]:
    """The schema id and Avro body of a framed value (check :func:`framed` first)."""
    if not framed(data):
        raise ValueError("not a framed value: it does not start with the magic byte 0 and a schema id")
    view = memoryview(data)
    return _ID.unpack_from(view, 1)[0], view[HEADER_SIZE:]
