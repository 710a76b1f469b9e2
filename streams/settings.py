"""Configuration from the environment (SPEC §6), each variable with its documented default.

Read once at start-up; everything downstream receives this immutable value.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .core.config import EngineConfig

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


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
    api_token: str | None = None
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    app_id: str = "duewatch"
    log_json: bool = False
    log_level: str = "info"
    # Most records of one fetch an agent handles as one batch (streams.intake): one wait for the
    # broker's acknowledgements per batch instead of per record.
    batch_max: int = 2000
    # SPEC §6 registry mode: None (the default) is plain Avro; a Confluent-compatible registry's
    # URL (for Apicurio, its /apis/ccompat/v7) switches every output to the Confluent framing.
    schema_registry_url: str | None = None
    schema_registry_user: str | None = None
    schema_registry_password: str | None = field(default=None, repr=False)

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

    def kafka_kwargs(self) -> dict[str, Any]:
        """aiokafka client keyword arguments, security included."""
        kwargs: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers, "security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        if self.security_protocol in ("SSL", "SASL_SSL"):
            import ssl

            kwargs["ssl_context"] = ssl.create_default_context(cafile=self.ssl_cafile)
        return kwargs


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``env`` (default ``os.environ``); raises ValueError naming a bad variable."""
    env = os.environ if env is None else env

    def text(name: str, default: str | None) -> str | None:
        value = env.get(name)
        return default if value is None or value == "" else value

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
        security_protocol=text("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT") or "PLAINTEXT",
        sasl_mechanism=text("KAFKA_SASL_MECHANISM", None),
        sasl_username=text("KAFKA_SASL_USERNAME", None),
        sasl_password=text("KAFKA_SASL_PASSWORD", None),
        ssl_cafile=text("KAFKA_SSL_CAFILE", None),
        app_id=text("DUEWATCH_APP_ID", "duewatch") or "duewatch",
        log_json=_bool(env, "DUEWATCH_LOG_JSON", False),
        log_level=text("DUEWATCH_LOG_LEVEL", "info") or "info",
        batch_max=_number(env, "DUEWATCH_BATCH_MAX", 2000, int, 1),
        schema_registry_url=_url(text("DUEWATCH_SCHEMA_REGISTRY_URL", None)),
        schema_registry_user=text("DUEWATCH_SCHEMA_REGISTRY_USER", None),
        schema_registry_password=text("DUEWATCH_SCHEMA_REGISTRY_PASSWORD", None),
    )
