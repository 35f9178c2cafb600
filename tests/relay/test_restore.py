"""The core continued on another instance: snapshot + each endpoint's saved seqs and replay
buffer in, the same session out; the conversations the dead instance had in flight are aborted
explicitly, after the browser's replay, and the next one works."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import ErrorCode
from app.relay.conversations import AudioRouting
from app.relay.durable import decode_snapshot, encode_snapshot
from app.relay.effects import SendUpstream
from app.relay.session import RelayLimits, RelaySession
from avatar_relay_client import browser_protocol as p
from avatar_relay_client import producer_protocol as pp
from tests.relay.sim import Ids, audio, cid, connect, new_session, of_type, to_client


def saved(s: RelaySession) -> dict[str, tuple[int, int, list[bytes]]]:
    """Each endpoint as the store would load it."""
    out: dict[str, tuple[int, int, list[bytes]]] = {}
    for role in s.roles:
        ep = s.endpoint(role)
        assert ep is not None
        out[role] = (ep.client_seq, ep.replay.acked, list(ep.replay.after(ep.replay.acked)))
    return out


def fresh(now: float, **limits: Any) -> RelaySession:
    """Another instance's core: its conversation ids are its own (from 101 on)."""
    ids = Ids()
    ids.count = 100
    return RelaySession(
        "rs_test",
        sample_rate=16000,
        limits=RelayLimits(**limits),
        new_conversation_id=ids,
        now=now,
    )


def moved(s: RelaySession, now: float = 5.0) -> RelaySession:
    """`s` continued by a fresh core, its snapshot through the bytes the store keeps."""
    snapshot = decode_snapshot(encode_snapshot(s.snapshot(now)))
    successor = fresh(now)
    successor.restore(snapshot, saved(s), now)
    return successor


def test_a_conversation_in_flight_is_aborted_after_the_replay_and_the_next_works() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1), 0)
    s.on_client_message(1, audio(2, end=True), 0)
    s.on_upstream_frame(cid(1), b"f1", False, 0)
    s.on_client_message(1, p.ClientAck(1), 0)
    b = moved(s)
    assert b.client_seq == 2
    assert b.server_seq == 3
    effects = connect(b, conn=7, last_seq=2, now=5)
    messages = to_client(effects)
    assert messages[0] == p.Welcome("rs_test", 2, 3, 16000, 30_000, resumed=True)
    assert messages[1] == p.ServerFrame(3, cid(1), b"f1")  # the replay, byte for byte
    aborted = messages[2]
    assert isinstance(aborted, p.ConversationAborted)
    assert (aborted.seq, aborted.conversation_id, aborted.code) == (4, cid(1), "connectionClosed")
    # Late frames of the dead upstream's request go nowhere; the next utterance works.
    assert b.on_upstream_frame(cid(1), b"late", False, 5) == []
    effects = b.on_client_message(7, audio(3, end=True), 5)
    assert of_type(effects, SendUpstream) == [SendUpstream(cid(101), b"\x01\x00", True)]
    assert to_client(effects)[0] == p.ServerAudio(5, cid(101), b"\x01\x00", first=True, end=True)


def test_messages_sent_but_not_saved_are_taken_from_the_browsers_hello() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1, end=True), 0)
    state = saved(s)  # saved after the echo (seq 1) ...
    snapshot = decode_snapshot(encode_snapshot(s.snapshot(0)))
    s.on_upstream_frame(cid(1), b"f", False, 0)  # ... seq 2 was sent, then the instance died
    b = fresh(3)
    b.restore(snapshot, state, 3)
    messages = to_client(connect(b, last_seq=2, now=3))
    assert messages[0] == p.Welcome("rs_test", 1, 2, 16000, 30_000, resumed=True)
    assert isinstance(messages[1], p.ConversationAborted)
    assert messages[1].seq == 3


def test_a_held_conversation_is_released_then_aborted_in_order() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1, end=True), 0)  # conversation 1, live
    s.on_client_message(1, audio(2, b"\x05\x00", end=True), 0)  # conversation 2, held
    b = moved(s)
    messages = to_client(connect(b, last_seq=1, now=5))
    kinds = [
        (type(m).__name__, getattr(m, "seq", None))
        for m in messages
        if not isinstance(m, p.ServerAck)
    ]
    assert kinds == [
        ("Welcome", None),
        ("ConversationAborted", 2),
        ("ServerAudio", 3),
        ("ConversationAborted", 4),
    ]
    assert messages[2] == p.ServerAudio(3, cid(2), b"\x05\x00", first=True, end=True)


def test_the_rest_of_an_aborted_utterance_is_discarded_up_to_its_end() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1), 0)  # an utterance in progress
    b = moved(s)
    connect(b, last_seq=1, now=5)
    assert of_type(b.on_client_message(1, audio(2), 5), SendUpstream) == []
    assert of_type(b.on_client_message(1, audio(3, end=True), 5), SendUpstream) == []
    effects = b.on_client_message(1, audio(4, end=True), 5)
    assert of_type(effects, SendUpstream) == [SendUpstream(cid(101), b"\x01\x00", True)]


def test_a_resume_from_before_what_was_acknowledged_still_fails() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1, end=True), 0)
    s.on_upstream_frame(cid(1), b"f", True, 0)
    s.on_client_message(1, p.ClientAck(2), 0)
    b = moved(s)
    messages = to_client(connect(b, last_seq=1, now=5))
    assert isinstance(messages[0], p.ResumeFailed)


def test_the_session_keeps_its_age_and_limits() -> None:
    s = new_session(max_session=100.0)
    connect(s)
    b = fresh(1000.0, max_session=100.0)
    b.restore(decode_snapshot(encode_snapshot(s.snapshot(60.0))), saved(s), 1000.0)
    deadline = b.next_deadline()
    assert deadline is not None
    assert deadline <= 1040.0 + 1e-6  # 40 s of its 100 left


def test_the_snapshot_is_plain_json() -> None:
    s = new_session()
    connect(s)
    s.on_client_message(1, audio(1, end=True), 0)
    s.on_client_message(1, audio(2, b"\xff\x7f", end=True), 0)
    raw = encode_snapshot(s.snapshot(0))
    assert json.loads(raw)["conversations"]["queue"][1]["held"]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(["chunk", "end", "interrupt", "frame", "last", "ack"]), max_size=30)
)
def test_whatever_was_going_on_the_successor_tells_a_consistent_story(ops: list[str]) -> None:
    """After a move: seqs continue without gap or repeat, every conversation the browser saw
    begin ends (completed, interrupted or aborted), and a new utterance starts one."""
    s = new_session()
    connect(s)
    seq = 0
    got: list[p.ServerMessage] = []
    open_ids: list[str] = []
    for op in ops:
        if op in ("chunk", "end"):
            seq += 1
            effects = s.on_client_message(1, audio(seq, end=op == "end"), 0)
        elif op == "interrupt":
            seq += 1
            effects = s.on_client_message(1, p.ClientInterrupt(seq), 0)
        elif op == "ack":
            effects = s.on_client_message(1, p.ClientAck(s.server_seq), 0)
        else:
            effects = s.on_upstream_frame(open_ids[0], b"f", op == "last", 0) if open_ids else []
        for m in to_client(effects):
            got.append(m)
            if isinstance(m, p.ServerAudio) and m.first:
                open_ids.append(m.conversation_id)
    b = moved(s)
    last = max((m.seq for m in got if isinstance(m, p.SequencedServerMessage)), default=0)
    after = to_client(connect(b, last_seq=last, now=5))
    seq += 1
    after += to_client(b.on_client_message(1, audio(seq, end=True), 5))
    stream = [m for m in got + after if isinstance(m, p.SequencedServerMessage)]
    assert [m.seq for m in stream] == list(range(1, len(stream) + 1))
    begun: list[str] = []
    ended: set[str] = set()
    for m in stream:
        if isinstance(m, p.Interrupted):
            ended.update(begun)
            continue
        if isinstance(m, p.ServerAudio) and m.first:
            begun.append(m.conversation_id)
        if (isinstance(m, p.ServerFrame) and m.end) or isinstance(m, p.ConversationAborted):
            ended.add(m.conversation_id)
    assert set(begun[:-1]) <= ended  # all but the one the last utterance started
    aborted = [m for m in after if isinstance(m, p.ConversationAborted)]
    assert all(m.code == ErrorCode.CONNECTION_CLOSED for m in aborted)


def test_a_conversation_begun_on_the_successor_before_the_browser_is_back_is_not_aborted() -> None:
    # A producer reconnects first and says something new; only what the dead instance had in
    # flight is aborted when the browser comes back, not the successor's own conversation.
    producer_routing = AudioRouting("producer")
    s = new_session(routing=producer_routing)
    connect(s, 1)
    s.on_connected("producer", 2, 0)
    s.on_message("producer", 2, pp.Hello(0), 0)
    s.on_message("producer", 2, pp.Audio(1, b"\x01\x00", True), 0)  # in flight at the kill
    producer = s.endpoint("producer")
    assert producer is not None
    snapshot = decode_snapshot(encode_snapshot(s.snapshot(5)))
    ids = Ids()
    ids.count = 100
    b = RelaySession(
        "rs_test",
        sample_rate=16000,
        limits=RelayLimits(),
        new_conversation_id=ids,
        now=5,
        routing=producer_routing,
    )
    b.restore(snapshot, saved(s), 5)
    b.on_connected("producer", 9, 5)
    b.on_message("producer", 9, pp.Hello(producer.replay.last_seq), 5)
    b.on_message("producer", 9, pp.Audio(2, b"\x02\x00", True), 5)  # after the takeover
    messages = to_client(connect(b, conn=8, last_seq=s.server_seq, now=5), conn=8)
    aborted = [m for m in messages if isinstance(m, p.ConversationAborted)]
    assert [m.conversation_id for m in aborted] == [cid(1)]
    assert p.ServerAudio(aborted[0].seq + 1, cid(101), b"\x02\x00", first=True, end=True) in (
        messages
    )
    frame = to_client(b.on_upstream_frame(cid(101), b"f", True, 5), conn=8)
    assert frame == [p.ServerFrame(aborted[0].seq + 2, cid(101), b"f", end=True)]
