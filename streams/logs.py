"""Structured logging: one JSON object per line when DUEWATCH_LOG_JSON is true.

duewatch never logs a loan id, borrower id, amount or contact: records are named by topic,
partition and offset, which is all an operator needs to find them (`duewatch consume`).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "process"[, "exc"]}`` per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def logging_config(json_lines: bool, level: str) -> dict[str, Any] | None:
    """A dictConfig for the Faust worker: JSON lines on stderr, or None for Faust's default format."""
    if not json_lines:
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "streams.logs.JsonFormatter"}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["default"]},
    }
