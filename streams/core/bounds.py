"""The bounds every input must keep (SPEC §2), each with its reason.

A value outside them is refused at the door, in replay and in the stream alike, before it
can reach a loan's state: an instalment sum past 2^63 − 1, a penalty rate whose daily
interest overflows, a due date at the end of the calendar or a grace period of two billion
days were all once accepted, and every tick of their partitions then failed. The numbers
are chosen so that nothing the detector derives from bounded inputs can leave Avro's
``long`` (penalty on 10^15 at 1,000 % a year for 300 years is 3·10^18 < 9.2·10^18) or
Python's ``date``.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from . import errors

#: Largest value of a record Kafka hands the worker (``DUEWATCH_MAX_RECORD_BYTES``).
MAX_RECORD_BYTES = 256 * 1024
#: Every amount, and every sum of amounts a loan can reach, in minor units.
MAX_AMOUNT = 10**15
MIN_DATE = date(1900, 1, 1)
MAX_DATE = date(2199, 12, 31)
MIN_INSTANT = datetime(1900, 1, 1, tzinfo=UTC)
END_INSTANT = datetime(2200, 1, 1, tzinfo=UTC)  # exclusive: the last instant of 2199-12-31 UTC is inside
MAX_INSTALMENTS = 1200
MAX_GRACE_DAYS = 3650
MAX_PENALTY_RATE_BPS = 100_000
MAX_ID_CHARS = 64
MAX_TIMEZONE_CHARS = 64
#: Free-text codes kept in a loan's state (a repayment's channel, a calendar code).
MAX_CODE_CHARS = 64
#: Partners one loan may be shared with (each is a fan-out target and part of every event).
MAX_PARTNERS = 64
#: Avro ``int`` fields (revision, seq, ...) hold 32 bits.
MAX_INT32 = 2**31 - 1

# Unicode category Cc: C0 controls, DEL and C1 controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_size(size: int, limit: int = MAX_RECORD_BYTES) -> None:
    """Refuse a record value of more than ``limit`` bytes (``TOO_LARGE``)."""
    if size > limit:
        raise errors.InvalidRecord(errors.TOO_LARGE, f"record value of {size} bytes exceeds {limit}")


def check_id(value: str, name: str) -> str:
    """An id of 1–64 characters with no control character (``INVALID_ID``)."""
    if not 0 < len(value) <= MAX_ID_CHARS:
        raise errors.InvalidRecord(errors.INVALID_ID, f"{name} must have 1 to {MAX_ID_CHARS} characters")
    if not (value.isascii() and value.isprintable()) and _CONTROL.search(value):
        raise errors.InvalidRecord(errors.INVALID_ID, f"{name} must not contain control characters")
    return value


def check_amount(value: int, name: str) -> int:
    """An amount of at most 10^15 minor units (``OUT_OF_RANGE``)."""
    if value > MAX_AMOUNT:
        raise errors.InvalidRecord(errors.OUT_OF_RANGE, f"{name} exceeds {MAX_AMOUNT} minor units")
    return value


def check_at_most(value: int, limit: int, name: str) -> int:
    """``value`` ≤ ``limit`` (``OUT_OF_RANGE``, the field named)."""
    if value > limit:
        raise errors.InvalidRecord(errors.OUT_OF_RANGE, f"{name} exceeds {limit}")
    return value


def check_date(value: date, name: str) -> date:
    """A date from 1900-01-01 to 2199-12-31 (``OUT_OF_RANGE``)."""
    if not MIN_DATE <= value <= MAX_DATE:
        raise errors.InvalidRecord(errors.OUT_OF_RANGE, f"{name} must be from {MIN_DATE} to {MAX_DATE}")
    return value


def check_instant(value: datetime, name: str) -> datetime:
    """An instant from 1900-01-01 to 2199-12-31 (``OUT_OF_RANGE``)."""
    if not MIN_INSTANT <= value < END_INSTANT:
        raise errors.InvalidRecord(errors.OUT_OF_RANGE, f"{name} must be from {MIN_DATE} to {MAX_DATE}")
    return value
