"""Structured logging: one JSON object per line when DUEWATCH_LOG_JSON is true.

duewatch never logs a loan id, borrower id, amount or contact: records are named by topic,
partition and offset, which is all an operator needs to find them (`duewatch consume`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
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


class RepeatFilter(logging.Filter):
    """Lets each kind of log line (logger and message template) through once per ``every``
    seconds, saying how many like it were held back meanwhile.

    Without its broker aiokafka logs every failed connection, metadata update and fetch: over a
    hundred lines a second from one worker, for as long as the outage lasts (SPEC §6 asks the
    worker to stay up, not to fill its disk)."""

    def __init__(self, every: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every = every
        self.clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, str(record.msg))
        now = self.clock()
        seen = self._seen.get(kind)
        if seen is not None and now - seen[0] < self.every:
            self._seen[kind] = (seen[0], seen[1] + 1)
            return False
        held = seen[1] if seen is not None else 0
        self._seen[kind] = (now, 0)
        if held:
            record.msg = f"{record.msg} [{held} more like this in the last {self.every:.0f} s]"
        return True


def damp_kafka_client(every: float = 30.0) -> RepeatFilter:
    """Put one ``RepeatFilter`` on every logger of the Kafka client that exists now (a logger's
    filter sees only its own records, so each module's logger gets it); returns the filter."""
    repeat = RepeatFilter(every)
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in KAFKA_CLIENT_LOGGERS:
            logging.getLogger(name).addFilter(repeat)
    return repeat


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
