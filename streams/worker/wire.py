"""How the worker's records go onto the wire and come off it: the value's framing (plain Avro, or
the Confluent wire format in registry mode, SPEC §6) and the headers of SPEC §1.

One :class:`Wire` per worker, made in the app's wiring and handed to every shell:

- ``wire.send(topic, key, value, partition, trace)``: the record to produce for a native output
  value, encoded and with its SPEC §1 headers (``streams.contracts.headers.OutputHeaders``);
- ``wire.decode(record_type, data)``: an input value in either framing (plain mode: exactly
  ``codec.decode``);
- ``await wire.ready_for(records, current)``: in registry mode, once per batch before it is
  handled, registers the output schemas (first use) and loads the writer schemas the batch's
  framed values name. An unreachable registry is an outage, not bad input: the batch waits,
  retrying with backoff, the worker reports not ready, and nothing is dead-lettered for it.
  In plain mode it returns at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ..contracts import codec, control
from ..contracts import topics as names
from ..contracts.headers import OUTPUT_EVENTS, OutputHeaders
from ..contracts.registry import RegistryDecoder, RegistryEncoder, RegistryError, SchemaRegistry
from ..core import errors
from .effects import Send

log = logging.getLogger("duewatch")

#: Seconds between two tries while the registry does not answer: doubling from the first to
#: the last, with a little jitter so that a group's workers do not knock in step.
RETRY_FIRST, RETRY_LAST = 0.5, 10.0
#: How often the warning that the registry is still unreachable is repeated (seconds).
WARN_EVERY = 60.0


def _plain(topic: str, value: Mapping[str, Any]) -> bytes:
    return codec.encode(names.TOPIC_RECORD[topic], value)


class Wire:
    """The worker's framing and headers (see the module docstring)."""

    def __init__(
        self, app_id: str = "duewatch", registry: SchemaRegistry | None = None, topic_prefix: str = ""
    ) -> None:
        self.headers = OutputHeaders(app_id, registry is not None)
        self.registry = registry
        #: False while the registry does not answer (the worker is then not ready).
        self.available = True
        self.control_topic = topic_prefix + names.CONTROL
        self.encoder: RegistryEncoder | None = None
        self.decoder: RegistryDecoder | None = None
        self.encode: Callable[[str, Mapping[str, Any]], bytes] = _plain
        self.decode: Callable[[str, Any], dict[str, Any]] = codec.decode
        if registry is not None:
            self.encoder = RegistryEncoder(registry, topic_prefix)
            self.decoder = RegistryDecoder(registry)
            self.encode = self.encoder.encode
            self.decode = self.decoder.decode
        self._prepared = registry is None

    @property
    def registry_mode(self) -> bool:
        return self.registry is not None

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: Mapping[str, Any],
        partition: int | None,
        trace: bytes | None,
    ) -> Send:
        """The record of native output ``value`` on logical ``topic``: encoded (framed in registry
        mode) and with the SPEC §1 headers, ``trace`` its ``traceparent``."""
        return Send(topic, key, self.encode(topic, value), partition, self.headers(topic, value, trace))

    async def ready_for(
        self, records: list[Any], current: Callable[[], bool], changed: Callable[[bool], None] | None = None
    ) -> bool:
        """Registry mode: until the registry has answered everything ``records`` need (see the
        module docstring). Returns False when the batch stopped being ``current`` meanwhile (a
        rebalance: it comes again from the committed offsets); True at once in plain mode.
        ``changed(available)`` is called when the registry stops or starts answering."""
        if self.registry is None:
            return True
        delay, warned = RETRY_FIRST, 0.0
        while True:
            try:
                await self._load(records)
            except RegistryError as exc:  # unreachable, or refusing duewatch's own schemas
                now = time.monotonic()
                if self.available or now - warned > WARN_EVERY:
                    log.warning("schema registry: %s; the batch waits (not ready) and is retried", exc)
                    warned = now
                if self.available and changed is not None:
                    changed(False)
                self.available = False
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, RETRY_LAST)
                if not current():
                    return False
                continue
            if not self.available:
                log.info("schema registry answers again: processing goes on")
                self.available = True
                if changed is not None:
                    changed(True)
            return True

    async def _load(self, records: list[Any]) -> None:
        assert self.encoder is not None and self.decoder is not None
        if not self._prepared:
            await self.encoder.prepare(OUTPUT_EVENTS)
            self._prepared = True
        ids = self.decoder.pending(self._values(records))
        if ids:
            await self.decoder.load(ids)

    def _values(self, records: Iterable[Any]) -> Iterator[bytes | None]:
        """The values a batch will decode: a record's value, and a redriven event's inside an
        operator's command (``streams.contracts.control``)."""
        for message in records:
            if message.topic == self.control_topic:
                try:
                    event = control.decode(message.value).event
                except errors.InvalidRecord:
                    continue  # dead-lettered when handled
                if event is not None:
                    yield event
            else:
                yield message.value
