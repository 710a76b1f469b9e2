"""``streams.worker.faust_internals.PartitionStore`` reads and writes the same bytes, in the same partition, as
Faust's own table path does (a real RocksDB store in a temporary directory; no broker)."""

from __future__ import annotations

import weakref
from pathlib import Path
from types import SimpleNamespace

import faust
from faust.streams import _current_event

from streams.worker.faust_internals import PartitionStore


class _Current:
    __slots__ = ("message", "__weakref__")

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


def _table(tmp_path: Path, store: str = "rocksdb://") -> faust.types.TableT:
    app = faust.App("partition-store-test", broker="kafka://127.0.0.1:1", store=store, datadir=str(tmp_path))
    return app.Table("loans", default=None, key_type=bytes, value_type=bytes, partitions=4)


def _faust_point(partition: int, held: list[_Current]) -> None:
    held[:] = [_Current(partition)]
    _current_event.set(weakref.ref(held[0]))


def test_direct_writes_are_what_faust_reads_in_that_partition(tmp_path: Path) -> None:
    table = _table(tmp_path)
    held: list[_Current] = []
    store = PartitionStore(table, 4)
    store.put(2, [(b"L1", b"state-1"), (b"L2", b"state-2")])
    _faust_point(2, held)
    assert table.get(b"L1") == b"state-1" and table.get(b"L2") == b"state-2"
    _faust_point(1, held)
    assert table.get(b"L1") is None, "another partition's database does not hold it"
    assert store.get(2, b"L2") == b"state-2"
    assert store.get(1, b"L2") is None


def test_direct_reads_see_what_faust_wrote(tmp_path: Path) -> None:
    table = _table(tmp_path)
    held: list[_Current] = []
    _faust_point(3, held)
    table.data[b"L9"] = b"from-faust"
    store = PartitionStore(table, 4)
    assert store.get(3, b"L9") == b"from-faust"
    assert store.get(0, b"L9") is None


def test_another_store_goes_through_the_table(tmp_path: Path) -> None:
    table = _table(tmp_path, store="memory://")
    store = PartitionStore(table, 4)
    store.put(1, [(b"L3", b"s")])
    assert store.get(1, b"L3") == b"s"
    assert _current_event.get()().message.partition == 1, "the partition was made current first"


async def test_record_batches_split_at_the_producers_batch_size_and_keep_every_record() -> None:
    """What the changelog and the outputs are sent as: every record, in order (a partition's
    newest state is its last record), keys, values and headers as given."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.record.memory_records import MemoryRecords

    from streams.worker.checkpoint import record_batches

    kafka = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", max_batch_size=1024)  # never started
    records = [
        (f"L{i}".encode(), bytes([i]) * 300, [("reason", b"R%d" % i)] if i % 3 == 0 else [])
        for i in range(10)
    ]
    records += [(b"big", b"x" * 5000, []), (None, b"keyless", [])]
    try:
        batches = list(record_batches(kafka, records))
        assert list(record_batches(kafka, [])) == []
    finally:
        await kafka.stop()
    assert len(batches) > 2  # ~3 records of 300 B per 1 KB batch; the 5 KB one alone
    assert sum(count for _, count in batches) == len(records)
    read = []
    for batch, count in batches:
        assert batch.record_count() == count
        got = list(MemoryRecords(bytes(batch._build())).next_batch())  # the bytes the broker gets
        read += [(r.key, r.value, list(r.headers)) for r in got]
    assert read == [(key, value, list(headers)) for key, value, headers in records]
