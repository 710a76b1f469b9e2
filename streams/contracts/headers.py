"""The headers every output record carries (SPEC §1), so that a consumer in any language can
tell what a record is without asking anyone.

- ``content-type``: ``application/avro``, or ``application/vnd.confluent.avro`` in registry
  mode (the value then starts with the Confluent framing, :mod:`streams.contracts.framing`);
- ``duewatch-schema``: the Avro full name of the value's record type (``duewatch.OverdueEvent``);
- ``duewatch-schema-fingerprint``: CRC-64-AVRO of the writer schema
  (:mod:`streams.contracts.fingerprint`);
- CloudEvents 1.0 in Kafka binary content mode: ``ce_specversion`` ``1.0``, ``ce_id`` the
  record's own id, ``ce_source`` ``duewatch/<app id>``, ``ce_type`` per topic, ``ce_time``
  RFC 3339 in UTC, ``ce_subject`` the loan id (partner shares: the partner id). The Avro value
  is the event's data and ``content-type`` its ``datacontenttype``;
- ``traceparent`` (W3C Trace Context) of the input the record was emitted for, when it had a
  valid one: passed through, never invented here.

Everything that depends only on the topic (names, fingerprint, source, the ``ce_type`` of each
symbol) is built once per topic and app id as header tuples; per record the work is three
dict lookups, two ``str.encode`` calls and one instant formatted. The CloudEvents SDK's Kafka
binding builds and validates an event object per record instead; it is used by the tests as
the judge of these headers (docs/decisions.md, "CloudEvents headers without the SDK on the
hot path").

Ids and values never depend on headers, so replay output stays equal to the stream's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from . import topics as names
from .codec import NAMESPACE
from .fingerprint import record_fingerprint

__all__ = [
    "AVRO",
    "CONFLUENT_AVRO",
    "CONTENT_TYPE",
    "FINGERPRINT",
    "OUTPUT_EVENTS",
    "SCHEMA",
    "SPECVERSION",
    "TRACEPARENT",
    "CloudEventFields",
    "OutputHeaders",
    "cloudevent_attributes",
    "output_headers",
    "rfc3339_utc",
    "valid_traceparent",
]

CONTENT_TYPE = "content-type"
SCHEMA = "duewatch-schema"
FINGERPRINT = "duewatch-schema-fingerprint"
TRACEPARENT = "traceparent"
AVRO = "application/avro"
CONFLUENT_AVRO = "application/vnd.confluent.avro"
SPECVERSION = "1.0"


@dataclass(frozen=True, slots=True)
class CloudEventFields:
    """Where an output record's CloudEvents attributes come from (SPEC §1).

    ``ce_type`` is ``type_prefix`` followed by the value of ``type_field`` as the record
    carries it (``duewatch.overdue.OVERDUE_OPENED``), or ``type_prefix`` alone when the topic
    has one type (``duewatch.bureau.record``)."""

    id_field: str
    type_prefix: str
    type_field: str | None
    time_field: str
    subject_field: str


#: Output topic (logical name) -> where its CloudEvents attributes come from.
OUTPUT_EVENTS: dict[str, CloudEventFields] = {
    names.OVERDUE: CloudEventFields("event_id", "duewatch.overdue.", "type", "as_of", "loan_id"),
    names.NOTIFY: CloudEventFields("notification_id", "duewatch.notify.", "kind", "created_at", "loan_id"),
    names.BUREAU: CloudEventFields("record_id", "duewatch.bureau.record", None, "as_of", "loan_id"),
    names.PARTNER: CloudEventFields("share_id", "duewatch.partner.", "mode", "as_of", "partner_id"),
    names.COLLECTIONS: CloudEventFields("task_id", "duewatch.collections.", "action", "opened_at", "loan_id"),
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# W3C Trace Context: version-traceid-parentid-flags, lowercase hex; version ff is invalid, and
# a higher version may append fields ("-..."), which a version-00 parser must accept.
_TRACEPARENT = re.compile(
    rb"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}(-[ -~]*)?"
)


def valid_traceparent(value: bytes | str | None) -> bytes | None:
    """``value`` as header bytes when it is a well-formed W3C ``traceparent``, else None.

    A malformed one is dropped rather than passed on: Trace Context says a receiver must not
    propagate what it cannot parse."""
    if value is None:
        return None
    raw = value.encode("ascii", "replace") if isinstance(value, str) else bytes(value)
    if len(raw) > 512 or not _TRACEPARENT.fullmatch(raw):
        return None
    if raw[:2] == b"00" and len(raw) != 55:  # version 00 has exactly four fields
        return None
    return raw


def rfc3339_utc(instant: datetime | int) -> str:
    """An instant as RFC 3339 in UTC, ``2026-03-16T00:00:00Z`` (microseconds when non-zero):
    the form the CloudEvents SDK writes ``ce_time`` in. Takes a timezone-aware datetime (any
    zone: routers write instants in the loan's) or Avro's microseconds since the epoch."""
    if isinstance(instant, int):
        instant = _EPOCH + timedelta(microseconds=instant)
    elif instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("naive datetime: an instant must be timezone-aware")
    text = instant.astimezone(UTC).isoformat()
    return text[:-6] + "Z"  # isoformat of a UTC datetime ends in +00:00


class _TopicHeaders:
    __slots__ = ("fields", "static", "types")

    def __init__(self, fields: CloudEventFields, static: list[tuple[str, bytes]]) -> None:
        self.fields = fields
        self.static = static
        # ce_type header per symbol, filled on first sight (closed sets: enums, configured actions)
        self.types: dict[Any, tuple[str, bytes]] = {}


class OutputHeaders:
    """The headers of every output record of one worker (one app id, one framing).

    ``headers = OutputHeaders("duewatch")`` once; then ``headers(topic, value, traceparent)``
    per output record, with ``topic`` the logical name and ``value`` the native record as the
    detector or a router produced it (instants timezone-aware, in any zone)."""

    __slots__ = ("app_id", "registry_mode", "_topics")

    def __init__(self, app_id: str, registry_mode: bool = False) -> None:
        self.app_id = app_id
        self.registry_mode = registry_mode
        content_type = (CONFLUENT_AVRO if registry_mode else AVRO).encode()
        source = f"duewatch/{app_id}".encode()
        self._topics: dict[str, _TopicHeaders] = {}
        for topic, fields in OUTPUT_EVENTS.items():
            record_type = names.TOPIC_RECORD[topic]
            static = [
                (CONTENT_TYPE, content_type),
                (SCHEMA, f"{NAMESPACE}.{record_type}".encode()),
                (FINGERPRINT, record_fingerprint(record_type).encode()),
                ("ce_specversion", SPECVERSION.encode()),
                ("ce_source", source),
            ]
            self._topics[topic] = _TopicHeaders(fields, static)

    def __call__(
        self, topic: str, value: Mapping[str, Any], traceparent: bytes | str | None = None
    ) -> list[tuple[str, bytes]]:
        """The headers of one record ``value`` produced to logical output topic ``topic``."""
        spec = self._topics.get(topic)
        if spec is None:
            raise KeyError(
                f"{topic!r} is not an output topic with a record type ({', '.join(OUTPUT_EVENTS)})"
            )
        fields = spec.fields
        headers = spec.static.copy()
        headers.append(("ce_id", value[fields.id_field].encode()))
        if fields.type_field is None:
            ce_type = spec.types.get(None)
            if ce_type is None:
                ce_type = spec.types[None] = ("ce_type", fields.type_prefix.encode())
        else:
            symbol = value[fields.type_field]
            ce_type = spec.types.get(symbol)
            if ce_type is None:
                ce_type = spec.types[symbol] = ("ce_type", f"{fields.type_prefix}{symbol}".encode())
        headers.append(ce_type)
        headers.append(("ce_time", rfc3339_utc(value[fields.time_field]).encode()))
        headers.append(("ce_subject", value[fields.subject_field].encode()))
        if traceparent is not None:
            trace = valid_traceparent(traceparent)
            if trace is not None:
                headers.append((TRACEPARENT, trace))
        return headers


_MAKERS: dict[tuple[str, bool], OutputHeaders] = {}


def output_headers(
    topic: str,
    value: Mapping[str, Any],
    app_id: str,
    traceparent: bytes | str | None = None,
    registry_mode: bool = False,
) -> list[tuple[str, bytes]]:
    """The SPEC §1 headers of one output record, as aiokafka's ``headers=`` takes them.

    ``topic``: the logical output topic (``overdue.events``, ``notify.requests``,
    ``bureau.records``, ``partner.shares``, ``collections.tasks``); ``value``: the native
    record as the detector or router produced it; ``traceparent``: the input's header, if
    any (dropped when malformed). Everything per topic is computed once per (app id, mode)."""
    maker = _MAKERS.get((app_id, registry_mode))
    if maker is None:
        maker = _MAKERS[(app_id, registry_mode)] = OutputHeaders(app_id, registry_mode)
    return maker(topic, value, traceparent)


def cloudevent_attributes(
    topic: str, value: Mapping[str, Any], app_id: str, registry_mode: bool = False
) -> dict[str, Any]:
    """The CloudEvents attributes of one output record (``time`` as an aware UTC datetime),
    as an SDK event is built from them: what :func:`output_headers` writes in binary mode."""
    fields = OUTPUT_EVENTS[topic]
    ce_type = fields.type_prefix + ("" if fields.type_field is None else str(value[fields.type_field]))
    return {
        "specversion": SPECVERSION,
        "id": value[fields.id_field],
        "source": f"duewatch/{app_id}",
        "type": ce_type,
        "time": datetime.fromisoformat(rfc3339_utc(value[fields.time_field]).replace("Z", "+00:00")),
        "subject": value[fields.subject_field],
        "datacontenttype": CONFLUENT_AVRO if registry_mode else AVRO,
    }
