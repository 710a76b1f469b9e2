"""A real Confluent-compatible schema registry for development and tests: Apicurio Registry.

Apicurio Registry 2.4.2.Final is built from Maven Central into a runnable jar
(deploy/registry/pom.xml; how and why: docs/decisions.md) and serves the Confluent API at
``/apis/ccompat/v7``, which is what ``DUEWATCH_SCHEMA_REGISTRY_URL`` points at. Usage::

    python -m streams.dev.registry build    # mvn package into deploy/registry/target (cached)
    python -m streams.dev.registry up       # start + wait for GET /health/ready
    python -m streams.dev.registry status   # exit 0 if running and ready, 3 if not
    python -m streams.dev.registry down     # SIGTERM, wait, SIGKILL after a timeout

Environment: REGISTRY_PORT (8081), REGISTRY_RUN_DIR (deploy/registry/run), REGISTRY_HEAP_OPTS
(-Xmx256m), JAVA_HOME / JAVA, MVN.

The run dir holds registry.pid, registry.port, registry.out (the JVM's output) and db/ (the
registry's H2 database, on disk so that schemas and their ids survive a restart, as they do
with a production registry: a test can stop the registry mid-run and start it again).

Only the standard library is used: the build step runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .broker import HOST, _cmdline, _locked, _pid_alive, _tail, java_bin, port_open, set_pdeathsig

ROOT = Path(__file__).resolve().parents[2]
REGISTRY_DIR = ROOT / "deploy" / "registry"
POM = REGISTRY_DIR / "pom.xml"
SETTINGS = REGISTRY_DIR / "settings.xml"
TARGET = REGISTRY_DIR / "target"
RUNNER = TARGET / "duewatch-schema-registry-0-runner.jar"
STAMP = TARGET / ".stamp"
DEFAULT_RUN_DIR = REGISTRY_DIR / "run"
DEFAULT_PORT = 8081
DEFAULT_HEAP_OPTS = "-Xmx256m"
#: Where the Confluent-compatible API lives on an Apicurio server.
CCOMPAT_PATH = "/apis/ccompat/v7"
#: Marks the JVM's command line so that ``status`` finds the registry of one run dir.
RUN_DIR_PROPERTY = "duewatch.registry.run-dir"


class DevRegistryError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"devregistry: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- build


def _build_inputs() -> list[Path]:
    """Every file the runnable jar is built from: a change to any of them means a rebuild."""
    sources = sorted(p for p in (REGISTRY_DIR / "src").rglob("*") if p.is_file())
    return [POM, SETTINGS, *sources]


def build_hash() -> str:
    digest = hashlib.sha256()
    for path in _build_inputs():
        digest.update(str(path.relative_to(REGISTRY_DIR)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def built() -> bool:
    """True when the runnable jar is there and was built from the current inputs."""
    return RUNNER.is_file() and STAMP.is_file() and STAMP.read_text().strip() == build_hash()


def ensure_built() -> Path:
    """Build the runnable registry jar with Maven, unless the stamp says it is there.

    The first build downloads ~200 MB of artifacts from Maven Central into the local Maven
    repository; later builds (a changed pom) take ~20 s, and an unchanged one none."""
    if built():
        return RUNNER
    with _locked(REGISTRY_DIR / ".build.lock"):
        if built():  # another process built it while we waited
            return RUNNER
        mvn = os.environ.get("MVN") or shutil.which("mvn")
        if not mvn:
            raise DevRegistryError(
                "Maven (mvn) not found on PATH; it is needed once to build the schema registry"
            )
        log(f"building Apicurio Registry from Maven Central ({POM.relative_to(ROOT)}); "
            "the first build downloads ~200 MB ...")  # fmt: skip
        started = time.monotonic()
        cmd = [mvn, "-B", "-q", "-s", str(SETTINGS), "-f", str(POM), "package", "-DskipTests"]
        res = subprocess.run(cmd, cwd=REGISTRY_DIR, capture_output=True, text=True)
        if res.returncode != 0 or not RUNNER.is_file():
            out = "\n".join((res.stdout + res.stderr).splitlines()[-40:])
            raise DevRegistryError(f"mvn failed with exit code {res.returncode}: {' '.join(cmd)}\n{out}")
        STAMP.write_text(build_hash() + "\n")
        log(f"built {RUNNER.relative_to(ROOT)} ({time.monotonic() - started:.1f} s)")
    return RUNNER


# --------------------------------------------------------------------------- readiness


def ready(base_url: str, timeout: float = 2.0) -> bool:
    """True when the registry at ``base_url`` answers ``GET /health/ready`` with status UP."""
    try:
        with urllib.request.urlopen(f"{base_url}/health/ready", timeout=timeout) as resp:
            return resp.status == 200 and json.loads(resp.read()).get("status") == "UP"
    except (OSError, ValueError, urllib.error.URLError):
        return False


# --------------------------------------------------------------------------- the registry


@dataclass
class Status:
    running: bool
    pid: int | None
    port: int
    ready: bool
    message: str


class Registry:
    """One registry process whose pid, port, log and database live in ``run_dir``."""

    def __init__(self, run_dir: Path | str | None = None, port: int | None = None) -> None:
        self.run_dir = Path(run_dir or os.environ.get("REGISTRY_RUN_DIR") or DEFAULT_RUN_DIR).resolve()
        self.port = int(port or os.environ.get("REGISTRY_PORT") or DEFAULT_PORT)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "registry.pid"

    @property
    def port_file(self) -> Path:
        return self.run_dir / "registry.port"

    @property
    def out_file(self) -> Path:
        return self.run_dir / "registry.out"

    @property
    def base_url(self) -> str:
        """The server's root (health checks, Apicurio's own API)."""
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The Confluent-compatible API: the value for ``DUEWATCH_SCHEMA_REGISTRY_URL``."""
        return self.base_url + CCOMPAT_PATH

    # state
    def _marker(self) -> str:
        return f"-D{RUN_DIR_PROPERTY}={self.run_dir}"

    def _is_ours(self, pid: int) -> bool:
        if not self._alive(pid):
            return False
        cmd = _cmdline(pid)
        if cmd is None:  # no /proc: trust the pid file
            return True
        return self._marker() in cmd

    def _read_int(self, path: Path) -> int | None:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def status(self) -> Status:
        pid = self._read_int(self.pid_file)
        if pid is not None and self._is_ours(pid):
            port = self._read_int(self.port_file) or self.port
            is_ready = ready(f"http://{HOST}:{port}")
            state = "ready" if is_ready else "starting, or not ready"
            return Status(True, pid, port, is_ready, f"running (pid {pid}, {HOST}:{port}, {state})")
        msg = "stopped"
        if pid is not None:
            msg += f" (stale pid file: {pid} is not this registry)"
        if port_open(self.port):
            msg += f"; port {self.port} is in use by another process"
        return Status(False, None, self.port, False, msg)

    # lifecycle
    def up(self, timeout: float = 90.0, die_with_parent: bool = False) -> float:
        """Start the registry unless it runs already; returns seconds until it was ready."""
        ensure_built()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with _locked(self.run_dir / ".devregistry.lock"):
            st = self.status()
            if st.running:
                if st.port != self.port:
                    log(f"note: the registry of {self.run_dir} runs on port {st.port}, not {self.port}")
                    self.port = st.port
                self.wait_ready(st.pid, timeout, started)
                return time.monotonic() - started
            if port_open(self.port):
                raise DevRegistryError(
                    f"port {self.port} is already in use by a process that is not the registry of "
                    f"{self.run_dir}; stop it or choose another port (REGISTRY_PORT)"
                )
            db = self.run_dir / "db" / "registry"
            heap = os.environ.get("REGISTRY_HEAP_OPTS", DEFAULT_HEAP_OPTS).split()
            cmd = [
                java_bin(), *heap, "-Djava.awt.headless=true", self._marker(),
                f"-Dquarkus.http.host={HOST}", f"-Dquarkus.http.port={self.port}",
                # H2 on disk in the run dir: schemas and ids survive a restart, as in production
                f"-Dquarkus.datasource.jdbc.url=jdbc:h2:file:{db}",
                "-jar", str(RUNNER),
            ]  # fmt: skip
            with open(self.out_file, "ab") as out:
                self._proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    cwd=self.run_dir, start_new_session=True,
                    preexec_fn=set_pdeathsig if die_with_parent else None,
                )  # fmt: skip
            self.pid_file.write_text(f"{self._proc.pid}\n")
            self.port_file.write_text(f"{self.port}\n")
            try:
                self.wait_ready(self._proc.pid, timeout, started)
            except BaseException:
                self._stop_pid(self._proc.pid, 10)
                raise
        return time.monotonic() - started

    def wait_ready(self, pid: int | None, timeout: float, started: float) -> None:
        deadline = started + timeout
        while True:
            if pid is not None and not self._alive(pid):
                raise DevRegistryError(
                    f"registry process {pid} exited during startup.\n--- {self.out_file}:\n{_tail(self.out_file)}"
                )
            if ready(self.base_url):
                return
            if time.monotonic() > deadline:
                raise DevRegistryError(
                    f"registry not ready on {self.base_url}/health/ready within {timeout:.0f} s; see {self.out_file}"
                )
            time.sleep(0.2)

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None  # reaps our child
        return _pid_alive(pid)

    def _stop_pid(self, pid: int, timeout: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self._alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._alive(pid):
            log(f"registry {pid} still alive {timeout:.0f} s after SIGTERM; sending SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while self._alive(pid):
                time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    def down(self, timeout: float = 30.0) -> bool:
        """Stop the registry; returns True if one was running. Its database stays in the run dir."""
        st = self.status()
        if not st.running or st.pid is None:
            with contextlib.suppress(FileNotFoundError):
                self.pid_file.unlink()
            return False
        self._stop_pid(st.pid, timeout)
        return True


# --------------------------------------------------------------------------- cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streams.dev.registry", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["build", "up", "down", "status"])
    parser.add_argument("--run-dir", help="default $REGISTRY_RUN_DIR or deploy/registry/run")
    parser.add_argument("--port", type=int, help=f"default $REGISTRY_PORT or {DEFAULT_PORT}")
    parser.add_argument(
        "--timeout", type=float, help="up: readiness timeout (90 s); down: SIGKILL after (30 s)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(f"schema registry: {ensure_built()}")
            return 0
        registry = Registry(args.run_dir, args.port)
        if args.command == "up":
            took = registry.up(timeout=args.timeout or 90.0)
            print(f"schema registry ready ({took:.1f} s): DUEWATCH_SCHEMA_REGISTRY_URL={registry.url}")
            return 0
        if args.command == "down":
            print("stopped" if registry.down(timeout=args.timeout or 30.0) else "not running")
            return 0
        st = registry.status()
        print(f"schema registry: {st.message}")
        return 0 if st.running and st.ready else 3
    except DevRegistryError as exc:
        log(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
