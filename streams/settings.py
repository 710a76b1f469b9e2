"""Configuration from the environment (SPEC §6), each variable with its documented default.

Read once at start-up; everything downstream receives this immutable value.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .core.config import EngineConfig

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

#: Seconds a command waits for Kafka to answer before it fails (SPEC §6: ``--timeout``'s default).
COMMAND_TIMEOUT = 15.0

#: The security protocols and SASL mechanisms aiokafka speaks and duewatch is tested with.
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, not {raw!r}")


def _number(env: Mapping[str, str], name: str, default: float, kind: type = float, minimum: float = 0) -> Any:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be ≥ {minimum}")
    return value


#: What Kafka accepts as a ``group.instance.id`` (the same rule as for topic names).
_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _instance_id(raw: str | None) -> str | None:
    if raw is not None and not _INSTANCE_ID.fullmatch(raw):
        raise ValueError(
            f"DUEWATCH_INSTANCE_ID must be 1-249 characters of A-Z, a-z, 0-9, '.', '_' and '-', not {raw!r}"
        )
    return raw


def default_instance_id(host: str, state_dir: str) -> str:
    """A worker's static group member id when ``DUEWATCH_INSTANCE_ID`` is not set: its host and
    its state directory.

    A worker *is* its state: restarted over the same directory it should take back the same
    partitions (whose tables it holds) without a rebalance, and two workers on one host need
    different directories anyway. In a Kubernetes StatefulSet the host name is the pod's stable
    name and each pod has its own volume, so this is stable across restarts there too.
    """
    name = re.sub(r"[^A-Za-z0-9._-]", "-", host)[:200] or "worker"
    digest = hashlib.sha256(os.path.abspath(state_dir).encode()).hexdigest()[:8]
    return f"{name}-{digest}"


def _url(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not raw.startswith(("http://", "https://")):
        raise ValueError(f"DUEWATCH_SCHEMA_REGISTRY_URL must be an http:// or https:// URL, not {raw!r}")
    return raw.rstrip("/")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of SPEC §6 with its default."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    partitions: int = 12
    replication: int = 1
    ticker_enabled: bool = True
    tick_interval: float = 1.0
    settle_delay: float = 60.0
    state_dir: str = "./state"
    web_port: int = 6066
    # Local runs listen on the loopback interface only; a container or pod sets 0.0.0.0.
    web_bind: str = "127.0.0.1"
    web_host: str = "localhost"
    policy_file: str | None = None
    # Secrets are left out of repr(): a Settings printed in a log or a traceback shows no password.
    api_token: str | None = field(default=None, repr=False)
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = field(default=None, repr=False)
    app_id: str = "duewatch"
    log_json: bool = False
    log_level: str = "info"
    # Most records of one fetch an agent handles as one batch (streams.worker.faust_internals.install): one wait for the
    # broker's acknowledgements per batch instead of per record.
    batch_max: int = 2000
    # SPEC §2: the largest record value the worker takes (bytes; larger ones go to the DLQ as
    # TOO_LARGE), and how far ahead of the wall clock a tick may be (seconds; 0: no check, for
    # simulations and tests of future books).
    max_record_bytes: int = 256 * 1024
    max_tick_ahead: float = 86_400.0
    # The Kafka client's own log level: its DEBUG output dumps records (ids, contact data), so it
    # stays at WARNING unless asked for here, whatever DUEWATCH_LOG_LEVEL says.
    kafka_log_level: str = "warning"
    # SPEC §6 registry mode: None (the default) is plain Avro; a Confluent-compatible registry's
    # URL (for Apicurio, its /apis/ccompat/v7) switches every output to the Confluent framing.
    schema_registry_url: str | None = None
    schema_registry_user: str | None = None
    schema_registry_password: str | None = field(default=None, repr=False)
    # Failover (docs/reliability.md). A worker that stops heart-beating for ``session_timeout``
    # seconds (a crash, a lost host) is dropped from the consumer group and its partitions move
    # to the others; Faust's default is 60 s, a minute without detection for those loans.
    # Brokers refuse less than their group.min.session.timeout.ms (6 s by default).
    session_timeout: float = 10.0
    # How often the worker heart-beats: also how soon the others learn that a rebalance began.
    heartbeat_interval: float = 1.0
    # Static group membership (KIP-345): the worker's stable id in the consumer group. A worker
    # restarted within ``session_timeout`` takes back its partitions without a rebalance. None:
    # ``default_instance_id`` of the host and the state directory.
    instance_id: str | None = None

    @property
    def group_instance_id(self) -> str:
        """This worker's static member id (``DUEWATCH_INSTANCE_ID`` or ``default_instance_id``)."""
        return self.instance_id or default_instance_id(socket.gethostname(), self.state_dir)

    @property
    def registry_mode(self) -> bool:
        """True when outputs are framed for a schema registry (SPEC §6)."""
        return self.schema_registry_url is not None

    def topic(self, logical: str) -> str:
        """The physical name of logical topic ``logical``."""
        return self.topic_prefix + logical

    @property
    def engine(self) -> EngineConfig:
        """The detector's configuration."""
        return EngineConfig(settle=timedelta(seconds=self.settle_delay))

    @property
    def uses_tls(self) -> bool:
        """True when connections to Kafka are encrypted (SSL or SASL_SSL)."""
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        """True when the client authenticates with SASL (SASL_PLAINTEXT or SASL_SSL)."""
        return self.security_protocol.startswith("SASL_")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of every Kafka connection, or None without TLS.

        The one place TLS is set up, for the command line (``kafka_kwargs``) and the worker
        (Faust's credentials) alike: the brokers' certificates are verified against
        ``KAFKA_SSL_CAFILE`` (the system's CAs without it) and their host names checked; with
        ``KAFKA_SSL_CERTFILE`` the client presents its certificate chain (mutual TLS), its key
        from ``KAFKA_SSL_KEYFILE`` (or the certificate file), decrypted with
        ``KAFKA_SSL_KEY_PASSWORD``. Raises ValueError naming the variable at fault; neither the
        message nor anything logged contains the key password.
        """
        if not self.uses_tls:
            return None
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ssl_cafile)
        except FileNotFoundError:
            raise ValueError(f"KAFKA_SSL_CAFILE: no such file {self.ssl_cafile}") from None
        except ssl.SSLError as exc:
            raise ValueError(
                f"KAFKA_SSL_CAFILE: {self.ssl_cafile} holds no usable PEM certificate ({exc.reason})"
            ) from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ssl_certfile:
            for name, path in (
                ("KAFKA_SSL_CERTFILE", self.ssl_certfile),
                ("KAFKA_SSL_KEYFILE", self.ssl_keyfile),
            ):
                if path and not os.path.isfile(path):
                    raise ValueError(f"{name}: no such file {path}")
            password = self.ssl_key_password or ""
            try:
                # A callable, not the string: for an encrypted key without a password OpenSSL would
                # otherwise prompt on the terminal, and a worker would hang instead of failing.
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile, password=lambda: password)
            except ssl.SSLError as exc:
                hint = "wrong or missing KAFKA_SSL_KEY_PASSWORD, or a key that does not match the certificate"
                raise ValueError(
                    f"KAFKA_SSL_CERTFILE/KAFKA_SSL_KEYFILE: cannot load the client certificate and key "
                    f"({exc.reason or exc.strerror}; {hint})"
                ) from None
        return context

    def sasl_kwargs(self) -> dict[str, Any]:
        """aiokafka's SASL keyword arguments (empty without SASL)."""
        if not self.uses_sasl:
            return {}
        if not self.sasl_username or self.sasl_password is None:
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        return {
            "sasl_mechanism": self.sasl_mechanism or "PLAIN",
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.sasl_password,
        }

    def kafka_kwargs(self) -> dict[str, Any]:
        """aiokafka client keyword arguments, security included."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        kwargs.update(self.sasl_kwargs())
        context = self.ssl_context()
        if context is not None:
            kwargs["ssl_context"] = context
        return kwargs


Reader = Callable[[Mapping[str, str], str, Any], Any]


def _text(env: Mapping[str, str], name: str, default: Any) -> Any:
    value = env.get(name)
    return default if value is None or value == "" else value


def _whole(minimum: int) -> Reader:
    return lambda env, name, default: _number(env, name, default, int, minimum)


def _real(minimum: float) -> Reader:
    return lambda env, name, default: _number(env, name, default, float, minimum)


def _flag(env: Mapping[str, str], name: str, default: Any) -> Any:
    return _bool(env, name, default)


def _one_of(allowed: tuple[str, ...]) -> Reader:
    def read(env: Mapping[str, str], name: str, default: Any) -> Any:
        value = _text(env, name, default)
        if value is not None and value.upper() not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        return None if value is None else value.upper()

    return read


def _registry_url(env: Mapping[str, str], name: str, default: Any) -> Any:
    return _url(_text(env, name, default))


def _static_id(env: Mapping[str, str], name: str, default: Any) -> Any:
    return _instance_id(_text(env, name, default))


def _host_name(env: Mapping[str, str], name: str, default: Any) -> Any:
    return _text(env, name, None) or socket.gethostname()


@dataclass(frozen=True, slots=True)
class Variable:
    """One environment variable: the setting it fills, what it means, how it is read. Its
    default is the :class:`Settings` field's (``shown`` says it in words where that is not the
    value itself)."""

    name: str
    field: str
    meaning: str
    read: Reader = _text
    shown: str | None = None

    @property
    def default(self) -> Any:
        return Settings.__dataclass_fields__[self.field].default

    def default_text(self) -> str:
        if self.shown is not None:
            return self.shown
        value = self.default
        if value is None:
            return "none"
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value) if value != "" else "empty"


#: Every variable the worker and the commands read: the one list ``from_env`` reads and
#: ``duewatch worker --help`` prints (SPEC §6).
VARIABLES: tuple[Variable, ...] = (
    Variable("KAFKA_BOOTSTRAP_SERVERS", "bootstrap_servers", "the Kafka brokers, host:port[,host:port...]"),
    Variable("KAFKA_SECURITY_PROTOCOL", "security_protocol", " | ".join(SECURITY_PROTOCOLS),
             _one_of(SECURITY_PROTOCOLS)),
    Variable("KAFKA_SASL_MECHANISM", "sasl_mechanism", f"with SASL_*: {' | '.join(SASL_MECHANISMS)} (PLAIN when none)",
             _one_of(SASL_MECHANISMS)),
    Variable("KAFKA_SASL_USERNAME", "sasl_username", "with SASL_*: the user"),
    Variable("KAFKA_SASL_PASSWORD", "sasl_password", "with SASL_*: the password"),
    Variable("KAFKA_SSL_CAFILE", "ssl_cafile", "with SSL/SASL_SSL: the CAs that sign the brokers' certificates "
             "(PEM)", shown="the system's CAs"),
    Variable("KAFKA_SSL_CERTFILE", "ssl_certfile", "the client certificate chain for mutual TLS (PEM)"),
    Variable("KAFKA_SSL_KEYFILE", "ssl_keyfile", "its private key (PEM)", shown="in KAFKA_SSL_CERTFILE"),
    Variable("KAFKA_SSL_KEY_PASSWORD", "ssl_key_password", "the private key's password"),
    Variable("DUEWATCH_TOPIC_PREFIX", "topic_prefix", "put before every topic name of SPEC §1"),
    Variable("DUEWATCH_PARTITIONS", "partitions", "partitions of the topics it creates", _whole(1)),
    Variable("DUEWATCH_REPLICATION", "replication", "replication factor of the topics it creates", _whole(1)),
    Variable("DUEWATCH_APP_ID", "app_id", "consumer group, and the start of the internal topics' names"),
    Variable("DUEWATCH_TICKER_ENABLED", "ticker_enabled", "send clock ticks (false when they come from elsewhere)",
             _flag),
    Variable("DUEWATCH_TICK_INTERVAL", "tick_interval", "seconds between two ticks", _real(0.01)),
    Variable("DUEWATCH_SETTLE_DELAY", "settle_delay", "seconds after a midnight before its transitions are "
             "emitted", _real(0)),
    Variable("DUEWATCH_STATE_DIR", "state_dir", "where the tables' RocksDB files live"),
    Variable("DUEWATCH_WEB_PORT", "web_port", "port of /health, /ready, /metrics, /loans/{id}", _whole(0)),
    Variable("DUEWATCH_WEB_BIND", "web_bind", "address the web port listens on (0.0.0.0 in a container)"),
    Variable("DUEWATCH_WEB_HOST", "web_host", "the host name other workers reach this one by", _host_name,
             shown="this machine's host name"),
    Variable("DUEWATCH_POLICY_FILE", "policy_file", "the routing policy (TOML)", shown="SPEC's defaults"),
    Variable("DUEWATCH_API_TOKEN", "api_token", "bearer token /loans/{id} asks for", shown="none: no auth"),
    Variable("DUEWATCH_SCHEMA_REGISTRY_URL", "schema_registry_url", "a Confluent-compatible schema registry "
             "(registry mode)", _registry_url, shown="none: plain Avro"),
    Variable("DUEWATCH_SCHEMA_REGISTRY_USER", "schema_registry_user", "the registry's basic-auth user"),
    Variable("DUEWATCH_SCHEMA_REGISTRY_PASSWORD", "schema_registry_password", "its password"),
    Variable("DUEWATCH_LOG_LEVEL", "log_level", "debug | info | warning | error (debug: tracebacks too)"),
    Variable("DUEWATCH_LOG_JSON", "log_json", "one JSON object per log line", _flag),
    Variable("DUEWATCH_KAFKA_LOG_LEVEL", "kafka_log_level", "the Kafka client's own log level (its debug "
             "output shows record contents)"),
    Variable("DUEWATCH_BATCH_MAX", "batch_max", "most records an agent handles as one batch", _whole(1)),
    Variable("DUEWATCH_MAX_RECORD_BYTES", "max_record_bytes", "largest input value taken (larger: DLQ, "
             "TOO_LARGE)", _whole(1)),
    Variable("DUEWATCH_MAX_TICK_AHEAD", "max_tick_ahead", "seconds a tick may be ahead of the wall clock "
             "(0: no check)", _real(0)),
    Variable("DUEWATCH_SESSION_TIMEOUT", "session_timeout", "seconds without a heartbeat before the group "
             "hands a worker's partitions to the others (failover)", _real(1)),
    Variable("DUEWATCH_HEARTBEAT_INTERVAL", "heartbeat_interval", "seconds between heartbeats (less than the "
             "session timeout)", _real(0.1)),
    Variable("DUEWATCH_INSTANCE_ID", "instance_id", "static group member id: a restarted worker takes its "
             "partitions back without a rebalance", _static_id, shown="host name and state directory"),
)  # fmt: skip


def variables_help() -> str:
    """The environment variables and their defaults, as ``duewatch worker --help`` lists them."""
    width = max(len(v.name) for v in VARIABLES)
    lines = ["environment variables (default in brackets):"]
    lines += [f"  {v.name:<{width}}  {v.meaning} [{v.default_text()}]" for v in VARIABLES]
    return "\n".join(lines)


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``env`` (default ``os.environ``), every variable of ``VARIABLES``; raises
    ValueError naming a bad variable."""
    env = os.environ if env is None else env
    values = {v.field: v.read(env, v.name, v.default) for v in VARIABLES}
    protocol, mechanism = values["security_protocol"], values["sasl_mechanism"]
    tls_files = [
        n for n in ("KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE") if _text(env, n, None)
    ]
    if tls_files and protocol not in ("SSL", "SASL_SSL"):
        # Someone meant to use TLS: connecting in the clear instead must not happen silently.
        raise ValueError(
            f"{', '.join(tls_files)} given, but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS"
        )
    if mechanism and not protocol.startswith("SASL_"):
        raise ValueError(
            f"KAFKA_SASL_MECHANISM given, but KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL"
        )
    if values["ssl_keyfile"] and not values["ssl_certfile"]:
        raise ValueError("KAFKA_SSL_KEYFILE given without KAFKA_SSL_CERTFILE (the client certificate)")
    if values["heartbeat_interval"] >= values["session_timeout"]:
        # Kafka's rule; a third of the session or less is the usual advice.
        raise ValueError(
            f"DUEWATCH_HEARTBEAT_INTERVAL ({values['heartbeat_interval']:g} s) must be less than "
            f"DUEWATCH_SESSION_TIMEOUT ({values['session_timeout']:g} s)"
        )
    return Settings(**values)
