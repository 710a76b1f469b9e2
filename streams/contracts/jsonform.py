"""JSON lines in the form of SPEC §1: instants as ISO-8601 with an offset, dates as YYYY-MM-DD."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import orjson


def _convert(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _convert(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_convert(v) for v in value]
    return value


def dumps(record: Any) -> str:
    """One JSON line; aware datetimes keep their offset (callers put them in the record's zone)."""
    return orjson.dumps(_convert(record)).decode()


def loads(line: str | bytes) -> Any:
    """Parse one JSON line."""
    return orjson.loads(line)


__all__ = ["dumps", "loads"]
