"""The worker's producer (streams.worker.faust_internals.IdempotentProducer): acks=all and idempotence, which Faust alone would
give only with exactly-once transactions. Checked on the aiokafka producer Faust really builds."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest

from streams.settings import Settings
from streams.worker.app import create_app
from streams.worker.faust_internals import IdempotentProducer, use_idempotent_producer


async def built(app: faust.App):
    """The aiokafka producer Faust's producer would start (not started: no broker needed)."""
    return app.producer._new_producer()


async def test_the_worker_sends_with_acks_all_and_idempotence(tmp_path: Path) -> None:
    app = create_app(Settings(state_dir=str(tmp_path)))
    assert isinstance(app.producer, IdempotentProducer)
    kafka = await built(app)
    try:
        assert kafka._sender._acks == -1  # all in-sync replicas
        assert kafka._txn_manager is not None  # aiokafka's idempotence: producer id + sequence numbers
        assert kafka._txn_manager.transactional_id is None  # and no transactions
    finally:
        await kafka.stop()


async def test_a_plain_faust_app_would_not_be_idempotent(tmp_path: Path) -> None:
    """Why IdempotentProducer exists: without it Faust's at-least-once producer has no idempotence."""
    app = faust.App("plain", broker="kafka://127.0.0.1:9", datadir=str(tmp_path))
    kafka = await built(app)
    try:
        assert kafka._txn_manager is None
    finally:
        await kafka.stop()


async def test_it_must_be_installed_before_faust_makes_its_producer(tmp_path: Path) -> None:
    app = faust.App("late", broker="kafka://127.0.0.1:9", datadir=str(tmp_path))
    assert app.producer is not None
    with pytest.raises(RuntimeError, match="earlier"):
        use_idempotent_producer(app)
