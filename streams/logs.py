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


#: The Kafka client's loggers: at DEBUG they dump whole records (loan ids, borrower ids, phone
#: numbers), so their level is set on its own (``DUEWATCH_KAFKA_LOG_LEVEL``, default WARNING)
#: and ``DUEWATCH_LOG_LEVEL=DEBUG`` never turns them on by itself.
KAFKA_CLIENT_LOGGERS = ("aiokafka", "kafka")


def quiet_kafka_client(level: str) -> None:
    """Hold the Kafka client's own loggers at ``level`` whatever the root logger's level is."""
    for name in KAFKA_CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(level.upper())


def logging_config(json_lines: bool, level: str, kafka_level: str = "warning") -> dict[str, Any] | None:
    """A dictConfig for the Faust worker: JSON lines on stderr, or None for Faust's default format."""
    if not json_lines:
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "streams.logs.JsonFormatter"}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "root": {"level": level.upper(), "handlers": ["default"]},
        "loggers": {name: {"level": kafka_level.upper()} for name in KAFKA_CLIENT_LOGGERS},
    }
