"""Property: a session without the echo (`audioEcho: false`) gives its client everything an echo
session gives, and half the messages.

The random runs of `test_session_properties` (client audio and interrupts, upstream frames,
errors and losses, connection cuts and resumes) drive an echo-off core: the consumer sees
exactly what an uncut run delivers, no AUDIO ever comes down, each conversation opens with
CONVERSATION_STARTED, every frame comes once, in order, between its conversation's marker and
its end. The uncut log is then replayed through an echo core and through an echo-off core whose
client yields its own audio (`OwnAudio`): per conversation, in the same order, the consumer gets
the same audio, the same frames and the same ending.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import AppError, ErrorCode
from app.relay.conversations import AudioRouting
from app.relay.effects import Effect, SendToClient
from app.session_records import SessionRecord
from app.sessions import audio_routing
from avatar_relay_client import browser_protocol as p
from avatar_relay_client.own_audio import OwnAudio
from tests.relay.sim import cid, connect, new_session, to_client
from tests.relay.test_session_properties import LIMITS, Event, random_run, uncut_run

NO_ECHO = AudioRouting("browser", echo=False)

Stream = list[p.SequencedServerMessage]


def yielded_run(log: list[Event], routing: AudioRouting) -> Stream:
    """The uncut run as a consumer of the Python client sees it: with the echo off, the client's
    own audio yielded where the relay put its conversation's marker."""
    core = new_session(routing=routing, **LIMITS)
    own = OwnAudio() if not routing.echo else None
    consumer: Stream = []

    def apply(effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, SendToClient):
                message = p.decode_server(effect.data)
                if isinstance(message, p.SequencedServerMessage):
                    consumer.extend([message] if own is None else own.received(message))

    apply(core.on_client_connected(1, 0.0))
    apply(core.on_client_message(1, p.Hello(0), 0.0))
    for event in log:
        match event:
            case ("client", p.ClientAudio(seq, pcm, end) as message):
                if own is not None:
                    consumer.extend(own.sent(seq, pcm, end))
                apply(core.on_client_message(1, message, 0.0))
            case ("client", p.ClientInterrupt(seq) as message):
                if own is not None:
                    consumer.extend(own.sent(seq, None))
                apply(core.on_client_message(1, message, 0.0))
            case ("frame", req_id, raw, end):
                apply(core.on_upstream_frame(req_id, raw, end, 0.0))
            case ("error", req_id, code):
                apply(core.on_upstream_error(req_id, code, "x", 0.0))
            case ("lost", code):
                apply(core.on_upstream_lost(code, "lost", 0.0))  # type: ignore[arg-type]
    return consumer


def by_conversation(stream: Stream) -> list[tuple[str, bytes, list[Any], list[Any]]]:
    """Per conversation, in stream order: its audio, its frames, and how it ended."""
    order: list[str] = []
    audio: dict[str, bytearray] = {}
    frames: dict[str, list[Any]] = {}
    endings: dict[str, list[Any]] = {}
    for message in stream:
        cid = message.conversation_id
        if cid and cid not in audio:
            order.append(cid)
            audio[cid], frames[cid], endings[cid] = bytearray(), [], []
        match message:
            case p.ServerAudio(_, cid, pcm, _, end):
                audio[cid].extend(pcm)
                if end:
                    endings[cid].append("audio end")
            case p.ServerFrame(_, cid, payload, end):
                frames[cid].append((payload, end))
            case p.ConversationAborted(_, cid, code, _):
                endings[cid].append(code)
            case p.Interrupted(_, cid) if cid:
                endings[cid].append("interrupted")
    return [(cid, bytes(audio[cid]), frames[cid], endings[cid]) for cid in order]


def check_markers(stream: Stream) -> None:
    """No echo; a conversation's marker first, then its frames, once each, then its end."""
    assert [m.seq for m in stream] == list(range(1, len(stream) + 1))
    current: str | None = None
    seen: set[str] = set()
    last_input = 0
    frames: set[bytes] = set()
    for message in stream:
        assert not isinstance(message, p.ServerAudio), message
        if isinstance(message, p.ConversationStarted):
            assert message.conversation_id not in seen
            assert message.input_seq > last_input  # conversations in the order they started
            assert message.until_seq == 0 or message.until_seq >= message.input_seq
            last_input = message.input_seq
            seen.add(message.conversation_id)
            current = message.conversation_id
            continue
        if isinstance(message, p.Interrupted):
            assert message.conversation_id in ("", current)
            current = None
            continue
        assert message.conversation_id == current, f"{message!r} outside its conversation"
        if isinstance(message, p.ServerFrame):
            assert message.payload not in frames  # once
            frames.add(message.payload)
        if isinstance(message, p.ConversationAborted) or getattr(message, "end", False):
            current = None


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_echo_off_keeps_every_guarantee_and_gives_the_same_conversations(
    data: st.DataObject,
) -> None:
    run = random_run(data, NO_ECHO)
    assert run.core.client_seq == run.next_seq - 1
    assert run.unacked == []
    expected, upstream = uncut_run(run.log, NO_ECHO)
    assert run.consumer == expected  # cuts and resumes change nothing
    check_markers(expected)
    # every frame once, in order, byte for byte
    for conversation_id, _, got, _ in by_conversation(expected):
        payloads = [payload for payload, _ in got]
        assert run.upstream.frames[conversation_id][: len(payloads)] == payloads

    echo, _ = uncut_run(run.log)
    assert run.upstream.sends == uncut_run(run.log)[1].sends == upstream.sends
    yielded = yielded_run(run.log, NO_ECHO)
    assert by_conversation(yielded) == by_conversation(echo)
    # and the client's own audio comes before its conversation's frames
    assert not any(isinstance(m, p.ConversationStarted) for m in yielded)
    started: set[str] = set()
    for message in yielded:
        if isinstance(message, p.ServerAudio) and message.first:
            started.add(message.conversation_id)
        elif isinstance(message, p.ServerFrame):
            assert message.conversation_id in started
    assert len(yielded_run(run.log, AudioRouting())) == len(echo)


def test_a_held_conversation_cut_short_yields_only_what_the_relay_took() -> None:
    """B waits behind A, fails while its utterance is open; the rest of B's utterance is
    discarded by the relay, so its marker's untilSeq stops the client's own copy there too."""
    core = new_session(routing=NO_ECHO)
    own = OwnAudio()
    seen: Stream = []

    def feed(effects: list[Effect]) -> None:
        for message in to_client(effects):
            if isinstance(message, p.SequencedServerMessage):
                seen.extend(own.received(message))

    feed(connect(core))
    for seq, pcm, end in ((1, b"a1", True), (2, b"b2", False)):
        seen.extend(own.sent(seq, pcm, end))
        feed(core.on_client_message(1, p.ClientAudio(seq, pcm, end), 0.0))
    feed(core.on_upstream_error(cid(2), ErrorCode.UPSTREAM_ERROR, "x", 0.0))
    seen.extend(own.sent(3, b"b3", True))
    feed(core.on_client_message(1, p.ClientAudio(3, b"b3", True), 0.0))
    markers = list(to_client(core.on_upstream_frame(cid(1), b"f", True, 0.0)))
    assert [type(m) for m in markers] == [
        p.ServerFrame,
        p.ConversationStarted,
        p.ConversationAborted,
    ]
    assert markers[1] == p.ConversationStarted(3, cid(2), 2, 2)
    for message in markers:
        seen.extend(own.received(message))  # type: ignore[arg-type]
    assert [(type(m).__name__, m.conversation_id, getattr(m, "pcm", None)) for m in seen] == [
        ("ServerAudio", cid(1), b"a1"),
        ("ServerFrame", cid(1), None),
        ("ServerAudio", cid(2), b"b2"),
        ("ConversationAborted", cid(2), None),
    ]
    assert own.pending == 1  # b3 waits for a marker that will not come; the next one drops it


def test_the_session_record_keeps_the_mode_and_reads_older_records_as_echo() -> None:
    """The store's record carries the routing to the instance that restores the session."""
    no_echo = SessionRecord("rs_1", "p", "a", 16000, "live", NO_ECHO)
    assert SessionRecord.decode("rs_1", no_echo.encode()) == no_echo
    both = AudioRouting("browser", allow_producer=True, echo=False)
    record = SessionRecord("rs_1", "p", "a", 16000, "live", both)
    decoded = SessionRecord.decode("rs_1", record.encode())
    assert decoded is not None
    assert decoded.routing == both
    # Written before the option existed: no "ne", an echo session.
    older = SessionRecord.decode("rs_1", b'{"p":"p","a":"a","r":16000,"st":"live"}')
    assert older is not None
    assert older.routing.echo
    with pytest.raises(AppError) as refused:
        audio_routing("producer", audio_echo=False)
    assert refused.value.code is ErrorCode.INVALID_REQUEST
    with pytest.raises(ValueError, match="browser"):
        AudioRouting("producer", echo=False)
