"""The upstream close-code contract, end to end: our server, the emulator and a raw protocol peer
over real sockets, with the session tokens minted and the upstream connections opened counted.

- 4001 / 4003 / 4010 (a close, a close at the handshake, or a SERVER_ERROR with the code): the
  conversation in flight is aborted with the code, the session ends with ERROR{code}, and no
  second token is ever spent.
- 4503: the relay reconnects, but only after a jittered backoff that grows while failures last.
- 4002: the relay rolls over to a fresh upstream connection at once; the browser sees only the
  conversation that was in flight aborted (nothing at all between conversations).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from websockets.exceptions import ConnectionClosed

from app.emulator import Emulator, Faults
from app.errors import ErrorCode
from avatar_relay_client import RelayClient, RelayError
from avatar_relay_client import browser_protocol as p
from tests.relay_api.conftest import (
    AVATAR,
    CALLER_KEY,
    SHORT_PCM,
    Peer,
    Relay,
    conversation_over,
    final_frame,
    relay_settings,
    running_relay,
)

# Backoff bounds for these tests: a first retry waits 0.2-0.4 s, the next 0.4-0.8 s, ...
INITIAL = 0.4
# Long enough for a reconnect storm to show itself in the counts.
SETTLE = 1.0

REFUSALS = [
    # upstream close code, our stable code, the close code the browser gets
    (4001, "creditsExhausted", 4502),
    (4003, "concurrencyLimit", 4503),
    (4010, "sessionTokenInvalid", 4502),
]


@pytest.fixture
async def relay(emu: Emulator) -> AsyncIterator[Relay]:
    settings = relay_settings(
        emu,
        upstream_backoff_initial_seconds=INITIAL,
        upstream_backoff_max_seconds=8 * INITIAL,
        # The backoff is under test here, not the avatar's breaker (which would stop retries
        # after three failures without spending tokens).
        breaker_failure_threshold=100,
    )
    async with running_relay(settings) as running:
        yield running


async def connected(emu: Emulator, count: int = 1) -> None:
    await emu.wait_until(lambda: emu.stats.handshakes_completed >= count)


def aborted_codes(messages: list[p.ServerMessage]) -> list[str]:
    return [m.code for m in messages if isinstance(m, p.ConversationAborted)]


# --- not retryable: never reconnect, end the session with the code ---


@pytest.mark.parametrize(("close", "code", "ws_close"), REFUSALS)
@pytest.mark.parametrize("how", ["close", "server_error"])
async def test_a_refusal_mid_conversation_ends_the_session_and_spends_no_second_token(
    relay: Relay, emu: Emulator, close: int, code: str, ws_close: int, how: str
) -> None:
    body = await relay.create()
    await connected(emu)
    fault = (
        Faults(close_after_frames=(3, close))
        if how == "close"
        else Faults(error_after_frames=(3, close, "refused"))
    )
    emu.set_avatar_faults(AVATAR, fault)
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.utterance(SHORT_PCM)
        messages = await peer.until(lambda m: isinstance(m, p.ServerError))
        assert sum(isinstance(m, p.ServerFrame) for m in messages) == 3
        assert aborted_codes(messages) == [code]
        error = messages[-1]
        assert isinstance(error, p.ServerError)
        assert error.code == code
        assert await peer.closed() == (ws_close, code)
    await asyncio.sleep(SETTLE)
    assert emu.stats.tokens_minted == 1
    assert emu.stats.connections_opened == 1
    assert relay.services.sessions.live_count == 0


@pytest.mark.parametrize(("close", "code", "ws_close"), REFUSALS)
async def test_a_refusal_at_the_handshake_is_told_to_the_client_when_it_comes(
    relay: Relay, emu: Emulator, close: int, code: str, ws_close: int
) -> None:
    emu.set_avatar_faults(AVATAR, Faults(close_at_handshake=close))
    body = await relay.create()  # connects upstream at once: refused before any client
    await emu.wait_until(lambda: emu.stats.closes_sent == 1)
    await asyncio.sleep(SETTLE)
    async with Peer.open(body["url"]) as peer:
        # The verdict goes out as soon as the socket is attached, HELLO or not.
        error = await peer.recv()
        assert isinstance(error, p.ServerError)
        assert error.code == code
        assert await peer.closed() == (ws_close, code)
        with contextlib.suppress(ConnectionClosed):
            await peer.send(p.Hello(0))
    assert emu.stats.tokens_minted == 1
    assert emu.stats.connections_opened == 1
    assert relay.services.sessions.live_count == 0


async def test_audio_after_a_refusal_is_never_sent_upstream(relay: Relay, emu: Emulator) -> None:
    emu.set_avatar_faults(AVATAR, Faults(close_at_handshake=4001))
    body = await relay.create()
    await emu.wait_until(lambda: emu.stats.closes_sent == 1)
    async with Peer.open(body["url"]) as peer:
        with contextlib.suppress(ConnectionClosed):  # races the ERROR: either way, no upstream
            await peer.send(p.Hello(0))
            await peer.audio(SHORT_PCM[:6400], end=True)
        assert await peer.closed() == (4502, "creditsExhausted")
    assert emu.stats.tokens_minted == 1
    assert emu.stats.audio_bytes_received == 0


# --- 4503: retry, with backoff ---


async def test_4503_mid_conversation_reconnects_after_a_backoff_then_recovers(
    relay: Relay, emu: Emulator
) -> None:
    loop = asyncio.get_running_loop()
    body = await relay.create()
    await connected(emu)
    emu.set_avatar_faults(AVATAR, Faults(close_after_frames=(3, 4503)))
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.utterance(SHORT_PCM)
        first = await peer.until(conversation_over)
        lost_at = loop.time()
        assert aborted_codes(first) == ["upstreamError"]
        emu.set_avatar_faults(AVATAR, None)
        await emu.wait_until(lambda: emu.stats.connections_opened == 2)
        # Not at once: at least half the first backoff step (the abort reached us after the loss).
        assert loop.time() - lost_at >= INITIAL / 2 - 0.05
        await peer.utterance(SHORT_PCM[:12800])
        second = await peer.until(conversation_over)
    assert final_frame(second[-1])
    assert not any(isinstance(m, p.ServerError) for m in first + second)
    assert emu.stats.tokens_minted == 2


async def test_4503_at_every_handshake_backs_off_more_each_time_and_only_on_demand(
    relay: Relay, emu: Emulator
) -> None:
    loop = asyncio.get_running_loop()
    emu.set_avatar_faults(AVATAR, Faults(close_at_handshake=4503))
    attempts: list[float] = []

    async def attempt(n: int) -> None:
        await emu.wait_until(lambda: emu.stats.connections_opened >= n)
        attempts.append(loop.time())

    body = await relay.create()
    await attempt(1)
    await asyncio.sleep(SETTLE)
    # An idle session does not retry by itself: no audio, no token.
    assert emu.stats.tokens_minted == 1
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        for n in (2, 3):
            await peer.utterance(SHORT_PCM[:6400])
            messages = await peer.until(conversation_over)
            assert aborted_codes(messages) == ["upstreamError"]
            await attempt(n)
        emu.set_avatar_faults(AVATAR, None)
        await peer.utterance(SHORT_PCM[:6400])
        await attempt(4)
        last = await peer.until(conversation_over)
    assert final_frame(last[-1])
    # The third and fourth attempts waited out growing backoffs (steps 2 and 3: >= 0.4, 0.8 s).
    assert attempts[2] - attempts[1] >= INITIAL - 0.05
    assert attempts[3] - attempts[2] >= 2 * INITIAL - 0.05
    assert emu.stats.tokens_minted == 4


# --- 4002: roll over to a fresh connection ---


@pytest.mark.parametrize("how", ["close", "server_error"])
async def test_4002_mid_conversation_rolls_over_at_once(emu: Emulator, how: str) -> None:
    # A backoff this long would show: the rollover must not wait for one.
    settings = relay_settings(emu, upstream_backoff_initial_seconds=6.0)
    async with running_relay(settings) as relay:
        await roll_over_mid_conversation(relay, emu, how)


async def roll_over_mid_conversation(relay: Relay, emu: Emulator, how: str) -> None:
    loop = asyncio.get_running_loop()
    body = await relay.create()
    await connected(emu)
    fault = (
        Faults(close_after_frames=(3, 4002))
        if how == "close"
        else Faults(error_after_frames=(3, 4002, "maximum session duration reached"))
    )
    emu.set_avatar_faults(AVATAR, fault)
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.utterance(SHORT_PCM)
        first = await peer.until(conversation_over)
        lost_at = loop.time()
        emu.set_avatar_faults(AVATAR, None)
        assert aborted_codes(first) == ["sessionDurationExceeded"]
        # A fresh connection with no audio to send: the rollover itself, with no backoff.
        await connected(emu, 2)
        assert loop.time() - lost_at < 2.0
        await peer.utterance(SHORT_PCM[:12800])
        second = await peer.until(conversation_over)
    assert final_frame(second[-1])
    assert not any(isinstance(m, p.ServerError) for m in first + second)
    assert emu.stats.tokens_minted == 2
    assert emu.stats.connections_opened == 2


async def test_4002_between_conversations_goes_unnoticed(relay: Relay, emu: Emulator) -> None:
    body = await relay.create()
    await connected(emu)
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.utterance(SHORT_PCM[:12800])
        first = await peer.until(conversation_over)
        frames = sum(isinstance(m, p.ServerFrame) for m in first)
        # The connection closes with 4002 right after the second conversation's last frame.
        emu.set_avatar_faults(AVATAR, Faults(close_after_frames=(2 * frames, 4002)))
        await peer.utterance(SHORT_PCM[:12800])
        second = await peer.until(conversation_over)
        await connected(emu, 2)
        emu.set_avatar_faults(AVATAR, None)
        await peer.utterance(SHORT_PCM[:12800])
        third = await peer.until(conversation_over)
    for conversation in (first, second, third):
        assert final_frame(conversation[-1])
    everything = first + second + third
    assert not any(isinstance(m, p.ServerError | p.ConversationAborted) for m in everything)
    assert emu.stats.closes_sent == 1
    assert emu.stats.connections_opened == 2
    assert emu.stats.tokens_minted == 2


async def test_the_reference_client_surfaces_the_refusal_as_its_code(
    relay: Relay, emu: Emulator
) -> None:
    emu.set_avatar_faults(AVATAR, Faults(close_after_frames=(2, 4001)))
    headers = {"Authorization": f"Bearer {CALLER_KEY}"}
    events: list[object] = []

    async def consume(client: RelayClient) -> None:
        async for event in client.events():
            events.append(event)

    async with RelayClient(relay.url, headers=headers) as client:
        await client.send_audio(SHORT_PCM, end=True)
        with pytest.raises(RelayError) as caught:
            await consume(client)
    assert caught.value.code is ErrorCode.CREDITS_EXHAUSTED
    aborted = [e for e in events if isinstance(e, p.ConversationAborted)]
    assert [a.code for a in aborted] == ["creditsExhausted"]
    assert emu.stats.tokens_minted == 1
