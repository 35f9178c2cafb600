"""Whole sessions over real sockets: server + emulator + a raw protocol peer."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import InvalidStatus

from app.api.ops import drain
from app.emulator import Emulator, Faults
from app.errors import ErrorCode, spec
from app.proto import message_pb2
from avatar_relay_client import browser_protocol as p
from tests.relay_api.conftest import (
    AVATAR,
    SHORT_PCM,
    Peer,
    Relay,
    conversation_over,
    final_frame,
    relay_settings,
    running_relay,
)

ANIMATION = message_pb2.MESSAGE_SERVER_RESPONSE_ANIMATION


def animations(emu: Emulator, connection_id: str) -> list[bytes]:
    """The animation messages the emulator sent on one connection, in order, as sent."""
    out = []
    for raw in emu.sent[connection_id]:
        message = message_pb2.Message()
        message.ParseFromString(raw)
        if message.type == ANIMATION:
            out.append(raw)
    return out


def sequenced(messages: list[p.ServerMessage]) -> list[p.SequencedServerMessage]:
    return [
        m
        for m in messages
        if isinstance(m, p.ServerAudio | p.ServerFrame | p.ConversationAborted | p.Interrupted)
    ]


def check_stream(messages: list[p.SequencedServerMessage]) -> list[str]:
    """Seqs contiguous from the first; per conversation audio FIRST before frames, one
    conversation at a time, nothing after its end. Returns the conversation ids in order."""
    seqs = [m.seq for m in messages]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    order: list[str] = []
    ended: set[str] = set()
    for message in messages:
        if isinstance(message, p.Interrupted):
            ended.update(order)  # it ends every conversation started before it
            continue
        cid = message.conversation_id
        assert cid not in ended, f"{cid} continued after its end"
        if not order or order[-1] != cid:
            assert not order or order[-1] in ended, "conversations interleaved"
            assert isinstance(message, p.ServerAudio), "a conversation must open with its audio"
            assert message.first
            order.append(cid)
        if conversation_over(message):
            ended.add(cid)
    return order


async def test_many_conversations_share_one_upstream_connection_byte_exact(
    relay: Relay, emu: Emulator
) -> None:
    body = await relay.create()
    runner = relay.services.sessions.get(body["sessionId"])
    assert runner is not None
    received: list[p.ServerMessage] = []
    utterances = [SHORT_PCM, SHORT_PCM[:12800], SHORT_PCM[6400:32000]]
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        for pcm in utterances:
            await peer.utterance(pcm)
            received += await peer.until(final_frame)
    stream = sequenced(received)
    conversations = check_stream(stream)
    assert len(conversations) == 3
    assert emu.stats.connections_opened == 1
    conn = runner.upstream.connection
    assert conn is not None
    frames = [m for m in stream if isinstance(m, p.ServerFrame)]
    # Every animation message reached the client byte for byte, in order, none added.
    assert [f.payload for f in frames] == animations(emu, conn.connection_id)
    for cid, pcm in zip(conversations, utterances, strict=True):
        echoed = b"".join(
            m.pcm for m in stream if isinstance(m, p.ServerAudio) and m.conversation_id == cid
        )
        assert echoed == pcm
        assert emu.received_audio[cid] == pcm
        assert [f.end for f in frames if f.conversation_id == cid][-1]


async def test_a_second_utterance_waits_for_the_first_conversation(
    relay: Relay, emu: Emulator
) -> None:
    body = await relay.create()
    emu.faults.frame_delay = 0.002  # A's frames are still coming when B starts
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.utterance(SHORT_PCM)
        await peer.utterance(SHORT_PCM[:6400])
        first = await peer.until(final_frame)
        second = await peer.until(final_frame)
    conversations = check_stream(sequenced(first + second))
    assert len(conversations) == 2
    # B's audio went upstream at once, not after A's frames.
    assert emu.received_audio[conversations[1]] == SHORT_PCM[:6400]


async def test_interrupt_stops_the_conversation_and_the_next_audio_starts_anew(
    relay: Relay, emu: Emulator
) -> None:
    body = await relay.create()
    emu.faults.frame_delay = 0.01
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.utterance(SHORT_PCM)
        before = await peer.until(lambda m: isinstance(m, p.ServerFrame))
        await peer.interrupt()
        rest = await peer.until(lambda m: isinstance(m, p.Interrupted))
        interrupted = rest[-1]
        assert isinstance(interrupted, p.Interrupted)
        cid = before[0].conversation_id  # type: ignore[union-attr]
        assert interrupted.conversation_id == cid
        await emu.wait_until(lambda: emu.stats.interrupts_received == 1)
        emu.faults.frame_delay = 0.0
        await peer.utterance(SHORT_PCM[:6400])
        after = await peer.until(final_frame)
    # Nothing of the interrupted conversation follows INTERRUPTED (its late frames are dropped).
    assert all(getattr(m, "conversation_id", "") != cid for m in after)
    conversations = check_stream(sequenced(before + rest + after))
    assert conversations[0] == cid
    assert len(conversations) == 2


async def test_resume_after_a_dropped_socket_gets_exactly_the_missing_messages(
    relay: Relay, emu: Emulator
) -> None:
    body = await relay.create()
    emu.faults.frame_delay = 0.005
    async with Peer.open(body["url"]) as first:
        await first.hello()
        await first.utterance(SHORT_PCM)
        seen = sequenced(await first.until(lambda m: isinstance(m, p.ServerFrame)))
        seen += sequenced(await first.until(lambda m: isinstance(m, p.ServerFrame)))
        await first.send(p.ClientAck(seen[0].seq))
        # Drop the connection without a close handshake, mid-conversation.
        first.ws.transport.abort()
    last_seq = seen[-1].seq
    async with Peer.open(await relay.new_url(body["sessionId"])) as second:
        welcome = await second.hello(last_seq)
        assert welcome.resumed
        rest = sequenced(await second.until(final_frame))
    assert rest[0].seq == last_seq + 1
    check_stream(seen + rest)
    frames = [m for m in seen + rest if isinstance(m, p.ServerFrame)]
    assert len({f.seq for f in frames}) == len(frames)
    assert emu.stats.connections_opened == 1  # the upstream stayed open across the drop
    resumed = relay.app.state.metrics.resumes_total.labels("resumed")._value.get()
    assert resumed == 1


async def test_resume_below_the_acknowledged_seq_fails_explicitly(relay: Relay) -> None:
    body = await relay.create()
    async with Peer.open(body["url"]) as first:
        await first.hello()
        await first.utterance(SHORT_PCM[:6400])
        messages = sequenced(await first.until(final_frame))
        await first.send(p.ClientAck(messages[-1].seq))
        await first.send(p.ClientPing(1))  # the PONG proves the ACK was processed
        await first.until(lambda m: isinstance(m, p.ServerPong))
    async with Peer.open(await relay.new_url(body["sessionId"])) as second:
        await second.send(p.Hello(1))
        failed = await second.recv()
        assert isinstance(failed, p.ResumeFailed)
        assert failed.code == "resumeFailed"
        assert failed.available_from == messages[-1].seq + 1
        assert await second.closed() == (4409, "resumeFailed")


async def test_upstream_drop_aborts_the_conversation_and_the_session_recovers(
    relay: Relay, emu: Emulator
) -> None:
    body = await relay.create()
    emu.set_avatar_faults(AVATAR, Faults(drop_after_frames=3))
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.utterance(SHORT_PCM)
        first = await peer.until(conversation_over)
        aborted = first[-1]
        assert isinstance(aborted, p.ConversationAborted)
        assert aborted.code == "connectionClosed"
        assert sum(isinstance(m, p.ServerFrame) for m in first) == 3
        emu.set_avatar_faults(AVATAR, None)
        await peer.utterance(SHORT_PCM[:12800])
        second = await peer.until(conversation_over)
    assert final_frame(second[-1])
    conversations = check_stream(sequenced(first + second))
    assert len(conversations) == 2
    assert emu.stats.connections_dropped == 1
    assert emu.stats.connections_opened == 2
    metrics = relay.app.state.metrics
    assert metrics.conversations_total.labels("aborted")._value.get() == 1
    assert metrics.conversations_total.labels("completed")._value.get() == 1


async def test_upstream_error_aborts_one_conversation_on_a_live_connection(
    relay: Relay, emu: Emulator
) -> None:
    body = await relay.create()
    emu.set_avatar_faults(AVATAR, Faults(error_after_frames=(2, 0, "driven server request failed")))
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.utterance(SHORT_PCM)
        first = await peer.until(conversation_over)
        aborted = first[-1]
        assert isinstance(aborted, p.ConversationAborted)
        assert aborted.code not in ("", "connectionClosed")
        await peer.utterance(SHORT_PCM[:6400])
        second = await peer.until(conversation_over)
    assert final_frame(second[-1])
    assert emu.stats.connections_opened == 1


async def test_one_sessions_bad_input_leaves_the_others_alone(relay: Relay, emu: Emulator) -> None:
    good = await relay.create()
    bad = await relay.create()
    emu.faults.frame_delay = 0.002
    async with Peer.open(good["url"]) as peer, Peer.open(bad["url"]) as rogue:
        await peer.hello()
        await rogue.hello()
        await peer.utterance(SHORT_PCM)
        await rogue.send_raw(b"\x02\x00\x01\x00\x00\x00\x01")  # odd PCM
        error = await rogue.recv()
        assert isinstance(error, p.ServerError)
        assert error.code == "badAudio"
        messages = await peer.until(final_frame)
    check_stream(sequenced(messages))


async def test_a_client_that_stops_acknowledging_is_cut_off(emu: Emulator) -> None:
    settings = relay_settings(emu, replay_buffer_messages=16)
    async with running_relay(settings) as relay:
        body = await relay.create()
        async with Peer.open(body["url"]) as peer:
            await peer.hello()
            await peer.utterance(SHORT_PCM)
            messages = await peer.until(lambda m: isinstance(m, p.ServerError))
            assert messages[-1] == p.ServerError("slowConsumer", messages[-1].message)  # type: ignore[union-attr]
            assert await peer.closed() == (4008, "slowConsumer")
        assert relay.services.sessions.live_count == 0


async def test_shutdown_tells_clients_to_go_away(relay: Relay, emu: Emulator) -> None:
    body = await relay.create()
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        drained = asyncio.create_task(drain(relay.app, 5))
        error = await peer.until(lambda m: isinstance(m, p.ServerError))
        assert error[-1] == p.ServerError("goingAway", "server is shutting down")
        assert await peer.closed() == (1001, "goingAway")
        await drained
    refused = await relay.http.post(
        "/v1/relay/sessions", headers={"Authorization": "Bearer relay-caller-key-0123456789abcdef"}
    )
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "goingAway"
    await emu.wait_until(lambda: emu.stats.connections_active == 0)


async def test_bye_releases_the_upstream_at_once(relay: Relay, emu: Emulator) -> None:
    body = await relay.create()
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.utterance(SHORT_PCM[:6400])
        await peer.until(final_frame)
        await peer.send(p.Bye())
        assert await peer.closed() == (1000, "bye")
    await emu.wait_until(lambda: emu.stats.connections_active == 0)
    assert relay.services.sessions.live_count == 0


async def test_relay_metrics_are_recorded(relay: Relay) -> None:
    body = await relay.create()
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.utterance(SHORT_PCM)
        messages = await peer.until(final_frame)
        text = (await relay.http.get("/metrics")).text
    frames = sum(isinstance(m, p.ServerFrame) for m in messages)
    assert f"avatar_relay_hop_seconds_count {float(frames)}" in text
    chunks = -(-len(SHORT_PCM) // 6400)
    assert f'avatar_relay_messages_total{{direction="up",kind="audio"}} {chunks}.0' in text
    assert "avatar_relay_sessions_active 1.0" in text
    assert "avatar_relay_tickets_issued_total 1.0" in text
    assert "avatar_relay_upstream_connections_active 1.0" in text


async def test_a_warm_pool_serves_new_sessions(emu: Emulator) -> None:
    async with running_relay(relay_settings(emu, upstream_pool_size=1)) as relay:
        await emu.wait_until(lambda: emu.stats.handshakes_completed == 1)
        body = await relay.create()
        pool = relay.services.sessions.pool
        async with Peer.open(body["url"]) as peer:
            await peer.hello()
            await peer.utterance(SHORT_PCM[:6400])
            await peer.until(final_frame)
        assert pool.hits == 1
        # The pool refills behind the session it served.
        await emu.wait_until(lambda: emu.stats.handshakes_completed == 2)


async def test_sessions_made_on_one_instance_go_live_on_another(
    emu: Emulator, redis_url: str
) -> None:
    settings = relay_settings(emu, redis_url=redis_url)
    async with running_relay(settings) as a, running_relay(settings) as b:
        body = await a.create()
        assert a.services.sessions.live_count == 0  # shared store: live where the socket lands
        url = body["url"].replace(a.url.removeprefix("http://"), b.url.removeprefix("http://"))
        async with Peer.open(url) as peer:
            await peer.hello()
            await peer.utterance(SHORT_PCM[:6400])
            messages = await peer.until(final_frame)
        check_stream(sequenced(messages))
        assert b.services.sessions.live_count == 1
        # A ticket from the other instance, used there: it does not take over a session its
        # owner (alive, serving) runs; HTTP 503 says "try again" (the proxy: another instance).
        again = await a.ticket(body["sessionId"])
        assert again.status_code == 201
        with pytest.raises(InvalidStatus) as refused:
            async with Peer.open(again.json()["url"]):
                pass
        assert refused.value.response.status_code == 503
        assert b.services.sessions.live_count == 1


async def test_an_unreachable_upstream_aborts_the_utterance_not_the_session(
    relay: Relay, emu: Emulator
) -> None:
    emu.faults.upgrade_status = 503
    body = await relay.create()
    async with Peer.open(body["url"]) as peer:
        await peer.hello()
        await peer.utterance(SHORT_PCM[:12800])
        first = await peer.until(conversation_over)
        aborted = first[-1]
        assert isinstance(aborted, p.ConversationAborted)
        # The ingress client's classification of an upgrade refused with 503.
        assert spec(ErrorCode(aborted.code)).upstream
        emu.faults.upgrade_status = None
        await peer.utterance(SHORT_PCM[:6400])
        second = await peer.until(conversation_over)
    assert final_frame(second[-1])
    check_stream(sequenced(first + second))
