"""Whether every worker's copy of its tables equals the tables' changelogs.

A worker keeps each table partition it serves or backs up (a standby copy) in a RocksDB database
of its state directory, with the changelog offset it has applied up to (Faust's "persisted
offset"). A copy is right when it holds, for every key, the value of the key's last changelog
record at or before that offset, and nothing else. A copy that is not fails silently: it is what
a worker taking the partition over decides on (the chaos run found standby copies that had
dropped a whole catch-up while their offset moved on, docs/reliability.md). `make chaos` checks
every copy once the workers have stopped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import kafkaio
from ..settings import Settings

#: The key under which Faust's RocksDB store keeps the offset a partition database has applied.
PERSISTED_OFFSET_KEY = b"__faust\x00offset__"

#: (offset, key, value) of one changelog partition's records, in offset order.
Changelog = Sequence[tuple[int, bytes, bytes | None]]


@dataclass(frozen=True, slots=True)
class Copy:
    """One table partition's database in one worker's state directory, compared."""

    worker: str
    table: str
    partition: int
    applied: int  # the persisted offset
    differ: int  # keys whose value is not the changelog's at that offset (missing, stale or extra)
    first: int | None  # the lowest changelog offset of a key that differs (None: extra keys only)

    def describe(self) -> str:
        where = f" (from offset {self.first})" if self.first is not None else ""
        return f"{self.worker} {self.table}-{self.partition} at offset {self.applied}: {self.differ} keys differ{where}"


def expected_at(changelog: Changelog, applied: int) -> dict[bytes, tuple[int, bytes]]:
    """Each key's last value at or before offset ``applied`` (a tombstone removes the key)."""
    latest: dict[bytes, tuple[int, bytes]] = {}
    for offset, key, value in changelog:
        if offset > applied:
            break
        if value is None:
            latest.pop(key, None)
        else:
            latest[key] = (offset, value)
    return latest


def compare_copy(held: Mapping[bytes, bytes], changelog: Changelog, applied: int) -> tuple[int, int | None]:
    """How many keys of the database ``held`` differ from the changelog at ``applied``, and the
    lowest changelog offset among them."""
    want = expected_at(changelog, applied)
    wrong = [offset for key, (offset, value) in want.items() if held.get(key) != value]
    extra = sum(1 for key in held if key != PERSISTED_OFFSET_KEY and key not in want)
    return len(wrong) + extra, min(wrong, default=None)


def databases(state_dir: Path) -> Iterable[tuple[str, int, Path]]:
    """(table, partition, path) of every partition database in a worker's state directory."""
    for path in sorted((state_dir / "v1" / "tables").glob("*.db")):
        table, _, partition = path.name[: -len(".db")].rpartition("-")
        if table and partition.isdigit():
            yield table, int(partition), path


def read_database(path: Path) -> tuple[dict[bytes, bytes], int | None]:
    """A stopped worker's partition database: its keys and values, and its persisted offset."""
    from rocksdict import AccessType, Options, Rdict

    db: Any = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        held = {bytes(k): bytes(v) for k, v in db.items()}  # raw mode: bytes both
    finally:
        db.close()
    raw = held.get(PERSISTED_OFFSET_KEY)
    return held, (int(raw) if raw is not None else None)


async def read_changelogs(
    cfg: Settings, tables: Iterable[str]
) -> dict[tuple[str, int], list[tuple[int, bytes, bytes | None]]]:
    """Every record of the tables' changelog topics, by (table, partition)."""
    table_of = {f"{cfg.app_id}-{table}-changelog": table for table in tables}
    out: dict[tuple[str, int], list[tuple[int, bytes, bytes | None]]] = {}
    for tp, m in await kafkaio.read_records_to_end(cfg, table_of):
        out.setdefault((table_of[tp.topic], tp.partition), []).append((m.offset, m.key, m.value))
    return out


async def check_copies(cfg: Settings, state_dirs: Mapping[str, Path], tables: Sequence[str]) -> list[Copy]:
    """Every table partition database of every (stopped) worker, compared with the changelogs."""
    changelogs = await read_changelogs(cfg, tables)
    found: list[Copy] = []
    for worker, state_dir in state_dirs.items():
        for table, partition, path in databases(state_dir):
            if table not in tables:
                continue
            held, applied = read_database(path)
            if applied is None:
                continue  # opened, never written: nothing is claimed
            differ, first = compare_copy(held, changelogs.get((table, partition), []), applied)
            found.append(Copy(worker, table, partition, applied, differ, first))
    return found
