"""``streams.dev.copies``: a worker's table copy against its changelog, as `make chaos` checks it."""

from __future__ import annotations

from pathlib import Path

from streams.dev.copies import PERSISTED_OFFSET_KEY, compare_copy, databases, expected_at, read_database

CHANGELOG = [
    (0, b"L1", b"a"),
    (1, b"L2", b"b"),
    (2, b"L1", b"c"),
    (3, b"L3", b"d"),
    (4, b"L2", None),  # a tombstone
    (6, b"L4", b"e"),  # 5 compacted away
]


def test_a_copy_holds_each_keys_last_value_up_to_its_offset() -> None:
    assert expected_at(CHANGELOG, 2) == {b"L1": (2, b"c"), b"L2": (1, b"b")}
    assert expected_at(CHANGELOG, 5) == {b"L1": (2, b"c"), b"L3": (3, b"d")}


def test_a_complete_copy_differs_nowhere() -> None:
    held = {b"L1": b"c", b"L3": b"d", PERSISTED_OFFSET_KEY: b"4"}
    assert compare_copy(held, CHANGELOG, 4) == (0, None)


def test_a_copy_that_missed_a_catch_up_is_found_with_where_it_starts() -> None:
    """What the chaos run's standby copies looked like: offsets 0 to 3 never applied, the later
    records applied, and the persisted offset past all of them."""
    held = {b"L4": b"e", PERSISTED_OFFSET_KEY: b"6"}
    assert compare_copy(held, CHANGELOG, 6) == (2, 2)


def test_stale_and_extra_keys_count_too() -> None:
    held = {b"L1": b"a", b"L3": b"d", b"L9": b"?"}
    assert compare_copy(held, CHANGELOG, 4) == (2, 2)


def test_a_stopped_workers_databases_are_read_with_their_offset(tmp_path: Path) -> None:
    from rocksdict import Options, Rdict

    tables = tmp_path / "v1" / "tables"
    tables.mkdir(parents=True)
    db = Rdict(str(tables / "bureau-3.db"), options=Options(raw_mode=True))
    db[b"L1"] = b"c"
    db[PERSISTED_OFFSET_KEY] = b"2"
    db.close()
    assert [(t, p) for t, p, _ in databases(tmp_path)] == [("bureau", 3)]
    held, applied = read_database(tables / "bureau-3.db")
    assert applied == 2 and held[b"L1"] == b"c"
