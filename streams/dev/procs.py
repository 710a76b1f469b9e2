"""A worker process started by duewatch itself (demo, benchmarks, tests): its log, its lifecycle.

One place for what every caller needs: start a command in its own session with its output in a
log file (and dying with its parent, see ``devkafka.set_pdeathsig``), wait until the log shows
a line, stop it with SIGTERM then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import broker as devkafka

ROOT = Path(__file__).resolve().parents[2]


def duewatch_command(*args: str) -> list[str]:
    """``duewatch <args>`` from the running interpreter's environment."""
    return [str(Path(sys.executable).with_name("duewatch")), *args]


class WorkerProcess:
    """A subprocess with its output in ``log_file``."""

    def __init__(self, name: str, command: Sequence[str], env: Mapping[str, str], log_file: Path) -> None:
        self.name = name
        self.env = dict(env)
        self.log_file = log_file
        self._log = open(log_file, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            list(command), cwd=ROOT, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=devkafka.set_pdeathsig,
        )  # fmt: skip

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        """Everything the process wrote so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_file.read_text(errors="replace")

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    async def wait_for(self, pattern: str, timeout: float = 90.0, count: int = 1) -> None:
        """Wait until the log matches the regex ``pattern`` ``count`` times; raise if the process dies."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while len(rx.findall(self.output())) < count:
            if not self.running:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no {pattern!r} within {timeout} s:\n{self.tail()}")
            await asyncio.sleep(0.2)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` and wait for the process to end."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        self.proc.wait(60)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; returns the exit code."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode
