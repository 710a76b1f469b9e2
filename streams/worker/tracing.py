"""Trace context on the wire (SPEC §1 ``traceparent``) and the optional OTLP export of spans.

A record duewatch emits carries the ``traceparent`` of the record it was emitted for, passed on
unchanged (``streams.contracts.headers``); nothing here invents one per record. The one place a
trace starts is the ticker: one per tick (:meth:`Tracing.tick_traceparent`), written with
OpenTelemetry's W3C propagator, so that everything a tick causes (overdue events, the
notifications and tasks they lead to) shares its trace id.

Spans are exported only when the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set and ``OTEL_SDK_DISABLED`` is not true: then the
OpenTelemetry SDK (the ``otlp`` extra: ``pip install 'duewatch[otlp]'``) sends, over OTLP/HTTP,
one span per tick and one span per batch an agent handles, linked to the traces of the batch's
input records. Never a span per record, and nothing at all on the hot path when export is off
(:meth:`Tracing.batch` then returns one shared no-op context). The SDK's own variables apply
(``OTEL_SERVICE_NAME``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_SCHEDULE_DELAY``, ...).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..contracts.headers import TRACEPARENT, valid_traceparent

log = logging.getLogger("duewatch")

#: The W3C Trace Context propagator: how a traceparent is written and read.
PROPAGATOR = TraceContextTextMapPropagator()
#: Most input traces a batch's span links to (a batch can hold 2,000 records).
MAX_LINKS = 64
_NO_SPAN: AbstractContextManager[None] = contextlib.nullcontext()


def trace_of(headers: Iterable[tuple[str, bytes]]) -> bytes | None:
    """The valid ``traceparent`` among a record's headers, or None (a malformed one is dropped)."""
    for key, value in headers:
        if key == TRACEPARENT:
            return valid_traceparent(value)
    return None


def trace_headers(trace_parent: bytes | None) -> list[tuple[str, bytes]]:
    """The headers that carry ``trace_parent`` on an internal record (none without one)."""
    return [] if trace_parent is None else [(TRACEPARENT, trace_parent)]


def exporting(env: Mapping[str, str]) -> bool:
    """True when the environment asks for OTLP export of spans (the OpenTelemetry variables)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


class Tracing:
    """Where the worker's traces start and, when exporting, its spans."""

    def __init__(self, tracer: Any = None) -> None:
        """``tracer``: an OpenTelemetry SDK tracer that exports, or None (no spans)."""
        self.tracer = tracer

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> Tracing:
        """Tracing as the OpenTelemetry variables of ``env`` (default ``os.environ``) ask.

        Raises RuntimeError when export is asked for but the SDK is not installed: a trace
        pipeline that silently receives nothing would be found out too late."""
        env = os.environ if env is None else env
        if not exporting(env):
            return cls()
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import SERVICE_NAME, Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            raise RuntimeError(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK and OTLP exporter are "
                f"not installed ({exc.name}): pip install 'duewatch[otlp]', or unset it"
            ) from None
        # OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) names the service when
        # set; the app id otherwise (the SDK would say "unknown_service").
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: service}))
        provider = TracerProvider(resource=resource)
        # As the exporter reads them itself, but from ``env``: the signal's own URL as it is, or the
        # base URL with the traces path.
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
            env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
        )
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        log.info("exporting spans over OTLP/HTTP (one per tick and one per batch)")
        return cls(provider.get_tracer("duewatch"))

    def tick_traceparent(self) -> bytes:
        """A new trace for one tick, as the ``traceparent`` header of its records.

        Exporting, it is the tick's span (sampled as the SDK's sampler decides). Otherwise the
        trace and span ids are random and the sampled flag is off: no span was recorded, so a
        downstream system is not told that one was."""
        carrier: dict[str, str] = {}
        if self.tracer is not None:
            with self.tracer.start_as_current_span("duewatch tick", kind=trace.SpanKind.PRODUCER):
                PROPAGATOR.inject(carrier)
        else:
            context = SpanContext(
                trace_id=random.getrandbits(128) or 1,
                span_id=random.getrandbits(64) or 1,
                is_remote=False,
                trace_flags=TraceFlags(TraceFlags.DEFAULT),
            )
            PROPAGATOR.inject(carrier, context=trace.set_span_in_context(NonRecordingSpan(context)))
        return carrier["traceparent"].encode()

    def batch(self, agent: str, records: list[Any]) -> AbstractContextManager[Any]:
        """A span around one batch of ``agent`` when exporting, linked to the distinct traces of
        its input records (at most ``MAX_LINKS``); a shared no-op otherwise."""
        if self.tracer is None:
            return _NO_SPAN
        return self._batch_span(agent, records)

    @contextlib.contextmanager
    def _batch_span(self, agent: str, records: list[Any]) -> Iterator[Any]:
        links = []
        seen: set[bytes] = set()
        for message in records:
            parent = trace_of(message.headers or ())
            if parent is None or parent in seen:
                continue
            seen.add(parent)
            context = trace.get_current_span(
                PROPAGATOR.extract({TRACEPARENT: parent.decode()})
            ).get_span_context()
            links.append(trace.Link(context))
            if len(links) == MAX_LINKS:
                break
        attributes = {"duewatch.agent": agent, "messaging.batch.message_count": len(records)}
        with self.tracer.start_as_current_span(
            f"duewatch {agent} batch", kind=trace.SpanKind.CONSUMER, links=links, attributes=attributes
        ) as span:
            yield span
