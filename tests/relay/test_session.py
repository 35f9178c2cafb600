"""The relay core, one rule at a time: conversations, interrupt, dedup, acks, resume, limits,
and the stable code every bad input gets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import ErrorCode, spec
from app.relay.effects import (
    CloseClient,
    ConversationEnded,
    InterruptUpstream,
    ReleaseUpstream,
    SendToClient,
    SendUpstream,
    SessionEnded,
)
from app.relay.session import RelayLimits
from avatar_relay_client import browser_protocol as p
from tests.relay.sim import audio, cid, connect, new_session, of_type, to_client
from tests.relay.test_protocol import VECTORS


def _fatal(effects: list[Any], code: ErrorCode) -> None:
    """The documented ending: ERROR{code}, close with the code's close code, session over."""
    assert p.ServerError(code, to_client(effects)[-1].message) == to_client(effects)[-1]  # type: ignore[union-attr]
    closes = of_type(effects, CloseClient)
    assert [c.close_code for c in closes] == [spec(code).close_code]
    assert of_type(effects, SessionEnded) == [SessionEnded(code)]


def test_hello_gets_welcome() -> None:
    s = new_session()
    effects = connect(s)
    assert to_client(effects) == [p.Welcome("rs_test", 0, 0, 16000, 30_000, resumed=False)]
    assert s.connected


def test_first_message_must_be_hello() -> None:
    s = new_session()
    s.on_client_connected(1, 0)
    effects = s.on_client_message(1, audio(1), 0)
    _fatal(effects, ErrorCode.INVALID_REQUEST)
    assert s.ended
    assert s.on_client_message(1, audio(1), 0) == []


def test_second_hello_is_invalid() -> None:
    s = new_session()
    connect(s)
    _fatal(s.on_client_message(1, p.Hello(0), 0), ErrorCode.INVALID_REQUEST)


def test_audio_starts_a_conversation_and_is_echoed() -> None:
    s = new_session()
    connect(s)
    e1 = s.on_client_message(1, audio(1, b"\x01\x02"), 1)
    e2 = s.on_client_message(1, audio(2, b"\x03\x04", end=True), 1)
    assert of_type(e1 + e2, SendUpstream) == [
        SendUpstream(cid(1), b"\x01\x02", False),
        SendUpstream(cid(1), b"\x03\x04", True),
    ]
    assert to_client(e1) == [p.ServerAudio(1, cid(1), b"\x01\x02", first=True)]
    # the end of an utterance is acknowledged at once
    assert to_client(e2) == [p.ServerAudio(2, cid(1), b"\x03\x04", end=True), p.ServerAck(2)]


def test_empty_end_chunk_still_opens_and_closes_a_conversation() -> None:
    s = new_session()
    connect(s)
    effects = s.on_client_message(1, p.ClientAudio(1, b"", True), 0)
    assert of_type(effects, SendUpstream) == [SendUpstream(cid(1), b"", True)]
    assert to_client(effects)[0] == p.ServerAudio(1, cid(1), b"", first=True, end=True)


def test_frames_follow_audio_verbatim_and_end_the_conversation() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1, end=True), 0)
    raw = b"\x08\x05\x32\x00anything-the-ingress-sent"
    assert to_client(s.on_upstream_frame(cid(1), raw, False, 0)) == [p.ServerFrame(2, cid(1), raw)]
    effects = s.on_upstream_frame(cid(1), b"last", True, 0)
    assert to_client(effects) == [p.ServerFrame(3, cid(1), b"last", end=True)]
    assert of_type(effects, ConversationEnded) == [ConversationEnded(cid(1), "completed")]
    # nothing of it after its final frame
    assert s.on_upstream_frame(cid(1), b"late", False, 0) == []
    assert s.stats.frames_dropped == 1
    # the next utterance is a new conversation
    assert to_client(s.on_client_message(1, audio(2), 0))[0] == p.ServerAudio(
        4, cid(2), b"\x01\x00", first=True
    )


def test_frames_for_unknown_requests_are_dropped() -> None:
    s = new_session()
    connect(s)
    assert s.on_upstream_frame("20990101000000_nobodysaidit", b"x", False, 0) == []


def test_conversations_never_interleave() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1, b"A1", end=True), 0)
    s.on_upstream_frame(cid(1), b"fA1", False, 0)
    # utterance B starts while A is still animating: sent upstream now, held for the client
    e = s.on_client_message(1, audio(2, b"B1"), 0)
    assert of_type(e, SendUpstream) == [SendUpstream(cid(2), b"B1", False)]
    assert to_client(e) == []
    assert to_client(s.on_upstream_frame(cid(2), b"fB1", False, 0)) == []
    assert to_client(s.on_upstream_frame(cid(1), b"fA2", False, 0)) == [
        p.ServerFrame(3, cid(1), b"fA2")
    ]
    assert s.buffered_messages == 3 + 2  # 3 unacked in the replay buffer, 2 held for B
    # A ends: B's held audio and frame follow at once, audio first
    effects = s.on_upstream_frame(cid(1), b"fA3", True, 0)
    assert to_client(effects) == [
        p.ServerFrame(4, cid(1), b"fA3", end=True),
        p.ServerAudio(5, cid(2), b"B1", first=True),
        p.ServerFrame(6, cid(2), b"fB1"),
    ]
    assert of_type(effects, ConversationEnded) == [ConversationEnded(cid(1), "completed")]
    # B is now live
    assert to_client(s.on_client_message(1, audio(3, b"B2", end=True), 0))[0] == p.ServerAudio(
        7, cid(2), b"B2", end=True
    )


def test_a_queued_conversation_that_already_finished_is_flushed_whole() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1, b"A1", end=True), 0)
    s.on_client_message(1, audio(2, b"B1", end=True), 0)
    s.on_upstream_frame(cid(2), b"fB", True, 0)
    s.on_client_message(1, audio(3, b"C1", end=True), 0)
    effects = s.on_upstream_frame(cid(1), b"fA", True, 0)
    assert [(type(m).__name__, m.conversation_id) for m in to_client(effects)] == [  # type: ignore[union-attr]
        ("ServerFrame", cid(1)),
        ("ServerAudio", cid(2)),
        ("ServerFrame", cid(2)),
        ("ServerAudio", cid(3)),
    ]
    assert of_type(effects, ConversationEnded) == [
        ConversationEnded(cid(1), "completed"),
        ConversationEnded(cid(2), "completed"),
    ]


def test_interrupt_stops_everything_begun_before_it() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1, b"A1", end=True), 0)
    s.on_upstream_frame(cid(1), b"fA1", False, 0)
    s.on_client_message(1, audio(2, b"B1"), 0)  # queued behind A
    effects = s.on_client_message(1, p.ClientInterrupt(3), 0)
    assert to_client(effects) == [p.Interrupted(3, cid(1)), p.ServerAck(3)]
    assert of_type(effects, InterruptUpstream) == [
        InterruptUpstream(cid(1)),
        InterruptUpstream(cid(2)),
    ]
    assert of_type(effects, ConversationEnded) == [
        ConversationEnded(cid(1), "interrupted"),
        ConversationEnded(cid(2), "interrupted"),
    ]
    # late frames of both are dropped
    assert s.on_upstream_frame(cid(1), b"late", True, 0) == []
    assert s.on_upstream_frame(cid(2), b"late", False, 0) == []
    # the next audio starts a new conversation, even mid-utterance
    e = s.on_client_message(1, audio(4, b"C1"), 0)
    assert of_type(e, SendUpstream) == [SendUpstream(cid(3), b"C1", False)]
    assert to_client(e) == [p.ServerAudio(4, cid(3), b"C1", first=True)]


def test_interrupt_with_nothing_playing_is_still_confirmed() -> None:
    s = new_session()
    connect(s)
    effects = s.on_client_message(1, p.ClientInterrupt(1), 0)
    assert to_client(effects) == [p.Interrupted(1, ""), p.ServerAck(1)]
    assert of_type(effects, InterruptUpstream) == []


def test_finished_upstream_is_not_interrupted_again() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1, end=True), 0)
    s.on_client_message(1, audio(2, end=True), 0)
    s.on_upstream_frame(cid(2), b"f", True, 0)  # B finished upstream, held behind A
    effects = s.on_client_message(1, p.ClientInterrupt(3), 0)
    assert of_type(effects, InterruptUpstream) == [InterruptUpstream(cid(1))]


def test_duplicates_are_dropped_and_reacknowledged() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1), 0)
    effects = s.on_client_message(1, audio(1), 0)
    assert of_type(effects, SendUpstream) == []
    assert to_client(effects) == [p.ServerAck(1)]
    assert s.stats.client_duplicates == 1


def test_a_sequence_gap_is_bad_sequence() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1), 0)
    _fatal(s.on_client_message(1, audio(3), 0), ErrorCode.BAD_SEQUENCE)


def test_acks_are_batched_and_flushed_on_tick() -> None:
    s = new_session(ack_every=3, ack_delay=0.5)
    connect(s)
    assert p.ServerAck(1) not in to_client(s.on_client_message(1, audio(1), 0))
    assert s.next_deadline() == 0.5
    assert to_client(s.on_tick(0.4)) == []
    assert to_client(s.on_tick(0.5)) == [p.ServerAck(1)]
    s.on_client_message(1, audio(2), 1)
    s.on_client_message(1, audio(3), 1)
    assert to_client(s.on_client_message(1, audio(4), 1))[-1] == p.ServerAck(4)


def test_ack_trims_the_replay_buffer_and_future_acks_are_bad() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1), 0)
    s.on_client_message(1, audio(2), 0)
    assert s.buffered_messages == 2
    assert s.on_client_message(1, p.ClientAck(1), 0) == []
    assert s.buffered_messages == 1
    assert s.on_client_message(1, p.ClientAck(0), 0) == []  # stale ack: harmless
    _fatal(s.on_client_message(1, p.ClientAck(3), 0), ErrorCode.BAD_ACK)


def test_upstream_error_aborts_and_swallows_the_rest_of_the_utterance() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1, b"A1"), 0)
    effects = s.on_upstream_error(cid(1), ErrorCode.UPSTREAM_ERROR, "driven server failed", 0)
    assert to_client(effects) == [
        p.ConversationAborted(2, cid(1), "upstreamError", "driven server failed")
    ]
    assert of_type(effects, ConversationEnded) == [
        ConversationEnded(cid(1), "aborted", ErrorCode.UPSTREAM_ERROR)
    ]
    # the rest of that utterance is acknowledged but goes nowhere
    e = s.on_client_message(1, audio(2, b"A2", end=True), 0)
    assert of_type(e, SendUpstream) == []
    assert to_client(e) == [p.ServerAck(2)]
    assert s.on_upstream_frame(cid(1), b"late", False, 0) == []
    # the next utterance is a new conversation
    e = s.on_client_message(1, audio(3, b"B1"), 0)
    assert of_type(e, SendUpstream) == [SendUpstream(cid(2), b"B1", False)]


def test_upstream_lost_aborts_every_waiting_conversation_in_order() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1, b"A1", end=True), 0)
    s.on_client_message(1, audio(2, b"B1", end=True), 0)
    effects = s.on_upstream_lost(ErrorCode.CONNECTION_CLOSED, "gone", 0)
    assert to_client(effects) == [
        p.ConversationAborted(2, cid(1), "connectionClosed", "gone"),
        p.ServerAudio(3, cid(2), b"B1", first=True, end=True),
        p.ConversationAborted(4, cid(2), "connectionClosed", "gone"),
    ]
    assert not s.ended
    e = s.on_client_message(1, audio(3, b"C1"), 0)
    assert of_type(e, SendUpstream) == [SendUpstream(cid(3), b"C1", False)]


def test_resume_replays_exactly_the_missing_messages() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1, b"A1", end=True), 0)
    s.on_upstream_frame(cid(1), b"f1", False, 0)
    s.on_client_disconnected(1, 1)
    assert s.on_upstream_frame(cid(1), b"f2", False, 1) == []  # kept, not sent
    s.on_upstream_frame(cid(1), b"f3", True, 1)
    effects = connect(s, conn=2, last_seq=1, now=2)
    assert to_client(effects) == [
        p.Welcome("rs_test", 1, 4, 16000, 30_000, resumed=True),
        p.ServerFrame(2, cid(1), b"f1"),
        p.ServerFrame(3, cid(1), b"f2"),
        p.ServerFrame(4, cid(1), b"f3", end=True),
    ]
    assert s.stats.resumes == 1
    # then live
    assert to_client(s.on_client_message(2, audio(2, b"B0", end=True), 2))[0].seq == 5  # type: ignore[union-attr]


def test_resume_from_a_trimmed_point_fails_explicitly() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1), 0)
    s.on_client_message(1, audio(2), 0)
    s.on_client_message(1, p.ClientAck(2), 0)
    s.on_client_disconnected(1, 1)
    effects = connect(s, conn=2, last_seq=1, now=1)
    assert to_client(effects) == [p.ResumeFailed(1, 3, "resumeFailed")]
    assert of_type(effects, CloseClient) == [CloseClient(2, 4409, "resumeFailed")]
    assert of_type(effects, SessionEnded) == [SessionEnded(ErrorCode.RESUME_FAILED)]


def test_resume_from_beyond_what_was_sent_is_bad_ack() -> None:
    s = new_session()
    connect(s)
    s.on_client_disconnected(1, 1)
    s.on_client_connected(2, 1)
    _fatal(s.on_client_message(2, p.Hello(5), 1), ErrorCode.BAD_ACK)


def test_a_newer_connection_replaces_the_old_one() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1), 0)
    effects = s.on_client_connected(2, 1)
    assert effects == [CloseClient(1, 4001, "connectionReplaced")]
    # the old connection's late messages and disconnect are ignored
    assert s.on_client_message(1, audio(2), 1) == []
    assert s.on_client_disconnected(1, 1) == []
    assert s.connection == 2
    assert to_client(s.on_client_message(2, p.Hello(0), 1))[1] == p.ServerAudio(
        1, cid(1), b"\x01\x00", first=True
    )


def test_a_client_that_does_not_ack_is_cut_off_as_slow_consumer() -> None:
    s = new_session(replay_buffer_messages=16)
    connect(s)
    s.on_client_message(1, audio(1), 0)
    for _ in range(15):  # 16 messages fit
        assert not of_type(s.on_upstream_frame(cid(1), b"f", False, 0), SessionEnded)
    effects = s.on_upstream_frame(cid(1), b"f", False, 0)
    _fatal(effects, ErrorCode.SLOW_CONSUMER)
    assert spec(ErrorCode.SLOW_CONSUMER).close_code == 4008
    assert s.buffered_messages == 0


def test_acking_client_never_overflows() -> None:
    s = new_session(replay_buffer_messages=16)
    connect(s)
    s.on_client_message(1, audio(1), 0)
    for _ in range(100):
        (frame,) = to_client(s.on_upstream_frame(cid(1), b"f", False, 0))
        s.on_client_message(1, p.ClientAck(frame.seq), 0)  # type: ignore[union-attr]
    assert not s.ended
    assert s.buffered_messages == 0


def test_byte_bound_counts_held_messages_too() -> None:
    s = new_session(replay_buffer_bytes=65_536)
    connect(s)
    s.on_client_message(1, audio(1, end=True), 0)
    s.on_client_message(1, audio(2), 0)  # B is held behind A
    effects = s.on_upstream_frame(cid(2), b"\x00" * 70_000, False, 0)
    _fatal(effects, ErrorCode.SLOW_CONSUMER)


def test_an_overflow_while_flushing_a_held_conversation_still_ends_it() -> None:
    # The shell forgets an upstream request on ConversationEnded: every one must get it.
    s = new_session(replay_buffer_bytes=200)
    connect(s)
    s.on_client_message(1, audio(1, end=True), 0)  # A live
    s.on_client_message(1, audio(2, end=True), 0)  # B held behind it
    s.on_upstream_frame(cid(2), b"x" * 100, True, 0)  # B finished upstream, still held
    # A ends; B's messages grow by their headers as they are released, and overflow
    effects = s.on_upstream_frame(cid(1), b"", True, 0)
    _fatal(effects, ErrorCode.SLOW_CONSUMER)
    assert of_type(effects, ConversationEnded) == [
        ConversationEnded(cid(1), "completed"),
        ConversationEnded(cid(2), "aborted", ErrorCode.SLOW_CONSUMER),
    ]


def test_overflow_while_away_makes_the_resume_fail() -> None:
    s = new_session(replay_buffer_messages=16)
    connect(s)
    s.on_client_message(1, audio(1), 0)
    s.on_client_disconnected(1, 1)
    effects: list[Any] = []
    for _ in range(20):
        effects += s.on_upstream_frame(cid(1), b"f", False, 1)
    assert of_type(effects, ReleaseUpstream) == [ReleaseUpstream()]
    assert of_type(effects, ConversationEnded) == [
        ConversationEnded(cid(1), "aborted", ErrorCode.SLOW_CONSUMER)
    ]
    assert not s.ended
    effects = connect(s, conn=2, last_seq=0, now=2)
    assert to_client(effects) == [p.ResumeFailed(0, 18, "slowConsumer")]
    assert of_type(effects, SessionEnded) == [SessionEnded(ErrorCode.RESUME_FAILED)]


def test_resume_window_expiry_ends_the_session() -> None:
    s = new_session(resume_window=5)
    connect(s)
    s.on_client_disconnected(1, 10)
    assert s.next_deadline() == 15
    assert s.on_tick(14.9) == []
    assert s.on_tick(15) == [SessionEnded(ErrorCode.SESSION_CLOSED)]
    assert s.next_deadline() is None
    assert s.on_client_connected(2, 16) == [CloseClient(2, 4410, "sessionClosed")]


def test_nobody_connecting_within_the_window_ends_the_session() -> None:
    s = new_session(resume_window=5)
    assert s.on_tick(5) == [SessionEnded(ErrorCode.SESSION_CLOSED)]


def test_idle_timeout() -> None:
    s = new_session(idle_timeout=60)
    connect(s)
    s.on_client_message(1, audio(1, end=True), 10)
    assert not of_type(s.on_tick(69), SessionEnded)
    effects = s.on_tick(70)
    _fatal(effects, ErrorCode.IDLE_TIMEOUT)


def test_maximum_session_duration() -> None:
    s = new_session(max_session=100, idle_timeout=1000, ping_interval=1000)
    connect(s)
    assert not s.on_tick(99)
    _fatal(s.on_tick(100), ErrorCode.SESSION_DURATION_EXCEEDED)


def test_hello_timeout_closes_the_connection_but_keeps_the_session() -> None:
    s = new_session(hello_timeout=3)
    s.on_client_connected(1, 0)
    assert s.on_tick(3) == [CloseClient(1, 4400, "no HELLO")]
    assert not s.ended
    assert not s.connected


def test_pings_and_pongs() -> None:
    s = new_session(ping_interval=10)
    connect(s)
    assert to_client(s.on_tick(10)) == [p.ServerPing(1)]
    assert s.on_client_message(1, p.ClientPong(1), 10) == []
    assert to_client(s.on_client_message(1, p.ClientPing(77), 10)) == [p.ServerPong(77)]


def test_bye_ends_the_session_normally() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1), 0)
    effects = s.on_client_message(1, p.Bye(), 0)
    assert of_type(effects, CloseClient) == [CloseClient(1, 1000, "bye")]
    assert of_type(effects, SessionEnded) == [SessionEnded(None)]
    # audio after close goes nowhere; a reconnect is refused with sessionClosed
    assert s.on_client_message(1, audio(2), 0) == []
    assert s.on_client_connected(2, 0) == [CloseClient(2, 4410, "sessionClosed")]


def test_shutdown_says_going_away() -> None:
    s = new_session()
    connect(s)
    effects = s.on_shutdown(0)
    _fatal(effects, ErrorCode.GOING_AWAY)
    assert of_type(effects, CloseClient)[0].close_code == 1001


@pytest.mark.parametrize(
    "vector", [v for v in VECTORS["invalid"] if v["direction"] == "client"], ids=lambda v: v["name"]
)
def test_every_bad_client_message_gets_its_error_and_close_code(vector: dict[str, Any]) -> None:
    s = new_session()
    connect(s)
    effects = s.on_client_data(1, bytes.fromhex(vector["hex"]), 0)
    _fatal(effects, ErrorCode(vector["error"]))


def test_oversized_message_closes_with_1009() -> None:
    s = new_session(max_message_bytes=1024)
    connect(s)
    effects = s.on_client_data(1, p.encode_client(audio(1, b"\x00" * 1100)), 0)
    _fatal(effects, ErrorCode.MESSAGE_TOO_LARGE)
    assert of_type(effects, CloseClient)[0].close_code == 1009


def test_limits_from_settings() -> None:
    from app.settings import Settings

    settings = Settings(resume_window_seconds=7, replay_buffer_messages=100)
    limits = RelayLimits.from_settings(settings)
    assert limits.resume_window == 7
    assert limits.replay_buffer_messages == 100
    assert json.dumps(limits.max_message_bytes) == str(settings.max_message_bytes)


def test_sends_go_only_to_the_current_connection() -> None:
    s = new_session()
    connect(s)
    s.on_client_disconnected(1, 0)
    s.on_client_connected(2, 0)
    effects = s.on_client_message(2, p.Hello(0), 0)
    assert {e.conn for e in of_type(effects, SendToClient)} == {2}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["audio", "end", "frame", "cut", "back"]), st.integers(0, 300)),
        max_size=200,
    )
)
def test_memory_stays_bounded_whatever_the_client_does(ops: list[tuple[str, int]]) -> None:
    limit_messages, limit_bytes = 32, 65_536
    s = new_session(replay_buffer_messages=limit_messages, replay_buffer_bytes=limit_bytes)
    connect(s)
    conn, seq = 1, 0
    req_ids: list[str] = []
    for op, size in ops:
        effects: list[Any] = []
        if op in ("audio", "end") and s.connected:
            seq += 1
            chunk = audio(seq, b"\x00" * (2 * size + 2), end=op == "end")
            effects = s.on_client_message(conn, chunk, 0)
        elif op == "frame":
            for req_id in req_ids:
                effects += s.on_upstream_frame(req_id, b"\x00" * (size * 200), False, 0)
        elif op == "cut":
            s.on_client_disconnected(conn, 0)
        elif op == "back" and not s.connected:
            conn += 1
            connect(s, conn=conn, last_seq=s.server_seq, now=0)
        req_ids += [e.req_id for e in of_type(effects, SendUpstream) if e.req_id not in req_ids]
        if s.ended:
            break
        # over the limit, the session ends (connected) or drops its buffer (away) at once
        assert s.buffered_messages <= limit_messages
        assert s.buffered_bytes <= limit_bytes
