"""Drive one loan through the core as the stream would: records and ticks in arrival order."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from streams.core import errors
from streams.core.config import EngineConfig
from streams.core.loan import LoanState, apply_repayment, apply_schedule, new_loan, tick
from streams.core.records import LoanSchedule, Repayment


class Stream:
    """A loan fed record by record with a tick clock, collecting every event and refusal."""

    def __init__(self, loan_id: str = "L1", cfg: EngineConfig | None = None) -> None:
        self.cfg = cfg or EngineConfig()
        self.state: LoanState = new_loan(loan_id)
        self.now: datetime | None = None
        self.events: list[dict[str, Any]] = []
        self.refused: list[str] = []

    def _take(self, outcome) -> None:
        self.state = outcome.state
        self.events.extend(e.to_dict() for e in outcome.events)
        self.refused.extend(r.error.reason for r in outcome.rejected)

    def feed(self, record: LoanSchedule | Repayment) -> None:
        try:
            if isinstance(record, LoanSchedule):
                self._take(apply_schedule(self.state, record, self.now, self.cfg))
            else:
                self._take(apply_repayment(self.state, record, self.now, self.cfg))
        except errors.InvalidRecord as exc:
            self.refused.append(exc.reason)

    def tick(self, now: datetime) -> None:
        self.now = now if self.now is None or now > self.now else self.now
        self._take(tick(self.state, self.now, self.cfg))

    def run(self, items: Iterable[LoanSchedule | Repayment | datetime]) -> Stream:
        for item in items:
            if isinstance(item, datetime):
                self.tick(item)
            else:
                self.feed(item)
        return self

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]
