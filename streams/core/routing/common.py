"""What the four routers share: event access, deterministic ids, local time, wording, state codec.

Everything here is pure. Instants are aware datetimes and are compared as instants; the
routers write them in the loan's (or partner's) time zone so the JSON form reads locally.
Ids are hashes of the source event id(s) and the output's role, never of arrival time, so
re-delivery and replay give the same ids.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import types
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints
from zoneinfo import ZoneInfo

import orjson

from streams.contracts import topics
from streams.core.dates import local_date, parse_date, parse_instant, zone

# OverdueEvent types (SPEC §4) and loan statuses: one definition, the detector's (re-exported).
from streams.core.events import BUCKET_CHANGED as BUCKET_CHANGED
from streams.core.events import DUE_SOON as DUE_SOON
from streams.core.events import OVERDUE_CURED as OVERDUE_CURED
from streams.core.events import OVERDUE_OPENED as OVERDUE_OPENED
from streams.core.events import OVERDUE_RETRACTED as OVERDUE_RETRACTED
from streams.core.events import WRITTEN_OFF as WRITTEN_OFF
from streams.core.money import minor_unit_exponent
from streams.core.records import ACTIVE as ACTIVE
from streams.core.records import CLOSED as CLOSED

# Output topics (logical names, SPEC §1), as the contracts define them.
NOTIFY_TOPIC = topics.NOTIFY
BUREAU_TOPIC = topics.BUREAU
PARTNER_TOPIC = topics.PARTNER
COLLECTIONS_TOPIC = topics.COLLECTIONS

ONE_DAY = timedelta(days=1)

Output = tuple[str, str, dict[str, Any]]
T = TypeVar("T")
"""One routed record: (logical topic, key, value) with the §5 field names."""


class RoutingError(ValueError):
    """An event, dispute or policy value the routers cannot use (the agent sends it to the DLQ)."""


# --- event access -----------------------------------------------------------------------------


def ev_str(event: Mapping[str, Any], name: str) -> str:
    """A required string field; RoutingError names the field when it is missing or not a string."""
    value = event.get(name)
    if not isinstance(value, str) or not value:
        raise RoutingError(f"event field {name!r} must be a non-empty string")
    return value


def ev_int(event: Mapping[str, Any], name: str) -> int:
    """A required integer field (money in minor units, dpd, counts); floats and bools are refused."""
    value = event.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RoutingError(f"event field {name!r} must be an integer")
    return value


def ev_instant(event: Mapping[str, Any], name: str) -> datetime:
    """A required aware instant (datetime or ISO-8601 string with offset), in UTC.

    Internally every instant is UTC: Python adds timedeltas to, and compares, two datetimes
    that share one ZoneInfo by their wall clocks (wrong across a DST change and in the
    repeated hour). Outputs are converted to the loan's zone when they are built.
    """
    try:
        return parse_instant(event.get(name)).astimezone(UTC)
    except ValueError as exc:
        raise RoutingError(f"event field {name!r}: {exc}") from None


def ev_date(event: Mapping[str, Any], name: str) -> date | None:
    """An optional date field (date or YYYY-MM-DD)."""
    value = event.get(name)
    if value is None:
        return None
    try:
        return parse_date(value)
    except ValueError as exc:
        raise RoutingError(f"event field {name!r}: {exc}") from None


def ev_zone(event: Mapping[str, Any]) -> ZoneInfo:
    """The loan's IANA time zone."""
    name = ev_str(event, "timezone")
    try:
        return zone(name)
    except Exception:  # noqa: BLE001 - ZoneInfoNotFoundError, ValueError, IsADirectoryError...
        raise RoutingError(f"unknown time zone {name!r}") from None


def ev_contact(event: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    """(locale, consented channels) from the event's ``contact``; missing parts are None / ()."""
    contact = event.get("contact") or {}
    if not isinstance(contact, Mapping):
        raise RoutingError("event field 'contact' must be a mapping")
    locale = contact.get("locale")
    channels = contact.get("channels") or ()
    if isinstance(channels, str) or not all(isinstance(c, str) for c in channels):
        raise RoutingError("event field 'contact.channels' must be a list of strings")
    return (locale if isinstance(locale, str) else None), tuple(channels)


def ev_partners(event: Mapping[str, Any]) -> tuple[str, ...]:
    """The partner ids the borrower consented to for this loan, first occurrence order, no repeats."""
    partners = event.get("partners") or ()
    if isinstance(partners, str) or not all(isinstance(p, str) for p in partners):
        raise RoutingError("event field 'partners' must be a list of strings")
    return tuple(dict.fromkeys(partners))


def bucket_rank(bucket: str) -> int:
    """The age order of a bucket name ``M<n>`` (M0 = 0); RoutingError for anything else."""
    if not isinstance(bucket, str) or len(bucket) < 2 or bucket[0] != "M" or not bucket[1:].isdigit():
        raise RoutingError(f"not a bucket name: {bucket!r}")
    return int(bucket[1:])


def is_upward(event: Mapping[str, Any]) -> bool:
    """True for a BUCKET_CHANGED into an older bucket (aging), False for a partial cure downwards."""
    return bucket_rank(ev_str(event, "bucket")) > bucket_rank(ev_str(event, "previous_bucket"))


# --- ids ----------------------------------------------------------------------------------------


def make_id(prefix: str, *parts: str) -> str:
    """A deterministic id: ``prefix`` + 32 hex digits of SHA-256 over the parts (source ids and role).

    Only deterministic inputs may go in (event ids, partner ids, local dates), never arrival
    time or counters, so a re-delivered event or a replay gives the same id.
    """
    digest = hashlib.sha256("\x1f".join((prefix, *parts)).encode("utf-8")).hexdigest()[:32]
    return f"{prefix}-{digest}"


# --- local time ---------------------------------------------------------------------------------


def at_local(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The instant of wall time ``at`` on local ``day`` in ``tz``, expressed in ``tz``.

    A wall time inside a daylight-saving gap does not exist; zoneinfo reads it with the
    offset before the change, which lands just after the gap (02:30 → 03:30): the first
    valid time after it. An ambiguous wall time (the repeated hour) is its first occurrence.
    """
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC).astimezone(tz)


def in_window(wall: time, start: time, end: time) -> bool:
    """True when wall time ``wall`` is in [start, end); a window with end ≤ start wraps midnight.

    ``start == end`` is the empty window.
    """
    if start == end:
        return False
    if start < end:
        return start <= wall < end
    return wall >= start or wall < end


def next_allowed(instant: datetime, tz: ZoneInfo, quiet_start: time, quiet_end: time) -> datetime:
    """``instant`` moved out of the quiet hours [quiet_start, quiet_end) of ``tz`` (unchanged if outside).

    The result is the first instant at or after ``instant`` whose local wall time is outside
    the quiet window: the quiet period's end on the right local day, in ``tz``.
    """
    local = instant.astimezone(tz)
    wall = local.time().replace(tzinfo=None)
    if not in_window(wall, quiet_start, quiet_end):
        return local
    day = local.date()
    if quiet_start > quiet_end and wall >= quiet_start:
        day += ONE_DAY  # evening part of a window that wraps midnight: it ends tomorrow
    return at_local(day, quiet_end, tz)


def local_day(instant: datetime, tz: ZoneInfo) -> date:
    """The calendar date of ``instant`` in ``tz``."""
    return local_date(instant, tz)


def hhmm(t: time) -> str:
    """A wall time as ``HH:MM`` (the contact-window form in the outputs)."""
    return f"{t.hour:02d}:{t.minute:02d}"


# --- wording ------------------------------------------------------------------------------------

_ZH_SYMBOLS = {"CNY": "¥", "HKD": "HK$", "USD": "US$", "EUR": "€", "GBP": "£", "JPY": "JP¥", "MOP": "MOP$"}
_EN_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def format_money(minor: int, currency: str, locale: str) -> str:
    """Minor units as a borrower reads them: ``¥1,050.00`` (zh-CN) or ``CNY 1,050.00`` (en).

    Integer arithmetic only (divmod by 10**exponent), so no float ever rounds a cent away.
    """
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise RoutingError("money must be an integer number of minor units")
    try:
        exponent = minor_unit_exponent(currency)
    except (ValueError, KeyError):
        exponent = 2
    major, fraction = divmod(abs(minor), 10**exponent)
    number = f"{major:,}" + (f".{fraction:0{exponent}d}" if exponent else "")
    sign = "-" if minor < 0 else ""
    if locale == "zh-CN" and currency in _ZH_SYMBOLS:
        return f"{sign}{_ZH_SYMBOLS[currency]}{number}"
    return f"{sign}{currency} {number}"


def format_date(day: date, locale: str) -> str:
    """A date in words: ``2026年3月15日`` (zh-CN) or ``15 March 2026`` (en)."""
    if locale == "zh-CN":
        return f"{day.year}年{day.month}月{day.day}日"
    return f"{day.day} {_EN_MONTHS[day.month - 1]} {day.year}"


def format_local_time(instant: datetime, tz: ZoneInfo, locale: str) -> str:
    """An instant as local date and time: ``2026年3月17日 00:00`` / ``17 March 2026, 00:00``."""
    local = instant.astimezone(tz)
    sep = " " if locale == "zh-CN" else ", "
    return f"{format_date(local.date(), locale)}{sep}{local.hour:02d}:{local.minute:02d}"


def loan_ref(loan_id: str) -> str:
    """How texts name a loan: its last four characters (enough for the borrower, little for a snooper)."""
    return loan_id[-4:]


# --- state codec --------------------------------------------------------------------------------


_PLAIN = frozenset({str, int, bool, type(None)})
_FIELDS: dict[type, tuple[str, ...]] = {}  # a state dataclass's field names, looked up once


def to_jsonable(obj: Any) -> Any:
    """A router state (frozen dataclasses, tuples, dicts, instants, dates) as JSON-able values.

    Instants keep their zone name so a decoded state re-emits byte-identical outputs. Dispatch
    is on the exact type first: a bureau state of a few kilobytes is encoded on every event for
    its loan, and ``is_dataclass``/``fields`` per object cost most of that.
    """
    kind = type(obj)
    if kind in _PLAIN:
        return obj
    names = _FIELDS.get(kind)
    if names is not None:
        return {name: to_jsonable(getattr(obj, name)) for name in names}
    if kind is tuple or kind is list:
        return [to_jsonable(v) for v in obj]
    if kind is dict:
        return {k if type(k) is str else str(k): to_jsonable(v) for k, v in obj.items()}
    if kind is datetime:
        return _tagged_instant(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _FIELDS[kind] = tuple(f.name for f in dataclasses.fields(obj))
        return to_jsonable(obj)
    if isinstance(obj, datetime):
        return _tagged_instant(obj)
    if isinstance(obj, date):
        return {"$d": obj.isoformat()}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    raise RoutingError(f"cannot store {type(obj).__name__} in router state")


def _tagged_instant(instant: datetime) -> dict[str, str]:
    if instant.tzinfo is None:
        raise RoutingError("naive datetime in router state")
    tagged = {"$dt": instant.isoformat()}
    if isinstance(instant.tzinfo, ZoneInfo):
        tagged["tz"] = instant.tzinfo.key
    return tagged


def _untag(value: Any) -> Any:
    if isinstance(value, dict):
        if "$dt" in value and set(value) <= {"$dt", "tz"}:
            instant = datetime.fromisoformat(value["$dt"])
            return instant.astimezone(zone(value["tz"])) if "tz" in value else instant
        if set(value) == {"$d"}:
            return date.fromisoformat(value["$d"])
        return {k: _untag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untag(v) for v in value]
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A state dataclass's resolved field types (resolving them per call cost most of a decode)."""
    return get_type_hints(cls)


def from_jsonable(value: Any, hint: Any) -> Any:
    """The inverse of :func:`to_jsonable`, guided by the type hints of the state dataclasses."""
    return _decoder(hint)(value)


Decoder = Callable[[Any], Any]


@functools.cache
def _decoder(hint: Any) -> Decoder:
    """The decoding function for values of type ``hint``, worked out once per hint (reading the
    hints per value cost most of a decode)."""
    inner = _inner_decoder(hint)
    if inner is None:
        return lambda value: value

    def decode(value: Any) -> Any:
        return None if value is None else inner(value)

    return decode


def _inner_decoder(hint: Any) -> Decoder | None:
    origin = get_origin(hint)
    if hint is Any or hint is datetime or hint is date:
        return _untag
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        parts: list[tuple[str, Decoder]] = []

        def record(value: Any) -> Any:
            if not parts:  # resolved at first use: a state type may refer to itself
                hints = _hints(hint)
                parts.extend((f.name, _decoder(hints[f.name])) for f in dataclasses.fields(hint))
            return hint(**{name: part(value[name]) for name, part in parts if name in value})

        return record
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        return _decoder(options[0])
    if origin is tuple:
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _decoder(args[0])
            return lambda value: tuple(item(v) for v in value)
        items = [_decoder(a) for a in args]
        return lambda value: tuple(d(v) for v, d in zip(value, items, strict=True))
    if origin in (dict, Mapping) or hint is dict:
        args = get_args(hint) or (str, Any)
        item = _decoder(args[1])
        return lambda value: {k: item(v) for k, v in value.items()}
    return None


def encode_state(state: Any) -> bytes:
    """A router state as compact UTF-8 JSON bytes (for the RocksDB-backed Faust table)."""
    return orjson.dumps(to_jsonable(state))


def decode_state(cls: type[T], data: bytes) -> T:
    """A router state of dataclass ``cls`` back from :func:`encode_state` bytes."""
    state: T = from_jsonable(orjson.loads(data), cls)
    return state


def utc(instant: datetime) -> datetime:
    """``instant`` in UTC: the form every comparison and every duration arithmetic uses."""
    return instant.astimezone(UTC)


def later(a: datetime | None, b: datetime) -> datetime:
    """The later of a clock value (None: never set) and an instant, in UTC."""
    return utc(b) if a is None or utc(b) > utc(a) else utc(a)
