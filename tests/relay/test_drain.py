"""The core's drain: conversations in flight finish, new ones are not accepted (the client keeps
them and sends them again wherever the session continues), then the session is handed over."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import ErrorCode
from app.relay.effects import (
    CloseClient,
    Drained,
    InputRefused,
    SendUpstream,
    SessionEnded,
)
from avatar_relay_client import browser_protocol as p
from tests.relay.sim import audio, cid, connect, new_session, of_type, to_client


def test_an_idle_session_is_drained_at_once() -> None:
    s = new_session()
    connect(s)
    assert s.on_drain(1) == [Drained()]
    # told once
    assert of_type(s.on_tick(2), Drained) == []


def test_a_conversation_in_flight_finishes_and_a_new_one_waits() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1), 0)
    assert of_type(s.on_drain(0), Drained) == []
    # the utterance in flight goes on: accepted, sent upstream, echoed, acknowledged
    effects = s.on_client_message(1, audio(2, end=True), 0)
    assert of_type(effects, SendUpstream) == [SendUpstream(cid(1), b"\x01\x00", True)]
    assert p.ServerAck(2) in to_client(effects)
    # the next utterance would start a conversation: not accepted, not acknowledged, told once
    effects = s.on_client_message(1, audio(3), 0)
    assert effects == [InputRefused(3, ErrorCode.GOING_AWAY)]
    assert s.on_client_message(1, audio(4, end=True), 0) == []
    assert s.client_seq == 2
    # a resend of an accepted chunk is still re-acknowledged
    assert to_client(s.on_client_message(1, audio(2, end=True), 0)) == [p.ServerAck(2)]
    # frames of the conversation in flight are delivered; its last one drains the session
    effects = s.on_upstream_frame(cid(1), b"frame-1", False, 0)
    assert to_client(effects) == [p.ServerFrame(3, cid(1), b"frame-1")]
    effects = s.on_upstream_frame(cid(1), b"frame-2", True, 0)
    assert to_client(effects) == [p.ServerFrame(4, cid(1), b"frame-2", end=True)]
    assert of_type(effects, Drained) == [Drained()]
    # handed over: the client hears "reconnect and resume", the session ends here
    effects = s.on_handover(1)
    assert of_type(effects, CloseClient) == [CloseClient(1, 1012, "sessionMoved")]
    assert of_type(effects, SessionEnded) == [SessionEnded(ErrorCode.SESSION_MOVED)]
    assert s.ended


def test_an_interrupt_behind_refused_input_hands_over_at_once() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1, end=True), 0)
    s.on_drain(0)
    assert s.on_client_message(1, audio(2), 0) == [InputRefused(2, ErrorCode.GOING_AWAY)]
    assert s.on_client_message(1, p.ClientInterrupt(3), 0) == [Drained()]


def test_an_interrupt_of_the_conversation_in_flight_is_taken_and_drains() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1, end=True), 0)
    s.on_drain(0)
    effects = s.on_client_message(1, p.ClientInterrupt(2), 0)
    assert p.Interrupted(2, cid(1)) in to_client(effects)
    assert of_type(effects, Drained) == [Drained()]


def test_a_sequence_gap_while_draining_is_still_bad_sequence() -> None:
    s = new_session()
    connect(s)
    s.on_drain(0)
    effects = s.on_client_message(1, audio(5), 0)
    assert of_type(effects, SessionEnded) == [SessionEnded(ErrorCode.BAD_SEQUENCE)]


def test_handover_without_a_client_ends_quietly() -> None:
    s = new_session()
    s.on_drain(0)
    effects = s.on_handover(0)
    assert of_type(effects, CloseClient) == []
    assert of_type(effects, SessionEnded) == [SessionEnded(ErrorCode.SESSION_MOVED)]
    assert s.on_handover(0) == []
    assert s.on_drain(0) == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(["chunk", "end", "interrupt", "frame", "last", "drain"]),
        max_size=40,
    )
)
def test_draining_never_starts_a_conversation_and_always_drains(ops: list[str]) -> None:
    """Whatever happens around the drain: no conversation starts after it, accepted client
    seqs stay a contiguous prefix, and Drained comes exactly once, no later than the moment
    nothing is in flight."""
    s = new_session()
    connect(s)
    seq = 0
    draining = False
    drained = 0
    open_ids: list[str] = []
    started_before: set[str] = set()
    started_after_drain = 0
    for op in ops:
        if op == "drain":
            effects = s.on_drain(0)
            draining = True
        elif op in ("chunk", "end"):
            seq += 1
            effects = s.on_client_message(1, audio(seq, end=op == "end"), 0)
        elif op == "interrupt":
            seq += 1
            effects = s.on_client_message(1, p.ClientInterrupt(seq), 0)
        else:
            effects = []
            if open_ids:
                effects = s.on_upstream_frame(open_ids[0], b"f", op == "last", 0)
        for upstream in of_type(effects, SendUpstream):
            if upstream.req_id not in started_before:
                started_after_drain += draining
                started_before.add(upstream.req_id)
        for message in to_client(effects):
            if isinstance(message, p.ServerAudio) and message.first:
                open_ids.append(message.conversation_id)
        for message in to_client(effects):
            if isinstance(message, p.ServerFrame) and message.end:
                open_ids.remove(message.conversation_id)
            if isinstance(message, p.Interrupted):
                open_ids.clear()
        drained += len(of_type(effects, Drained))
        assert not s.ended
        assert s.client_seq <= seq
    assert started_after_drain == 0
    assert drained <= 1
    if draining and not open_ids:
        assert drained == 1
