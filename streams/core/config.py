"""The detector's tunable policy: buckets, reminder days, settle delay, hold period.

Defaults are SPEC's. The stream reads overrides from the environment; the core only sees
this immutable value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time, timedelta

from .buckets import DEFAULT_BUCKETS, BucketTable


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything the overdue semantics leave configurable."""

    buckets: BucketTable = field(default=DEFAULT_BUCKETS)
    # DUE_SOON reminders: calendar days before the effective due date, at a local wall time.
    reminder_days: tuple[int, ...] = (3, 1)
    reminder_time: time = time(9, 0)
    # A midnight or reminder transition at x is emitted once the tick clock reaches x + settle.
    settle: timedelta = timedelta(seconds=60)
    # A repayment whose loan has no schedule goes to the DLQ once the clock is this far past paid_at.
    hold: timedelta = timedelta(days=7)
    # Bounded state (SPEC §2). A record whose event time is more than ``late_window`` behind the
    # loan's processed instant is refused, and so is a reversal dated more than
    # ``reversal_window`` after its payment; so nothing older than both together can change any
    # more, and it is folded into the loan's sealed history instead of kept record by record.
    late_window: timedelta = timedelta(days=366)
    reversal_window: timedelta = timedelta(days=366)

    def __post_init__(self) -> None:
        # A reminder after its due date would come after the cut-off, where the walk no longer
        # looks for reminders (``timeline._timed_after``): reminders are before or on the day.
        if any(days < 0 for days in self.reminder_days):
            raise ValueError("reminder_days are days before the due date: none may be negative")


REPLAY_CONFIG = EngineConfig(settle=timedelta(0))
