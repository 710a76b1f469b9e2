"""A real browser for the tests: Debian's headless Chromium, driven over the DevTools protocol.

No browser is downloaded (the machine reaches no browser builds): ``make tools`` installs
Debian's ``chromium`` and this module talks to it over the Chrome DevTools Protocol on a
websocket with aiohttp, which the project already depends on. Chromium runs with the flags
a closed network needs (no background networking, component updates, sync or first-run
work), a fresh profile directory, and every host name resolving to nothing; on top of that
the page under test has its network emulated offline, and every request it tries is kept so
a test can assert there was none.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.shared import missing

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)


def chromium_path() -> str:
    """Chromium's executable; skips the test without it, and fails under CI (the set-up must install it)."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
    if found is None:
        missing("chromium not found: `make tools` installs Debian's chromium (as root, with apt-get)")
    return found


class PageSession:
    """One page target: commands with replies, and every event kept in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                future = self._waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            else:
                self.events.append(data)
                self._arrived.set()

    async def send(self, method: str, params: Mapping[str, Any] | None = None, timeout: float = 60.0) -> dict:
        """Run one DevTools command; raises on a protocol error."""
        command_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[command_id] = future
        await self.ws.send_str(json.dumps({"id": command_id, "method": method, "params": dict(params or {})}))
        reply = await asyncio.wait_for(future, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def wait_for_event(self, method: str, timeout: float = 60.0) -> dict:
        """The first event ``method`` (already received or still to come)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for event in self.events:
                if event["method"] == method:
                    return event
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"no {method} within {timeout:g} s")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (by value; exceptions raise)."""
        result = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors, as text."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(
                    "console: "
                    + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", []))
                )
            elif e["method"] == "Runtime.exceptionThrown":
                details = p.get("exceptionDetails", {})
                out.append(
                    "exception: "
                    + str(details.get("exception", {}).get("description") or details.get("text"))
                )
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                entry = p["entry"]
                out.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
        return out

    def requests(self) -> list[str]:
        """Every URL the page asked for."""
        return [
            e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"
        ]

    async def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (beyond the viewport) at ``path``."""
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = await self.send(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.ws.close()


class Chromium:
    """``async with Chromium() as browser: page = await browser.offline_page(url)``."""

    def __init__(self, executable: str, startup_timeout: float = 60.0) -> None:
        self.executable = executable
        self.startup_timeout = startup_timeout
        self.profile = Path(tempfile.mkdtemp(prefix="duewatch-chromium-"))
        self.proc: subprocess.Popen | None = None
        self.http: aiohttp.ClientSession | None = None
        self.port: int | None = None
        self.log = self.profile.parent / f"{self.profile.name}.log"

    async def __aenter__(self) -> Chromium:
        args = [self.executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1", "about:blank"]  # fmt: skip
        # Chromium's own log goes to a file: a pipe nobody reads would block it once full.
        self.log = self.profile.parent / f"{self.profile.name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        port_file = self.profile / "DevToolsActivePort"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.startup_timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"chromium exited with {self.proc.returncode}: {self.log.read_text(errors='replace')[-2000:]}"
                )
            if loop.time() > deadline:
                raise TimeoutError(
                    f"chromium did not open its DevTools port within {self.startup_timeout:g} s"
                )
            await asyncio.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])
        self.http = aiohttp.ClientSession()
        return self

    async def offline_page(self) -> PageSession:
        """The browser's page with its network emulated offline and every domain this test reads enabled."""
        assert self.http is not None
        async with self.http.get(f"http://127.0.0.1:{self.port}/json/list") as response:
            targets = await response.json()
        page = next(t for t in targets if t.get("type") == "page")
        ws = await self.http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        session = PageSession(ws)
        for domain in ("Network", "Runtime", "Log", "Page"):
            await session.send(f"{domain}.enable")
        await session.send("Network.emulateNetworkConditions",
                           {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})  # fmt: skip
        await session.send("Emulation.setDeviceMetricsOverride",
                           {"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": False})  # fmt: skip
        return session

    async def __aexit__(self, *exc: object) -> None:
        if self.http is not None:
            await self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)
        self.log.unlink(missing_ok=True)
