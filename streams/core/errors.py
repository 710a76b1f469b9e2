"""Why a record was refused.

Every refusal carries a reason from a small closed set (it becomes a DLQ header and a
metric label, so it must never contain a loan id or an amount) and a human detail.
"""

from __future__ import annotations

# The closed set of reasons. Metrics label by these, never by free text.
UNDECODABLE = "UNDECODABLE"
MISSING_FIELD = "MISSING_FIELD"
INVALID_FIELD = "INVALID_FIELD"
NON_POSITIVE_AMOUNT = "NON_POSITIVE_AMOUNT"
NEGATIVE_AMOUNT = "NEGATIVE_AMOUNT"
UNKNOWN_CURRENCY = "UNKNOWN_CURRENCY"
UNKNOWN_ENUM = "UNKNOWN_ENUM"
INVALID_TIMEZONE = "INVALID_TIMEZONE"
INVALID_CALENDAR = "INVALID_CALENDAR"
SCHEDULE_ORDER = "SCHEDULE_ORDER"
CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
CURRENCY_CHANGED = "CURRENCY_CHANGED"
KEY_MISMATCH = "KEY_MISMATCH"
UNKNOWN_PAYMENT = "UNKNOWN_PAYMENT"
ALREADY_REVERSED = "ALREADY_REVERSED"
REVERSAL_BEFORE_PAYMENT = "REVERSAL_BEFORE_PAYMENT"
REVERSAL_AMOUNT_MISMATCH = "REVERSAL_AMOUNT_MISMATCH"
CONFLICTING_DUPLICATE = "CONFLICTING_DUPLICATE"
NO_SCHEDULE = "NO_SCHEDULE"
INTERNAL_ERROR = "INTERNAL_ERROR"  # a bug met this record; it is kept in the DLQ, not lost
# SPEC §2's bounds and the set-aside lifecycle.
TOO_LARGE = "TOO_LARGE"  # a record value over DUEWATCH_MAX_RECORD_BYTES
INVALID_ID = "INVALID_ID"  # an id empty, over 64 characters, or with a control character
OUT_OF_RANGE = "OUT_OF_RANGE"  # a number, date or count outside its bound (the field in the detail)
TICK_AHEAD = "TICK_AHEAD"  # a tick further ahead of the wall clock than DUEWATCH_MAX_TICK_AHEAD
LOAN_SET_ASIDE = "LOAN_SET_ASIDE"  # a record for a loan an unexpected failure set aside
# Registry mode (SPEC §6): a framed value whose schema id the registry does not know, or whose
# writer schema does not resolve to duewatch's reader schema. (An unreachable registry is an
# outage, never a reason: streams.contracts.registry.RegistryUnavailable.)
UNKNOWN_SCHEMA = "UNKNOWN_SCHEMA"
SCHEMA_MISMATCH = "SCHEMA_MISMATCH"

REASONS: frozenset[str] = frozenset(
    {
        UNDECODABLE,
        MISSING_FIELD,
        INVALID_FIELD,
        NON_POSITIVE_AMOUNT,
        NEGATIVE_AMOUNT,
        UNKNOWN_CURRENCY,
        UNKNOWN_ENUM,
        INVALID_TIMEZONE,
        INVALID_CALENDAR,
        SCHEDULE_ORDER,
        CURRENCY_MISMATCH,
        CURRENCY_CHANGED,
        KEY_MISMATCH,
        UNKNOWN_PAYMENT,
        ALREADY_REVERSED,
        REVERSAL_BEFORE_PAYMENT,
        REVERSAL_AMOUNT_MISMATCH,
        CONFLICTING_DUPLICATE,
        NO_SCHEDULE,
        INTERNAL_ERROR,
        TOO_LARGE,
        INVALID_ID,
        OUT_OF_RANGE,
        TICK_AHEAD,
        LOAN_SET_ASIDE,
        UNKNOWN_SCHEMA,
        SCHEMA_MISMATCH,
    }
)


class InvalidRecord(ValueError):
    """A record that must go to the dead-letter topic instead of into a loan's state."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        detail = bounded(detail)
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


MAX_DETAIL_CHARS = 200


def bounded(text: str) -> str:
    """``text`` as a DLQ header or log line may carry it: at most 200 characters, control
    characters replaced. Details name fields and bounds, never input values; this is the
    guard for the day one slips through."""
    text = text[:MAX_DETAIL_CHARS]
    if not text.isprintable():
        text = "".join(c if c.isprintable() else "?" for c in text)
    return text
