"""One simulated browser: opens a relay (or floor) session as a browser would, plays the speech in
real time and records when each frame arrives and how long it was in transit.

Every connection offers what Chromium offers (`permessage-deflate; client_max_window_bits`): the
server's RELAY_COMPRESSION decides whether it is used, as it does for real browsers.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from pathlib import Path
from typing import Any, Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.typing import Subprotocol

from app.emulator import send_time_ns
from avatar_relay_client import browser_protocol as p
from bench.relaybench.verdicts import SessionRun

ROOT: Final = Path(__file__).resolve().parents[2]
SPEECH: Final = ROOT / "tests" / "fixtures" / "speech_16000.pcm"
SAMPLE_RATE: Final = 16000
CHUNK_SECONDS: Final = 0.040
CHUNK_BYTES: Final = int(SAMPLE_RATE * 2 * CHUNK_SECONDS)
FLOOR_PATH: Final = "/floor"
TAG_AUDIO: Final = b"\x01"
TAG_FRAME: Final = b"\x02"
TAG_FRAME_END: Final = b"\x03"

LEAN_HEAD: Final = struct.Struct("<BBI")
LEAN_SEQ: Final = struct.Struct("<I")
LEAN_SEQUENCED: Final = frozenset({0x82, 0x83, 0x84, 0x85, 0x8B})  # 0x8B: CONVERSATION_STARTED
LEAN_FRAME_TYPE: Final = 0x83


def chromium_offer() -> list[ClientPerMessageDeflateFactory]:
    """The extension offer of Chromium's WebSocket: deflate, any client window, zlib defaults."""
    return [ClientPerMessageDeflateFactory(client_max_window_bits=True)]


async def browser_connect(url: str, subprotocols: list[Subprotocol] | None = None) -> Any:
    return await connect(
        url,
        subprotocols=subprotocols,
        compression=None,
        extensions=chromium_offer(),
        max_size=2**22,
        ping_interval=None,
    )


def chunks() -> list[bytes]:
    pcm = SPEECH.read_bytes()
    return [pcm[i : i + CHUNK_BYTES] for i in range(0, len(pcm), CHUNK_BYTES)]


class LeanRelay:
    """The relay's wire protocol for the load steps, without RelayClient's machinery (event
    queue, resend buffer, reconnects, decoding into objects). The same messages go on the wire
    (HELLO; AUDIO with client seqs; ACK every ACK_EVERY sequenced messages and every
    ACK_INTERVAL; PONG for PING; BYE), so the server does exactly the work it does for
    RelayClient, while the load generator, which shares the cores with it, spends less."""

    ACK_EVERY: Final = 25  # RelayClient's defaults
    ACK_INTERVAL: Final = 1.0

    def __init__(self, base_url: str, http: Any, echo: bool = True) -> None:
        self.base_url = base_url
        self.http = http
        self.echo = echo  # False: an `audioEcho: false` session (a marker instead of the echo)
        self.ws: ClientConnection | None = None
        self.seq = 0
        self.last_seq = 0
        self.acked = 0
        self.acker: asyncio.Task[None] | None = None
        self.negotiated = ""

    async def start(self) -> None:
        body = {} if self.echo else {"audioEcho": False}
        answer = (await self.http.post(self.base_url + "/v1/relay/sessions", json=body)).json()
        self.ws = ws = await browser_connect(answer["url"], [Subprotocol(p.SUBPROTOCOL)])
        assert ws.response is not None
        self.negotiated = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        await ws.send(p.encode_client(p.Hello(0)))
        welcome = p.decode_server(bytes(await ws.recv()))
        if not isinstance(welcome, p.Welcome):
            raise RuntimeError(f"expected WELCOME, got {welcome!r}")
        self.acker = asyncio.create_task(self._ack_timer())

    async def send_audio(self, pcm: bytes, end: bool) -> None:
        assert self.ws is not None
        self.seq += 1
        await self.ws.send(LEAN_HEAD.pack(0x02, 1 if end else 0, self.seq) + pcm)

    async def receive(self) -> bytes:
        """The next sequenced message; control is handled here."""
        ws = self.ws
        assert ws is not None
        while True:
            data: Any = await ws.recv()
            kind = data[0]
            if kind in LEAN_SEQUENCED:
                seq = LEAN_SEQ.unpack_from(data, 2)[0]
                if seq != self.last_seq + 1:
                    raise RuntimeError(f"seq {seq} after {self.last_seq}")
                self.last_seq = seq
                if seq - self.acked >= self.ACK_EVERY:
                    await self._ack()
                return bytes(data)
            if kind == 0x87:  # PING: PONG with its nonce
                await ws.send(b"\x06\x00" + data[2:6])
            elif kind in (0x89, 0x8A):  # ERROR, RESUME_FAILED
                raise RuntimeError(f"server error message {data[:80]!r}")

    async def _ack(self) -> None:
        assert self.ws is not None
        seq = self.last_seq
        await self.ws.send(LEAN_HEAD.pack(0x04, 0, seq))
        self.acked = max(self.acked, seq)

    async def _ack_timer(self) -> None:
        while True:
            await asyncio.sleep(self.ACK_INTERVAL)
            if self.last_seq > self.acked:
                await self._ack()

    async def close(self) -> None:
        if self.acker is not None:
            self.acker.cancel()
        if self.ws is not None:
            await self.ws.send(b"\x07\x00")  # BYE
            await self.ws.close()


class Session:
    """One simulated browser: sends the speech in real time, records when frames arrive.

    kind "relay" with `http`: LeanRelay (the load steps); "relay" without: the reference
    RelayClient (time to first frame); "floor": the bare forwarder's one-byte-tag protocol."""

    def __init__(self, kind: str, base_url: str, http: Any = None, echo: bool = True) -> None:
        self.kind = kind
        self.echo = echo
        self.base_url = base_url
        self.http = http
        self.lean: LeanRelay | None = None
        self.client: Any = None
        self.ws: Any = None
        self.lateness: list[float] = []
        self.transit_ns: list[int] = []
        self.send_lag = 0.0
        self.up = 0
        self.down = 0
        self.finished = False
        self.error = ""
        self.created_at = 0.0
        self.opened_at = 0.0
        self.first_frame_at = 0.0
        self.negotiated = ""

    async def open(self) -> None:
        self.created_at = time.monotonic()
        if self.kind == "relay" and self.http is not None:
            self.lean = LeanRelay(self.base_url, self.http, self.echo)
            await self.lean.start()
            self.negotiated = self.lean.negotiated
        elif self.kind == "relay":
            from avatar_relay_client import RelayClient

            self.client = RelayClient(self.base_url)
            await self.client.start()
        else:
            url = "ws" + self.base_url.removeprefix("http") + FLOOR_PATH
            self.ws = await browser_connect(url)
            self.negotiated = self.ws.response.headers.get("Sec-WebSocket-Extensions", "")
        self.opened_at = time.monotonic()

    def run(self) -> SessionRun:
        return SessionRun(self.finished, self.error, self.lateness)

    async def play(
        self, pcm: list[bytes], start: float, budget: float, pace: float = CHUNK_SECONDS
    ) -> None:
        receiver = asyncio.create_task(self._receive(start, len(pcm)))
        try:
            async with asyncio.timeout(budget):
                await self._send(pcm, start, pace)
                await receiver
        except TimeoutError:
            self.error = self.error or "timeout"
        except Exception as exc:
            self.error = self.error or repr(exc)
        finally:
            receiver.cancel()
            with contextlib.suppress(BaseException):
                await receiver

    async def _send(self, pcm: list[bytes], start: float, pace: float) -> None:
        last = len(pcm) - 1
        for index, chunk in enumerate(pcm):
            due = start + index * pace
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.send_lag = max(self.send_lag, -delay)
            end = index == last
            if self.lean is not None:
                await self.lean.send_audio(chunk, end)
            elif self.client is not None:
                await self.client.send_audio(chunk, end=end)
            else:
                await self.ws.send((b"\x01" if end else b"\x00") + chunk)
            self.up += 1

    async def _receive(self, start: float, count: int) -> None:
        last = count - 1
        frames = 0
        if self.lean is not None:
            while True:
                data = await self.lean.receive()
                self.down += 1
                if data[0] == LEAN_FRAME_TYPE:
                    self._frame(frames, start, last, data)
                    frames += 1
                    if data[1] & 1:
                        self.finished = True
                        return
        if self.client is not None:
            from avatar_relay_client import Audio, Frame

            async for event in self.client.events():
                if isinstance(event, Audio):
                    self.down += 1
                elif isinstance(event, Frame):
                    self.down += 1
                    self._frame(frames, start, last, event.payload)
                    frames += 1
                    if event.end:
                        self.finished = True
                        return
            return
        while True:
            data = await self.ws.recv()
            self.down += 1
            tag = data[:1]
            if tag != TAG_AUDIO:
                self._frame(frames, start, last, data)
                frames += 1
                if tag == TAG_FRAME_END:
                    self.finished = True
                    return

    def _frame(self, index: int, start: float, last: int, data: bytes) -> None:
        now = time.monotonic()
        stamp = send_time_ns(data)
        if stamp is not None:
            self.transit_ns.append(time.time_ns() - stamp)
        if index == 0:
            self.first_frame_at = now
        self.lateness.append(now - (start + min(index + 1, last) * CHUNK_SECONDS))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                if self.lean is not None:
                    await self.lean.close()
                elif self.client is not None:
                    await self.client.close()
                elif self.ws is not None:
                    await self.ws.close()
