"""`duewatch dlq redrive`: dead-lettered records back to where they came from (SPEC §2).

An operator redrives records once their cause is gone: a loan released after a fix, a
producer that was down when a repayment's hold period ran out, a bug fixed in a release. Each
DLQ record names its source in headers; this module decides, record by record, where it goes
again and with which headers, and what it leaves alone and why. Nothing here does I/O: the
command line reads the DLQ and produces what this returns.

- A record of an input topic (or of an internal stage topic the worker reads) goes back to
  that topic with its original key, bytes and headers, and a ``duewatch-redrives`` header
  counting redrives; a keyless one (a tick) to the partition it came from.
- An OverdueEvent whose routing failed came from ``overdue.events``, which the worker writes
  but does not read: it goes to the control topic as a ``REROUTE`` command for its loan.
- A record redriven ``MAX_REDRIVES`` times already stays: whatever fails it, fails it again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from .contracts import control
from .contracts import topics as names
from .worker.effects import DLQ_HEADERS

REDRIVES_HEADER = "duewatch-redrives"
MAX_REDRIVES = 3
#: Internal topics of the worker's stages (``<app id>-<name>``), which it reads like inputs.
STAGE_TOPICS = ("notify-by-borrower", "partner-items")
_INPUTS = (*names.INPUT_TOPICS, names.CONTROL)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the DLQ as read back."""

    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace")
        return None


@dataclass(frozen=True, slots=True)
class Resend:
    """A record to produce: a logical topic (or a stage's name), its partition when fixed."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    partition: int | None = None


@dataclass
class Plan:
    """What a redrive sends, and what it leaves with the reason (counted)."""

    resend: list[Resend] = field(default_factory=list)
    left: Counter = field(default_factory=Counter)


def matches(record: DeadLetter, reason: str | None, loan_id: str | None) -> bool:
    """Whether ``record`` is one the operator asked for (``--reason``, ``--loan``)."""
    if reason is not None and record.header("reason") != reason:
        return False
    if loan_id is not None:
        named = record.header("loan_id")
        key = None if record.key is None else record.key.decode("utf-8", "replace")
        if loan_id not in (named, key):
            return False
    return True


def plan(records: Iterable[DeadLetter], reason: str | None, loan_id: str | None, now: datetime) -> Plan:
    """Where each matching DLQ record goes again (``now``: when the operator asked)."""
    out = Plan()
    for record in records:
        if not matches(record, reason, loan_id):
            continue
        source = record.header("source_topic")
        count = _count(record.header(REDRIVES_HEADER))
        if count >= MAX_REDRIVES:
            out.left[f"redriven {MAX_REDRIVES} times already"] += 1
            continue
        headers = (*(h for h in record.headers if h[0] not in (*DLQ_HEADERS, REDRIVES_HEADER)),
                   (REDRIVES_HEADER, str(count + 1).encode()))  # fmt: skip
        if source in _INPUTS or source in STAGE_TOPICS:
            partition = None
            if record.key is None:
                partition = _count(record.header("source_partition"))
            out.resend.append(Resend(source, record.key, record.value, headers, partition))
        elif source == names.OVERDUE:
            loan = record.header("loan_id") or (record.key or b"").decode("utf-8", "replace")
            command = control.Command(control.REROUTE, loan, now, record.value)
            out.resend.append(Resend(names.CONTROL, loan.encode(), control.encode(command), headers))
        else:
            out.left[f"from {source or 'an unknown topic'}: not redrivable"] += 1
    return out


def _count(text: str | None) -> int:
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0


def summary(plan: Plan) -> Mapping[str, int]:
    """Resends by topic (for the command's report)."""
    return Counter(r.topic for r in plan.resend)
