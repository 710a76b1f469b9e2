"""Which loans a tick must touch: a min-heap of each loan's next wake-up instant.

DESIGN: handling a tick costs O(transitions due), never O(loans). Every operation on a
loan returns the next tick-clock instant at which ``tick`` can do something for it; the
index keeps one live entry per loan (stale heap entries are skipped lazily), so a tick
with nothing due looks at the heap's head and returns.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from datetime import datetime


class WakeIndex:
    """Loan ids ordered by their next wake-up instant (one partition's worth)."""

    __slots__ = ("_heap", "_due")

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, str]] = []
        self._due: dict[str, datetime] = {}

    def __len__(self) -> int:
        return len(self._due)

    def set(self, loan_id: str, wake_at: datetime | None) -> None:
        """Record ``loan_id``'s next wake-up (``None``: nothing will ever be due without new input)."""
        current = self._due.get(loan_id)
        if wake_at == current:
            return
        if wake_at is None:
            del self._due[loan_id]
            return
        self._due[loan_id] = wake_at
        heapq.heappush(self._heap, (wake_at, loan_id))
        if len(self._heap) > 4 * len(self._due) + 64:
            self._compact()

    def load(self, entries: Iterable[tuple[str, datetime | None]]) -> None:
        """Replace the index with ``entries`` (loan id, wake-up) at once: a restart indexes a whole
        partition, and one heapify is linear where a push per loan is not."""
        self._due = {loan_id: at for loan_id, at in entries if at is not None}
        self._heap = [(at, loan_id) for loan_id, at in self._due.items()]
        heapq.heapify(self._heap)

    def next_wake(self) -> datetime | None:
        """The earliest wake-up instant in the index."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: datetime, limit: int | None = None) -> list[str]:
        """Remove and return the loans whose wake-up is at or before ``now``, at most ``limit`` of
        them, earliest first (callers ``set`` them again; the rest stay indexed)."""
        due: list[str] = []
        heap = self._heap
        while heap and heap[0][0] <= now and (limit is None or len(due) < limit):
            wake_at, loan_id = heapq.heappop(heap)
            if self._due.get(loan_id) == wake_at:
                del self._due[loan_id]
                due.append(loan_id)
        return due

    def discard(self, loan_id: str) -> None:
        """Forget ``loan_id`` (its partition was revoked)."""
        self._due.pop(loan_id, None)

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap and self._due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)

    def _compact(self) -> None:
        self._heap = [(at, loan_id) for loan_id, at in self._due.items()]
        heapq.heapify(self._heap)
