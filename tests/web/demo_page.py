"""The demo page in headless Chromium, shared by the browser tests: the page against a real
server in emulator mode, driven over the DevTools protocol, and the Host Mode checks of what its
recording controller was given."""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import math
import wave
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.api.app import create_app
from app.emulator import Emulator
from tests.support.relay import relay_test_settings, upstream_frames
from tests.support.servers import FIXTURES, running_app
from tests.web.cdp import Page, launch

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CALLER_KEY = "web-demo-caller-key-0123456789abcdef"
SAMPLE = (FIXTURES / "speech_16000.pcm").read_bytes()
CHUNK_BYTES = 16000 * 2 * 40 // 1000  # the page sends 40 ms chunks
WAIT = 60.0  # upper bound for anything the page does; a hang fails instead of stalling CI

# Resolves once `predicate` holds, re-checking on every client event (no polling, no sleeps).
WAIT_FOR_JS = """
window.__waitFor = (predicate) => new Promise((resolve, reject) => {
  const client = window.avatarDemo.client;
  let off = () => {};
  const check = () => {
    try {
      if (predicate(client)) { off(); resolve(true); }
    } catch (err) { off(); reject(err); }
  };
  off = client.on('*', check);
  check();
});
"""


@dataclass
class Demo:
    url: str
    emulator: Emulator
    page: Page

    async def js(self, expression: str) -> Any:
        async with asyncio.timeout(WAIT):
            return await self.page.evaluate(expression)

    async def wait_for(self, predicate: str) -> None:
        """Wait until the JS arrow function `predicate(client)` is true."""
        await self.js(f"window.__waitFor({predicate})")

    async def recording(self) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = await self.js("window.avatarDemo.recorder.export()")
        return log

    async def conversations(self) -> list[dict[str, Any]]:
        convs: list[dict[str, Any]] = await self.js("window.avatarDemo.client.conversations()")
        return convs


def speech_wav(directory: Path) -> Path:
    """The speech sample as a WAV file, for Chromium's fake microphone to play."""
    path = directory / "speech.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(SAMPLE)
    return path


@contextlib.asynccontextmanager
async def open_demo(tmp_path: Path, query: str = "", **overrides: Any) -> AsyncIterator[Demo]:
    """The demo page in Chromium, connected (its API key typed in), against a fresh server
    (`overrides`: its settings) and a recording emulator; `query` is the page URL's (e.g.
    "?audioEcho=false")."""
    ARTIFACTS.mkdir(exist_ok=True)
    # The fake microphone plays the speech sample (Chromium resamples it to its device rate).
    speech = speech_wav(tmp_path)
    # speed 2: frames may run ahead of real time, but never ahead of the audio that causes them,
    # so the page's real-time pacing still decides when they come.
    async with (
        Emulator(speed=2.0, record=True) as emulator,
        running_app(create_app(relay_test_settings(emulator, [CALLER_KEY], **overrides))) as url,
        launch(f"--use-file-for-fake-audio-capture={speech}") as browser,
    ):
        page = await browser.new_page()
        await page.goto(url + "/" + query)
        demo = Demo(url, emulator, page)
        # What a person does: type the API key into the settings, press Connect.
        await demo.js(
            f"document.getElementById('api-key').value = {json.dumps(CALLER_KEY)};"
            "window.avatarDemo.connect().then(() => true)"
        )
        await demo.js(WAIT_FOR_JS)
        yield demo
        assert page.exceptions == [], page.exceptions


def rms(pcm: bytes) -> float:
    samples = array.array("h", pcm)
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


def check_delivery(
    log: list[dict[str, Any]], conversations: list[dict[str, Any]], emulator: Emulator
) -> dict[str, tuple[bytes, list[bytes]]]:
    """Host Mode as the web SDK documents it, checked call by call; returns, per relay
    conversation, the audio and frames the controller received.

    - each conversation's audio goes to yieldAudioData() before any of its frames;
    - its frames go to yieldFramesData() with the id yieldAudioData() returned, and are accepted;
    - conversations do not interleave;
    - the frames are exactly the emulator's animation messages for that request (byte for byte,
      in order, none lost, none twice) and the audio is exactly what the upstream received.
    """
    upstream = upstream_frames(emulator)
    by_controller_id = {c["controllerConversationId"]: c["conversationId"] for c in conversations}
    assert None not in by_controller_id
    audio: dict[str, bytearray] = defaultdict(bytearray)
    frames: dict[str, list[bytes]] = defaultdict(list)
    order: list[str] = []
    for entry in log:
        if entry["call"] == "yieldAudioData":
            controller_id = entry["returned"]
            if not order or order[-1] != controller_id:
                assert controller_id not in order, "conversations interleaved"
                order.append(controller_id)
            audio[controller_id] += bytes.fromhex(entry["audio"])
        elif entry["call"] == "yieldFramesData":
            controller_id = entry["conversationId"]
            assert order[-1:] == [controller_id], "frames before their audio"
            assert entry["accepted"], "the controller would have discarded these frames"
            assert entry["payloads"], "an audio-only switch in a conversation that did not fail"
            frames[controller_id].extend(bytes.fromhex(p) for p in entry["payloads"])
    assert [by_controller_id[c] for c in order] == [c["conversationId"] for c in conversations]
    out: dict[str, tuple[bytes, list[bytes]]] = {}
    for controller_id in order:
        request_id = by_controller_id[controller_id]
        assert frames[controller_id] == upstream[request_id]
        assert bytes(audio[controller_id]) == emulator.received_audio[request_id]
        out[request_id] = (bytes(audio[controller_id]), frames[controller_id])
    return out
