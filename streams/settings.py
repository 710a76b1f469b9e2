"""Configuration from the environment (SPEC §6), each variable with its documented default.

Read once at start-up; everything downstream receives this immutable value.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .core.config import EngineConfig

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

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
    web_bind: str = "0.0.0.0"
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


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``env`` (default ``os.environ``); raises ValueError naming a bad variable."""
    env = os.environ if env is None else env

    def text(name: str, default: str | None) -> str | None:
        value = env.get(name)
        return default if value is None or value == "" else value

    def choice(name: str, default: str | None, allowed: tuple[str, ...]) -> str | None:
        value = text(name, default)
        if value is not None and value.upper() not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        return None if value is None else value.upper()

    protocol = choice("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", SECURITY_PROTOCOLS) or "PLAINTEXT"
    mechanism = choice("KAFKA_SASL_MECHANISM", None, SASL_MECHANISMS)
    tls_files = [n for n in ("KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE") if text(n, None)]
    if tls_files and protocol not in ("SSL", "SASL_SSL"):
        # Someone meant to use TLS: connecting in the clear instead must not happen silently.
        raise ValueError(
            f"{', '.join(tls_files)} given, but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS"
        )
    if mechanism and not protocol.startswith("SASL_"):
        raise ValueError(
            f"KAFKA_SASL_MECHANISM given, but KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL"
        )
    if text("KAFKA_SSL_KEYFILE", None) and not text("KAFKA_SSL_CERTFILE", None):
        raise ValueError("KAFKA_SSL_KEYFILE given without KAFKA_SSL_CERTFILE (the client certificate)")
    session = _number(env, "DUEWATCH_SESSION_TIMEOUT", 10.0, float, 1)
    heartbeat = _number(env, "DUEWATCH_HEARTBEAT_INTERVAL", 1.0, float, 0.1)
    if heartbeat >= session:
        # Kafka's rule; a third of the session or less is the usual advice.
        raise ValueError(
            f"DUEWATCH_HEARTBEAT_INTERVAL ({heartbeat:g} s) must be less than DUEWATCH_SESSION_TIMEOUT ({session:g} s)"
        )

    return Settings(
        bootstrap_servers=text("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092") or "127.0.0.1:9092",
        topic_prefix=text("DUEWATCH_TOPIC_PREFIX", "") or "",
        partitions=_number(env, "DUEWATCH_PARTITIONS", 12, int, 1),
        replication=_number(env, "DUEWATCH_REPLICATION", 1, int, 1),
        ticker_enabled=_bool(env, "DUEWATCH_TICKER_ENABLED", True),
        tick_interval=_number(env, "DUEWATCH_TICK_INTERVAL", 1.0, float, 0.01),
        settle_delay=_number(env, "DUEWATCH_SETTLE_DELAY", 60.0, float, 0),
        state_dir=text("DUEWATCH_STATE_DIR", "./state") or "./state",
        web_port=_number(env, "DUEWATCH_WEB_PORT", 6066, int, 0),
        web_bind=text("DUEWATCH_WEB_BIND", "0.0.0.0") or "0.0.0.0",
        web_host=text("DUEWATCH_WEB_HOST", None) or socket.gethostname(),
        policy_file=text("DUEWATCH_POLICY_FILE", None),
        api_token=text("DUEWATCH_API_TOKEN", None),
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username=text("KAFKA_SASL_USERNAME", None),
        sasl_password=text("KAFKA_SASL_PASSWORD", None),
        ssl_cafile=text("KAFKA_SSL_CAFILE", None),
        ssl_certfile=text("KAFKA_SSL_CERTFILE", None),
        ssl_keyfile=text("KAFKA_SSL_KEYFILE", None),
        ssl_key_password=text("KAFKA_SSL_KEY_PASSWORD", None),
        app_id=text("DUEWATCH_APP_ID", "duewatch") or "duewatch",
        log_json=_bool(env, "DUEWATCH_LOG_JSON", False),
        log_level=text("DUEWATCH_LOG_LEVEL", "info") or "info",
        batch_max=_number(env, "DUEWATCH_BATCH_MAX", 2000, int, 1),
        max_record_bytes=_number(env, "DUEWATCH_MAX_RECORD_BYTES", 256 * 1024, int, 1),
        max_tick_ahead=_number(env, "DUEWATCH_MAX_TICK_AHEAD", 86_400.0, float, 0),
        kafka_log_level=text("DUEWATCH_KAFKA_LOG_LEVEL", "warning") or "warning",
        schema_registry_url=_url(text("DUEWATCH_SCHEMA_REGISTRY_URL", None)),
        schema_registry_user=text("DUEWATCH_SCHEMA_REGISTRY_USER", None),
        schema_registry_password=text("DUEWATCH_SCHEMA_REGISTRY_PASSWORD", None),
        session_timeout=session,
        heartbeat_interval=heartbeat,
        instance_id=_instance_id(text("DUEWATCH_INSTANCE_ID", None)),
    )
