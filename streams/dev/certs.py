"""Throwaway certificate authorities and certificates for a local TLS broker (tests, development).

A bank's brokers usually want TLS with client certificates (mutual TLS): to test duewatch
against that for real, the test set-up needs a CA, a broker certificate for 127.0.0.1, and
client certificates: one the broker trusts, and one from another CA that it must refuse.
Everything is made here with the ``cryptography`` package, written as PEM files that both
sides read as they are (Kafka's ``ssl.keystore.type=PEM``, Python's ``ssl``): no keytool, no
JKS. Never for production: the keys are generated on the spot and kept unencrypted where the
broker reads them. ``python -m streams.dev.broker up --secure`` and the tests' secured broker
use ``make_dev_tls``.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: How long the certificates are valid: long enough for a developer's week, short enough that a
#: stray copy is soon worthless. They are valid from an hour ago (clocks differ a little).
DEFAULT_DAYS = 7


@dataclass(frozen=True)
class Authority:
    """A certificate authority: its certificate and the key it signs with."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "duewatch development"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])  # fmt: skip


def _validity(days: int) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(hours=1), now + timedelta(days=days)


def new_authority(common_name: str, days: int = DEFAULT_DAYS) -> Authority:
    """A self-signed CA (P-256 key; fast to make, and both OpenSSL and Java read it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity(days)
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def issue(
    ca: Authority,
    common_name: str,
    *,
    server_hosts: Iterable[str] = (),
    client: bool = False,
    days: int = DEFAULT_DAYS,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate signed by ``ca``: for a server when ``server_hosts`` (DNS names or IP
    addresses, checked by the client's host name verification), for a client when ``client``."""
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity(days)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server_hosts else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    if not usages:
        raise ValueError("a certificate for a server (server_hosts) or a client (client=True)")
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if server_hosts:
        names: list[x509.GeneralName] = []
        for host in server_hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca.key, hashes.SHA256()), key


def key_pem(key: ec.EllipticCurvePrivateKey, password: str | None = None) -> bytes:
    """The key as PKCS#8 PEM (what Kafka's PEM keystore reads), encrypted when ``password``."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


@dataclass(frozen=True)
class DevTls:
    """The PEM files of a local secured broker and its clients.

    - ``ca``: the CA the broker's certificate and the good client certificate are signed by
      (the broker's truststore and the clients' ``KAFKA_SSL_CAFILE``);
    - ``broker_keystore``: the broker's key and certificate in one file (unencrypted: the broker
      reads it at start);
    - ``client_cert``/``client_key``: a client certificate of that CA, its key encrypted with
      ``client_key_password``;
    - ``rogue_cert``/``rogue_key``: a client certificate of another CA, which the broker must
      refuse (same key password);
    - ``rogue_ca``: that other CA, e.g. as a client's CA file that does not trust the broker.
    """

    directory: Path
    ca: Path
    broker_keystore: Path
    client_cert: Path
    client_key: Path
    client_key_password: str = field(repr=False)
    rogue_ca: Path
    rogue_cert: Path
    rogue_key: Path


KEY_PASSWORD_FILE = "client.key.password"
_FILES = {"ca": "ca.pem", "broker_keystore": "broker.pem", "client_cert": "client.crt", "client_key": "client.key",
          "rogue_ca": "rogue-ca.pem", "rogue_cert": "rogue-client.crt", "rogue_key": "rogue-client.key"}  # fmt: skip


def make_dev_tls(directory: Path | str, hosts: Iterable[str] = ("127.0.0.1", "localhost"),
                 days: int = DEFAULT_DAYS) -> DevTls:  # fmt: skip
    """Write a fresh CA, a broker certificate for ``hosts`` and the client certificates into
    ``directory`` (created if needed); returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    _write(directory / KEY_PASSWORD_FILE, password.encode(), private=True)
    ca = new_authority("duewatch dev CA", days)
    rogue = new_authority("some other CA", days)
    broker_cert, broker_key = issue(ca, "duewatch dev broker", server_hosts=list(hosts), days=days)
    client_cert, client_key = issue(ca, "duewatch", client=True, days=days)
    rogue_cert, rogue_key = issue(rogue, "duewatch", client=True, days=days)
    return DevTls(
        directory=directory,
        ca=_write(directory / _FILES["ca"], ca.pem),
        broker_keystore=_write(directory / _FILES["broker_keystore"], key_pem(broker_key) + cert_pem(broker_cert),
                               private=True),
        client_cert=_write(directory / _FILES["client_cert"], cert_pem(client_cert)),
        client_key=_write(directory / _FILES["client_key"], key_pem(client_key, password), private=True),
        client_key_password=password,
        rogue_ca=_write(directory / _FILES["rogue_ca"], rogue.pem),
        rogue_cert=_write(directory / _FILES["rogue_cert"], cert_pem(rogue_cert)),
        rogue_key=_write(directory / _FILES["rogue_key"], key_pem(rogue_key, password), private=True),
    )  # fmt: skip


def read_dev_tls(directory: Path | str) -> DevTls | None:
    """The set make_dev_tls wrote into ``directory``, or None if it is not (all) there."""
    directory = Path(directory)
    paths = {name: directory / file for name, file in _FILES.items()}
    password_file = directory / KEY_PASSWORD_FILE
    if not password_file.is_file() or not all(p.is_file() for p in paths.values()):
        return None
    return DevTls(directory=directory, client_key_password=password_file.read_text().strip(), **paths)
