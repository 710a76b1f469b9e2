"""Environment settings (SPEC §6 plus the documented extras): defaults and clear errors."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from streams.settings import Settings, default_instance_id, from_env


def test_an_empty_environment_gives_the_documented_defaults() -> None:
    cfg = from_env({})
    assert cfg == Settings(web_host=cfg.web_host)  # the host name defaults to this machine's
    assert (cfg.partitions, cfg.tick_interval, cfg.settle_delay, cfg.batch_max) == (12, 1.0, 60.0, 2000)


def test_the_batch_size_is_set_from_the_environment() -> None:
    assert from_env({"DUEWATCH_BATCH_MAX": "1"}).batch_max == 1


@pytest.mark.parametrize("value", ["0", "many"])
def test_a_bad_batch_size_names_the_variable(value: str) -> None:
    with pytest.raises(ValueError, match="DUEWATCH_BATCH_MAX"):
        from_env({"DUEWATCH_BATCH_MAX": value})


# --------------------------------------------------------------------------- Kafka security


SECRETS = {
    "KAFKA_SASL_PASSWORD": "sasl-Pa55word-xyz",
    "KAFKA_SSL_KEY_PASSWORD": "key-Pa55word-xyz",
    "DUEWATCH_API_TOKEN": "token-Pa55word-xyz",
}


def test_no_secret_in_the_settings_repr() -> None:
    cfg = from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                    "KAFKA_SASL_USERNAME": "duewatch", "KAFKA_SSL_CAFILE": "/ca.pem",
                    "KAFKA_SSL_CERTFILE": "/c.crt", **SECRETS})  # fmt: skip
    assert (cfg.sasl_password, cfg.ssl_key_password, cfg.api_token) == tuple(SECRETS.values())
    for shown in (repr(cfg), str(cfg), f"{cfg}"):
        assert "duewatch" in shown and "SCRAM-SHA-512" in shown  # the rest is there
        for secret in SECRETS.values():
            assert secret not in shown


def test_protocol_and_mechanism_are_checked_and_normalised() -> None:
    cfg = from_env({"KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_MECHANISM": "scram-sha-256"})
    assert (cfg.security_protocol, cfg.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
    with pytest.raises(ValueError, match="KAFKA_SECURITY_PROTOCOL must be one of"):
        from_env({"KAFKA_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(ValueError, match="KAFKA_SASL_MECHANISM must be one of"):
        from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"})


@pytest.mark.parametrize(
    "env, message",
    [
        ({"KAFKA_SSL_CAFILE": "/ca.pem"}, "KAFKA_SSL_CAFILE given, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SSL_CERTFILE": "/c.crt"}, "does not use TLS"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SASL_MECHANISM": "PLAIN"}, "does not use SASL"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": "/k.pem"}, "without KAFKA_SSL_CERTFILE"),
    ],
)
def test_settings_that_would_not_do_what_they_say_are_refused(env: dict[str, str], message: str) -> None:
    """A CA file or client certificate with a protocol that has no TLS would silently connect in
    the clear: refused at start instead."""
    with pytest.raises(ValueError, match=message):
        from_env(env)


def test_sasl_needs_a_user_and_a_password() -> None:
    cfg = from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "u"})
    with pytest.raises(ValueError, match="needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        cfg.kafka_kwargs()
    cfg = from_env(
        {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}
    )
    kwargs = cfg.kafka_kwargs()
    assert kwargs["sasl_mechanism"] == "PLAIN"  # the documented default
    assert "ssl_context" not in kwargs and kwargs["security_protocol"] == "SASL_PLAINTEXT"


@pytest.fixture(scope="module")
def dev_tls(tmp_path_factory: pytest.TempPathFactory):
    from streams.dev.certs import make_dev_tls

    return make_dev_tls(tmp_path_factory.mktemp("tls"))


def tls_env(tls, **overrides: str) -> dict[str, str]:
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CAFILE": str(tls.ca),
        "KAFKA_SSL_CERTFILE": str(tls.client_cert),
        "KAFKA_SSL_KEYFILE": str(tls.client_key),
        "KAFKA_SSL_KEY_PASSWORD": tls.client_key_password,
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v}


def test_the_tls_context_verifies_the_broker_and_presents_the_client_certificate(dev_tls) -> None:
    context = from_env(tls_env(dev_tls)).ssl_context()
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in context.get_ca_certs()] == [((("organizationName", "duewatch development"),),
                                                              (("commonName", "duewatch dev CA"),))]  # fmt: skip
    # the client certificate is loaded: a server of the same CA that requires one accepts the handshake
    assert handshake(dev_tls, context) == "duewatch"


def test_the_command_line_and_the_worker_share_the_tls_context(dev_tls) -> None:
    """kafka_kwargs (CLI, aiokafka) and the worker's Faust credentials take the same context."""
    cfg = from_env(tls_env(dev_tls))
    kwargs = cfg.kafka_kwargs()
    assert kwargs["security_protocol"] == "SSL"
    assert handshake(dev_tls, kwargs["ssl_context"]) == "duewatch"
    from streams.worker.app import _credentials

    credentials = _credentials(cfg)
    assert handshake(dev_tls, credentials.context) == "duewatch"
    scram = from_env(tls_env(dev_tls, KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
                             KAFKA_SASL_USERNAME="u", KAFKA_SASL_PASSWORD="p"))  # fmt: skip
    credentials = _credentials(scram)
    assert (credentials.protocol.value, credentials.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-512")
    assert handshake(dev_tls, credentials.ssl_context) == "duewatch"
    assert "p" not in repr(credentials).replace("protocol", "")  # Faust's repr shows the user only


def handshake(tls, client_context: ssl.SSLContext) -> str:
    """A TLS handshake with a server of ``tls``'s broker certificate that requires a client
    certificate of its CA; returns the client certificate's common name the server saw."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca))
    server_context.load_cert_chain(str(tls.broker_keystore))
    server_context.verify_mode = ssl.CERT_REQUIRED
    with socket.create_server(("127.0.0.1", 0)) as listener:
        seen: list[str] = []

        def serve() -> None:
            conn, _ = listener.accept()
            with server_context.wrap_socket(conn, server_side=True) as tls_conn:
                subject = dict(x[0] for x in tls_conn.getpeercert()["subject"])
                seen.append(subject["commonName"])
                tls_conn.sendall(b"ok")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with socket.create_connection(listener.getsockname()) as raw:
            with client_context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
                assert conn.recv(2) == b"ok"
        thread.join(10)
    return seen[0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"KAFKA_SSL_KEY_PASSWORD": "wrong-Pa55word"}, "wrong or missing KAFKA_SSL_KEY_PASSWORD"),
        ({"KAFKA_SSL_KEY_PASSWORD": ""}, "wrong or missing KAFKA_SSL_KEY_PASSWORD"),
        ({"KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "KAFKA_SSL_CAFILE: no such file /nonexistent/ca.pem"),
        ({"KAFKA_SSL_KEYFILE": "/nonexistent/k.pem"}, "KAFKA_SSL_KEYFILE: no such file"),
    ],
)
def test_a_bad_tls_file_or_key_password_names_the_variable_and_shows_no_secret(
    dev_tls, overrides, message
) -> None:
    """Never a terminal prompt for the key's password either (it would hang a worker)."""
    cfg = from_env(tls_env(dev_tls, **overrides))
    with pytest.raises(ValueError, match=message) as raised:
        cfg.ssl_context()
    text = str(raised.value) + repr(raised.value)
    assert dev_tls.client_key_password not in text and "wrong-Pa55word" not in text
    error = raised.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


# --------------------------------------------------------------------------- failover


def test_failover_defaults_detect_again_within_15_seconds() -> None:
    cfg = from_env({})
    assert (cfg.session_timeout, cfg.heartbeat_interval, cfg.instance_id) == (10.0, 1.0, None)
    assert cfg.heartbeat_interval <= cfg.session_timeout / 3
    assert cfg.group_instance_id == default_instance_id(socket.gethostname(), "./state")


def test_failover_settings_from_the_environment() -> None:
    cfg = from_env({"DUEWATCH_SESSION_TIMEOUT": "6", "DUEWATCH_HEARTBEAT_INTERVAL": "0.5",
                    "DUEWATCH_INSTANCE_ID": "duewatch-2"})  # fmt: skip
    assert (cfg.session_timeout, cfg.heartbeat_interval, cfg.group_instance_id) == (6.0, 0.5, "duewatch-2")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DUEWATCH_SESSION_TIMEOUT": "soon"}, "DUEWATCH_SESSION_TIMEOUT"),
        ({"DUEWATCH_SESSION_TIMEOUT": "0.5"}, "DUEWATCH_SESSION_TIMEOUT"),
        ({"DUEWATCH_HEARTBEAT_INTERVAL": "10"}, "DUEWATCH_HEARTBEAT_INTERVAL"),
        ({"DUEWATCH_INSTANCE_ID": "pod 1"}, "DUEWATCH_INSTANCE_ID"),
        ({"DUEWATCH_INSTANCE_ID": "x" * 250}, "DUEWATCH_INSTANCE_ID"),
    ],
)
def test_bad_failover_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        from_env(env)
