"""Registry mode (SPEC §6): a Confluent-compatible schema registry client, and the encoder and
decoder of framed values built on it.

- :class:`SchemaRegistry` speaks the Confluent REST API (aiohttp; basic auth from
  ``DUEWATCH_SCHEMA_REGISTRY_USER`` / ``_PASSWORD``): registers ``<topic>-value`` subjects
  with BACKWARD compatibility and fetches writer schemas by id, cached for the process
  (an id names one schema forever).
- :class:`RegistryEncoder` frames outputs (:mod:`streams.contracts.framing`) under the id of
  duewatch's current schema, registered on first use.
- :class:`RegistryDecoder` reads inputs in either framing: a framed value is read with its
  writer schema resolved against duewatch's reader schema (Avro schema resolution, fastavro),
  anything else as plain Avro (:func:`streams.contracts.codec.decode`).

Three outcomes are kept apart, because they must be handled apart:

- the record is bad: :class:`UnknownSchema` (the registry answers that it has no such id:
  DLQ reason ``UNKNOWN_SCHEMA``), :class:`SchemaMismatch` (the writer schema cannot be read as
  duewatch's: ``SCHEMA_MISMATCH``), or :class:`~streams.contracts.codec.DecodeError`
  ``UNDECODABLE`` (the body does not match its own writer schema). All three are
  ``DecodeError``\\ s with a ``reason``: dead-letter them like any undecodable input;
- the registry cannot be asked: :class:`RegistryUnavailable` (refused, timed out, 5xx,
  credentials refused, a URL that does not serve the Confluent API). That is an outage,
  not bad input: nothing is dead-lettered for it; the worker reports not ready, retries and
  carries on when the registry answers again;
- duewatch's own schema is refused at registration: :class:`SchemaRejected` (409: not
  BACKWARD compatible with what the subject holds; 422: invalid) -- a deployment error.

The per-record path never waits on the network once the ids of a batch are loaded:
``await decoder.load(decoder.pending(values))`` once per batch, then the synchronous
``decoder.decode(record_type, value)`` per record (or ``await decoder.decode_async(...)``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterable, Mapping
from io import BytesIO
from typing import Any

import aiohttp
from fastavro import parse_schema, schemaless_reader
from fastavro.read import SchemaResolutionError

from . import codec, framing
from .codec import DecodeError
from .fingerprint import canonical_form
from .topics import TOPIC_RECORD

__all__ = [
    "COMPATIBILITY",
    "SCHEMA_MISMATCH",
    "UNKNOWN_SCHEMA",
    "RegistryDecoder",
    "RegistryEncoder",
    "RegistryError",
    "RegistryUnavailable",
    "SchemaMismatch",
    "SchemaNotLoaded",
    "SchemaRegistry",
    "SchemaRejected",
    "UnknownSchema",
    "from_settings",
    "register_topic_schema",
    "register_topic_schemas",
    "subject_of",
]

UNKNOWN_SCHEMA = "UNKNOWN_SCHEMA"
SCHEMA_MISMATCH = "SCHEMA_MISMATCH"
#: SPEC §6: every subject duewatch registers is BACKWARD compatible.
COMPATIBILITY = "BACKWARD"
_MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
# Confluent's error code for "schema not found" (Apicurio answers it too). A 404 without a
# 404xx code is a URL that does not serve the Confluent API: a configuration error, not an
# unknown id (every framed input would otherwise be dead-lettered).
_SCHEMA_NOT_FOUND = 40403


class RegistryError(Exception):
    """Any failure of a registry request that is neither an outage nor a rejected schema."""

    def __init__(self, message: str, status: int | None = None, error_code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class RegistryUnavailable(RegistryError):
    """The registry could not be asked (network, timeout, 5xx, credentials, wrong URL).

    An outage, never bad input: do not dead-letter the record that needed it; report not
    ready and retry."""


class SchemaRejected(RegistryError):
    """The registry refused to register a schema: 409 incompatible, 422 invalid."""


class SchemaNotLoaded(LookupError):
    """:meth:`RegistryDecoder.decode` met a schema id that :meth:`RegistryDecoder.load` was not
    given first: a bug in the caller, not bad input."""


class UnknownSchema(DecodeError):
    """A framed value whose schema id the registry does not know. DLQ reason UNKNOWN_SCHEMA."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(UNKNOWN_SCHEMA, detail)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.detail,))


class SchemaMismatch(DecodeError):
    """A framed value whose writer schema cannot be resolved to duewatch's reader schema.
    DLQ reason SCHEMA_MISMATCH."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(SCHEMA_MISMATCH, detail)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.detail,))


def from_settings(cfg: Any) -> SchemaRegistry | None:
    """The registry client ``streams.settings.Settings`` asks for, or None in plain mode."""
    if not cfg.schema_registry_url:
        return None
    return SchemaRegistry(cfg.schema_registry_url, cfg.schema_registry_user, cfg.schema_registry_password)


def subject_of(physical_topic: str) -> str:
    """The subject of a topic's values (Confluent's TopicNameStrategy): ``<topic>-value``."""
    return f"{physical_topic}-value"


# --------------------------------------------------------------------------- the client


class SchemaRegistry:
    """A client of one Confluent-compatible registry (``DUEWATCH_SCHEMA_REGISTRY_URL``).

    Create it anywhere; its HTTP session is opened on first use inside the running event loop.
    ``await registry.close()`` when done (or ``async with``)."""

    def __init__(
        self,
        url: str,
        user: str | None = None,
        password: str | None = None,
        *,
        timeout: float = 10.0,
        unknown_ttl: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        # RFC 7617 basic auth as a plain header: aiohttp deprecates both ClientSession(auth=) and
        # BasicAuth, and its replacement (encode_basic_auth) is not in every aiohttp 3.x
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode() if user else None
        self._authorization = f"Basic {token}" if token else None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._schemas: dict[int, dict[str, Any]] = {}  # id -> {"schema": text, "schemaType": ...}
        # ids the registry answered as unknown, until when (monotonic) that answer is trusted:
        # a burst of records with a bad id costs one request, not one per record
        self._unknown: dict[int, float] = {}
        self._unknown_ttl = unknown_ttl
        self._inflight: dict[int, asyncio.Future[dict[str, Any]]] = {}

    async def __aenter__(self) -> SchemaRegistry:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Accept": f"{_MEDIA_TYPE}, application/json"}
            if self._authorization is not None:
                headers["Authorization"] = self._authorization
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=headers)
        return self._session

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body)
        headers = None if body is None else {"Content-Type": _MEDIA_TYPE}
        try:
            async with self._http().request(method, self.url + path, data=data, headers=headers) as resp:
                text = await resp.text()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise RegistryUnavailable(
                f"schema registry {self.url} unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            payload = None
        if 200 <= status < 300:
            if payload is None and text:
                raise RegistryUnavailable(
                    f"schema registry {self.url}{path}: not a JSON answer (HTTP {status})"
                )
            return payload
        code = payload.get("error_code") if isinstance(payload, dict) else None
        message = payload.get("message") if isinstance(payload, dict) else None
        what = f"schema registry {method} {path}: HTTP {status}" + (f" ({message})" if message else "")
        if status in (401, 403):
            raise RegistryUnavailable(
                f"{what}: credentials refused (DUEWATCH_SCHEMA_REGISTRY_USER / _PASSWORD)", status, code
            )
        if status >= 500 or status in (408, 429):
            raise RegistryUnavailable(what, status, code)
        if status == 404 and not (isinstance(code, int) and 40400 <= code < 40500):
            # not a Confluent "not found" answer (those carry a 404xx error code): the URL does
            # not serve the API, a configuration error to report and retry, never bad input
            raise RegistryUnavailable(
                f"{what} -- does DUEWATCH_SCHEMA_REGISTRY_URL point at a Confluent-compatible API?",
                status,
                code,
            )
        if status == 409:
            raise SchemaRejected(
                f"{what}: not {COMPATIBILITY} compatible with the subject's schemas", status, code
            )
        if status == 422:
            raise SchemaRejected(what, status, code)
        raise RegistryError(what, status, code)

    # ---- the API duewatch uses

    async def reachable(self) -> bool:
        """True when the registry answers an API request (a readiness probe for the worker)."""
        try:
            await self._request("GET", "/subjects")
            return True
        except RegistryError:
            return False

    async def set_compatibility(self, subject: str, level: str = COMPATIBILITY) -> None:
        """Set ``subject``'s compatibility rule (``PUT /config/{subject}``)."""
        await self._request("PUT", f"/config/{subject}", {"compatibility": level})

    async def register(self, subject: str, schema: str | Mapping[str, Any]) -> int:
        """Register ``schema`` (Avro, JSON text or dict) under ``subject``; returns its id (the
        same id again for a schema the registry holds). Raises :class:`SchemaRejected`."""
        text = schema if isinstance(schema, str) else json.dumps(schema)
        answer = await self._request("POST", f"/subjects/{subject}/versions", {"schema": text})
        schema_id = int(answer["id"])
        self._schemas.setdefault(schema_id, {"schema": text, "schemaType": "AVRO"})
        return schema_id

    def cached(self, schema_id: int) -> dict[str, Any] | None:
        """The schema of ``schema_id`` if this client has it already (no I/O)."""
        return self._schemas.get(schema_id)

    def known_unknown(self, schema_id: int) -> bool:
        """True while a recent answer says the registry has no schema ``schema_id``."""
        until = self._unknown.get(schema_id)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._unknown[schema_id]
        return False

    async def schema(self, schema_id: int) -> dict[str, Any]:
        """``{"schema": <text>, "schemaType": "AVRO" | ...}`` of ``schema_id`` (``GET
        /schemas/ids/{id}``), cached for the process. Raises :class:`UnknownSchema` when the
        registry has no such id, :class:`RegistryUnavailable` when it cannot be asked."""
        found = self._schemas.get(schema_id)
        if found is not None:
            return found
        if self.known_unknown(schema_id):
            raise UnknownSchema(f"schema id {schema_id} is not in the registry")
        pending = self._inflight.get(schema_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._inflight[schema_id] = future
        try:
            try:
                answer = await self._request("GET", f"/schemas/ids/{schema_id}")
            except RegistryError as exc:
                if exc.status == 404 and exc.error_code == _SCHEMA_NOT_FOUND:
                    self._unknown[schema_id] = time.monotonic() + self._unknown_ttl
                    raise UnknownSchema(f"schema id {schema_id} is not in the registry") from None
                raise
            found = {"schema": answer["schema"], "schemaType": answer.get("schemaType") or "AVRO"}
            self._schemas[schema_id] = found
            future.set_result(found)
            return found
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._inflight[schema_id]


# --------------------------------------------------------------------------- encoder


class RegistryEncoder:
    """Outputs in the Confluent wire format under duewatch's current schemas.

    ``await encoder.prepare(topics)`` registers (first use) and caches the ids; then
    ``encoder.encode(topic, value)`` per record, synchronously."""

    def __init__(self, registry: SchemaRegistry, topic_prefix: str = "") -> None:
        self.registry = registry
        self.topic_prefix = topic_prefix
        self._ids: dict[str, int] = {}

    async def prepare(self, topics: Iterable[str]) -> dict[str, int]:
        """Register each logical topic's current schema (BACKWARD) unless done; {topic: id}."""
        for topic in topics:
            if topic not in self._ids:
                self._ids[topic] = await register_topic_schema(self.registry, topic, self.topic_prefix)
        return dict(self._ids)

    def schema_id(self, topic: str) -> int:
        """The id the values of logical ``topic`` are framed with (after :meth:`prepare`)."""
        try:
            return self._ids[topic]
        except KeyError:
            raise SchemaNotLoaded(f"{topic}: call `await prepare([{topic!r}])` first") from None

    def encode(self, topic: str, value: Mapping[str, Any]) -> bytes:
        """The framed value of native record ``value`` for logical ``topic``."""
        schema_id = self._ids.get(topic)
        if schema_id is None:
            schema_id = self.schema_id(topic)
        return framing.frame(schema_id, codec.encode(TOPIC_RECORD[topic], value))


async def register_topic_schema(registry: SchemaRegistry, topic: str, topic_prefix: str = "") -> int:
    """Register logical ``topic``'s current schema under ``<prefix><topic>-value`` with
    BACKWARD compatibility (SPEC §6); returns the schema id."""
    record_type = TOPIC_RECORD[topic]
    subject = subject_of(topic_prefix + topic)
    await registry.set_compatibility(subject, COMPATIBILITY)
    text = (codec.SCHEMA_DIR / f"{record_type}.avsc").read_text(encoding="utf-8")
    return await registry.register(subject, text)


async def register_topic_schemas(
    registry: SchemaRegistry, topic_prefix: str = "", topics: Iterable[str] = tuple(TOPIC_RECORD)
) -> dict[str, int]:
    """Register every topic's current schema (``duewatch topics create`` in registry mode):
    {subject: schema id}. Inputs too, so upstream producers find the contract there."""
    return {
        subject_of(topic_prefix + topic): await register_topic_schema(registry, topic, topic_prefix)
        for topic in topics
    }


# --------------------------------------------------------------------------- decoder


class _Resolution:
    __slots__ = ("writer", "reader", "error")

    def __init__(self, writer: Any = None, reader: Any = None, error: str | None = None) -> None:
        self.writer = writer
        self.reader = reader  # None: the writer schema is the reader schema, no resolution needed
        self.error = error


class RegistryDecoder:
    """Inputs in either framing (SPEC §6), resolved to duewatch's reader schemas."""

    def __init__(self, registry: SchemaRegistry) -> None:
        self.registry = registry
        self._resolutions: dict[tuple[int, str], _Resolution] = {}

    def pending(self, values: Iterable[bytes | bytearray | memoryview | None]) -> set[int]:
        """The schema ids of the framed ``values`` that still need a registry request."""
        ids = set()
        registry = self.registry
        for value in values:
            if framing.framed(value):
                schema_id = int.from_bytes(value[1:5], "big")  # type: ignore[index]
                if registry.cached(schema_id) is None and not registry.known_unknown(schema_id):
                    ids.add(schema_id)
        return ids

    async def load(self, ids: Iterable[int]) -> None:
        """Fetch the writer schemas of ``ids``. An id the registry does not know is remembered
        as such (its records then raise :class:`UnknownSchema`); raises
        :class:`RegistryUnavailable` when the registry cannot be asked."""
        for schema_id in ids:
            try:
                await self.registry.schema(schema_id)
            except UnknownSchema:
                pass

    def decode(self, record_type: str, data: bytes | bytearray | memoryview) -> dict[str, Any]:
        """The native record of ``record_type`` in ``data``: framed values resolved from their
        writer schema (loaded first with :meth:`load`), others as plain Avro."""
        if not framing.framed(data):
            return codec.decode(record_type, data)
        schema_id, body = framing.unframe(data)
        resolution = self._resolutions.get((schema_id, record_type))
        if resolution is None:
            resolution = self._resolve(schema_id, record_type)
        if resolution.error is not None:
            raise SchemaMismatch(resolution.error)
        fo = BytesIO(body)
        try:
            record: dict[str, Any] = schemaless_reader(fo, resolution.writer, resolution.reader)  # type: ignore[assignment]
        except SchemaResolutionError as exc:
            raise SchemaMismatch(
                f"{record_type}: writer schema id {schema_id}: {_resolution_problem(exc)}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - garbage can raise almost anything inside fastavro
            what = (
                "truncated: the data ends inside the record"
                if isinstance(exc, EOFError)
                else type(exc).__name__
            )
            raise DecodeError("UNDECODABLE", f"{record_type} (schema id {schema_id}): {what}") from None
        if fo.tell() != len(body):
            raise DecodeError(
                "UNDECODABLE",
                f"{record_type} (schema id {schema_id}): {len(body) - fo.tell()} trailing bytes",
            )
        return record

    async def decode_async(self, record_type: str, data: bytes | bytearray | memoryview) -> dict[str, Any]:
        """:meth:`decode`, fetching the writer schema first when needed."""
        ids = self.pending((data,))
        if ids:
            await self.load(ids)
        return self.decode(record_type, data)

    def _resolve(self, schema_id: int, record_type: str) -> _Resolution:
        found = self.registry.cached(schema_id)
        if found is None:
            if self.registry.known_unknown(schema_id):
                raise UnknownSchema(f"{record_type}: schema id {schema_id} is not in the registry")
            raise SchemaNotLoaded(f"schema id {schema_id}: call `await decoder.load(...)` first")
        reader = codec.load_schema(record_type)
        if found.get("schemaType", "AVRO") != "AVRO":
            resolution = _Resolution(
                error=f"{record_type}: schema id {schema_id} is {found['schemaType']}, not Avro"
            )
        else:
            try:
                writer = parse_schema(json.loads(found["schema"]))
            except Exception as exc:  # noqa: BLE001 - fastavro's SchemaParseException, ValueError, ...
                resolution = _Resolution(
                    error=f"{record_type}: schema id {schema_id} is not a valid Avro schema ({type(exc).__name__})"
                )
            else:
                same = canonical_form(writer) == canonical_form(reader)
                resolution = _Resolution(writer=reader if same else writer, reader=None if same else reader)
        self._resolutions[(schema_id, record_type)] = resolution
        return resolution


def _resolution_problem(exc: SchemaResolutionError) -> str:
    """A bounded description of why fastavro could not resolve: fastavro's messages may quote
    a value (an enum symbol) or whole schemas, and DLQ headers carry no input value."""
    text = str(exc)
    if text.startswith("No default value for field "):
        return text.split(" in ", 1)[0][:120].replace("No default value for field ", "reader field ") + (
            " is missing from the writer and has no default"
        )
    if "not found in reader symbol list" in text:
        return "an enum symbol the reader schema does not have"
    if text.startswith("Schema mismatch: ") and len(text) <= 80:
        return "types differ (" + text[len("Schema mismatch: ") :] + ")"
    return "the writer schema does not resolve to the reader schema"
