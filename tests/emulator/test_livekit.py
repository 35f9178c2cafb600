"""The emulator as a LiveKit stand-in: RoomService over Twirp (driven by the official
`livekit-api` client) and ingress sessions in LiveKit egress mode, over real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from livekit import api
from websockets.asyncio.client import ClientConnection

from app.emulator import DEFAULT_LIVEKIT_API_KEY, DEFAULT_LIVEKIT_API_SECRET, Emulator
from app.proto import message_pb2
from tests.emulator.helpers import audio, interrupt, mint, open_ws, parse, pause, resume
from tests.support.servers import FIXTURES

PCM = (FIXTURES / "short_16000.pcm").read_bytes()
# 12 s of speech: slow playouts that an interrupt or a pause surely lands inside.
SPEECH = (FIXTURES / "speech_16000.pcm").read_bytes()
ROOM = "room-1"
AVATAR = "spatialreal-avatar"


@pytest.fixture
async def lk(emu: Emulator) -> AsyncIterator[api.LiveKitAPI]:
    client = api.LiveKitAPI(emu.livekit_url, DEFAULT_LIVEKIT_API_KEY, DEFAULT_LIVEKIT_API_SECRET)
    try:
        yield client
    finally:
        await client.aclose()


def publisher_token(
    room: str = ROOM,
    identity: str = AVATAR,
    *,
    secret: str = DEFAULT_LIVEKIT_API_SECRET,
    sources: tuple[str, ...] = ("camera", "microphone"),
    data: bool = True,
) -> str:
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        can_subscribe=False,
        can_publish_data=data,
        can_publish_sources=list(sources),
    )
    return (
        api.AccessToken(DEFAULT_LIVEKIT_API_KEY, secret)
        .with_kind("agent")
        .with_identity(identity)
        .with_ttl(timedelta(hours=1))
        .with_attributes({"lk.publish_on_behalf": "agent-1"})
        .with_grants(grants)
        .to_jwt()
    )


def egress_configure(
    emu: Emulator,
    token: str,
    *,
    room: str = ROOM,
    publisher: str = AVATAR,
    idle_timeout: int = 0,
    url: str | None = None,
) -> bytes:
    message = message_pb2.Message(type=message_pb2.MESSAGE_CLIENT_CONFIGURE_SESSION)
    config = message.client_configure_session
    config.sample_rate = 16000
    config.egress_type = message_pb2.EGRESS_TYPE_LIVEKIT
    egress = config.livekit_egress
    egress.url = url if url is not None else emu.livekit_url
    egress.api_token = token
    egress.room_name = room
    egress.publisher_id = publisher
    egress.extra_attributes["lk.publish_on_behalf"] = "agent-1"
    egress.idle_timeout = idle_timeout
    return message.SerializeToString()


async def egress_session(emu: Emulator, token: str, **options: object) -> ClientConnection:
    ws = await open_ws(emu, await mint(emu))
    await ws.send(egress_configure(emu, token, **options))  # type: ignore[arg-type]
    reply = parse(await ws.recv())
    assert reply.type == message_pb2.MESSAGE_SERVER_CONFIRM_SESSION, reply
    return ws


async def signals_until_end(ws: ClientConnection) -> list[message_pb2.Message]:
    """Messages up to the first egress `end` signal of a request (or an error)."""
    out: list[message_pb2.Message] = []
    while True:
        message = parse(await ws.recv())
        out.append(message)
        if message.type == message_pb2.MESSAGE_SERVER_ERROR:
            return out
        if (
            message.type == message_pb2.MESSAGE_SERVER_RESPONSE_ANIMATION
            and message.server_response_animation.end
        ):
            return out


# --- RoomService ---


async def test_rooms_are_created_listed_and_deleted_with_the_official_client(
    emu: Emulator, lk: api.LiveKitAPI
) -> None:
    room = await lk.room.create_room(api.CreateRoomRequest(name=ROOM, empty_timeout=30))
    assert (room.name, room.empty_timeout) == (ROOM, 30)
    assert room.sid.startswith("RM_")
    again = await lk.room.create_room(api.CreateRoomRequest(name=ROOM))
    assert again.sid == room.sid  # an existing room is answered as it is
    await lk.room.create_room(api.CreateRoomRequest(name="room-2"))
    listed = await lk.room.list_rooms(api.ListRoomsRequest())
    assert sorted(r.name for r in listed.rooms) == [ROOM, "room-2"]
    only = await lk.room.list_rooms(api.ListRoomsRequest(names=["room-2"]))
    assert [r.name for r in only.rooms] == ["room-2"]
    await lk.room.delete_room(api.DeleteRoomRequest(room=ROOM))
    assert list(emu.livekit.rooms) == ["room-2"]
    assert emu.livekit.deleted == [ROOM]
    with pytest.raises(api.TwirpError) as missing:
        await lk.room.delete_room(api.DeleteRoomRequest(room=ROOM))
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    assert [method for method, _ in emu.livekit.calls] == [
        "CreateRoom",
        "CreateRoom",
        "CreateRoom",
        "ListRooms",
        "ListRooms",
        "DeleteRoom",
        "DeleteRoom",
    ]


async def test_the_room_service_checks_the_bearer_token(emu: Emulator) -> None:
    wrong = api.LiveKitAPI(emu.livekit_url, DEFAULT_LIVEKIT_API_KEY, "x" * 40)
    no_grant_token = (
        api.AccessToken(DEFAULT_LIVEKIT_API_KEY, DEFAULT_LIVEKIT_API_SECRET)
        .with_grants(api.VideoGrants(room_list=True))
        .to_jwt()
    )
    listing_only = api.LiveKitAPI.with_token(no_grant_token, emu.livekit_url)
    try:
        with pytest.raises(api.TwirpError) as bad_secret:
            await wrong.room.create_room(api.CreateRoomRequest(name=ROOM))
        assert (bad_secret.value.status, bad_secret.value.code) == (401, "unauthenticated")
        with pytest.raises(api.TwirpError) as no_grant:
            await listing_only.room.create_room(api.CreateRoomRequest(name=ROOM))
        assert (no_grant.value.status, no_grant.value.code) == (403, "permission_denied")
        assert (await listing_only.room.list_rooms(api.ListRoomsRequest())).rooms == []
    finally:
        await wrong.aclose()
        await listing_only.aclose()
    assert emu.livekit.rooms == {}


async def test_an_injected_failure_answers_every_call(emu: Emulator, lk: api.LiveKitAPI) -> None:
    emu.livekit.fail_status = 503
    with pytest.raises(api.TwirpError) as failed:
        await lk.room.create_room(api.CreateRoomRequest(name=ROOM))
    assert failed.value.status == 503
    emu.livekit.fail_status = None
    assert (await lk.room.create_room(api.CreateRoomRequest(name=ROOM))).name == ROOM


# --- egress mode ---


async def test_the_avatar_joins_the_room_and_publishes_each_request(
    emu: Emulator, lk: api.LiveKitAPI
) -> None:
    await lk.room.create_room(api.CreateRoomRequest(name=ROOM))
    ws = await egress_session(emu, publisher_token())
    participants = await lk.room.list_participants(api.ListParticipantsRequest(room=ROOM))
    (avatar,) = participants.participants
    assert (avatar.identity, avatar.kind) == (AVATAR, api.ParticipantInfo.AGENT)
    assert dict(avatar.attributes) == {"lk.publish_on_behalf": "agent-1"}
    sent: dict[str, bytes] = {}
    for number, req_id in enumerate(("20250101000000_aaaaaaaaaaaa", "20250101000001_bbbbbbbbbbbb")):
        pcm = PCM[: len(PCM) // (number + 1)]
        sent[req_id] = pcm
        await ws.send(audio(req_id, pcm[:1000]))
        await ws.send(audio(req_id, pcm[1000:], end=True))
        signals = await signals_until_end(ws)
        animations = [m.server_response_animation for m in signals]
        assert all(m.type == message_pb2.MESSAGE_SERVER_RESPONSE_ANIMATION for m in signals)
        assert {a.req_id for a in animations} == {req_id}
        assert all(not a.animation for a in animations)  # control signals, no animation data
        assert not animations[0].end
        # The end comes again (egress retransmission), before anything of the next request.
        repeat = parse(await ws.recv()).server_response_animation
        assert (repeat.req_id, repeat.end) == (req_id, True)
    room = emu.livekit.rooms[ROOM]
    assert room.published_audio() == sent
    assert all(p.ended and not p.interrupted for p in room.publications)
    assert emu.stats.egress_sessions == 1
    await ws.close()
    await emu.wait_until(lambda: not emu.livekit.rooms[ROOM].participants)
    assert room.joins == [(AVATAR, room.publications[0].connection_id)]


@pytest.mark.parametrize(
    ("token", "options", "code", "words"),
    [
        (publisher_token(secret="y" * 40), {}, 16, "token rejected"),
        (publisher_token(room="elsewhere"), {}, 16, "joining room"),
        (publisher_token(identity="someone"), {}, 16, "publisher_id"),
        (publisher_token(sources=("microphone",)), {}, 16, "publishing camera and microphone"),
        (publisher_token(data=False), {}, 16, "publishing data"),
        ("", {}, 3, "api_token or api_key"),
        (publisher_token(), {"publisher": ""}, 3, "publisher_id are required"),
        (publisher_token(), {"url": "wss://other.invalid"}, 14, "cannot connect"),
    ],
)
async def test_a_bad_egress_configuration_is_refused(
    emu: Emulator, token: str, options: dict[str, object], code: int, words: str
) -> None:
    ws = await open_ws(emu, await mint(emu))
    await ws.send(egress_configure(emu, token, **options))  # type: ignore[arg-type]
    reply = parse(await ws.recv())
    assert reply.type == message_pb2.MESSAGE_SERVER_ERROR
    assert reply.server_error.code == code
    assert words in reply.server_error.message
    assert "egress" in reply.server_error.message  # the SDK's words for invalidEgressConfig
    assert emu.livekit.rooms == {}


async def test_an_interrupt_stops_the_playout(emu: Emulator) -> None:
    emu.speed = 2  # slow enough that the interrupt lands mid-request
    ws = await egress_session(emu, publisher_token())
    req_id = "20250101000000_aaaaaaaaaaaa"
    await ws.send(audio(req_id, SPEECH, end=True))
    first = parse(await ws.recv()).server_response_animation
    assert (first.req_id, first.end) == (req_id, False)
    await ws.send(interrupt(req_id))
    await emu.wait_until(lambda: emu.stats.requests_interrupted == 1)
    (publication,) = emu.livekit.rooms[ROOM].publications
    assert publication.interrupted
    assert not publication.ended
    assert 0 < len(publication.audio) < len(SPEECH)
    # Late audio of an interrupted request plays nowhere; the next request plays in full.
    await ws.send(audio(req_id, PCM[:640], end=True))
    emu.speed = 100
    follow = "20250101000001_bbbbbbbbbbbb"
    await ws.send(audio(follow, PCM[:3200], end=True))
    signals = await signals_until_end(ws)
    assert {m.server_response_animation.req_id for m in signals} == {follow}
    assert emu.livekit.rooms[ROOM].published_audio()[follow] == PCM[:3200]


async def test_pause_and_resume_hold_the_playout_with_playback_control() -> None:
    async with Emulator(speed=2, record=True, playback_control=True) as emu:
        ws = await egress_session(emu, publisher_token())
        req_id = "20250101000000_aaaaaaaaaaaa"
        await ws.send(audio(req_id, SPEECH, end=True))
        states: list[int] = []

        async def next_state() -> message_pb2.ServerPlaybackState:
            while True:
                message = parse(await ws.recv())
                if message.type == message_pb2.MESSAGE_SERVER_PLAYBACK_STATE:
                    states.append(message.server_playback_state.state)
                    return message.server_playback_state

        assert (await next_state()).state == message_pb2.ServerPlaybackState.PLAYING
        await ws.send(pause(req_id))
        paused = await next_state()
        assert paused.state == message_pb2.ServerPlaybackState.PAUSED
        held = len(emu.livekit.rooms[ROOM].publications[0].audio)
        assert held < len(SPEECH)
        await ws.send(resume(req_id))
        assert (await next_state()).state == message_pb2.ServerPlaybackState.PLAYING
        emu.speed = 100
        assert (await next_state()).state == message_pb2.ServerPlaybackState.ENDED
        assert emu.livekit.rooms[ROOM].published_audio() == {req_id: SPEECH}


async def test_an_interrupt_reports_interrupted_with_playback_control() -> None:
    async with Emulator(speed=2, playback_control=True) as emu:
        ws = await egress_session(emu, publisher_token())
        req_id = "20250101000000_aaaaaaaaaaaa"
        await ws.send(audio(req_id, SPEECH, end=True))
        await ws.send(interrupt(req_id))
        while True:
            message = parse(await ws.recv())
            state = message.server_playback_state
            if state.state == message_pb2.ServerPlaybackState.INTERRUPTED:
                break
        assert (state.req_id, state.reason) == (req_id, "explicit")


async def test_the_configured_idle_timeout_is_the_livekit_silence_timeout() -> None:
    async with Emulator(speed=100, idle_timeout=60) as emu:
        ws = await egress_session(emu, publisher_token(), idle_timeout=1)
        error = parse(await ws.recv())
        assert error.type == message_pb2.MESSAGE_SERVER_ERROR
        assert error.server_error.message == "livekit silence timeout after 1s"
