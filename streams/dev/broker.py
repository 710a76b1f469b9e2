"""A real single-node Apache Kafka broker (KRaft, broker+controller) for development and tests.

The broker's jars come from Maven Central (deploy/kafka/pom.xml); nothing is downloaded
from anywhere else. Usage::

    python -m streams.dev.broker jars     # gather the jars into deploy/kafka/lib (cached)
    python -m streams.dev.broker up       # format (first time) + start + wait for metadata
    python -m streams.dev.broker status   # exit 0 if running, 3 if not
    python -m streams.dev.broker down     # SIGTERM, wait, SIGKILL after a timeout

Environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_DATA_DIR
(deploy/kafka/run), KAFKA_HEAP_OPTS (-Xms256m -Xmx512m), JAVA_HOME / JAVA, MVN.

Data dir layout: server.properties, cluster.id, kafka.pid, kafka.out (JVM stdout/stderr),
data/ (log.dirs), logs/server.log (WARN and up, see deploy/kafka/log4j2.properties).

Only the standard library is needed for ``jars``; ``up`` uses aiokafka to check that the
broker serves metadata.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


async def _probe_metadata(bootstrap: str) -> bool:
    from aiokafka import AIOKafkaClient  # the project's dependency; imported lazily so `jars` needs none

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, retry_backoff_ms=100)
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await client.close()


def serves_metadata(bootstrap: str) -> bool:
    """True when the broker answers a Metadata request listing at least one (unfenced) broker.

    Runs in its own thread + event loop so it is safe to call from anywhere, including
    pytest fixtures while pytest-asyncio owns the main thread's loop.
    """
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _probe_metadata(bootstrap)).result()


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
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
    """One broker+controller process whose state lives in data_dir."""

    def __init__(self, data_dir: Path | str | None = None, port: int | None = None,
                 controller_port: int | None = None) -> None:  # fmt: skip
        self.data_dir = Path(data_dir or os.environ.get("KAFKA_DATA_DIR") or DEFAULT_DATA_DIR).resolve()
        self.port = int(port or os.environ.get("KAFKA_PORT") or 9092)
        self.controller_port = int(controller_port or os.environ.get("KAFKA_CONTROLLER_PORT") or 9093)
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
        """The port the running broker was configured with (may differ from the requested one)."""
        with contextlib.suppress(OSError):
            for line in self.config_file.read_text().splitlines():
                if line.startswith("advertised.listeners="):
                    return int(line.rsplit(":", 1)[1])
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
        settings.update({
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
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
        if not cid_file.exists():
            cid_file.write_text(random_cluster_id() + "\n")
        cid = cid_file.read_text().strip()
        cmd = [
            java_bin(), f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
            "-cp", self._classpath(), "kafka.tools.StorageTool",
            "format", "-t", cid, "-c", str(self.config_file), "--ignore-formatted",
        ]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise DevKafkaError(f"formatting storage failed:\n{res.stdout}{res.stderr}")

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
                self._wait_ready(st.pid, timeout, started)
                return time.monotonic() - started
            if self.pid_file.exists():
                self.pid_file.unlink()
            for p in (self.port, self.controller_port):
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
                    preexec_fn=_set_pdeathsig if die_with_parent else None,
                )  # fmt: skip
            self.pid_file.write_text(f"{self._proc.pid}\n")
            try:
                self._wait_ready(self._proc.pid, timeout, started)
            except BaseException:
                self._stop_pid(self._proc.pid, 10)
                raise
        return time.monotonic() - started

    def _wait_ready(self, pid: int | None, timeout: float, started: float) -> None:
        deadline = started + timeout
        while True:
            if pid is not None and not self._alive(pid):
                raise DevKafkaError(
                    f"broker process {pid} exited during startup.\n--- {self.out_file}:\n{_tail(self.out_file)}\n"
                    f"--- {self.server_log}:\n{_tail(self.server_log)}"
                )
            if port_open(self.port) and serves_metadata(self.bootstrap):
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

    def down(self, timeout: float = 30.0) -> bool:
        """Stop the broker; returns True if one was running."""
        st = self.status()
        if not st.running or st.pid is None:
            with contextlib.suppress(FileNotFoundError):
                self.pid_file.unlink()
            return False
        self._stop_pid(st.pid, timeout)
        return True


# --------------------------------------------------------------------------- cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.dev.broker", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["jars", "up", "down", "status"])
    parser.add_argument("--data-dir", help="default $KAFKA_DATA_DIR or deploy/kafka/run")
    parser.add_argument("--port", type=int, help="default $KAFKA_PORT or 9092")
    parser.add_argument("--controller-port", type=int, help="default $KAFKA_CONTROLLER_PORT or 9093")
    parser.add_argument(
        "--timeout", type=float, help="up: readiness timeout (60 s); down: SIGKILL after (30 s)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "jars":
            ensure_jars()
            print(f"kafka {kafka_version()} jars in {LIB_DIR}")
            return 0
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


if __name__ == "__main__":
    sys.exit(main())
