"""Delinquency buckets: a function of DPD alone (SPEC §3), from a configurable table."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Bucket:
    """A named DPD range, ``min_dpd`` ≤ dpd ≤ ``max_dpd`` (``None``: no upper bound)."""

    name: str
    min_dpd: int
    max_dpd: int | None


@dataclass(frozen=True, slots=True)
class BucketTable:
    """Contiguous DPD ranges from 0 upwards; the first must be the current bucket (DPD 0 only)."""

    buckets: tuple[Bucket, ...]
    _thresholds: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.buckets or self.buckets[0].min_dpd != 0 or self.buckets[0].max_dpd != 0:
            raise ValueError("the first bucket must cover exactly DPD 0")
        for before, after in zip(self.buckets, self.buckets[1:], strict=False):
            if before.max_dpd is None or after.min_dpd != before.max_dpd + 1:
                raise ValueError(f"buckets must be contiguous: {before.name} then {after.name}")
        if self.buckets[-1].max_dpd is not None:
            raise ValueError("the last bucket must be open-ended")
        # Every step of every loan asks for them: computed once.
        object.__setattr__(self, "_thresholds", tuple(b.min_dpd for b in self.buckets[1:]))

    def of(self, dpd: int) -> str:
        """The bucket name for ``dpd``."""
        for bucket in self.buckets:
            if bucket.max_dpd is None or dpd <= bucket.max_dpd:
                return bucket.name
        raise AssertionError("unreachable: the last bucket is open-ended")

    @property
    def thresholds(self) -> tuple[int, ...]:
        """The DPDs at which the bucket changes (each bucket's lower bound above 0)."""
        return self._thresholds

    @property
    def names(self) -> tuple[str, ...]:
        """Bucket names in order of age."""
        return tuple(b.name for b in self.buckets)

    @classmethod
    def from_bounds(cls, bounds: Iterable[tuple[str, int]]) -> BucketTable:
        """Build a table from (name, lower bound) pairs in increasing order, e.g. [("M0", 0), ("M1", 1), ...]."""
        pairs = list(bounds)
        buckets = []
        for index, (name, low) in enumerate(pairs):
            high = pairs[index + 1][1] - 1 if index + 1 < len(pairs) else None
            buckets.append(Bucket(name, low, high))
        return cls(tuple(buckets))


DEFAULT_BUCKETS = BucketTable.from_bounds(
    [("M0", 0), ("M1", 1), ("M2", 31), ("M3", 61), ("M4", 91), ("M5", 121), ("M6", 151), ("M7", 181)]
)
