"""The worker's Kafka producer: every send waits for all in-sync replicas (acks=all) and is
idempotent, so a record is neither lost when a broker dies nor written twice when retried.

Why: on a replicated cluster (replication 3, ``min.insync.replicas`` 2) a record acknowledged
by the leader alone is lost if the leader dies before a follower copied it; acks=all waits
until ``min.insync.replicas`` replicas have it. When a broker dies mid-request the producer
retries; without idempotence a batch the broker had in fact written is written again (a
duplicate, and possibly out of order behind a later batch of the same partition). With
idempotence the broker recognises the retry by the producer id and sequence number and
keeps one copy. duewatch's outputs carry deterministic ids, so a duplicate would do no harm
downstream, but it costs nothing to avoid and keeps "duplicates: 0" meaningful in a chaos run.

Faust (faust-streaming 0.15) has a setting for acks (``producer_acks``, default -1 = all) but
none for idempotence: its aiokafka driver turns ``enable_idempotence`` on only for
``processing_guarantee="exactly_once"`` (``Producer._settings_extra`` in
faust/transport/drivers/aiokafka.py), which would also make every send transactional. So the
driver's producer is subclassed here and put on the app's transport before Faust creates the
producer (``use_idempotent_producer``). The CLI's producers (streams.kafkaio) use acks="all"
directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


class IdempotentProducer(faust_aiokafka.Producer):
    """Faust's aiokafka producer with acks=all and idempotence, whatever the processing guarantee."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


def use_idempotent_producer(app: faust.App) -> None:
    """Make ``app`` send with IdempotentProducer. Call it right after creating the app: Faust
    creates its producer lazily from ``app.transport.Producer``, at the first send or start."""
    if app._producer is not None:  # noqa: SLF001 - Faust has no public "already created?"
        raise RuntimeError("the app's producer exists already; call use_idempotent_producer earlier")
    app.transport.Producer = IdempotentProducer  # type: ignore[misc]
