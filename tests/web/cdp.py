"""Headless Chromium driven over the DevTools protocol (CDP) from the test's own event loop.

Debian's `chromium` package (installed by scripts/ensure-system-deps) is started with a fresh
profile and `--remote-debugging-port=0`; the browser prints the WebSocket address it chose, and
one `websockets` connection then carries every command (flat sessions, one per page). No browser
download, no npm, and the test can await page promises while it inspects the emulator in-process.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import itertools
import json
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    # Timers of a page nobody looks at must not be throttled: the sample is paced by them.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--autoplay-policy=no-user-gesture-required",
    # A fake microphone (a beep) that needs no permission prompt.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--window-size=1280,1400",
)
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class CDPError(RuntimeError):
    pass


def find_chromium() -> str:
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("Chromium not found: run the tests through scripts/test (it installs it)")


class Page:
    """One tab: evaluate JavaScript (awaiting promises), navigate, screenshot, collect errors."""

    def __init__(self, browser: Browser, session_id: str) -> None:
        self.browser = browser
        self.session_id = session_id
        self.console: list[str] = []
        self.exceptions: list[str] = []
        # Every URL the page asked for, and each answer's (status, URL).
        self.requests: list[str] = []
        self.responses: list[tuple[int, str]] = []
        self._loaded = asyncio.Event()

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, session_id=self.session_id)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.console.append(f"{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            exception = details.get("exception", {})
            self.exceptions.append(str(exception.get("description", details.get("text"))))
        elif method == "Page.loadEventFired":
            self._loaded.set()
        elif method == "Network.requestWillBeSent":
            self.requests.append(str(params["request"]["url"]))
        elif method == "Network.responseReceived":
            response = params["response"]
            self.responses.append((int(response["status"]), str(response["url"])))

    async def goto(self, url: str) -> None:
        self._loaded.clear()
        answer = await self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise CDPError(f"navigation to {url} failed: {answer['errorText']}")
        await self._loaded.wait()

    async def evaluate(self, expression: str) -> Any:
        """The value of `expression` (a promise is awaited), passed back as JSON."""
        answer = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"page error: {text}")
        return answer["result"].get("value")

    async def screenshot(self, path: str) -> None:
        answer = await self.send("Page.captureScreenshot", {"format": "png"})
        with open(path, "wb") as out:
            out.write(base64.b64decode(answer["data"]))


class Browser:
    def __init__(self, connection: ClientConnection, process: asyncio.subprocess.Process) -> None:
        self._ws = connection
        self.process = process
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pages: dict[str, Page] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                if "id" in message:
                    future = self._pending.pop(message["id"], None)
                    if future is not None and not future.done():
                        future.set_result(message)
                elif (page := self._pages.get(message.get("sessionId", ""))) is not None:
                    page.on_event(message["method"], message.get("params", {}))
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(CDPError("browser connection closed"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, session_id: str | None = None
    ) -> dict[str, Any]:
        command_id = next(self._ids)
        message: dict[str, Any] = {"id": command_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        await self._ws.send(json.dumps(message))
        answer = await future
        if "error" in answer:
            raise CDPError(f"{method}: {answer['error'].get('message')}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def new_page(self, width: int = 1280, height: int = 1400) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, attached["sessionId"])
        self._pages[page.session_id] = page
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send("Network.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        return page

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send("Browser.close"), 5)
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def launch(
    *extra_args: str, log: Callable[[str], None] | None = None
) -> AsyncIterator[Browser]:
    """Start headless Chromium with a throwaway profile; yield a connected Browser."""
    stderr_tail: collections.deque[str] = collections.deque(maxlen=50)
    with tempfile.TemporaryDirectory(prefix="avatar-relay-chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            find_chromium(),
            *CHROMIUM_ARGS,
            *extra_args,
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stderr is not None
        stderr = process.stderr
        try:
            address = await asyncio.wait_for(_devtools_address(stderr, stderr_tail), 30)
        except (TimeoutError, EOFError) as exc:
            process.kill()
            await process.wait()
            raise RuntimeError("Chromium did not start:\n" + "\n".join(stderr_tail)) from exc

        # Keep draining stderr so a chatty browser never blocks on a full pipe.
        async def drain() -> None:
            while line := await stderr.readline():
                text = line.decode(errors="replace").rstrip()
                stderr_tail.append(text)
                if log is not None:
                    log(text)

        drainer = asyncio.create_task(drain())
        try:
            async with connect(address, max_size=None, ping_interval=None) as connection:
                browser = Browser(connection, process)
                try:
                    yield browser
                finally:
                    await browser.close()
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    process.kill()
                    await process.wait()
            drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drainer


async def _devtools_address(stream: asyncio.StreamReader, tail: collections.deque[str]) -> str:
    while True:
        line = await stream.readline()
        if not line:
            raise EOFError("Chromium exited")
        text = line.decode(errors="replace").rstrip()
        tail.append(text)
        match = _LISTENING.search(text)
        if match:
            return match.group(1)
