"""The wake-up index: a tick touches only the loans that are due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from streams.core.wakeups import WakeIndex

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_pop_due_returns_only_due_loans_and_forgets_them() -> None:
    index = WakeIndex()
    index.set("a", T0 + timedelta(hours=1))
    index.set("b", T0 + timedelta(hours=3))
    index.set("a", T0 + timedelta(hours=2))  # moved: the old entry is stale
    assert index.pop_due(T0 + timedelta(hours=1)) == []
    assert index.pop_due(T0 + timedelta(hours=2)) == ["a"]
    assert index.next_wake() == T0 + timedelta(hours=3)
    index.set("b", None)
    assert index.next_wake() is None and len(index) == 0


@given(
    st.lists(st.tuples(st.sampled_from("abcdefgh"), st.one_of(st.none(), st.integers(0, 100))), max_size=200),
    st.integers(0, 100),
)
def test_index_matches_a_plain_dict(ops, now) -> None:
    index = WakeIndex()
    model: dict[str, datetime] = {}
    for loan_id, minutes in ops:
        at = None if minutes is None else T0 + timedelta(minutes=minutes)
        index.set(loan_id, at)
        if at is None:
            model.pop(loan_id, None)
        else:
            model[loan_id] = at
    cut = T0 + timedelta(minutes=now)
    assert sorted(index.pop_due(cut)) == sorted(k for k, v in model.items() if v <= cut)
    assert len(index) == sum(1 for v in model.values() if v > cut)


def test_load_equals_setting_each_loan() -> None:
    """A restart loads a partition at once; it must index exactly what setting each loan would."""
    from datetime import UTC, datetime, timedelta

    base = datetime(2026, 3, 1, tzinfo=UTC)
    entries = [(f"L{n}", None if n % 7 == 0 else base + timedelta(hours=(n * 37) % 100)) for n in range(200)]
    one_by_one, at_once = WakeIndex(), WakeIndex()
    for loan_id, at in entries:
        one_by_one.set(loan_id, at)
    at_once.load(entries)
    assert len(at_once) == len(one_by_one) == sum(1 for _, at in entries if at is not None)
    for hours in (0, 10, 50, 100):
        now = base + timedelta(hours=hours)
        assert sorted(at_once.pop_due(now)) == sorted(one_by_one.pop_due(now))
    at_once.set("L1", base)  # still a working index after a load
    assert at_once.pop_due(base) == ["L1"]
