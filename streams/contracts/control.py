"""Operators' commands on the control topic (``duewatch.control``, keyed by loan id).

- ``RELEASE``: the loan an unexpected failure set aside (SPEC §2) takes records and ticks again
  (``duewatch release LOAN_ID``).
- ``REROUTE``: an OverdueEvent whose routing failed, handed to the loan's routers again
  (``duewatch dlq redrive`` of a DLQ record from ``overdue.events``: the worker does not read
  that topic, it writes it).

The topic is duewatch's own: its values are small JSON objects, written and read only here,
so that an operator's command needs no schema release. A value that is not a valid command
goes to the DLQ like any bad input.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

import orjson

from ..core import bounds, errors
from ..core.dates import parse_instant

RELEASE = "RELEASE"
REROUTE = "REROUTE"
COMMANDS = frozenset({RELEASE, REROUTE})


@dataclass(frozen=True, slots=True)
class Command:
    """One operator's command for one loan; ``event`` is the Avro OverdueEvent of a REROUTE."""

    command: str
    loan_id: str
    requested_at: datetime
    event: bytes | None = None


def encode(command: Command) -> bytes:
    """The control topic's bytes for ``command``."""
    body = {
        "command": command.command,
        "loan_id": command.loan_id,
        "requested_at": command.requested_at.isoformat(),
        "event": None if command.event is None else base64.b64encode(command.event).decode(),
    }
    return orjson.dumps(body)


def decode(value: bytes) -> Command:
    """The command in ``value``; raises ``InvalidRecord`` for anything else."""
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise errors.InvalidRecord(errors.UNDECODABLE, "a control command is a JSON object") from None
    if not isinstance(body, dict):
        raise errors.InvalidRecord(errors.UNDECODABLE, "a control command is a JSON object")
    command = body.get("command")
    if command not in COMMANDS:
        raise errors.InvalidRecord(errors.UNKNOWN_ENUM, f"command must be one of {sorted(COMMANDS)}")
    loan_id = body.get("loan_id")
    if not isinstance(loan_id, str):
        raise errors.InvalidRecord(errors.MISSING_FIELD, "loan_id")
    bounds.check_id(loan_id, "loan_id")
    try:
        requested_at = parse_instant(body.get("requested_at"))
    except (ValueError, OverflowError):
        raise errors.InvalidRecord(errors.INVALID_FIELD, "requested_at must be an ISO-8601 instant") from None
    event = body.get("event")
    if command == REROUTE:
        if not isinstance(event, str):
            raise errors.InvalidRecord(errors.MISSING_FIELD, "event")
        try:
            return Command(command, loan_id, requested_at, base64.b64decode(event, validate=True))
        except ValueError:
            raise errors.InvalidRecord(errors.INVALID_FIELD, "event must be base64") from None
    return Command(command, loan_id, requested_at)
