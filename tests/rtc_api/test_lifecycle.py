"""An RTC session's input and lifecycle over the real emulator socket: interrupt, pause and
resume with playback control, the idle and duration limits, and the 4002 rollover into a new
ingress session in the same room."""

from __future__ import annotations

import pytest

from app.emulator import Emulator
from app.errors import AppError, ErrorCode
from app.rtc.core import Kind
from tests.rtc_api.conftest import PCM, Listener, rtc_settings, running_rtc
from tests.support.servers import FIXTURES

# 12 s of speech: at speed 2 its playout takes 6 s, so an interrupt or a pause lands inside it
# even on a busy machine.
SPEECH = (FIXTURES / "speech_16000.pcm").read_bytes()


async def test_an_interrupt_stops_the_avatar_mid_utterance(emu: Emulator) -> None:
    emu.speed = 2
    async with running_rtc(rtc_settings(emu)) as rtc:
        created = await rtc.create()
        session = rtc.session(created["sessionId"])
        listener = Listener(session)
        req_id = session.audio(SPEECH)
        assert req_id is not None
        session.end()
        await listener.event(Kind.PLAYING, req_id)
        assert session.interrupt() == req_id
        await listener.event(Kind.INTERRUPTED, req_id)
        await emu.wait_until(lambda: emu.stats.requests_interrupted == 1)
        (publication,) = emu.livekit.rooms[created["roomName"]].publications
        assert publication.interrupted
        assert 0 < len(publication.audio) < len(SPEECH)
        # The next utterance plays in full on the same connection.
        emu.speed = 50
        follow = session.audio(PCM[:6400], end=True)
        assert follow is not None
        await listener.event(Kind.ENDED, follow)
        assert emu.livekit.rooms[created["roomName"]].published_audio()[follow] == PCM[:6400]
        assert emu.stats.connections_opened == 1
        # Nothing of the interrupted request came through after the interrupt.
        assert listener.kinds(req_id).count(Kind.INTERRUPTED) == 1
        assert Kind.ENDED not in listener.kinds(req_id)
        await listener.aclose()


async def test_pause_and_resume_with_playback_control() -> None:
    async with (
        Emulator(speed=2, record=True, playback_control=True) as emu,
        running_rtc(rtc_settings(emu)) as rtc,
    ):
        created = await rtc.create()
        assert created["playbackControl"] is True
        session = rtc.session(created["sessionId"])
        listener = Listener(session)
        req_id = session.audio(SPEECH, end=True)
        assert req_id is not None
        await listener.event(Kind.PLAYING, req_id)
        assert session.pause() == req_id
        paused = await listener.event(Kind.PAUSED, req_id)
        assert paused.played_ms is not None
        room = emu.livekit.rooms[created["roomName"]]
        held = len(room.publications[0].audio)
        assert 0 < held < len(SPEECH)
        assert emu.stats.pauses_received == 1
        assert session.resume() == req_id
        resumed = await listener.event(Kind.RESUMED, req_id)
        assert resumed.played_ms == paused.played_ms  # the playout did not move while paused
        emu.speed = 50
        await listener.event(Kind.ENDED, req_id)
        assert room.published_audio() == {req_id: SPEECH}
        assert listener.kinds(req_id) == [
            Kind.STARTED,
            Kind.PLAYING,
            Kind.PAUSED,
            Kind.RESUMED,
            Kind.ENDED,
        ]
        await listener.aclose()


async def test_pause_without_playback_control_is_refused(emu: Emulator) -> None:
    async with running_rtc(rtc_settings(emu)) as rtc:
        created = await rtc.create()
        assert created["playbackControl"] is False
        session = rtc.session(created["sessionId"])
        session.audio(PCM[:3200])
        with pytest.raises(AppError) as refused:
            session.pause()
        assert refused.value.code is ErrorCode.PLAYBACK_CONTROL_UNAVAILABLE
        assert emu.stats.pauses_received == 0


async def test_an_idle_session_ends_and_its_room_goes(emu: Emulator) -> None:
    async with running_rtc(rtc_settings(emu, rtc_idle_timeout_seconds=1.0)) as rtc:
        created = await rtc.create()
        session = rtc.session(created["sessionId"])
        listener = Listener(session)
        session.audio(PCM[:3200], end=True)
        closed = await listener.event(Kind.CLOSED)
        assert closed.code is ErrorCode.IDLE_TIMEOUT
        await session.wait_closed()
        await emu.wait_until(lambda: created["roomName"] not in emu.livekit.rooms)
        assert rtc.services.rtc.live_count == 0
        assert (await rtc.delete(created["sessionId"])).status_code == 404
        await emu.wait_until(lambda: emu.stats.connections_active == 0)
        await listener.aclose()


async def test_the_maximum_duration_ends_a_busy_session(emu: Emulator) -> None:
    settings = rtc_settings(emu, rtc_max_session_seconds=1.0, rtc_idle_timeout_seconds=60)
    async with running_rtc(settings) as rtc:
        created = await rtc.create()
        session = rtc.session(created["sessionId"])
        listener = Listener(session)
        session.audio(PCM[:3200])  # an utterance still open when time is up
        closed = await listener.event(Kind.CLOSED)
        assert closed.code is ErrorCode.SESSION_DURATION_EXCEEDED
        assert listener.kinds()[-2] is Kind.ABORTED
        await listener.aclose()


async def test_4002_rolls_over_to_a_new_ingress_session_in_the_same_room(emu: Emulator) -> None:
    async with running_rtc(rtc_settings(emu)) as rtc:
        created = await rtc.create()
        room = emu.livekit.rooms[created["roomName"]]
        session = rtc.session(created["sessionId"])
        listener = Listener(session)
        emu.faults.close_after_frames = (5, 4002)
        lost = session.audio(PCM, end=True)
        assert lost is not None
        aborted = await listener.event(Kind.ABORTED, lost)
        assert aborted.code is ErrorCode.SESSION_DURATION_EXCEEDED
        emu.faults.close_after_frames = None
        # At once a new ingress session, the avatar rejoining the same room as itself.
        await emu.wait_until(lambda: len(room.joins) == 2)
        (first, _), (second, _) = room.joins
        assert first == second == "spatialreal-avatar"
        assert room.joins[0][1] != room.joins[1][1]
        assert emu.stats.closes_sent == 1
        configs = list(emu.egress_configs.values())
        assert len(configs) == 2
        assert configs[0] == configs[1]  # the same egress configuration, the same token
        follow = session.audio(PCM[:6400], end=True)
        assert follow is not None
        await listener.event(Kind.ENDED, follow)
        assert room.published_audio()[follow] == PCM[:6400]
        assert not session.ended
        assert session.connector.connections == 2
        await listener.aclose()


async def test_a_refusing_close_code_ends_the_session(emu: Emulator) -> None:
    async with running_rtc(rtc_settings(emu)) as rtc:
        created = await rtc.create()
        session = rtc.session(created["sessionId"])
        listener = Listener(session)
        emu.faults.close_after_frames = (2, 4001)
        session.audio(PCM, end=True)
        closed = await listener.event(Kind.CLOSED)
        assert closed.code is ErrorCode.CREDITS_EXHAUSTED
        await session.wait_closed()
        assert emu.stats.connections_opened == 1  # never reconnected
        await emu.wait_until(lambda: created["roomName"] not in emu.livekit.rooms)
        await listener.aclose()


async def test_a_listener_that_comes_late_hears_the_session_from_the_start(emu: Emulator) -> None:
    async with running_rtc(rtc_settings(emu)) as rtc:
        created = await rtc.create()
        session = rtc.session(created["sessionId"])
        early = Listener(session)
        req_id = session.audio(PCM[:6400], end=True)
        await early.event(Kind.ENDED, req_id)
        late = Listener(session)
        await late.event(Kind.ENDED, req_id)
        assert late.kinds() == early.kinds() == [Kind.STARTED, Kind.PLAYING, Kind.ENDED]
        session.close()
        await late.event(Kind.CLOSED)
        await early.event(Kind.CLOSED)
        assert not session._listeners  # both iterations ended and let go of their queues
        await early.aclose()
        await late.aclose()
