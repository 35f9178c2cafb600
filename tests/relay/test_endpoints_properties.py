"""Property: with two endpoints (browser and producer), cutting either connection anywhere changes
nothing either consumer sees.

A simulated browser, a simulated producer and an upstream drive one core through random
interleavings of producer audio, END and INTERRUPT, browser interrupts (barge-in) and browser
audio (the microphone, or speech when both speak), upstream frames, errors and losses, acks, and
cuts of either connection (in-flight messages both ways are lost; sometimes the server only
learns of a cut when that side reconnects). Each side resumes from the last sequence number it
really received and resends what the server has not acknowledged.

The run is then replayed without cuts: the same accepted messages of both sides and the same
upstream events, in the order the core accepted them, fed to a fresh core with both sides
connected throughout. The browser's stream must be identical, the producer's identical except
for the browser's connection events (which only cuts cause), and the upstream must have received
the same audio: no loss, no duplicate, no reorder, on either side. Both streams are checked
against the rules: audio before its frames on the browser's stream, and per conversation on the
producer's: started, then at most one first frame, then at most one outcome, which tells the
audio and frames the browser was given.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import ErrorCode
from app.relay.conversations import AudioRouting, Role
from app.relay.effects import CloseClient, Effect, SendToClient
from app.relay.session import RelaySession
from avatar_relay_client import browser_protocol as p
from avatar_relay_client import producer_protocol as pp
from tests.relay.sim import new_session
from tests.relay.test_session_properties import Upstream, check_conversation_rules

LIMITS: dict[str, Any] = {"replay_buffer_messages": 100_000, "ack_every": 3}
PRODUCER_CONNS = 1_000_000  # connection numbers are unique across the endpoints

Up = p.ClientMessage | pp.ProducerMessage
SEQUENCED_UP = (p.ClientAudio, p.ClientInterrupt, pp.Audio, pp.Interrupt)


@dataclass(frozen=True)
class Wire:
    """One protocol, as its client sees it."""

    hello: Callable[[int], Up]
    audio: Callable[[int, bytes, bool], Up]
    interrupt: Callable[[int], Up]
    ack: Callable[[int], Up]
    pong: Callable[[int], Up]
    encode: Callable[[Any], bytes]
    decode_up: Callable[[bytes], Up]
    decode_down: Callable[[bytes], Any]
    sequenced: tuple[type[Any], ...]
    welcome: type[Any]
    server_ack: type[Any]
    server_ping: type[Any]


BROWSER = Wire(
    p.Hello,
    p.ClientAudio,
    p.ClientInterrupt,
    p.ClientAck,
    p.ClientPong,
    p.encode_client,
    p.decode_client,
    p.decode_server,
    (p.ServerAudio, p.ServerFrame, p.ConversationAborted, p.Interrupted),
    p.Welcome,
    p.ServerAck,
    p.ServerPing,
)
PRODUCER = Wire(
    pp.Hello,
    pp.Audio,
    pp.Interrupt,
    pp.Ack,
    pp.Pong,
    pp.encode_producer,
    pp.decode_producer,
    pp.decode_server,
    pp.SEQUENCED,
    pp.Welcome,
    pp.ServerAck,
    pp.ServerPing,
)


@dataclass
class Side:
    """One endpoint's client and its transport."""

    role: Role
    wire: Wire
    conn: int
    marker: int  # makes this side's PCM unique: both sides number from 1
    transport_up: bool = False
    c2s: deque[bytes] = field(default_factory=deque)
    s2c: deque[bytes] = field(default_factory=deque)
    last_received: int = 0
    consumer: list[Any] = field(default_factory=list)
    next_seq: int = 1
    unacked: list[Any] = field(default_factory=list)
    expected: int = 1  # what a correct server accepts next (the model of dedup)
    cuts: int = 0

    def pcm(self, seq: int) -> bytes:
        return (self.marker | seq).to_bytes(4, "little") * 40  # 5 ms at 16 kHz

    def send(self, message: Up, sequenced: bool) -> None:
        if sequenced:
            self.unacked.append(message)
        if self.transport_up:
            self.c2s.append(self.wire.encode(message))

    def audio(self, end: bool) -> None:
        seq = self.next_seq
        self.next_seq += 1
        self.send(self.wire.audio(seq, self.pcm(seq), end), True)

    def interrupt(self) -> None:
        seq = self.next_seq
        self.next_seq += 1
        self.send(self.wire.interrupt(seq), True)

    def ack(self) -> None:
        if self.transport_up:
            self.c2s.append(self.wire.encode(self.wire.ack(self.last_received)))

    def trim(self, acked: int) -> None:
        self.unacked = [m for m in self.unacked if m.seq > acked]

    def deliver_down(self, count: int) -> None:
        wire = self.wire
        for _ in range(min(count, len(self.s2c))):
            message: Any = wire.decode_down(self.s2c.popleft())
            if isinstance(message, wire.sequenced):
                assert message.seq == self.last_received + 1, message
                self.consumer.append(message)
                self.last_received = message.seq
            elif isinstance(message, wire.welcome):
                self.trim(message.client_ack if self.role == "browser" else message.producer_ack)
            elif isinstance(message, wire.server_ack):
                self.trim(message.seq)
            elif isinstance(message, wire.server_ping):
                self.c2s.append(wire.encode(wire.pong(message.nonce)))
            else:
                raise AssertionError(f"unexpected {message!r}")


class CutRun:
    def __init__(self, routing: AudioRouting) -> None:
        self.core: RelaySession = new_session(routing=routing, **LIMITS)
        self.upstream = Upstream()
        self.log: list[tuple[Any, ...]] = []
        self.browser = Side("browser", BROWSER, 0, 0x8000_0000)
        self.producer = Side("producer", PRODUCER, PRODUCER_CONNS, 0)
        self.frame_counter = 0
        self.reconnect(self.browser)
        self.reconnect(self.producer)

    def side(self, conn: int) -> Side | None:
        for side in (self.browser, self.producer):
            if side.conn == conn and side.transport_up:
                return side
        return None

    def apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, SendToClient):
                side = self.side(effect.conn)
                if side is not None:
                    side.s2c.append(effect.data)
            elif isinstance(effect, CloseClient):
                # only a replaced, already-dead connection may be closed in this run
                assert effect.close_code == 4001, effect
                assert self.side(effect.conn) is None, effect
            else:
                self.upstream.record(effect)

    def deliver_up(self, side: Side, count: int) -> None:
        for _ in range(min(count, len(side.c2s))):
            data = side.c2s.popleft()
            message = side.wire.decode_up(data)
            sequenced = isinstance(message, SEQUENCED_UP)
            if sequenced and message.seq == side.expected:  # type: ignore[union-attr]
                side.expected += 1
                self.log.append((side.role, message))
            self.apply(self.core.on_data(side.role, side.conn, data, 0.0))

    def frame(self, pick: int, end: bool) -> None:
        if not self.upstream.open:
            return
        req_id = self.upstream.open[pick % len(self.upstream.open)]
        self.frame_counter += 1
        raw = b"frame-%d" % self.frame_counter
        self.upstream.frames[req_id].append(raw)
        if end:
            self.upstream.open.remove(req_id)
        self.log.append(("frame", req_id, raw, end))
        self.apply(self.core.on_upstream_frame(req_id, raw, end, 0.0))

    def upstream_error(self, pick: int) -> None:
        if not self.upstream.open:
            return
        req_id = self.upstream.open.pop(pick % len(self.upstream.open))
        self.log.append(("error", req_id))
        self.apply(self.core.on_upstream_error(req_id, ErrorCode.UPSTREAM_ERROR, "x", 0.0))

    def upstream_lost(self) -> None:
        self.upstream.open.clear()
        self.log.append(("lost",))
        self.apply(self.core.on_upstream_lost(ErrorCode.CONNECTION_CLOSED, "lost", 0.0))

    def cut(self, side: Side, server_notices: bool) -> None:
        if not side.transport_up:
            return
        side.cuts += 1
        side.transport_up = False
        side.c2s.clear()
        side.s2c.clear()
        if server_notices:
            self.apply(self.core.on_disconnected(side.role, side.conn, 0.0))

    def reconnect(self, side: Side) -> None:
        if side.transport_up:
            return
        side.conn += 1
        side.transport_up = True
        self.apply(self.core.on_connected(side.role, side.conn, 0.0))
        side.c2s.append(side.wire.encode(side.wire.hello(side.last_received)))
        for message in side.unacked:
            side.c2s.append(side.wire.encode(message))

    def quiesce(self) -> None:
        sides = (self.browser, self.producer)
        for side in sides:
            self.reconnect(side)
        while True:
            self.apply(self.core.on_tick(1.0))  # batched acks go out on the core's timer
            if not any(side.c2s or side.s2c for side in sides):
                return
            for side in sides:
                self.deliver_up(side, len(side.c2s))
                side.deliver_down(len(side.s2c))


def uncut_run(
    routing: AudioRouting, log: list[tuple[Any, ...]]
) -> tuple[list[Any], list[Any], Upstream]:
    core = new_session(routing=routing, **LIMITS)
    upstream = Upstream()
    streams: dict[int, list[Any]] = {1: [], 2: []}
    decode = {1: p.decode_server, 2: pp.decode_server}
    sequenced = {1: BROWSER.sequenced, 2: PRODUCER.sequenced}
    conns: dict[str, int] = {"browser": 1, "producer": 2}

    def apply(effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, SendToClient):
                message = decode[effect.conn](effect.data)
                if isinstance(message, sequenced[effect.conn]):
                    streams[effect.conn].append(message)
            else:
                upstream.record(effect)

    apply(core.on_connected("browser", 1, 0.0))
    apply(core.on_message("browser", 1, p.Hello(0), 0.0))
    apply(core.on_connected("producer", 2, 0.0))
    apply(core.on_message("producer", 2, pp.Hello(0), 0.0))
    for event in log:
        match event:
            case ("browser" | "producer" as role, message):
                apply(core.on_message(role, conns[role], message, 0.0))
            case ("frame", req_id, raw, end):
                apply(core.on_upstream_frame(req_id, raw, end, 0.0))
            case ("error", req_id):
                apply(core.on_upstream_error(req_id, ErrorCode.UPSTREAM_ERROR, "x", 0.0))
            case ("lost",):
                apply(core.on_upstream_lost(ErrorCode.CONNECTION_CLOSED, "lost", 0.0))
    return streams[1], streams[2], upstream


def _without_browser_states(stream: list[Any]) -> list[Any]:
    """The producer's events but the browser's connection ones, numbers aside."""
    return [dataclasses.replace(e, seq=0) for e in stream if not isinstance(e, pp.Browser)]


def check_browser_states(stream: list[Any], hellos: int) -> None:
    states = [e.state for e in stream if isinstance(e, pp.Browser)]
    assert states[0] is pp.BrowserState.CONNECTED
    rest = states[1:]
    assert rest == [pp.BrowserState.DISCONNECTED, pp.BrowserState.RESUMED] * (len(rest) // 2)
    assert states.count(pp.BrowserState.RESUMED) == hellos - 1


def check_producer_rules(
    events: list[Any],
    browser_stream: list[Any],
    log: list[tuple[Any, ...]],
    upstream: Upstream,
    routing: AudioRouting,
) -> None:
    """Per conversation: STARTED, at most one FIRST_FRAME, at most one outcome, in that order;
    the outcome tells what the browser's stream carried of it; STARTED names the chunk that
    started it; the microphone is the browser's audio, once and in order; each browser
    INTERRUPT is one barge-in."""
    echoed: dict[str, int] = {}
    frames: dict[str, int] = {}
    for message in browser_stream:
        if isinstance(message, p.ServerAudio):
            echoed[message.conversation_id] = echoed.get(message.conversation_id, 0)
            echoed[message.conversation_id] += len(message.pcm)
        elif isinstance(message, p.ServerFrame):
            frames[message.conversation_id] = frames.get(message.conversation_id, 0) + 1
    sent: dict[tuple[str, int], Up] = {
        (e[0], e[1].seq): e[1] for e in log if e[0] in ("browser", "producer")
    }
    first_audio: dict[str, bytes] = {}
    for send in upstream.sends:
        if hasattr(send, "audio"):
            first_audio.setdefault(send.req_id, send.audio)
    phase: dict[str, str] = {}
    microphone: list[tuple[bytes, bool]] = []
    barge_ins = 0
    for event in events:
        match event:
            case pp.ConversationStarted(_, cid, input_seq, by_browser):
                assert cid not in phase
                phase[cid] = "started"
                role = "browser" if by_browser else "producer"
                assert role == "producer" or routing.speaks("browser")
                chunk = sent[(role, input_seq)]
                assert chunk.pcm == first_audio[cid]  # type: ignore[union-attr]
                if role == "producer":
                    # a producer's conversation starts with an utterance, never in the middle
                    # of one (an interrupt discards the rest of it up to its END)
                    before = [m for (r, n), m in sent.items() if r == role and n < input_seq]
                    audio_before = [m for m in before if isinstance(m, pp.Audio)]
                    assert not audio_before or max(audio_before, key=lambda m: m.seq).end
            case pp.FirstFrame(_, cid):
                assert phase[cid] == "started"
                phase[cid] = "framed"
            case (
                pp.ConversationCompleted(_, cid, audio_ms, count)
                | pp.ConversationInterrupted(_, cid, audio_ms, count)
                | pp.ConversationAborted(_, cid, audio_ms, count)
            ):
                assert phase[cid] in ("started", "framed")
                assert (phase[cid] == "framed") == (count > 0)
                phase[cid] = "over"
                assert audio_ms == echoed.get(cid, 0) * 500 // 16000
                assert count == frames.get(cid, 0)
                if isinstance(event, pp.ConversationCompleted):
                    assert count > 0
            case pp.Microphone(_, pcm, end):
                microphone.append((pcm, end))
            case pp.BargeIn():
                barge_ins += 1
    browser_audio = [
        (e[1].pcm, e[1].end) for e in log if e[0] == "browser" and isinstance(e[1], p.ClientAudio)
    ]
    browser_interrupts = [
        e for e in log if e[0] == "browser" and isinstance(e[1], p.ClientInterrupt)
    ]
    assert microphone == ([] if routing.speaks("browser") else browser_audio)
    assert barge_ins == len(browser_interrupts)


ROUTINGS = st.sampled_from(
    [
        AudioRouting("producer", forward_microphone=True),
        AudioRouting("producer"),
        AudioRouting("browser", allow_producer=True),
    ]
)
COMMON = (
    ["p_audio"] * 6
    + ["p_audio_end"] * 2
    + ["p_interrupt", "b_interrupt"]
    + ["b_up", "b_down", "p_up", "p_down"] * 4
    + ["b_ack", "p_ack"]
    + ["frame"] * 8
    + ["frame_end"] * 2
    + ["error", "lost"]
    + ["b_cut", "b_cut_unnoticed", "b_reconnect", "b_reconnect"]
    + ["p_cut", "p_cut_unnoticed", "p_reconnect", "p_reconnect"]
)
WITH_BROWSER_AUDIO = COMMON + ["b_audio"] * 3 + ["b_audio_end"]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_cuts_on_either_side_change_nothing_either_consumer_sees(data: st.DataObject) -> None:
    routing = data.draw(ROUTINGS, label="routing")
    browser_audio = routing.forward_microphone or routing.speaks("browser")
    ops = st.sampled_from(WITH_BROWSER_AUDIO if browser_audio else COMMON)
    run = CutRun(routing)
    sides = {"b": run.browser, "p": run.producer}
    steps = data.draw(st.integers(min_value=20, max_value=250), label="steps")
    for _ in range(steps):
        op = data.draw(ops)
        who, _, what = op.partition("_")
        side = sides.get(who)
        if side is None:
            if who == "frame":
                pick = data.draw(st.integers(min_value=0, max_value=7))
                run.frame(pick, end=what == "end")
            elif who == "error":
                run.upstream_error(data.draw(st.integers(min_value=0, max_value=7)))
            else:
                run.upstream_lost()
        elif what in ("audio", "audio_end"):
            side.audio(end=what == "audio_end")
        elif what == "interrupt":
            side.interrupt()
        elif what in ("up", "down"):
            count = data.draw(st.integers(min_value=1, max_value=6))
            if what == "up":
                run.deliver_up(side, count)
            else:
                side.deliver_down(count)
        elif what == "ack":
            side.ack()
        elif what.startswith("cut"):
            run.cut(side, server_notices=what == "cut")
        else:
            run.reconnect(side)
    run.quiesce()
    assert not run.core.ended

    # into the relay, each side: every message accepted exactly once, in order
    for side in sides.values():
        accepted = [e[1].seq for e in run.log if e[0] == side.role]
        assert accepted == list(range(1, side.next_seq))
        endpoint = run.core.endpoint(side.role)
        assert endpoint is not None
        assert endpoint.client_seq == side.next_seq - 1
        assert side.unacked == []
        # out of the relay: seq 1..N, each once
        assert [m.seq for m in side.consumer] == list(range(1, len(side.consumer) + 1))

    browser_expected, producer_expected, upstream = uncut_run(routing, run.log)
    assert run.browser.consumer == browser_expected
    assert _without_browser_states(run.producer.consumer) == _without_browser_states(
        producer_expected
    )
    assert run.upstream.sends == upstream.sends
    check_conversation_rules(browser_expected, upstream.sends, run.upstream.frames)
    browser_endpoint = run.core.endpoint("browser")
    assert browser_endpoint is not None
    check_browser_states(run.producer.consumer, browser_endpoint.hellos)
    check_producer_rules(producer_expected, browser_expected, run.log, run.upstream, routing)
