"""Where a keyed record belongs (SPEC §1): Kafka's default partitioner, murmur2 of the key's
bytes over the topic's partitions, the one the worker, Faust's changelogs and upstream share."""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_of(key: bytes, partitions: int) -> int:
    """The partition murmur2 gives ``key`` among ``partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
