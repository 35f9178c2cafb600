"""Property: cutting the client's connection anywhere changes nothing the consumer sees.

A simulated client and upstream drive the core through random interleavings of client audio,
interrupts, upstream frames, upstream errors and losses, acks, and connection cuts (in-flight
messages in both directions are lost; sometimes the server only learns of the cut when the
client reconnects). The client resumes from the last sequence number it really received and
resends what the server has not acknowledged. Its consumer keeps every sequenced message it is
given, duplicates included.

The run is then replayed without cuts: the same accepted client messages and upstream events,
fed to a fresh core over a perfect connection. Both consumers must hold exactly the same
messages, and the upstream must have received exactly the same audio: no loss, no duplicate, no
reorder, in both directions. The uncut stream is also checked against the conversation rules.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import ErrorCode
from app.relay.conversations import AudioRouting
from app.relay.effects import (
    CloseClient,
    Effect,
    InterruptUpstream,
    ReleaseUpstream,
    SendToClient,
    SendUpstream,
    SessionEnded,
)
from app.relay.session import RelaySession
from avatar_relay_client import browser_protocol as p
from tests.relay.sim import new_session

LIMITS: dict[str, Any] = {"replay_buffer_messages": 100_000, "ack_every": 3}

# Logical events, as the core accepted them, for the uncut replay.
Event = (
    tuple[str, p.ClientMessage]
    | tuple[str, str, bytes, bool]
    | tuple[str, str, ErrorCode]
    | tuple[str, ErrorCode]
)


@dataclass
class Upstream:
    """What the ingress was asked to do, and which requests it may still answer."""

    sends: list[SendUpstream | InterruptUpstream] = field(default_factory=list)
    open: list[str] = field(default_factory=list)
    frames: dict[str, list[bytes]] = field(default_factory=dict)

    def record(self, effect: Effect) -> None:
        if isinstance(effect, SendUpstream):
            self.sends.append(effect)
            if effect.req_id not in self.frames:
                self.frames[effect.req_id] = []
                self.open.append(effect.req_id)
        elif isinstance(effect, InterruptUpstream):
            # The ingress may keep sending late frames for it: leave it open.
            self.sends.append(effect)
        assert not isinstance(effect, CloseClient | SessionEnded | ReleaseUpstream), effect


class CutRun:
    def __init__(self, routing: AudioRouting | None = None) -> None:
        self.core: RelaySession = new_session(routing=routing, **LIMITS)
        self.upstream = Upstream()
        self.log: list[Event] = []
        self.cuts = 0
        # transport
        self.conn = 0
        self.transport_up = False
        self.server_knows_down = True
        self.c2s: deque[bytes] = deque()
        self.s2c: deque[bytes] = deque()
        # client
        self.last_received = 0
        self.consumer: list[p.SequencedServerMessage] = []
        self.next_seq = 1
        self.unacked: list[p.ClientAudio | p.ClientInterrupt] = []
        # what a correct server accepts next (the model of dedup)
        self.expected = 1
        self.frame_counter = 0
        self.reconnect()

    # --- effects ---

    def apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, SendToClient):
                if effect.conn == self.conn and self.transport_up:
                    self.s2c.append(effect.data)
            elif isinstance(effect, CloseClient):
                # only a replaced, already-dead connection may be closed in this run
                assert effect.close_code == 4001, effect
                assert effect.conn != self.conn, effect
            else:
                self.upstream.record(effect)

    # --- client side ---

    def send(self, message: p.ClientMessage) -> None:
        if isinstance(message, p.ClientAudio | p.ClientInterrupt):
            self.unacked.append(message)
        if self.transport_up:
            self.c2s.append(p.encode_client(message))

    def client_audio(self, end: bool) -> None:
        seq = self.next_seq
        self.next_seq += 1
        self.send(p.ClientAudio(seq, seq.to_bytes(4, "little"), end))

    def client_interrupt(self) -> None:
        seq = self.next_seq
        self.next_seq += 1
        self.send(p.ClientInterrupt(seq))

    def client_ack(self) -> None:
        if self.transport_up:
            self.c2s.append(p.encode_client(p.ClientAck(self.last_received)))

    def trim(self, acked: int) -> None:
        self.unacked = [m for m in self.unacked if m.seq > acked]

    def deliver_down(self, count: int) -> None:
        for _ in range(min(count, len(self.s2c))):
            message = p.decode_server(self.s2c.popleft())
            if isinstance(message, p.SequencedServerMessage):
                self.consumer.append(message)
                self.last_received = message.seq
            elif isinstance(message, p.Welcome):
                self.trim(message.client_ack)
            elif isinstance(message, p.ServerAck):
                self.trim(message.seq)
            elif isinstance(message, p.ServerPing):
                self.c2s.append(p.encode_client(p.ClientPong(message.nonce)))
            else:
                raise AssertionError(f"unexpected {message!r}")

    # --- server side ---

    def deliver_up(self, count: int) -> None:
        for _ in range(min(count, len(self.c2s))):
            data = self.c2s.popleft()
            message = p.decode_client(data)
            sequenced = isinstance(message, p.ClientAudio | p.ClientInterrupt)
            if sequenced and message.seq == self.expected:  # type: ignore[union-attr]
                self.expected += 1
                self.log.append(("client", message))
            self.apply(self.core.on_client_data(self.conn, data, 0.0))

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
        self.log.append(("error", req_id, ErrorCode.UPSTREAM_ERROR))
        self.apply(self.core.on_upstream_error(req_id, ErrorCode.UPSTREAM_ERROR, "x", 0.0))

    def upstream_lost(self) -> None:
        self.upstream.open.clear()
        self.log.append(("lost", ErrorCode.CONNECTION_CLOSED))
        self.apply(self.core.on_upstream_lost(ErrorCode.CONNECTION_CLOSED, "lost", 0.0))

    # --- the connection ---

    def cut(self, server_notices: bool) -> None:
        if not self.transport_up:
            return
        self.cuts += 1
        self.transport_up = False
        self.c2s.clear()
        self.s2c.clear()
        if server_notices:
            self.apply(self.core.on_client_disconnected(self.conn, 0.0))

    def reconnect(self) -> None:
        if self.transport_up:
            return
        self.conn += 1
        self.transport_up = True
        self.apply(self.core.on_client_connected(self.conn, 0.0))
        self.c2s.append(p.encode_client(p.Hello(self.last_received)))
        for message in self.unacked:
            self.c2s.append(p.encode_client(message))

    def quiesce(self) -> None:
        self.reconnect()
        while True:
            # batched acks go out on the core's timer
            self.apply(self.core.on_tick(1.0))
            if not (self.c2s or self.s2c):
                return
            self.deliver_up(len(self.c2s))
            self.deliver_down(len(self.s2c))


def uncut_run(
    log: list[Event], routing: AudioRouting | None = None
) -> tuple[list[p.SequencedServerMessage], Upstream]:
    core = new_session(routing=routing, **LIMITS)
    upstream = Upstream()
    consumer: list[p.SequencedServerMessage] = []

    def apply(effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, SendToClient):
                message = p.decode_server(effect.data)
                if isinstance(message, p.SequencedServerMessage):
                    consumer.append(message)
            else:
                upstream.record(effect)

    apply(core.on_client_connected(1, 0.0))
    apply(core.on_client_message(1, p.Hello(0), 0.0))
    for event in log:
        match event:
            case ("client", message):
                apply(core.on_client_message(1, message, 0.0))  # type: ignore[arg-type]
            case ("frame", req_id, raw, end):
                apply(core.on_upstream_frame(req_id, raw, end, 0.0))
            case ("error", req_id, code):
                apply(core.on_upstream_error(req_id, code, "x", 0.0))
            case ("lost", code):
                apply(core.on_upstream_lost(code, "lost", 0.0))  # type: ignore[arg-type]
    return consumer, upstream


def check_conversation_rules(
    stream: list[p.SequencedServerMessage],
    sends: list[SendUpstream | InterruptUpstream],
    upstream_frames: dict[str, list[bytes]],
) -> None:
    assert [m.seq for m in stream] == list(range(1, len(stream) + 1))
    finished: set[str] = set()  # ended, interrupted, or left behind by the next conversation
    current: str | None = None
    echoed: dict[str, bytearray] = {}
    frames: dict[str, list[bytes]] = {}
    sent_audio: dict[str, bytearray] = {}
    for send in sends:
        if isinstance(send, SendUpstream):
            sent_audio.setdefault(send.req_id, bytearray()).extend(send.audio)
    ended: set[str] = set()  # by its final frame or CONVERSATION_ABORTED
    final_frame: set[str] = set()
    for message in stream:
        if isinstance(message, p.Interrupted):
            if message.conversation_id:
                assert message.conversation_id == current
                finished.add(message.conversation_id)
            current = None
            continue
        cid = message.conversation_id
        assert cid not in finished, f"{cid} continued after its end or after another began"
        if cid != current:
            # a conversation starts with its first audio chunk, never with a frame
            assert isinstance(message, p.ServerAudio), message
            assert message.first, message
            assert cid not in echoed
            if current is not None:
                finished.add(current)
            current = cid
            echoed[cid] = bytearray()
            frames[cid] = []
        elif isinstance(message, p.ServerAudio):
            assert not message.first
        if isinstance(message, p.ServerAudio):
            echoed[cid].extend(message.pcm)
        elif isinstance(message, p.ServerFrame):
            frames[cid].append(message.payload)
            if message.end:
                finished.add(cid)
                ended.add(cid)
                final_frame.add(cid)
        else:
            finished.add(cid)
            ended.add(cid)
    for cid, pcm in echoed.items():
        # the echo is the utterance's audio as sent upstream; all of it once the conversation ended
        assert sent_audio[cid].startswith(pcm)
        if cid in ended:
            assert pcm == sent_audio[cid]
        # frames reach the client byte for byte, in order; all of them after the final one
        if cid in final_frame:
            assert frames[cid] == upstream_frames[cid]
        else:
            assert upstream_frames[cid][: len(frames[cid])] == frames[cid]


OPS = st.sampled_from(
    ["audio"] * 6
    + ["audio_end"] * 2
    + ["interrupt"]
    + ["up"] * 5
    + ["down"] * 5
    + ["ack"] * 2
    + ["frame"] * 8
    + ["frame_end"] * 2
    + ["error", "lost", "cut", "cut_unnoticed", "reconnect", "reconnect"]
)


def random_run(data: st.DataObject, routing: AudioRouting | None = None) -> CutRun:
    """Random client and upstream steps, with cuts, then everything delivered."""
    run = CutRun(routing)
    steps = data.draw(st.integers(min_value=20, max_value=250), label="steps")
    for _ in range(steps):
        op = data.draw(OPS)
        if op in ("audio", "audio_end"):
            run.client_audio(end=op == "audio_end")
        elif op == "interrupt":
            run.client_interrupt()
        elif op in ("up", "down"):
            count = data.draw(st.integers(min_value=1, max_value=6))
            (run.deliver_up if op == "up" else run.deliver_down)(count)
        elif op == "ack":
            run.client_ack()
        elif op in ("frame", "frame_end"):
            run.frame(data.draw(st.integers(min_value=0, max_value=7)), end=op == "frame_end")
        elif op == "error":
            run.upstream_error(data.draw(st.integers(min_value=0, max_value=7)))
        elif op == "lost":
            run.upstream_lost()
        elif op.startswith("cut"):
            run.cut(server_notices=op == "cut")
        else:
            run.reconnect()
    run.quiesce()
    return run


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_cuts_change_nothing_the_consumer_sees(data: st.DataObject) -> None:
    run = random_run(data)

    # client -> server: every chunk accepted exactly once, in order
    assert [e[1].seq for e in run.log if e[0] == "client"] == list(  # type: ignore[union-attr]
        range(1, run.next_seq)
    )
    assert run.core.client_seq == run.next_seq - 1
    assert run.unacked == []

    expected, upstream = uncut_run(run.log)
    assert run.consumer == expected
    assert run.upstream.sends == upstream.sends
    check_conversation_rules(expected, upstream.sends, run.upstream.frames)
