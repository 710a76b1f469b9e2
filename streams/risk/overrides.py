"""`whatif --set FIELD=VALUE`: one schedule term changed on every loan of the book.

Risk teams ask "what if every loan had three days' grace?" — a change of the contract terms
the schedules carry, not of the routing policy. The override is applied to every revision
of every schedule, so a loan's history stays consistent (a revision still replaces the one
before it from its ``effective_at`` on, with the same term). Only the terms SPEC §7.3 names
can be set, within SPEC §2's bounds, so a scenario never produces records the detector would
dead-letter for being out of range.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..contracts.topics import SCHEDULES

#: The schedule terms a what-if may set, with SPEC §2's inclusive upper bound.
SETTABLE: Mapping[str, int] = {
    "grace_days": 3_650,
    "tolerance": 10**15,
    "late_fee": 10**15,
    "penalty_rate_bps": 100_000,
}


class OverrideError(ValueError):
    """A ``FIELD=VALUE`` that names no settable term or gives it an unusable value."""


def parse_override(text: str) -> tuple[str, int]:
    """``"grace_days=3"`` → ``("grace_days", 3)``; raises :class:`OverrideError` saying what is allowed."""
    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not sep or not name:
        raise OverrideError(f"expected FIELD=VALUE, got {text!r}")
    if name not in SETTABLE:
        raise OverrideError(f"{name!r} cannot be set; settable: {', '.join(SETTABLE)}")
    if not raw.isascii() or not raw.isdigit():
        raise OverrideError(f"{name} must be a whole number ≥ 0 (minor units for amounts), got {raw!r}")
    value = int(raw)
    if value > SETTABLE[name]:
        raise OverrideError(f"{name} must be at most {SETTABLE[name]:,}, got {value:,}")
    return name, value


def overrides_from(texts: Iterable[str]) -> dict[str, int]:
    """Several ``FIELD=VALUE``; a field given twice keeps the last value, as command lines do."""
    out: dict[str, int] = {}
    for text in texts:
        name, value = parse_override(text)
        out[name] = value
    return out


def apply_overrides(
    records: Iterable[Mapping[str, Any]], overrides: Mapping[str, int]
) -> Iterator[Mapping[str, Any]]:
    """The replay input with ``overrides`` set on every ``loan.schedules`` value (others unchanged).

    Records are copied, never changed in place: the baseline runs on the very same list. A
    schedule whose value is not an object is passed on as it is (replay dead-letters it in
    both runs alike).
    """
    for record in records:
        value = record.get("value")
        # The topic as replay recognises it: the logical name, possibly behind a prefix.
        if overrides and str(record.get("topic", "")).endswith(SCHEDULES) and isinstance(value, Mapping):
            yield {**record, "value": {**value, **overrides}}
        else:
            yield record


__all__ = ["SETTABLE", "OverrideError", "apply_overrides", "overrides_from", "parse_override"]
