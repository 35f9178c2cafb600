"""The producer feed of an RTC session, sans I/O: one producer endpoint joined to `RtcCore`.

The producer speaks `avatar-relay.producer.v1` (docs/protocol.md part II and section 17) to an
RTC session exactly as to a relay session: HELLO (resuming after the last event it has), then
sequenced AUDIO / END / INTERRUPT / PAUSE / RESUME that are acknowledged, deduplicated across
reconnects and never reordered, and sequenced events kept for replay until acknowledged. The
delivery state and its rules are the relay's `Endpoint` (app/relay/endpoint.py); this module
only says what the messages mean for an RTC session:

| producer | core | | core event | producer event |
|---|---|---|---|---|
| AUDIO / END | `audio` / `end` | | `started` | CONVERSATION_STARTED |
| INTERRUPT | `interrupt` | | `playing` | FIRST_FRAME (the first egress signal) |
| PAUSE / RESUME | `pause` / `resume` | | `paused` / `resumed` | PLAYBACK_STATE |
| BYE | `close()` | | `ended` | COMPLETED (exactly once, however many egress `end`s) |
| | | | `interrupted` / `aborted` | INTERRUPTED / ABORTED |
| | | | `closed` | ERROR{code} and its close code (BYE / DELETE: 1000) |

A SERVER_PLAYBACK_STATE that changes anything goes to the producer as PLAYBACK_STATE before the
event it leads to. Violations (a gap in the numbering, a bad message, PAUSE without playback
control, a replay buffer over its bounds) end the session through the core's `close`, so they
take the one path every ending takes.

Every call returns the effects to perform in order: the core's (`Upstream` operations and
`Event`s, for the link and the session's listeners) and socket writes and closes (`SendToClient`,
`CloseClient`, for the shell's connection). Producer events are kept only once a producer has been
welcomed: a session driven in-process keeps no stream nobody will read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.errors import ErrorCode, RelayError, spec
from app.relay.effects import CloseClient, SendToClient
from app.relay.endpoint import Endpoint, Fatal
from app.relay.limits import RelayLimits
from app.rtc import core as rc
from avatar_relay_client import browser_protocol as p
from avatar_relay_client import producer_protocol as pp

NORMAL_CLOSE = 1000

FeedEffect = rc.Upstream | rc.Event | SendToClient | CloseClient

_STATES = {
    "playing": pp.PlaybackStateKind.PLAYING,
    "paused": pp.PlaybackStateKind.PAUSED,
    "ended": pp.PlaybackStateKind.ENDED,
    "interrupted": pp.PlaybackStateKind.INTERRUPTED,
}


@dataclass(slots=True)
class _Request:
    """What the producer's outcome events count of one request."""

    audio_bytes: int = 0
    signals: int = 0


@dataclass(slots=True)
class FeedStats:
    duplicates: int = 0  # producer messages resent after a reconnect (acknowledged again)
    resumes: int = 0
    resumes_failed: int = 0
    replayed: int = 0


class RtcFeed:
    """See the module docstring. `limits`: the producer socket's (RelayLimits' wire fields)."""

    def __init__(
        self,
        session_id: str,
        core: rc.RtcCore,
        *,
        sample_rate: int,
        limits: RelayLimits,
        now: float,
    ) -> None:
        self.session_id = session_id
        self.core = core
        self.sample_rate = sample_rate
        self.limits = limits
        self.endpoint = Endpoint("producer", now=now, required=False)
        self.stats = FeedStats()
        self._requests: dict[str, _Request] = {}
        self._input_seq = 0  # the producer message being applied (0: in-process input)
        self._now = now
        self._out: list[FeedEffect] = []
        self._reason = ""  # the message of the violation that is ending the session
        self._overflow = False

    # --- queries ---

    @property
    def connection(self) -> int | None:
        return self.endpoint.conn

    def deadline(self) -> float:
        """When `tick` is next due: the core's limits, and the socket's HELLO, ACK and PING."""
        times = [self.core.deadline()]
        ep = self.endpoint
        if ep.conn is not None:
            if not ep.hello_done:
                times.append(ep.connected_at + self.limits.hello_timeout)
            else:
                times.append(ep.last_ping + self.limits.ping_interval)
                if ep.ack_due is not None:
                    times.append(ep.ack_due)
        return min(times)

    # --- the producer's socket ---

    def on_connected(self, conn: int, now: float) -> list[FeedEffect]:
        """A new authenticated producer socket; it must send HELLO first. A newer one replaces
        the current one (`connectionReplaced`)."""
        if self.core.is_closed:
            code = ErrorCode.SESSION_CLOSED
            return [CloseClient(conn, spec(code).close_code, code.value)]
        out = self._begin(now)
        ep = self.endpoint
        if ep.conn is not None:
            code = ErrorCode.CONNECTION_REPLACED
            out.append(CloseClient(ep.conn, spec(code).close_code, code.value))
            ep.detach(now)
        ep.conn = conn
        ep.connected_at = now
        ep.disconnected_at = None
        return self._take()

    def on_disconnected(self, conn: int, now: float) -> list[FeedEffect]:
        """The socket is gone; the session goes on, the producer may resume (its idle limit
        bounds how long it can stay away)."""
        if conn == self.endpoint.conn:
            self.endpoint.detach(now)
        return []

    def on_data(self, conn: int, data: bytes, now: float) -> list[FeedEffect]:
        if self.core.is_closed or conn != self.endpoint.conn:
            return []
        self._begin(now)
        try:
            message = pp.decode_producer(data, self.limits.max_message_bytes)
            self._message(message)
        except (Fatal, RelayError) as error:
            # RelayError: the decoder's, and the core's refusals (AppError is one).
            self._fail(error.code, error.message)
        return self._take()

    def on_error(self, conn: int, code: ErrorCode, message: str, now: float) -> list[FeedEffect]:
        """A violation the transport found (a text frame, a message too large, not reading)."""
        if self.core.is_closed or conn != self.endpoint.conn:
            return []
        self._begin(now)
        self._fail(code, message)
        return self._take()

    def on_tick(self, now: float) -> list[FeedEffect]:
        self._begin(now)
        self._core(self.core.tick(now))
        ep = self.endpoint
        if ep.conn is not None and not self.core.is_closed:
            if not ep.hello_done:
                if now - ep.connected_at >= self.limits.hello_timeout:
                    code = ErrorCode.INVALID_REQUEST
                    self._out.append(CloseClient(ep.conn, spec(code).close_code, "no HELLO"))
                    ep.detach(now)
            else:
                if ep.ack_due is not None and now >= ep.ack_due:
                    self._send(ep.ack())
                if now - ep.last_ping >= self.limits.ping_interval:
                    self._send(ep.next_ping(now))
        return self._take()

    # --- in-process input and the ingress (the shell's calls) ---

    def apply(self, effects: list[rc.Effect], now: float) -> list[FeedEffect]:
        """The core's effects of a call made outside the feed (the in-process input, the
        ingress link's callbacks): passed on, with what the producer hears of them."""
        self._begin(now)
        self._core(effects)
        return self._take()

    def playback(
        self, req_id: str, state: str, played_ms: int, reason: str, now: float
    ) -> list[FeedEffect]:
        """A SERVER_PLAYBACK_STATE: passed on as PLAYBACK_STATE when it changes anything."""
        self._begin(now)
        effects = self.core.playback(req_id, state, played_ms, reason, now)
        kind = _STATES.get(state)
        if kind is not None and any(isinstance(e, rc.Event) for e in effects):
            tag = p.conversation_tag(req_id)
            self._event(lambda seq: pp.encode_playback_state(seq, tag, kind, played_ms, reason))
        self._core(effects)
        return self._take()

    def signal(self, req_id: str, end: bool, now: float) -> list[FeedEffect]:
        """An egress playback signal (an animation message without animation data)."""
        self._begin(now)
        before = self.core.duplicates
        effects = self.core.signal(req_id, end, now)
        request = self._requests.get(req_id)
        if request is not None and self.core.duplicates == before:
            request.signals += 1
        self._core(effects)
        return self._take()

    # --- internals: the producer's messages ---

    def _message(self, message: pp.ProducerMessage) -> None:
        ep = self.endpoint
        core = self.core
        now = self._now
        if not ep.hello_done:
            if not isinstance(message, pp.Hello):
                raise Fatal(ErrorCode.INVALID_REQUEST, "the first message must be HELLO")
            self._hello(message.last_seq)
            return
        match message:
            case pp.Audio(seq, pcm, end):
                if self._accept(seq):
                    self._input_seq = seq
                    self._core(core.audio(pcm, now, end=end))
                    self._count(urgent=end)
            case pp.Interrupt(seq):
                if self._accept(seq):
                    self._core(core.interrupt(now))
                    self._count(urgent=True)
            case pp.Pause(seq) | pp.Resume(seq):
                if self._accept(seq):
                    control = core.pause if isinstance(message, pp.Pause) else core.resume
                    self._core(control(now))
                    self._count(urgent=True)
            case pp.Ack(seq):
                ep.acknowledged(seq)
            case pp.Ping(nonce):
                self._send(ep.codec.pong(nonce))
            case pp.Pong():
                pass
            case pp.Bye():
                conn = ep.conn
                if conn is not None:
                    self._out.append(CloseClient(conn, NORMAL_CLOSE, "bye"))
                    ep.conn = None
                self._core(core.close())
            case pp.Hello():
                raise Fatal(ErrorCode.INVALID_REQUEST, "HELLO sent twice")

    def _hello(self, last_seq: int) -> None:
        ep = self.endpoint
        conn = ep.conn
        assert conn is not None
        if not ep.check_hello(last_seq):
            self.stats.resumes_failed += 1
            code = ErrorCode.RESUME_FAILED
            failed = ep.codec.resume_failed(last_seq, ep.replay.acked + 1, code.value)
            self._out.append(SendToClient(conn, failed))
            self._out.append(CloseClient(conn, spec(code).close_code, code.value))
            ep.conn = None
            raise Fatal(code, "the producer could not resume")
        resumed = ep.welcomed(last_seq, self._now)
        if resumed:
            self.stats.resumes += 1
        self._send(self._welcome(resumed))
        for data in ep.replay.after(last_seq):
            self.stats.replayed += 1
            self._out.append(SendToClient(conn, data))

    def _welcome(self, resumed: bool) -> bytes:
        ep = self.endpoint
        return pp.encode_welcome(
            pp.Welcome(
                self.session_id,
                ep.client_seq,
                ep.replay.last_seq,
                self.sample_rate,
                # The session waits for its producer as long as it waits for any input (an
                # idle limit beyond the field's ~49 days is said as its largest value).
                min(round(self.core.limits.idle_seconds * 1000), p.MAX_SEQ),
                resumed=resumed,
                playback_control=self.core.playback_control,
                rtc=True,
            )
        )

    def _accept(self, seq: int) -> bool:
        """Exactly-once on the way in: a resent number is acknowledged again and dropped."""
        ep = self.endpoint
        if ep.accept(seq):
            return True
        self.stats.duplicates += 1
        self._send(ep.ack())
        return False

    def _count(self, *, urgent: bool) -> None:
        ep = self.endpoint
        limits = self.limits
        if ep.count_input(self._now, urgent=urgent, every=limits.ack_every, delay=limits.ack_delay):
            self._send(ep.ack())

    def _fail(self, code: ErrorCode, message: str) -> None:
        """A violation: the session ends with it (ERROR{code, message} to the producer)."""
        self._reason = message
        self._core(self.core.close(code))

    # --- internals: the core's effects and the producer's events ---

    def _core(self, effects: list[rc.Effect]) -> None:
        for effect in effects:
            self._out.append(effect)
            if isinstance(effect, rc.Upstream):
                if effect.op is rc.Op.AUDIO:
                    self._requests.setdefault(effect.req_id, _Request()).audio_bytes += len(
                        effect.audio
                    )
            else:
                self._translate(effect)

    def _translate(self, event: rc.Event) -> None:
        kind = event.kind
        if kind is rc.Kind.CLOSED:
            self._closed(event.code)
            return
        tag = p.conversation_tag(event.req_id)
        if kind is rc.Kind.STARTED:
            self._requests.setdefault(event.req_id, _Request())
            input_seq = self._input_seq
            self._event(lambda seq: pp.encode_started(seq, tag, input_seq, by_browser=False))
        elif kind is rc.Kind.PLAYING:
            self._event(lambda seq: pp.encode_first_frame(seq, tag))
        elif kind in (rc.Kind.ENDED, rc.Kind.INTERRUPTED, rc.Kind.ABORTED):
            request = self._requests.pop(event.req_id, _Request())
            audio_ms = request.audio_bytes * 500 // self.sample_rate
            signals = request.signals
            if kind is rc.Kind.ENDED:
                self._event(lambda seq: pp.encode_completed(seq, tag, audio_ms, signals))
            elif kind is rc.Kind.INTERRUPTED:
                self._event(
                    lambda seq: pp.encode_interrupted(seq, tag, audio_ms, signals, by_browser=False)
                )
            else:
                code = (event.code or ErrorCode.CONVERSATION_ABORTED).value
                text = event.reason or spec(event.code or ErrorCode.CONVERSATION_ABORTED).summary
                self._event(lambda seq: pp.encode_aborted(seq, tag, audio_ms, signals, code, text))
        # paused / resumed: their PLAYBACK_STATE already went out (`playback`).

    def _closed(self, code: ErrorCode | None) -> None:
        ep = self.endpoint
        conn = ep.conn
        if conn is not None:
            if code is None:
                self._out.append(CloseClient(conn, NORMAL_CLOSE, "bye"))
            else:
                text = self._reason or spec(code).summary
                self._out.append(SendToClient(conn, ep.codec.error(code, text)))
                self._out.append(CloseClient(conn, spec(code).close_code, code.value))
        ep.replay.clear()
        ep.conn = None
        ep.hello_done = False

    def _event(self, encode: Callable[[int], bytes]) -> None:
        """One sequenced event on the producer's stream: kept for replay, sent when live."""
        ep = self.endpoint
        # The core is already closed while its closing aborts are translated: they still go.
        if ep.hellos == 0:
            return
        data = encode(ep.replay.next_seq)
        ep.replay.append(data)
        self._send(data)
        limits = self.limits
        if (
            len(ep.replay) > limits.replay_buffer_messages
            or ep.replay.size > limits.replay_buffer_bytes
        ):
            self._overflow = True

    def _send(self, data: bytes) -> None:
        ep = self.endpoint
        if ep.conn is not None and ep.hello_done:
            self._out.append(SendToClient(ep.conn, data))

    def _begin(self, now: float) -> list[FeedEffect]:
        self._now = now
        self._input_seq = 0
        self._out = []
        return self._out

    def _take(self) -> list[FeedEffect]:
        if self._overflow and not self.core.is_closed:
            self._fail(ErrorCode.SLOW_CONSUMER, "unacknowledged events exceed the buffer")
        self._overflow = False
        out, self._out = self._out, []
        return out
