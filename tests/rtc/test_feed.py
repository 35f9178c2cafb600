"""The RTC producer feed's rules, sans I/O: a model producer (numbering, resending what is not
acknowledged, resuming after the last event it has) against `RtcFeed`, with arbitrary
interleavings of its input, cuts, egress signals (repeated ends included) and playback states.

Properties: the producer's events arrive each once and in order (a resume never skips one); each
request has one clean lifecycle (started, first frame, playback states, exactly one outcome, then
nothing); the ingress gets every byte of audio exactly once, in order, however often it was resent.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import ErrorCode, spec
from app.relay.effects import CloseClient, SendToClient
from app.relay.limits import RelayLimits
from app.rtc import core as rc
from app.rtc.feed import FeedEffect, RtcFeed
from avatar_relay_client import producer_protocol as pp

OUTCOMES = (pp.ConversationCompleted, pp.ConversationInterrupted, pp.ConversationAborted)


def new_feed(*, playback_control: bool = False, now: float = 0.0) -> RtcFeed:
    ids = itertools.count(1)
    core = rc.RtcCore(lambda: f"req-{next(ids)}", rc.Limits(1e6, 1e6), now)
    core.connected(playback_control)
    return RtcFeed("rtc_test", core, sample_rate=16000, limits=RelayLimits(), now=now)


@dataclass
class Producer:
    """What a producer client does: numbers its messages, keeps them until acknowledged, resends
    them after HELLO, and takes each event once (by its seq)."""

    feed: RtcFeed
    conn: int | None = None
    conns: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    next_seq: int = 1
    unacked: list[tuple[int, bytes]] = field(default_factory=list)
    last_event: int = 0
    events: list[Any] = field(default_factory=list)
    upstream_audio: bytearray = field(default_factory=bytearray)
    sent_audio: bytearray = field(default_factory=bytearray)
    lifecycle: list[rc.Event] = field(default_factory=list)
    closed_with: list[tuple[int, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    now: float = 0.0

    def perform(self, effects: list[FeedEffect]) -> None:
        for effect in effects:
            if isinstance(effect, rc.Upstream):
                if effect.op is rc.Op.AUDIO:
                    self.upstream_audio += effect.audio
            elif isinstance(effect, rc.Event):
                self.lifecycle.append(effect)
            elif isinstance(effect, CloseClient):
                if effect.conn == self.conn:
                    self.closed_with.append((effect.close_code, effect.reason))
                    self.perform(self.feed.on_disconnected(effect.conn, self.now))
                    self.conn = None
            elif isinstance(effect, SendToClient):
                assert effect.conn == self.conn, "written to a connection that is not current"
                self.receive(pp.decode_server(effect.data))

    def receive(self, message: pp.ServerMessage) -> None:
        match message:
            case pp.Welcome():
                assert message.rtc
                self.unacked = [(s, d) for s, d in self.unacked if s > message.producer_ack]
            case pp.ServerAck(seq):
                self.unacked = [(s, d) for s, d in self.unacked if s > seq]
            case pp.ServerError(code):
                self.errors.append(code)
            case pp.ServerPing() | pp.ServerPong():
                pass
            case _:
                seq = message.seq  # type: ignore[union-attr]
                assert seq <= self.last_event + 1, f"event {seq} after {self.last_event}: a gap"
                if seq == self.last_event + 1:
                    self.last_event = seq
                    self.events.append(message)

    def connect(self, *, stale: bool = False) -> None:
        """`stale`: resend everything kept, also what the WELCOME says was accepted (as a
        producer whose acks were lost with the connection may): the feed must drop it."""
        conn = next(self.conns)
        self.conn = conn
        kept = list(self.unacked)
        self.perform(self.feed.on_connected(conn, self.now))
        if self.conn == conn:
            self.deliver(pp.encode_producer(pp.Hello(self.last_event)))
        for _, data in kept if stale else list(self.unacked):
            if self.conn != conn:
                break
            self.deliver(data)

    def cut(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            self.perform(self.feed.on_disconnected(conn, self.now))

    def deliver(self, data: bytes) -> None:
        if self.conn is not None:
            self.perform(self.feed.on_data(self.conn, data, self.now))

    def send(self, message: Any, *, lost: bool = False) -> None:
        """A sequenced message; `lost`: the connection dies under it (resent after resume)."""
        seq = self.next_seq
        self.next_seq += 1
        data = pp.encode_producer(message(seq))
        self.unacked.append((seq, data))
        if lost:
            self.cut()
        else:
            self.deliver(data)

    def ack(self) -> None:
        self.deliver(pp.encode_producer(pp.Ack(self.last_event)))


step = st.one_of(
    st.tuples(st.just("audio"), st.integers(1, 4), st.booleans(), st.booleans()),
    st.tuples(st.just("interrupt"), st.booleans()),
    st.tuples(st.just("pause"), st.booleans()),
    st.tuples(st.just("resume"), st.booleans()),
    st.tuples(st.just("cut"), st.booleans()),
    st.tuples(st.just("ack")),
    st.tuples(st.just("signal"), st.integers(0, 5), st.booleans()),
    st.tuples(
        st.just("playback"),
        st.integers(0, 5),
        st.sampled_from(["playing", "paused", "ended", "interrupted"]),
    ),
)


def run(steps: list[tuple[Any, ...]], *, playback_control: bool = True) -> Producer:
    feed = new_feed(playback_control=playback_control)
    producer = Producer(feed)
    producer.connect()
    reqs: list[str] = []
    pattern = itertools.count()
    stale = False
    for item in steps:
        producer.now += 0.01
        kind = item[0]
        if producer.conn is None and kind != "cut" and not feed.core.is_closed:
            producer.connect(stale=stale)
        if kind == "audio":
            _, samples, end, lost = item
            pcm = bytes(next(pattern) % 251 for _ in range(2 * samples))
            producer.sent_audio += pcm
            producer.send(lambda seq, pcm=pcm, end=end: pp.Audio(seq, pcm, end), lost=lost)
        elif kind == "interrupt":
            producer.send(pp.Interrupt, lost=item[1])
        elif kind == "pause":
            producer.send(pp.Pause, lost=item[1])
        elif kind == "resume":
            producer.send(pp.Resume, lost=item[1])
        elif kind == "cut":
            producer.cut()
            stale = item[1]
        elif kind == "ack":
            producer.ack()
        else:
            for effect in producer.lifecycle:
                if effect.kind is rc.Kind.STARTED and effect.req_id not in reqs:
                    reqs.append(effect.req_id)
            if not reqs:
                continue
            req_id = reqs[item[1] % len(reqs)]
            if kind == "signal":
                producer.perform(feed.signal(req_id, item[2], producer.now))
            else:
                producer.perform(feed.playback(req_id, item[2], 100, "", producer.now))
    # Finally the producer comes back, everything it sent gets through, the session ends.
    if not feed.core.is_closed:
        producer.connect()
        producer.perform(feed.apply(feed.core.close(), producer.now))
    return producer


def check_lifecycles(producer: Producer) -> None:
    by_conversation: dict[str, list[Any]] = {}
    for event in producer.events:
        by_conversation.setdefault(event.conversation_id, []).append(event)
    for conversation, events in by_conversation.items():
        assert isinstance(events[0], pp.ConversationStarted), conversation
        assert sum(isinstance(e, pp.ConversationStarted) for e in events) == 1
        assert sum(isinstance(e, pp.FirstFrame) for e in events) <= 1
        outcomes = [i for i, e in enumerate(events) if isinstance(e, OUTCOMES)]
        assert outcomes == [len(events) - 1], f"{conversation}: {events}"


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=40))
def test_events_once_in_order_and_audio_exactly_once(steps: list[tuple[Any, ...]]) -> None:
    producer = run(steps)
    feed = producer.feed
    # Every event the feed numbered reached the producer, each once, in order.
    assert [e.seq for e in producer.events] == list(range(1, producer.last_event + 1))
    assert producer.last_event == feed.endpoint.replay.last_seq or feed.core.is_closed
    check_lifecycles(producer)
    # Each request's lifecycle on the core side ends once; the producer heard the same outcomes.
    ended = [
        e
        for e in producer.lifecycle
        if e.kind in (rc.Kind.ENDED, rc.Kind.INTERRUPTED, rc.Kind.ABORTED)
    ]
    assert len({e.req_id for e in ended}) == len(ended)
    heard = [e for e in producer.events if isinstance(e, OUTCOMES)]
    assert [e.conversation_id for e in heard] == [e.req_id for e in ended]
    # Every byte once, in order, despite cuts and resends (the session was never refused).
    if not producer.errors:
        assert bytes(producer.upstream_audio) == bytes(producer.sent_audio)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=12))
def test_duplicate_ends_complete_once(ends: list[bool]) -> None:
    feed = new_feed()
    producer = Producer(feed)
    producer.connect()
    producer.send(lambda seq: pp.Audio(seq, b"\x01\x00" * 8, True))
    (req_id,) = {e.req_id for e in producer.lifecycle}
    for end in [*ends, True, True]:
        producer.perform(feed.signal(req_id, end, 1.0))
    kinds = [type(e) for e in producer.events]
    assert kinds == [pp.ConversationStarted, pp.FirstFrame, pp.ConversationCompleted]
    completed = producer.events[-1]
    assert completed.audio_ms == 0  # 16 bytes at 16 kHz: half a millisecond, rounded down
    assert completed.frames == (ends.index(True) + 1 if True in ends else len(ends) + 1)


@given(st.sampled_from([pp.Pause, pp.Resume]))
def test_pause_without_playback_control_ends_the_session_with_its_code(message: Any) -> None:
    feed = new_feed(playback_control=False)
    producer = Producer(feed)
    producer.connect()
    producer.send(lambda seq: pp.Audio(seq, b"\x01\x00", False))
    producer.send(message)
    code = ErrorCode.PLAYBACK_CONTROL_UNAVAILABLE
    assert producer.errors == [code.value]
    assert producer.closed_with == [(spec(code).close_code, code.value)]
    assert feed.core.close_code is code
    assert isinstance(producer.events[-1], pp.ConversationAborted)
    assert [e.kind for e in producer.lifecycle][-1] is rc.Kind.CLOSED


def test_playback_state_goes_before_the_event_it_leads_to() -> None:
    feed = new_feed(playback_control=True)
    producer = Producer(feed)
    producer.connect()
    producer.send(lambda seq: pp.Audio(seq, b"\x01\x00" * 4, True))
    (req_id,) = {e.req_id for e in producer.lifecycle}
    for state in ("playing", "paused", "paused", "playing", "ended", "ended"):
        producer.perform(feed.playback(req_id, state, 40, "", 1.0))
    names = [(type(e).__name__, getattr(e, "state", None)) for e in producer.events]
    P = pp.PlaybackStateKind
    assert names == [
        ("ConversationStarted", None),
        ("PlaybackState", P.PLAYING),
        ("FirstFrame", None),
        ("PlaybackState", P.PAUSED),
        ("PlaybackState", P.PLAYING),
        ("PlaybackState", P.ENDED),
        ("ConversationCompleted", None),
    ]


def test_events_before_any_producer_are_not_kept() -> None:
    feed = new_feed()
    effects = feed.apply(feed.core.audio(b"\x01\x00", 0.0, end=True), 0.0)
    assert not any(isinstance(e, SendToClient) for e in effects)
    assert feed.endpoint.replay.last_seq == 0
    producer = Producer(feed)
    producer.connect()
    producer.send(lambda seq: pp.Audio(seq, b"\x01\x00", True))
    assert [type(e) for e in producer.events] == [pp.ConversationStarted]


def test_no_hello_in_time_closes_the_socket_and_idle_ends_the_session() -> None:
    feed = new_feed()
    out = feed.on_connected(1, 0.0)
    assert out == []
    assert feed.deadline() == RelayLimits().hello_timeout
    out = feed.on_tick(RelayLimits().hello_timeout)
    assert out == [CloseClient(1, spec(ErrorCode.INVALID_REQUEST).close_code, "no HELLO")]
    assert not feed.core.is_closed
    out = feed.on_tick(2e6)
    assert feed.core.close_code is ErrorCode.SESSION_DURATION_EXCEEDED
    assert [e.kind for e in out if isinstance(e, rc.Event)] == [rc.Kind.CLOSED]


def test_an_idle_limit_beyond_the_welcome_field_is_said_as_its_largest_value() -> None:
    core = rc.RtcCore(lambda: "req", rc.Limits(1e12, 1e12), 0.0)
    feed = RtcFeed("rtc_test", core, sample_rate=16000, limits=RelayLimits(), now=0.0)
    feed.on_connected(1, 0.0)
    (sent,) = feed.on_data(1, pp.encode_producer(pp.Hello(0)), 0.0)
    assert isinstance(sent, SendToClient)
    welcome = pp.decode_server(sent.data)
    assert isinstance(welcome, pp.Welcome)
    assert welcome.resume_window_ms == 0xFFFF_FFFF
