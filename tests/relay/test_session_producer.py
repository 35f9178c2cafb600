"""The relay core with a producer endpoint, one rule at a time: whose audio is speech, the
producer's events, barge-in, the microphone, and how either side's end ends both."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.errors import ErrorCode, spec
from app.relay.conversations import AudioRouting
from app.relay.effects import (
    CloseClient,
    Effect,
    InterruptUpstream,
    SendToClient,
    SendUpstream,
    SessionEnded,
)
from app.relay.session import RelaySession
from avatar_relay_client import browser_protocol as p
from avatar_relay_client import producer_protocol as pp
from tests.relay.sim import cid, connect, new_session, of_type, to_client

B, P = 1, 2  # connection numbers: unique across the endpoints
PRODUCER = AudioRouting("producer")
MICROPHONE = AudioRouting("producer", forward_microphone=True)
BOTH = AudioRouting("browser", allow_producer=True)


def events(effects: Iterable[Effect], conn: int = P) -> list[pp.ServerMessage]:
    return [
        pp.decode_server(e.data) for e in effects if isinstance(e, SendToClient) and e.conn == conn
    ]


def start(routing: AudioRouting = PRODUCER, **limits: Any) -> RelaySession:
    s = new_session(routing=routing, **limits)
    connect(s, B)
    s.on_connected("producer", P, 0)
    s.on_message("producer", P, pp.Hello(0), 0)
    return s


def say(s: RelaySession, seq: int, pcm: bytes = b"\x01\x00" * 8, end: bool = False) -> list[Effect]:
    return s.on_message("producer", P, pp.Audio(seq, pcm, end), 0)


def test_the_producer_is_welcomed_with_the_browser_already_there() -> None:
    s = new_session(routing=MICROPHONE)
    connect(s, B)
    s.on_connected("producer", P, 0)
    effects = s.on_message("producer", P, pp.Hello(0), 0)
    assert events(effects) == [
        pp.Welcome("rs_test", 0, 1, 16000, 30_000, microphone=True),
        pp.Browser(1, pp.BrowserState.CONNECTED),  # kept for it, replayed after WELCOME
    ]


def test_producer_audio_is_speech_and_the_browser_gets_it_as_ever() -> None:
    s = start()
    e1 = say(s, 1, b"\x01\x02")
    e2 = say(s, 2, b"\x03\x04", end=True)
    assert of_type(e1 + e2, SendUpstream) == [
        SendUpstream(cid(1), b"\x01\x02", False),
        SendUpstream(cid(1), b"\x03\x04", True),
    ]
    assert to_client(e1, B) == [p.ServerAudio(1, cid(1), b"\x01\x02", first=True)]
    assert to_client(e2, B) == [p.ServerAudio(2, cid(1), b"\x03\x04", end=True)]
    assert events(e1) == [pp.ConversationStarted(2, cid(1), 1)]
    assert events(e2) == [pp.ServerAck(2)]  # the end of an utterance is acknowledged at once


def test_first_frame_and_completion_tell_what_the_browser_was_given() -> None:
    s = start()
    say(s, 1, b"\x00\x00" * 16_000, end=True)  # one second
    first = s.on_upstream_frame(cid(1), b"f1", False, 0)
    assert events(first) == [pp.FirstFrame(3, cid(1))]
    assert events(s.on_upstream_frame(cid(1), b"f2", False, 0)) == []
    last = s.on_upstream_frame(cid(1), b"f3", True, 0)
    assert to_client(last, B) == [p.ServerFrame(4, cid(1), b"f3", end=True)]
    assert events(last) == [pp.ConversationCompleted(4, cid(1), 1000, 3)]


def test_barge_in_cancels_everything_and_discards_the_rest_of_the_utterance() -> None:
    s = start()
    say(s, 1, b"\x00\x00" * 800)  # 50 ms, utterance still open
    s.on_upstream_frame(cid(1), b"f1", False, 0)
    effects = s.on_message("browser", B, p.ClientInterrupt(1), 0)
    assert of_type(effects, InterruptUpstream) == [InterruptUpstream(cid(1))]
    assert p.Interrupted(3, cid(1)) in to_client(effects, B)
    assert events(effects) == [
        pp.BargeIn(4, cid(1)),
        pp.ConversationInterrupted(5, cid(1), 50, 1, by_browser=True),
    ]
    # what was still in flight of that sentence is acknowledged and goes nowhere
    rest = say(s, 2, end=False) + say(s, 3, end=True)
    assert of_type(rest, SendUpstream) == []
    assert to_client(rest, B) == []
    assert pp.ServerAck(3) in events(rest)
    # the next utterance is a new conversation
    again = say(s, 4)
    assert of_type(again, SendUpstream) == [SendUpstream(cid(2), b"\x01\x00" * 8, False)]
    assert events(again) == [pp.ConversationStarted(6, cid(2), 4)]


def test_the_producers_own_interrupt_stops_the_browser_too() -> None:
    s = start()
    say(s, 1, end=True)
    effects = s.on_message("producer", P, pp.Interrupt(2), 0)
    assert to_client(effects, B) == [p.Interrupted(2, cid(1))]
    assert events(effects)[0] == pp.ConversationInterrupted(3, cid(1), 0, 0, by_browser=False)
    assert not any(isinstance(e, pp.BargeIn) for e in events(effects))


def test_browser_audio_without_forwarding_ends_the_session_for_both() -> None:
    s = start()
    effects = s.on_message("browser", B, p.ClientAudio(1, b"\x01\x00"), 0)
    code = ErrorCode.MICROPHONE_DISABLED
    assert isinstance(to_client(effects, B)[0], p.ServerError)
    assert to_client(effects, B)[0].code == code  # type: ignore[union-attr]
    assert events(effects)[0].code == code  # type: ignore[union-attr]
    assert {c.conn for c in of_type(effects, CloseClient)} == {B, P}
    assert {c.close_code for c in of_type(effects, CloseClient)} == {spec(code).close_code}
    assert of_type(effects, SessionEnded) == [SessionEnded(code)]
    assert of_type(effects, SendUpstream) == []


def test_forwarded_microphone_reaches_the_producer_in_order_and_is_not_speech() -> None:
    s = start(MICROPHONE)
    e1 = s.on_message("browser", B, p.ClientAudio(1, b"\x05\x06"), 0)
    e2 = s.on_message("browser", B, p.ClientAudio(2, b"", end=True), 0)
    assert of_type(e1 + e2, SendUpstream) == []
    assert to_client(e1 + e2, B) == [p.ServerAck(2)]  # acknowledged, never echoed
    assert events(e1 + e2) == [
        pp.Microphone(2, b"\x05\x06"),
        pp.Microphone(3, b"", end=True),
    ]


def test_when_both_speak_each_has_its_own_utterance_in_start_order() -> None:
    s = start(BOTH)
    browser = s.on_message("browser", B, p.ClientAudio(1, b"\x01\x00"), 0)
    producer = say(s, 1, b"\x02\x00")
    assert events(browser) == [pp.ConversationStarted(2, cid(1), 1, by_browser=True)]
    assert events(producer) == [pp.ConversationStarted(3, cid(2), 1)]
    assert to_client(producer, B) == []  # held behind the browser's conversation
    done = s.on_upstream_frame(cid(1), b"f", True, 0)
    # the browser's conversation ends, the producer's is flushed: its audio first
    assert [type(m) for m in to_client(done, B)] == [p.ServerFrame, p.ServerAudio]


def test_a_producer_that_does_not_come_back_ends_the_session_and_the_browser_hears_it() -> None:
    s = start()
    s.on_disconnected("producer", P, 1.0)
    s.on_tick(30.9)
    assert not s.ended
    effects = s.on_tick(31.0)
    error = to_client(effects, B)[0]
    assert isinstance(error, p.ServerError)
    assert error.code == ErrorCode.SESSION_CLOSED
    assert of_type(effects, SessionEnded) == [SessionEnded(ErrorCode.SESSION_CLOSED)]


def test_an_allowed_producer_is_optional_until_it_is_welcomed() -> None:
    s = new_session(routing=BOTH, idle_timeout=1000.0)
    connect(s, B)
    s.on_tick(100.0)
    assert not s.ended  # no producer ever came: no resume window runs for it
    s.on_connected("producer", P, 100.0)
    s.on_message("producer", P, pp.Hello(0), 100.0)
    s.on_disconnected("producer", P, 101.0)
    s.on_tick(130.9)
    assert not s.ended
    effects = s.on_tick(131.0)
    assert of_type(effects, SessionEnded) == [SessionEnded(ErrorCode.SESSION_CLOSED)]


def test_no_producer_can_attach_to_a_browser_only_session() -> None:
    s = new_session()
    connect(s, B)
    code = ErrorCode.PRODUCER_NOT_ALLOWED
    assert s.on_connected("producer", P, 0) == [CloseClient(P, spec(code).close_code, code.value)]
    assert s.on_data("producer", P, pp.encode_producer(pp.Hello(0)), 0) == []
    assert not s.ended


def test_bye_from_the_producer_ends_the_session_for_both() -> None:
    s = start()
    effects = s.on_message("producer", P, pp.Bye(), 0)
    assert of_type(effects, CloseClient) == [
        CloseClient(P, 1000, "bye"),
        CloseClient(B, 1000, "bye"),
    ]
    assert of_type(effects, SessionEnded) == [SessionEnded(None)]


def test_an_upstream_refusal_reaches_the_producer_as_an_event_then_an_error() -> None:
    s = start()
    say(s, 1)
    code = ErrorCode.CREDITS_EXHAUSTED
    effects = s.on_upstream_refused(code, "credits exhausted", 0)
    assert events(effects) == [
        pp.ConversationAborted(3, cid(1), 0, 0, code.value, "credits exhausted"),
        pp.ServerError(code.value, "credits exhausted"),
    ]
    assert p.ServerError(code.value, "credits exhausted") in to_client(effects, B)


def test_the_browser_coming_and_going_is_told_to_the_producer() -> None:
    s = start()
    gone = s.on_disconnected("browser", B, 1)
    assert events(gone) == [pp.Browser(2, pp.BrowserState.DISCONNECTED)]
    back = connect(s, 3, last_seq=0, now=2)
    assert events(back) == [pp.Browser(3, pp.BrowserState.RESUMED)]


def test_a_bad_producer_message_ends_the_session_with_its_code() -> None:
    s = start()
    effects = s.on_data("producer", P, bytes((0x02, 0, 1, 0, 0, 0, 1, 0)), 0)  # browser AUDIO
    assert events(effects)[0] == pp.ServerError(
        ErrorCode.UNKNOWN_MESSAGE_TYPE.value, "unknown producer message type 0x02"
    )
    assert of_type(effects, SessionEnded) == [SessionEnded(ErrorCode.UNKNOWN_MESSAGE_TYPE)]


def test_the_producers_buffer_is_bounded_too() -> None:
    s = start(MICROPHONE, replay_buffer_messages=3)
    s.on_disconnected("producer", P, 0)
    effects: list[Effect] = []
    for seq in range(1, 5):
        effects += s.on_message("browser", B, p.ClientAudio(seq, b"\x01\x00"), 0)
    # the producer is away and cannot resume: the connected browser hears slowConsumer
    assert isinstance(to_client(effects, B)[-1], p.ServerError)
    assert of_type(effects, SessionEnded) == [SessionEnded(ErrorCode.SLOW_CONSUMER)]


def test_pause_on_a_relay_session_is_refused_with_its_code() -> None:
    # Host Mode has no playout to hold (revision 2 of the protocol: PAUSE/RESUME are RTC's).
    s = start()
    code = ErrorCode.PLAYBACK_CONTROL_UNAVAILABLE
    effects = s.on_message("producer", P, pp.Pause(1), 0)
    assert events(effects)[0].code == code  # type: ignore[union-attr]
    assert {c.close_code for c in of_type(effects, CloseClient)} == {spec(code).close_code}
    assert of_type(effects, SessionEnded) == [SessionEnded(code)]
    assert of_type(effects, SendUpstream) == []
