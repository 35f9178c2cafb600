"""bench/producers.py's load generator: N sessions of either kind in one process, cheap enough
that the relay, not the generator, is what a step measures.

The wire is what the Python clients send (HELLO; numbered AUDIO; ACK every 10 sequenced
messages and every 250 ms; PONG; BYE). The generator itself has no task per session: each socket
is websockets' sans-I/O protocol on an asyncio transport (a message is handled in the callback
that reads it, no task or future per message), one pacing clock sends every session's chunks
(sessions spread over SLOTS start offsets within a chunk), and one timer sends the due ACKs of
all sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Final, cast

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from bench.harness import machine_busy
from bench.relaybench import loadclient, stats
from bench.relaybench.load import HOP_METRIC, SETUP_CONCURRENCY
from bench.relaybench.verdicts import TOLERANCE

SLOTS: Final = 8  # start offsets per 40 ms chunk: the pacing clock ticks every 5 ms
PRODUCER_SEQUENCED: Final = frozenset(range(0x92, 0x9A))
PAGE_PING: Final = 0x87
PRODUCER_PING: Final = 0x9B
ECHO: Final = 0x82
CLOSE_WAIT: Final = 5.0  # seconds for the server's side of the closing handshake


class Link(asyncio.Protocol):
    """One client WebSocket; every binary message received goes to `on_message`."""

    def __init__(self, url: str, subprotocol: str) -> None:
        self.ws = ClientProtocol(
            parse_uri(url), subprotocols=[Subprotocol(subprotocol)], max_size=2**22
        )
        self.on_message: Callable[[bytes], None] = self._first
        self.on_error: Callable[[str], None] = lambda error: None
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.first: asyncio.Future[bytes] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._fragments: list[bytes] = []

    @classmethod
    async def connect(cls, url: str, subprotocol: str) -> Link:
        wsuri = parse_uri(url)
        loop = asyncio.get_running_loop()
        _, link = await loop.create_connection(
            lambda: cls(url, subprotocol), wsuri.host, wsuri.port
        )
        await link.opened
        return link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                problem = self.ws.handshake_exc
                if problem is not None:
                    self.opened.set_exception(problem)
                else:
                    self.opened.set_result(None)
            elif isinstance(event, Frame):
                self._frame(event)
        self._flush()

    def _frame(self, frame: Frame) -> None:
        if frame.opcode not in (Opcode.BINARY, Opcode.CONT):
            return
        if not frame.fin or self._fragments:
            self._fragments.append(bytes(frame.data))
            if not frame.fin:
                return
            data = b"".join(self._fragments)
            self._fragments.clear()
        else:
            data = bytes(frame.data)
        try:
            self.on_message(data)
        except Exception as exc:  # a protocol breach the session reports as its error
            self.on_error(repr(exc))

    def _first(self, data: bytes) -> None:
        if not self.first.done():
            self.first.set_result(data)

    def connection_lost(self, exc: Exception | None) -> None:
        with contextlib.suppress(Exception):
            self.ws.receive_eof()
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed before the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, data: bytes) -> None:
        self.ws.send_binary(data)
        self._flush()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                transport.write_eof()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.send_close(1000)
            self._flush()
            async with asyncio.timeout(CLOSE_WAIT):
                await asyncio.shield(self.closed)
        if self.transport is not None:
            self.transport.close()


class Acking:
    """The acknowledging side of one socket: the last sequence number seen, the last acked."""

    ack_type = 0

    def __init__(self) -> None:
        self.link: Link | None = None
        self.seq = 0
        self.last_seq = 0
        self.acked = 0

    def ack(self) -> None:
        assert self.link is not None
        seq = self.last_seq
        self.link.send(loadclient.LEAN_HEAD.pack(self.ack_type, 0, seq))
        self.acked = seq

    def ack_if_behind(self) -> None:
        if self.last_seq > self.acked and self.link is not None:
            self.ack()


class Page(Acking):
    """The page of a session: the browser protocol (it sends the audio in a browser-fed one)."""

    ack_type = 0x04
    audio_type = 0x02
    bye = b"\x07\x00"

    def __init__(self, on_sequenced: Callable[[int, bool], None]) -> None:
        super().__init__()
        self.on_sequenced = on_sequenced

    async def open(self, url: str) -> None:
        from avatar_relay_client import browser_protocol as p

        link = self.link = await Link.connect(url, p.SUBPROTOCOL)
        link.send(p.encode_client(p.Hello(0)))
        welcome = p.decode_server(await link.first)
        if not isinstance(welcome, p.Welcome):
            raise RuntimeError(f"expected WELCOME, got {welcome!r}")
        link.on_message = self.received

    def send_audio(self, pcm: bytes, end: bool) -> None:
        assert self.link is not None
        self.seq += 1
        self.link.send(loadclient.LEAN_HEAD.pack(self.audio_type, 1 if end else 0, self.seq) + pcm)

    def received(self, data: bytes) -> None:
        kind = data[0]
        if kind in loadclient.LEAN_SEQUENCED:
            seq = loadclient.LEAN_SEQ.unpack_from(data, 2)[0]
            if seq != self.last_seq + 1:
                raise RuntimeError(f"page seq {seq} after {self.last_seq}")
            self.last_seq = seq
            if seq - self.acked >= loadclient.LeanRelay.ACK_EVERY:
                self.ack()
            self.on_sequenced(kind, bool(data[1] & 1))
        elif kind == PAGE_PING:
            assert self.link is not None
            self.link.send(b"\x06\x00" + data[2:6])
        elif kind in (0x89, 0x8A):
            raise RuntimeError(f"page got {data[:80]!r}")

    async def close(self, bye: bool) -> None:
        if self.link is not None:
            if bye:
                self.link.send(self.bye)
            await self.link.close()


class Producer(Page):
    """A producer: numbered AUDIO up, its events down (acknowledged), PONG, BYE."""

    ack_type = 0x14
    audio_type = 0x12
    bye = b"\x17\x00"

    def __init__(self) -> None:
        super().__init__(lambda kind, end: None)
        self.events = 0

    async def open(self, url: str) -> None:
        from avatar_relay_client import producer_protocol as pp

        link = self.link = await Link.connect(url, pp.SUBPROTOCOL)
        link.send(pp.encode_producer(pp.Hello(0)))
        welcome = pp.decode_server(await link.first)
        if not isinstance(welcome, pp.Welcome):
            raise RuntimeError(f"expected WELCOME, got {welcome!r}")
        link.on_message = self.received

    def received(self, data: bytes) -> None:
        kind = data[0]
        if kind in PRODUCER_SEQUENCED:
            self.last_seq = loadclient.LEAN_SEQ.unpack_from(data, 2)[0]
            self.events += 1
            if self.last_seq - self.acked >= loadclient.LeanRelay.ACK_EVERY:
                self.ack()
        elif kind == PRODUCER_PING:
            assert self.link is not None
            self.link.send(b"\x16\x00" + data[2:6])

    async def close(self, bye: bool = True) -> None:
        # BYE from the producer ends the session for the page too.
        await super().close(bye)


class Session:
    """One session of either kind: what its page received and when."""

    def __init__(self, kind: str, base_url: str, http: Any, chunks: int) -> None:
        self.kind = kind
        self.base_url = base_url
        self.http = http
        self.page = Page(self._on_page)
        self.producer: Producer | None = None
        self.chunks = chunks
        self.start = 0.0
        self.sent_at: list[float] = []
        self.audio_hops: list[float] = []
        self.lateness: list[float] = []
        self.echoes = 0
        self.frames = 0
        self.up = 0
        self.down = 0
        self.finished = False
        self.error = ""
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def open(self) -> None:
        body = {"audioSource": "producer"} if self.kind == "producer" else {}
        response = await self.http.post(self.base_url + "/v1/relay/sessions", json=body)
        answer = response.json()
        await self.page.open(answer["url"])
        if self.kind == "producer":
            self.producer = Producer()
            await self.producer.open(answer["producer"]["url"])
        for side in (self.page, self.producer):
            if side is not None and side.link is not None:
                side.link.on_error = self._stop

    @property
    def sender(self) -> Page:
        return self.producer if self.producer is not None else self.page

    def send_chunk(self, index: int, pcm: bytes) -> None:
        if self.done.done():
            return
        self.sent_at.append(time.perf_counter())
        try:
            self.sender.send_audio(pcm, index == self.chunks - 1)
        except Exception as exc:
            self._stop(repr(exc))
            return
        self.up += 1

    def _on_page(self, kind: int, end: bool) -> None:
        self.down += 1
        if kind == ECHO:  # the echo of chunk `echoes`
            if self.echoes < len(self.sent_at):
                self.audio_hops.append(time.perf_counter() - self.sent_at[self.echoes])
            self.echoes += 1
        elif kind == loadclient.LEAN_FRAME_TYPE:
            last = self.chunks - 1
            due = self.start + min(self.frames + 1, last) * loadclient.CHUNK_SECONDS
            self.lateness.append(time.monotonic() - due)
            self.frames += 1
            if end:
                self.finished = True
                self._stop("")

    def _stop(self, error: str) -> None:
        # What comes after the end (the closing of the sockets) is not the playback's error.
        if not self.done.done():
            self.error = self.error or error
            self.done.set_result(None)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                if self.producer is not None:
                    await self.producer.close()
                await self.page.close(bye=self.producer is None)

    @property
    def ok(self) -> bool:
        late = max(self.lateness, default=1e9)
        return self.finished and not self.error and late <= TOLERANCE


async def pace(sessions: list[Session], pcm: list[bytes], start: float) -> None:
    """The one pacing clock: every 40 ms / SLOTS, the chunk due for that slot's sessions."""
    slots = [sessions[slot::SLOTS] for slot in range(SLOTS)]
    tick = loadclient.CHUNK_SECONDS / SLOTS
    for k in range(len(pcm) * SLOTS):
        delay = start + k * tick - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        index, slot = divmod(k, SLOTS)
        chunk = pcm[index]
        for session in slots[slot]:
            session.send_chunk(index, chunk)


async def ack_clock(sessions: list[Session]) -> None:
    """The one ACK timer: every 250 ms, each socket that has seen more than it acked acks."""
    while True:
        await asyncio.sleep(loadclient.LeanRelay.ACK_INTERVAL)
        for session in sessions:
            session.page.ack_if_behind()
            if session.producer is not None:
                session.producer.ack_if_behind()


async def scrape_hops(base_url: str) -> stats.Histogram:
    """The relay's hop histogram from its /metrics."""
    import httpx

    async with httpx.AsyncClient(timeout=30) as http:
        text = (await http.get(base_url + "/metrics")).text
    return stats.parse_histogram(text, HOP_METRIC)


def hop_figures(before: stats.Histogram, after: stats.Histogram) -> dict[str, Any]:
    delta = stats.histogram_delta(before, after)
    return {
        "source": "server /metrics histogram (bucket-interpolated)",
        "count": int(delta[1][-1]) if delta[1] else 0,
        "p50_ms": stats.ms(stats.bucket_percentile(delta, 0.50)),
        "p99_ms": stats.ms(stats.bucket_percentile(delta, 0.99)),
    }


async def load(
    kind: str, base_url: str, sessions: int, server_pid: int, emulator_pid: int
) -> dict[str, Any]:
    import httpx

    pcm = loadclient.chunks()
    playback = len(pcm) * loadclient.CHUNK_SECONDS
    limits = httpx.Limits(max_connections=SETUP_CONCURRENCY)
    http = httpx.AsyncClient(timeout=30, limits=limits)
    everyone = [Session(kind, base_url, http, len(pcm)) for _ in range(sessions)]
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def open_one(session: Session) -> None:
        async with gate:
            try:
                async with asyncio.timeout(30):
                    await session.open()
            except Exception as exc:
                session.error = f"open: {exc!r}"

    await asyncio.gather(*(open_one(s) for s in everyone))
    live = [s for s in everyone if not s.error]
    before = await scrape_hops(base_url)
    cpu0, emu0, me0 = (
        stats.cpu_seconds(server_pid),
        stats.cpu_seconds(emulator_pid),
        time.process_time(),
    )
    busy0, total0 = machine_busy()
    start = time.monotonic() + 0.5
    print("playing", file=sys.stderr, flush=True)  # `profile` samples from here on
    for i, session in enumerate(live):
        session.start = start + (i % SLOTS) * loadclient.CHUNK_SECONDS / SLOTS
    clocks = [asyncio.create_task(pace(live, pcm, start)), asyncio.create_task(ack_clock(live))]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(playback + 30):
            await asyncio.gather(*(s.done for s in live))
    for s in live:
        if not s.done.done():
            s.error = s.error or "timeout"
    wall = time.monotonic() - start
    cpu1, emu1, me1 = (
        stats.cpu_seconds(server_pid),
        stats.cpu_seconds(emulator_pid),
        time.process_time(),
    )
    busy1, total1 = machine_busy()
    for clock in clocks:
        clock.cancel()
    cores = os.cpu_count() or 1
    machine_share = (busy1 - busy0) / (total1 - total0) * cores if total1 > total0 else 0.0
    after = await scrape_hops(base_url)
    rss = stats.rss_mib(server_pid)
    await asyncio.gather(*(s.close() for s in everyone))
    await http.aclose()
    messages = sum(s.up + s.down for s in live)
    server_share = (cpu1 - cpu0) / wall
    emulator_share = (emu1 - emu0) / wall
    loadgen_share = (me1 - me0) / wall
    hops = [h for s in live for h in s.audio_hops]
    lateness = [x for s in live for x in s.lateness]
    behind = [s for s in everyone if not s.ok]
    return {
        "kind": kind,
        "sessions": sessions,
        "sessions_ok": sessions - len(behind),
        "sustained": not behind,
        "playback_wall_seconds": round(wall, 2),
        "media_messages": messages,
        "producer_events": sum(s.producer.events for s in live if s.producer is not None),
        "server_cpu_seconds": round(cpu1 - cpu0, 2),
        "server_cpu_share": round(server_share, 3),
        "server_cpu_us_per_message": round((cpu1 - cpu0) / messages * 1e6, 2) if messages else None,
        "server_rss_mib": rss,
        "emulator_cpu_share": round(emulator_share, 3),
        "loadgen_cpu_share": round(loadgen_share, 3),
        "machine_cpu_share": round(machine_share, 3),
        # Everything else on the machine meanwhile (other people's work, the kernel): the whole
        # machine's busy cores less the three processes of the benchmark.
        "other_cpu_share": round(
            max(0.0, machine_share - server_share - emulator_share - loadgen_share), 3
        ),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "relay_hop": hop_figures(before, after),
        "audio_hop_ms": {
            "count": len(hops),
            "p50": stats.ms(stats.percentile(hops, 0.50)),
            "p99": stats.ms(stats.percentile(hops, 0.99)),
        },
        "frame_lateness_ms": {
            "p50": stats.ms(stats.percentile(lateness, 0.50)),
            "p99": stats.ms(stats.percentile(lateness, 0.99)),
            "max": stats.ms(max(lateness, default=0.0)),
        },
        "errors": sorted({s.error for s in everyone if s.error})[:5],
    }
