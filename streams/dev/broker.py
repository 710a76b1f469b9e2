"""Real Apache Kafka brokers (KRaft, each node broker+controller) for development and tests:
one node, one node with TLS / mutual TLS / SASL_SSL+SCRAM listeners, or a replicated cluster.

The broker's jars come from Maven Central (deploy/kafka/pom.xml); nothing is downloaded
from anywhere else. Usage::

    python -m streams.dev.broker jars     # gather the jars into deploy/kafka/lib (cached)
    python -m streams.dev.broker up       # format (first time) + start + wait for metadata
    python -m streams.dev.broker up --secure    # + SSL (client certificates required) and SASL_SSL
                                                #   (SCRAM-SHA-512) listeners; prints the client settings
    python -m streams.dev.broker up --nodes 3   # a 3-node cluster (replication 3, min.insync.replicas 2)
    python -m streams.dev.broker status   # exit 0 if running, 3 if not
    python -m streams.dev.broker down     # SIGTERM, wait, SIGKILL after a timeout

Environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_DATA_DIR
(deploy/kafka/run; deploy/kafka/run-3nodes for ``--nodes 3``), KAFKA_HEAP_OPTS
(-Xms256m -Xmx512m), JAVA_HOME / JAVA, MVN.

Data dir layout: server.properties, cluster.id, kafka.pid, kafka.out (JVM stdout/stderr),
data/ (log.dirs), logs/server.log (WARN and up, see deploy/kafka/log4j2.properties); with
``--secure`` also tls/ (the throwaway CA, certificates and client settings); a cluster has
one such directory per node (node-1/, node-2/, ...).

Only the standard library is needed for ``jars``; ``up`` uses aiokafka to check that the
broker serves metadata, ``--secure`` the ``cryptography`` package (streams.dev.certs).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the cryptography package is needed only for secured brokers
    from .certs import DevTls

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]
KAFKA_DIR = ROOT / "deploy" / "kafka"
POM = KAFKA_DIR / "pom.xml"
LIB_DIR = KAFKA_DIR / "lib"
LOG4J_CONFIG = KAFKA_DIR / "log4j2.properties"
DEFAULT_DATA_DIR = KAFKA_DIR / "run"
DEFAULT_HEAP_OPTS = "-Xms256m -Xmx512m"
STAMP = ".stamp"

# Settings for a one-node cluster. Everything internal has replication factor 1 and few
# partitions (fast creation of __consumer_offsets on the first group join).
BASE_SETTINGS: dict[str, str] = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "share.coordinator.state.topic.num.partitions": "1",
    # consumer groups (Faust workers) join without the default 3 s wait
    "group.initial.rebalance.delay.ms": "0",
    # Topics are declared explicitly: Faust creates its own (changelogs, assignor leader
    # topic, agent topics) through CreateTopics, the tests create theirs with the admin
    # client. A typo in a topic name must fail loudly, not create a 1-partition topic.
    "auto.create.topics.enable": "false",
    "delete.topic.enable": "true",
    # Kafka 4.0.x in combined mode: after a restart the controller rejects the broker's new
    # registration (DUPLICATE_BROKER_REGISTRATION) until the old session expires, even after
    # a clean controlled shutdown (fixed upstream by KAFKA-19130, not in 4.0.x). With the
    # default 9 s session a restart takes ~13 s; with 4 s it takes ~6 s.
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "4000",
}


def replicated_settings(nodes: int) -> dict[str, str]:
    """What a cluster of ``nodes`` changes in BASE_SETTINGS: what a production cluster should use.

    Every topic, the internal ones included, is replicated to 3 nodes (or all there are) and a
    write is acknowledged (acks=all) only when 2 replicas have it: one node can die without
    losing an acknowledged record or stopping the writes."""
    replicas = str(min(3, nodes))
    isr = str(max(1, min(3, nodes) - 1))
    return {
        "num.partitions": "1",
        "default.replication.factor": replicas,
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": isr,
        # never let an out-of-sync replica lead (it would drop acknowledged records); the default,
        # said here because the whole point of the cluster is not to lose any
        "unclean.leader.election.enable": "false",
    }


#: The SASL mechanism of the SASL_SSL listener.
SCRAM_MECHANISM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class SecureListeners:
    """A broker's secured listeners beside PLAINTEXT: ``SSL`` on ``ssl_port``, which requires a
    client certificate signed by a CA of ``truststore`` (mutual TLS), and ``SASL_SSL`` on
    ``sasl_ssl_port``, which authenticates with SCRAM-SHA-512 over TLS (no client certificate).

    ``keystore`` is the broker's key and certificate chain, ``truststore`` the CA certificates,
    both PEM (streams.dev.certs makes them). ``scram_users`` (name -> password) are stored in
    the cluster metadata when the storage is formatted (KRaft: ``kafka-storage format
    --add-scram``, KIP-900): the broker knows them from its first start, there is no ZooKeeper
    to write them to. The PLAINTEXT listener stays for inter-broker traffic, the controllers and
    the rest of the test-suite."""

    ssl_port: int
    sasl_ssl_port: int
    keystore: Path
    truststore: Path
    scram_users: Mapping[str, str] = field(default_factory=dict, repr=False)

    def settings(self) -> dict[str, str]:
        """The broker's TLS and SASL settings (listeners and protocol map are set by Broker)."""
        return {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.truststore),
            # mutual TLS on the SSL listener only; SASL_SSL clients authenticate with SCRAM
            "listener.name.ssl.ssl.client.auth": "required",
            "listener.name.sasl_ssl.ssl.client.auth": "none",
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": SCRAM_MECHANISM,
            # The listener's JAAS configuration, inline (no JAAS file, no -Djava.security.auth.login.config):
            # the SCRAM login module needs no options on the server side, the credentials are in the metadata.
            f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        }  # fmt: skip

    def format_arguments(self) -> list[str]:
        """``--add-scram`` arguments of the storage format: one per user."""
        for name, password in self.scram_users.items():
            # the format tool's syntax has no escaping: keep to what it can parse
            if not all(c.isalnum() or c in "-_." for c in name + password):
                raise DevKafkaError(
                    "SCRAM user names and passwords here may only hold letters, digits, - _ ."
                )
        return [a for name, password in self.scram_users.items()
                for a in ("--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]")]  # fmt: skip


class DevKafkaError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"devkafka: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- jars


def pom_hash() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def jars_ready(lib_dir: Path = LIB_DIR) -> bool:
    stamp = lib_dir / STAMP
    return (
        stamp.is_file() and stamp.read_text().strip() == pom_hash() and any(lib_dir.glob("kafka_2.13-*.jar"))
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_jars(lib_dir: Path = LIB_DIR) -> Path:
    """Copy the broker's runtime jars into lib_dir with Maven, unless the stamp says they are there."""
    if jars_ready(lib_dir):
        return lib_dir
    with _locked(lib_dir / ".lock"):
        if jars_ready(lib_dir):  # another process did it while we waited
            return lib_dir
        mvn = os.environ.get("MVN") or shutil.which("mvn")
        if not mvn:
            raise DevKafkaError("Maven (mvn) not found on PATH; it is needed once to fetch the Kafka jars")
        incoming = lib_dir / ".incoming"
        shutil.rmtree(incoming, ignore_errors=True)
        log(f"fetching Kafka broker jars from Maven Central ({POM.relative_to(ROOT)}) ...")
        started = time.monotonic()
        cmd = [
            mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={incoming}",
        ]  # fmt: skip
        # output captured: with -q it is only ANSI resets (Debian's mvn 3.8.7), or the errors
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if res.returncode != 0:
            raise DevKafkaError(
                f"mvn failed with exit code {res.returncode}: {' '.join(cmd)}\n{res.stdout}{res.stderr}"
            )
        for old in lib_dir.glob("*.jar"):
            old.unlink()
        for jar in incoming.glob("*.jar"):
            jar.rename(lib_dir / jar.name)
        shutil.rmtree(incoming, ignore_errors=True)
        (lib_dir / STAMP).write_text(pom_hash() + "\n")
        log(f"{len(list(lib_dir.glob('*.jar')))} jars in {lib_dir} ({time.monotonic() - started:.1f} s)")
    return lib_dir


def kafka_version(lib_dir: Path = LIB_DIR) -> str | None:
    for jar in lib_dir.glob("kafka_2.13-*.jar"):
        return jar.name[len("kafka_2.13-") : -len(".jar")]
    return None


def java_bin() -> str:
    if os.environ.get("JAVA"):
        return os.environ["JAVA"]
    if os.environ.get("JAVA_HOME"):
        candidate = Path(os.environ["JAVA_HOME"]) / "bin" / "java"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("java")
    if not found:
        raise DevKafkaError("java not found (JDK 17+ needed for the Kafka 4 broker); set JAVA_HOME")
    return found


# --------------------------------------------------------------------------- helpers


def random_cluster_id() -> str:
    """Like org.apache.kafka.common.Uuid.randomUuid().toString(): 22 chars base64url, no leading '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_ports(n: int) -> list[int]:
    """n distinct ports that are free right now (all bound at once, so no duplicates)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie is dead for our purposes
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def _probe_metadata(bootstrap: str, brokers: int = 1) -> bool:
    from aiokafka import AIOKafkaClient  # the project's dependency; imported lazily so `jars` needs none

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, retry_backoff_ms=100)
    try:
        await client.bootstrap()
        return len(client.cluster.brokers()) >= brokers
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await client.close()


def serves_metadata(bootstrap: str, brokers: int = 1) -> bool:
    """True when the broker answers a Metadata request listing at least ``brokers`` (unfenced) brokers.

    Runs in its own thread + event loop so it is safe to call from anywhere, including
    pytest fixtures while pytest-asyncio owns the main thread's loop.
    """
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _probe_metadata(bootstrap, brokers)).result()


def set_pdeathsig() -> None:  # runs in the child between fork and exec
    import ctypes

    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# --------------------------------------------------------------------------- broker


@dataclass
class Status:
    running: bool
    pid: int | None
    port: int
    port_open: bool
    message: str


class Broker:
    """One broker+controller process whose state lives in data_dir.

    Alone by default (its own one-voter quorum); a node of a Cluster when given its
    ``node_id``, the quorum's ``voters`` and the shared ``cluster_id``. ``secure`` adds the TLS
    and SCRAM listeners, ``overrides`` replace BASE_SETTINGS entries (a cluster's replication)."""

    def __init__(self, data_dir: Path | str | None = None, port: int | None = None,
                 controller_port: int | None = None, *, node_id: int = 1, voters: str | None = None,
                 cluster_id: str | None = None, secure: SecureListeners | None = None,
                 overrides: Mapping[str, str] | None = None) -> None:  # fmt: skip
        self.data_dir = Path(data_dir or os.environ.get("KAFKA_DATA_DIR") or DEFAULT_DATA_DIR).resolve()
        self.port = int(port or os.environ.get("KAFKA_PORT") or 9092)
        self.controller_port = int(controller_port or os.environ.get("KAFKA_CONTROLLER_PORT") or 9093)
        self.node_id = node_id
        self.voters = voters or f"{node_id}@{HOST}:{self.controller_port}"
        self.cluster_id = cluster_id
        self.secure = secure
        self.overrides = dict(overrides or {})
        self._proc: subprocess.Popen[bytes] | None = None

    # paths
    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "kafka.pid"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "data"

    @property
    def out_file(self) -> Path:
        return self.data_dir / "kafka.out"

    @property
    def server_log(self) -> Path:
        return self.data_dir / "logs" / "server.log"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def ssl_bootstrap(self) -> str:
        """The mutual-TLS listener (needs ``secure``)."""
        assert self.secure is not None, "not a secured broker"
        return f"{HOST}:{self.secure.ssl_port}"

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """The SASL_SSL (SCRAM-SHA-512) listener (needs ``secure``)."""
        assert self.secure is not None, "not a secured broker"
        return f"{HOST}:{self.secure.sasl_ssl_port}"

    # state
    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _is_our_broker(self, pid: int) -> bool:
        if not _pid_alive(pid):
            return False
        cmd = _cmdline(pid)
        if cmd is None:  # no /proc: trust the pid file
            return True
        return "kafka.Kafka" in cmd and str(self.config_file) in cmd

    def _running_port(self) -> int:
        """The PLAINTEXT port the running broker was configured with (may differ from the requested one)."""
        with contextlib.suppress(OSError, ValueError):
            for line in self.config_file.read_text().splitlines():
                if line.startswith("advertised.listeners="):
                    for listener in line.split("=", 1)[1].split(","):
                        if listener.startswith("PLAINTEXT://"):
                            return int(listener.rsplit(":", 1)[1])
        return self.port

    def _find_unrecorded(self) -> int | None:
        """Our broker running without (or with a wrong) pid file, found by its command line."""
        for proc in Path("/proc").glob("[0-9]*"):
            cmd = _cmdline(int(proc.name))
            if cmd and "kafka.Kafka" in cmd and str(self.config_file) in cmd and _pid_alive(int(proc.name)):
                return int(proc.name)
        return None

    def status(self) -> Status:
        pid = self._read_pid()
        if pid is None or not self._is_our_broker(pid):
            found = self._find_unrecorded()
            if found is not None:
                log(f"found the broker of {self.data_dir} running as pid {found}; rewriting {self.pid_file}")
                self.pid_file.write_text(f"{found}\n")
                pid = found
        if pid is not None and self._is_our_broker(pid):
            port = self._running_port()
            is_open = port_open(port)
            msg = f"running (pid {pid}, {HOST}:{port}, data {self.data_dir})"
            if not is_open:
                msg = f"process {pid} is alive but port {port} is closed (starting, or unhealthy)"
            return Status(True, pid, port, is_open, msg)
        is_open = port_open(self.port)
        msg = "stopped"
        if pid is not None:
            msg += f" (stale pid file: {pid} is not a running broker)"
        if is_open:
            msg += f"; port {self.port} is in use by another process"
        return Status(False, None, self.port, is_open, msg)

    # lifecycle
    def write_config(self) -> None:
        settings = dict(BASE_SETTINGS)
        settings.update(self.overrides)
        listeners = {"PLAINTEXT": self.port}
        if self.secure is not None:
            listeners.update(SSL=self.secure.ssl_port, SASL_SSL=self.secure.sasl_ssl_port)
            settings.update(self.secure.settings())
        advertised = ",".join(f"{name}://{HOST}:{port}" for name, port in listeners.items())
        settings.update({
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters,
            "listeners": f"{advertised},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": advertised,
            "listener.security.protocol.map": ",".join(["CONTROLLER:PLAINTEXT", *(f"{n}:{n}" for n in listeners)]),
            "log.dirs": str(self.log_dirs),
        })  # fmt: skip
        body = "".join(f"{k}={v}\n" for k, v in settings.items())
        self.config_file.write_text("# generated by streams/dev/broker.py; rewritten on every `up`\n" + body)

    def _classpath(self) -> str:
        return str(LIB_DIR / "*")

    def format_storage(self) -> None:
        if (self.log_dirs / "meta.properties").exists():
            return
        cid_file = self.data_dir / "cluster.id"
        if self.cluster_id:
            cid_file.write_text(self.cluster_id + "\n")
        elif not cid_file.exists():
            cid_file.write_text(random_cluster_id() + "\n")
        cid = cid_file.read_text().strip()
        cmd = [
            java_bin(), f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
            "-cp", self._classpath(), "kafka.tools.StorageTool",
            "format", "-t", cid, "-c", str(self.config_file), "--ignore-formatted",
            *(self.secure.format_arguments() if self.secure else ()),
        ]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise DevKafkaError(f"formatting storage failed:\n{res.stdout}{res.stderr}")

    def start(self, die_with_parent: bool = False) -> int:
        """Write the config, format the storage the first time, and start the process without
        waiting for it; returns its pid. The caller holds the data dir's lock and has checked that
        no broker of this data dir runs."""
        if self.pid_file.exists():
            self.pid_file.unlink()
        for p in (self.port, self.controller_port, *((self.secure.ssl_port, self.secure.sasl_ssl_port)
                                                      if self.secure else ())):  # fmt: skip
            if port_open(p):
                raise DevKafkaError(
                    f"port {p} is already in use by a process that is not the broker in {self.data_dir}; "
                    "stop it or choose other ports (KAFKA_PORT, KAFKA_CONTROLLER_PORT)"
                )
        self.write_config()
        self.format_storage()
        (self.data_dir / "logs").mkdir(exist_ok=True)
        heap = os.environ.get("KAFKA_HEAP_OPTS", DEFAULT_HEAP_OPTS).split()
        cmd = [
            java_bin(), *heap, "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
            "-cp", self._classpath(), "kafka.Kafka", str(self.config_file),
        ]  # fmt: skip
        with open(self.out_file, "ab") as out:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.data_dir, start_new_session=True,
                preexec_fn=set_pdeathsig if die_with_parent else None,
            )  # fmt: skip
        self.pid_file.write_text(f"{self._proc.pid}\n")
        return self._proc.pid

    def up(self, timeout: float = 60.0, die_with_parent: bool = False) -> float:
        """Start the broker unless it runs already; returns seconds until it served metadata."""
        ensure_jars()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with _locked(self.data_dir / ".devkafka.lock"):
            st = self.status()
            if st.running:
                if st.port != self.port:
                    log(f"note: the broker in {self.data_dir} runs on port {st.port}, not {self.port}")
                    self.port = st.port
                log(f"already running (pid {st.pid}); not starting another one")
                self.wait_ready(st.pid, timeout, started)
                return time.monotonic() - started
            pid = self.start(die_with_parent)
            try:
                self.wait_ready(pid, timeout, started)
            except BaseException:
                self._stop_pid(pid, 10)
                raise
        return time.monotonic() - started

    def wait_ready(self, pid: int | None, timeout: float, started: float, bootstrap: str | None = None,
                    brokers: int = 1) -> None:  # fmt: skip
        deadline = started + timeout
        while True:
            if pid is not None and not self._alive(pid):
                raise DevKafkaError(
                    f"broker process {pid} exited during startup.\n--- {self.out_file}:\n{_tail(self.out_file)}\n"
                    f"--- {self.server_log}:\n{_tail(self.server_log)}"
                )
            if port_open(self.port) and serves_metadata(bootstrap or self.bootstrap, brokers):
                return
            if time.monotonic() > deadline:
                raise DevKafkaError(
                    f"broker did not serve metadata on {self.bootstrap} within {timeout:.0f} s; "
                    f"see {self.server_log} and {self.out_file}"
                )
            time.sleep(0.2)

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None  # reaps our child
        return _pid_alive(pid)

    def _stop_pid(self, pid: int, timeout: float) -> str:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self._alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        how = "stopped"
        if self._alive(pid):
            log(f"broker {pid} still alive {timeout:.0f} s after SIGTERM; sending SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while self._alive(pid):
                time.sleep(0.05)
            how = "killed"
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        return how

    def kill(self) -> bool:
        """SIGKILL the broker (a crash: no controlled shutdown); returns True if one was running."""
        st = self.status()
        if not st.running or st.pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(st.pid, signal.SIGKILL)
        while self._alive(st.pid):
            time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        return True

    def down(self, timeout: float = 30.0) -> bool:
        """Stop the broker; returns True if one was running."""
        st = self.status()
        if not st.running or st.pid is None:
            with contextlib.suppress(FileNotFoundError):
                self.pid_file.unlink()
            return False
        self._stop_pid(st.pid, timeout)
        return True


class Cluster:
    """``nodes`` combined broker+controller processes forming one KRaft cluster: a quorum of
    ``nodes`` controllers, every topic replicated (replicated_settings). For tests of what a
    broker's death does: ``kill(node)`` (SIGKILL) and ``restart(node)``; nodes count from 1.

    Each node lives in ``base_dir/node-<n>`` on free ports (or the given ones)."""

    def __init__(self, base_dir: Path | str, nodes: int = 3, ports: Sequence[int] | None = None,
                 controller_ports: Sequence[int] | None = None) -> None:  # fmt: skip
        if nodes < 1:
            raise DevKafkaError("a cluster needs at least one node")
        self.base_dir = Path(base_dir).resolve()
        if ports is None or controller_ports is None:
            free = free_ports(2 * nodes)
            ports, controller_ports = ports or free[:nodes], controller_ports or free[nodes:]
        if len(ports) != nodes or len(controller_ports) != nodes:
            raise DevKafkaError(f"{nodes} nodes need {nodes} ports and {nodes} controller ports")
        cid_file = self.base_dir / "cluster.id"
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if not cid_file.exists():
            cid_file.write_text(random_cluster_id() + "\n")
        cluster_id = cid_file.read_text().strip()
        voters = ",".join(f"{n}@{HOST}:{cp}" for n, cp in enumerate(controller_ports, 1))
        self.brokers = [
            Broker(self.base_dir / f"node-{n}", port, cport, node_id=n, voters=voters, cluster_id=cluster_id,
                   overrides=replicated_settings(nodes))
            for n, (port, cport) in enumerate(zip(ports, controller_ports, strict=True), 1)
        ]  # fmt: skip

    @classmethod
    def existing(cls, base_dir: Path | str) -> Cluster | None:
        """The cluster whose nodes were configured under ``base_dir`` (ports from their configs)."""
        base = Path(base_dir).resolve()
        configs = sorted(base.glob("node-*/server.properties"), key=lambda p: int(p.parent.name[5:]))
        if not configs:
            return None
        ports, controllers = [], []
        for config in configs:
            lines = dict(
                ln.split("=", 1) for ln in config.read_text().splitlines() if "=" in ln and ln[0] != "#"
            )
            ports.append(int(lines["advertised.listeners"].split(",")[0].rsplit(":", 1)[1]))
            controllers.append(int(lines["listeners"].rsplit(":", 1)[1]))
        return cls(base, len(configs), ports, controllers)

    def node(self, n: int) -> Broker:
        return self.brokers[n - 1]

    @property
    def bootstrap(self) -> str:
        """Every node's PLAINTEXT listener, comma-separated (clients try them in turn)."""
        return ",".join(b.bootstrap for b in self.brokers)

    def up(self, timeout: float = 120.0, die_with_parent: bool = False) -> float:
        """Start every node that is not running and wait until all of them serve metadata (no
        node can on its own: the controllers need a majority); returns the seconds it took."""
        ensure_jars()
        started = time.monotonic()
        pids: dict[int, int | None] = {}
        for broker in self.brokers:
            broker.data_dir.mkdir(parents=True, exist_ok=True)
            with _locked(broker.data_dir / ".devkafka.lock"):
                st = broker.status()
                pids[broker.node_id] = st.pid if st.running else broker.start(die_with_parent)
        try:
            for broker in self.brokers:
                broker.wait_ready(pids[broker.node_id], timeout, started, self.bootstrap, len(self.brokers))
        except BaseException:
            self.down(10)
            raise
        return time.monotonic() - started

    def kill(self, n: int) -> None:
        """SIGKILL node ``n``: a crash, no controlled shutdown, no leadership handed over."""
        if not self.node(n).kill():
            raise DevKafkaError(f"node {n} is not running")

    def restart(self, n: int, timeout: float = 60.0, die_with_parent: bool = False) -> float:
        """Start node ``n`` again on its data and wait until the cluster lists all nodes again."""
        broker = self.node(n)
        started = time.monotonic()
        with _locked(broker.data_dir / ".devkafka.lock"):
            if broker.status().running:
                raise DevKafkaError(f"node {n} is running")
            pid = broker.start(die_with_parent)
        broker.wait_ready(pid, timeout, started, self.bootstrap, len(self.brokers))
        return time.monotonic() - started

    def down(self, timeout: float = 30.0) -> int:
        """Stop every node (SIGTERM, SIGKILL after ``timeout``); returns how many were running."""
        with concurrent.futures.ThreadPoolExecutor(len(self.brokers)) as pool:
            return sum(pool.map(lambda b: b.down(timeout), self.brokers))


@dataclass(frozen=True)
class SecuredBroker:
    """A single broker with the SSL (mutual TLS) and SASL_SSL (SCRAM-SHA-512) listeners, its
    throwaway CA and certificates (``tls``, a streams.dev.certs.DevTls) and its SCRAM user."""

    broker: Broker
    tls: DevTls
    scram_user: str
    scram_password: str = field(repr=False)

    def mtls_env(self) -> dict[str, str]:
        """The client settings (environment, streams/settings.py) for the mutual-TLS listener."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.ssl_bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SSL",
            "KAFKA_SSL_CAFILE": str(self.tls.ca),
            "KAFKA_SSL_CERTFILE": str(self.tls.client_cert),
            "KAFKA_SSL_KEYFILE": str(self.tls.client_key),
            "KAFKA_SSL_KEY_PASSWORD": self.tls.client_key_password,
        }

    def scram_env(self) -> dict[str, str]:
        """The client settings for the SASL_SSL listener (SCRAM-SHA-512 over TLS)."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.sasl_ssl_bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
            "KAFKA_SASL_USERNAME": self.scram_user,
            "KAFKA_SASL_PASSWORD": self.scram_password,
            "KAFKA_SSL_CAFILE": str(self.tls.ca),
        }


def secured_broker(data_dir: Path | str, port: int, controller_port: int, ssl_port: int, sasl_ssl_port: int,
                   scram_user: str = "duewatch") -> SecuredBroker:  # fmt: skip
    """A Broker in ``data_dir`` with secured listeners. The CA, certificates and passwords are
    made the first time and kept in ``data_dir/tls`` (private files), so that a broker
    restarted on the same data keeps the credentials its metadata was formatted with."""
    import secrets

    from .certs import make_dev_tls, read_dev_tls

    tls_dir = Path(data_dir).resolve() / "tls"
    password_file = tls_dir / "scram.password"
    if not password_file.exists() and (Path(data_dir) / "data" / "meta.properties").exists():
        raise DevKafkaError(
            f"{data_dir} was formatted without SCRAM users (they are added only when the storage is "
            "formatted): use another data dir, or remove this one"
        )
    tls = read_dev_tls(tls_dir) or make_dev_tls(tls_dir)
    if not password_file.exists():
        password_file.touch(0o600)
        password_file.write_text(secrets.token_urlsafe(24))
    password = password_file.read_text().strip()
    secure = SecureListeners(ssl_port, sasl_ssl_port, keystore=tls.broker_keystore, truststore=tls.ca,
                             scram_users={scram_user: password})  # fmt: skip
    broker = Broker(data_dir, port, controller_port, secure=secure)
    return SecuredBroker(broker, tls, scram_user, password)


# --------------------------------------------------------------------------- cli


def _write_env(path: Path, env: Mapping[str, str]) -> Path:
    """A sourceable file of client settings (it holds passwords: readable by its owner only)."""
    path.touch(0o600)
    path.write_text("".join(f"export {k}='{v}'\n" for k, v in env.items()))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.dev.broker", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["jars", "up", "down", "status"])
    parser.add_argument(
        "--data-dir", help="default $KAFKA_DATA_DIR or deploy/kafka/run (run-<N>nodes with --nodes)"
    )
    parser.add_argument(
        "--port", type=int, help="default $KAFKA_PORT or 9092; with --nodes N: N ports from it"
    )
    parser.add_argument(
        "--controller-port",
        type=int,
        help="default $KAFKA_CONTROLLER_PORT or 9093; with --nodes N: N ports from it, default PORT+100",
    )
    parser.add_argument(
        "--nodes", type=int, default=1, help="a cluster of N nodes (replication 3, min ISR 2)"
    )
    parser.add_argument(
        "--secure",
        action="store_true",
        help="up: also an SSL listener requiring client certificates (PORT+2) and a SASL_SSL "
        "listener with SCRAM-SHA-512 (PORT+3); one node only",
    )
    parser.add_argument(
        "--timeout", type=float, help="up: readiness timeout (60 s, 120 s for a cluster); down: SIGKILL after (30 s)"
    )  # fmt: skip
    args = parser.parse_args(argv)
    # the readiness probe's refused connections while a node starts are expected, not news
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        if args.command == "jars":
            ensure_jars()
            print(f"kafka {kafka_version()} jars in {LIB_DIR}")
            return 0
        if args.nodes > 1:
            return _cluster_command(args)
        if args.secure and args.command == "up":
            return _secure_up(args)
        broker = Broker(args.data_dir, args.port, args.controller_port)
        if args.command == "up":
            took = broker.up(timeout=args.timeout or 60.0)
            print(
                f"kafka {kafka_version()} serving on {broker.bootstrap} ({took:.1f} s); data in {broker.data_dir}"
            )
            return 0
        if args.command == "down":
            print("stopped" if broker.down(timeout=args.timeout or 30.0) else "not running")
            return 0
        st = broker.status()
        print(f"kafka {kafka_version() or '(no jars yet)'}: {st.message}")
        return 0 if st.running and st.port_open else 3
    except DevKafkaError as exc:
        log(f"error: {exc}")
        return 1


def _secure_up(args: argparse.Namespace) -> int:
    base = Broker(args.data_dir, args.port, args.controller_port)
    secured = secured_broker(base.data_dir, base.port, base.controller_port, base.port + 2, base.port + 3)
    took = secured.broker.up(timeout=args.timeout or 60.0)
    tls_dir = secured.tls.directory
    mtls = _write_env(tls_dir / "mtls.env", secured.mtls_env())
    scram = _write_env(tls_dir / "scram.env", secured.scram_env())
    print(f"kafka {kafka_version()} serving on {secured.broker.bootstrap} (PLAINTEXT), "
          f"{secured.broker.ssl_bootstrap} (SSL, client certificate required), "
          f"{secured.broker.sasl_ssl_bootstrap} (SASL_SSL, SCRAM-SHA-512) ({took:.1f} s)")  # fmt: skip
    print(
        f"client settings: `. {mtls}` (mutual TLS) or `. {scram}` (SCRAM); CA and certificates in {tls_dir}"
    )
    return 0


def _cluster_command(args: argparse.Namespace) -> int:
    if args.secure:
        raise DevKafkaError("--secure is for one node (the tests' secured broker); not with --nodes")
    data_dir = Path(
        args.data_dir or os.environ.get("KAFKA_DATA_DIR") or f"{DEFAULT_DATA_DIR}-{args.nodes}nodes"
    )
    cluster = Cluster.existing(data_dir)
    if args.command == "up":
        if cluster is None:
            port = int(args.port or os.environ.get("KAFKA_PORT") or 9092)
            controller = int(args.controller_port or port + 100)
            cluster = Cluster(data_dir, args.nodes, [port + i for i in range(args.nodes)],
                              [controller + i for i in range(args.nodes)])  # fmt: skip
        took = cluster.up(timeout=args.timeout or 120.0)
        print(f"kafka {kafka_version()}: {len(cluster.brokers)} nodes serving on {cluster.bootstrap} "
              f"({took:.1f} s); data in {cluster.base_dir}")  # fmt: skip
        return 0
    if cluster is None:
        print(f"no cluster in {data_dir}")
        return 0 if args.command == "down" else 3
    if args.command == "down":
        print(f"stopped {cluster.down(timeout=args.timeout or 30.0)} of {len(cluster.brokers)} nodes")
        return 0
    states = [b.status() for b in cluster.brokers]
    for n, st in enumerate(states, 1):
        print(f"node {n}: {st.message}")
    return 0 if all(st.running and st.port_open for st in states) else 3


if __name__ == "__main__":
    sys.exit(main())
