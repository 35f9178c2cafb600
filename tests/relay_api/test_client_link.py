"""The client connection's write side: ordered writes, a bounded queue behind a write that blocks,
the write timeout, and client disconnects that are not errors.

The unit tests drive `ClientLink` over a stand-in for starlette's WebSocket (a third-party object)
whose writes block until the test lets them through; the last test goes over real sockets.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.emulator import Emulator
from app.relay import client_link
from app.relay.client_link import ClientLink
from avatar_relay_client import browser_protocol as p
from tests.relay_api.conftest import SHORT_PCM, Peer, Relay, final_frame


class Socket:
    """Records what is written; while `open` is clear, writes block (a paused transport)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed: tuple[int, str] | None = None
        self.open = asyncio.Event()
        self.open.set()
        self.fail: BaseException | None = None

    async def send(self, message: dict[str, Any]) -> None:
        if self.fail is not None:
            raise self.fail
        await self.open.wait()
        self.written.append(message["bytes"])

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def link_over(socket: Socket, stuck: list[int], *, max_messages: int = 100) -> ClientLink:
    link = ClientLink(
        cast(WebSocket, socket),
        7,
        max_messages=max_messages,
        max_bytes=1 << 20,
        metrics=None,
        on_stuck=stuck.append,
    )
    link.start()
    return link


async def test_writes_go_out_at_once_and_in_order() -> None:
    socket = Socket()
    link = link_over(socket, [])
    for i in range(5):
        assert link.send(bytes([i]), 0.0)
    # No await in between: an open socket's writes complete inside send().
    assert socket.written == [bytes([i]) for i in range(5)]
    link.close(1000, "")
    assert link.task is not None
    await link.task
    assert socket.closed == (1000, "")


async def test_messages_queue_behind_a_blocked_write_and_follow_it_in_order() -> None:
    socket = Socket()
    link = link_over(socket, [])
    link.send(b"a", 0.0)
    socket.open.clear()
    for data in (b"b", b"c", b"d"):
        assert link.send(data, 0.0)
    link.close(1000, "bye")
    assert socket.written == [b"a"]
    socket.open.set()
    assert link.task is not None
    await link.task
    assert socket.written == [b"a", b"b", b"c", b"d"]
    assert socket.closed == (1000, "bye")


async def test_the_queue_behind_a_blocked_write_is_bounded() -> None:
    socket = Socket()
    link = link_over(socket, [], max_messages=3)
    socket.open.clear()
    results = [link.send(bytes([i]), 0.0) for i in range(5)]
    # One write in flight, three queued, the fifth message overflows.
    assert results == [True, True, True, True, False]
    assert link.broken
    socket.open.set()
    link.close(1000, "")
    assert link.task is not None
    await link.task
    assert socket.written == [b"\x00"]


async def test_a_write_that_stays_blocked_reports_the_client_stuck(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_link, "WRITE_TIMEOUT_SECONDS", 0.05)
    socket = Socket()
    stuck: list[int] = []
    link = link_over(socket, stuck)
    socket.open.clear()
    link.send(b"never", 0.0)
    link.send(b"queued", 0.0)
    link.close(1000, "")
    assert link.task is not None
    await link.task  # the write times out, then the close goes out
    assert stuck == [7]
    assert link.broken
    assert socket.written == []
    assert socket.closed == (1000, "")


@pytest.mark.parametrize(
    "failure", [WebSocketDisconnect(1006), OSError("reset"), RuntimeError("closed")]
)
async def test_a_write_to_a_client_that_left_is_not_an_error(
    failure: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    socket = Socket()
    link = link_over(socket, [])
    socket.fail = failure
    assert link.send(b"x", 0.0)
    assert link.gone
    assert link.send(b"y", 0.0)  # ignored, not retried
    assert link.task is not None
    await link.task
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("how", ["abort", "close"])
async def test_a_client_leaving_mid_stream_logs_no_error_and_can_resume(
    how: str, relay: Relay, emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emu.faults.frame_delay = 0.002  # frames keep coming after the client left
    body = await relay.create()
    received: list[p.ServerMessage] = []
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.utterance(SHORT_PCM)
        received += await peer.until(lambda m: isinstance(m, p.ServerFrame))
        if how == "abort":
            peer.ws.transport.abort()
        else:
            await peer.ws.close()
    await emu.wait_until(lambda: emu.stats.requests_completed == 1)
    last = max(getattr(m, "seq", 0) for m in received)
    async with Peer.open(await relay.new_url(body["sessionId"])) as again:
        welcome = await again.hello(last)
        assert welcome.resumed
        rest = await again.until(final_frame)
        await again.send(p.Bye())
        assert await again.closed() == (1000, "bye")
    seqs = [getattr(m, "seq", 0) for m in received + rest if getattr(m, "seq", 0)]
    assert seqs == list(range(1, len(seqs) + 1))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
