"""Local dates, cut-offs and business days: where an instant meets a loan's calendar.

SPEC §3 defines everything on event time in the loan's time zone: the local date of an
instant, the effective due date (FOLLOWING over public holidays and make-up working
days), and the cut-off — the first instant of local day D+1, which is not always 00:00
when daylight saving skips midnight. Holiday data comes from the pinned ``holidays``
package, so a due date on China's National Day moves the way a Chinese bank moves it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

ONE_DAY = timedelta(days=1)
MICROSECOND = timedelta(microseconds=1)

# Conventions for a due date that falls on a non-working day.
NONE = "NONE"
FOLLOWING = "FOLLOWING"
CONVENTIONS = frozenset({NONE, FOLLOWING})


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; raises ``ZoneInfoNotFoundError``/``ValueError`` when unknown."""
    return ZoneInfo(name)


def is_zone(name: str) -> bool:
    """True when ``name`` is an IANA time zone this machine knows."""
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@lru_cache(maxsize=256)
def is_calendar(code: str) -> bool:
    """True when the ``holidays`` package has public holidays for country ``code``."""
    return code in holidays.list_supported_countries()


@lru_cache(maxsize=4096)
def _holiday_calendar(code: str, year: int) -> holidays.HolidayBase:
    return holidays.country_holidays(code, years=year)


@lru_cache(maxsize=65536)
def is_working_day(day: date, calendar: str | None) -> bool:
    """A working day of ``calendar``: not a weekend, not a public holiday, or an official make-up day.

    Without a calendar only Saturdays and Sundays are days off (SPEC §3).
    """
    if calendar is None:
        return day.weekday() < 5
    return bool(_holiday_calendar(calendar, day.year).is_working_day(day))


@lru_cache(maxsize=65536)
def effective_due_date(due: date, convention: str, calendar: str | None) -> date:
    """The due date D the loan is judged against: ``due`` moved to the next working day under FOLLOWING."""
    if convention != FOLLOWING:
        return due
    day = due
    while not is_working_day(day, calendar):
        day += ONE_DAY
    return day


def local_date(instant: datetime, tz: tzinfo) -> date:
    """The calendar date of ``instant`` in ``tz``."""
    return instant.astimezone(tz).date()


@lru_cache(maxsize=65536)
def start_of_day(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of local ``day`` in ``tz``, as a UTC datetime.

    Where a daylight-saving change skips midnight, zoneinfo reads the missing 00:00 with the
    offset in force before the change, which is exactly the instant the day begins. Cached:
    every step of every loan asks for a day's start, and a book's loans share few days.
    """
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def local_instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The instant of wall-clock time ``at`` on local ``day`` in ``tz``, as a UTC datetime."""
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def cut_off(effective_due: date, tz: ZoneInfo) -> datetime:
    """First instant of local day D+1: a payment before it, or exactly at it, is in time."""
    return start_of_day(effective_due + ONE_DAY, tz)


def is_start_of_day(instant: datetime, tz: ZoneInfo) -> bool:
    """True when ``instant`` is the first instant of its local day (a 'midnight')."""
    return start_of_day(local_date(instant, tz), tz) == instant


def midnights_between(after: datetime, before: datetime, tz: ZoneInfo) -> int:
    """How many local day starts lie strictly between ``after`` and ``before``."""
    if before <= after:
        return 0
    first = local_date(after, tz) + ONE_DAY
    last = local_date(before, tz)
    if start_of_day(last, tz) >= before:
        last -= ONE_DAY
    return max(0, (last - first).days + 1)


def parse_instant(value: object) -> datetime:
    """An aware instant from an aware datetime or an ISO-8601 string with an offset; else ValueError."""
    if isinstance(value, datetime):
        instant = value
    elif isinstance(value, str):
        instant = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    else:
        raise ValueError(f"not an instant: {type(value).__name__}")
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("instant without a UTC offset")
    return instant.astimezone(UTC)


def parse_date(value: object) -> date:
    """A date from a ``date`` or a ``YYYY-MM-DD`` string; else ValueError."""
    if isinstance(value, datetime):
        raise ValueError("a date, not an instant, is expected")
    if isinstance(value, date):
        return value
    if isinstance(value, str) and len(value) == 10:
        return date.fromisoformat(value)
    raise ValueError(f"not a date: {value!r}")
