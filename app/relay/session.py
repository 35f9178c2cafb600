"""The relay session core: one pure state machine per relay session.

It performs no I/O and reads no clock: the shell feeds it events (with `now`, in seconds on any
monotonic scale) and performs the effects it returns, in order, before the next event.

A session has endpoints (`endpoint.py`): always the browser, and a producer when the session's
audio routing has one (a server-side voice agent: `audioSource: producer`, or a browser-fed
session that allows one). Each endpoint has its own protocol, sequence numbers, acks, replay
buffer and resume; both feed the same conversations. A message goes: decode, dedupe by the
endpoint's seq (and acknowledge), then the conversations (`conversations.py`: whose audio is
speech, which conversation, live or held), then the browser's server seq and replay buffer
(`replay.py`), then out as an effect (`effects.py`). Upstream frames join at the conversations.
What happens to conversations is told to the producer as events on its own stream
(`producer_events.py`).

The session itself owns what makes delivery exactly-once across reconnects on each side: sequence
numbers and acks, resume, liveness and the limits (the browser's buffer bounds count held
messages too). See docs/protocol.md for the rules. What it holds, and what it saves for another
instance, is `session_state.py`; what reaches the streams and how, `delivery.py`; its timers,
`deadlines.py`; draining, `drain.py`.
"""

from __future__ import annotations

from typing import Final

from app.errors import ErrorCode, RelayError, spec
from app.relay import deadlines
from app.relay.conversations import Role
from app.relay.effects import (
    CloseClient,
    Drained,
    Effect,
    ReleaseUpstream,
    SendToClient,
    SessionEnded,
)
from app.relay.endpoint import Endpoint, Fatal, Overflow
from app.relay.limits import RelayLimits, RelayStats
from app.relay.session_state import SessionState
from avatar_relay_client import browser_protocol as p
from avatar_relay_client import producer_protocol as pp

__all__ = ["NORMAL_CLOSE", "RelayLimits", "RelaySession", "RelayStats"]

NORMAL_CLOSE = 1000


_BROWSER_STATES: Final = (pp.BrowserState.CONNECTED, pp.BrowserState.RESUMED)


class RelaySession(SessionState):
    """Feed events in, get effects out. Every `on_*` method returns the effects to perform.

    Connection numbers (`conn`) are the shell's, unique across the session's endpoints.
    """

    # --- events: an endpoint's connection ---

    def on_connected(self, role: Role, conn: int, now: float) -> list[Effect]:
        """A new, authenticated transport for this endpoint; it must send HELLO first."""
        ep = self.endpoint(role)
        if ep is None:
            code = ErrorCode.PRODUCER_NOT_ALLOWED
            return [CloseClient(conn, spec(code).close_code, code.value)]
        if self._ended:
            code = ErrorCode.SESSION_CLOSED
            return [CloseClient(conn, spec(code).close_code, code.value)]
        self._begin(now)
        try:
            if ep.conn is not None:
                code = ErrorCode.CONNECTION_REPLACED
                self._out.append(CloseClient(ep.conn, spec(code).close_code, code.value))
                self._detach(ep)
            ep.conn = conn
            ep.connected_at = now
            ep.disconnected_at = None
        except Fatal as fatal:
            self._fatal(fatal)
        return self._take()

    def on_disconnected(self, role: Role, conn: int, now: float) -> list[Effect]:
        ep = self.endpoint(role)
        if self._ended or ep is None or conn != ep.conn:
            return []
        self._begin(now)
        try:
            self._detach(ep)
        except Fatal as fatal:
            self._fatal(fatal)
        return self._take()

    def on_data(self, role: Role, conn: int, data: bytes, now: float) -> list[Effect]:
        """One binary message: decoded here so every violation has one path."""
        ep = self.endpoint(role)
        if self._ended or ep is None or conn != ep.conn:
            return []
        try:
            message = ep.codec.decode(data, self.limits.max_message_bytes)
        except RelayError as error:
            self._begin(now)
            self._fatal(Fatal(error.code, error.message))
            return self._take()
        return self._message(ep, message, now)

    def on_error(
        self, role: Role, conn: int, code: ErrorCode, message: str, now: float
    ) -> list[Effect]:
        """A violation the transport detected (a text frame, a peer that stopped reading):
        handled like a protocol error found by the decoder, so it has the same single path."""
        ep = self.endpoint(role)
        if self._ended or ep is None or conn != ep.conn:
            return []
        self._begin(now)
        self._fatal(Fatal(code, message))
        return self._take()

    def on_message(
        self, role: Role, conn: int, message: p.ClientMessage | pp.ProducerMessage, now: float
    ) -> list[Effect]:
        ep = self.endpoint(role)
        if self._ended or ep is None or conn != ep.conn:
            return []
        return self._message(ep, message, now)

    # The browser's events under their first names.

    def on_client_connected(self, conn: int, now: float) -> list[Effect]:
        return self.on_connected("browser", conn, now)

    def on_client_disconnected(self, conn: int, now: float) -> list[Effect]:
        return self.on_disconnected("browser", conn, now)

    def on_client_data(self, conn: int, data: bytes, now: float) -> list[Effect]:
        return self.on_data("browser", conn, data, now)

    def on_client_error(self, conn: int, code: ErrorCode, message: str, now: float) -> list[Effect]:
        return self.on_error("browser", conn, code, message, now)

    def on_client_message(self, conn: int, message: p.ClientMessage, now: float) -> list[Effect]:
        return self.on_message("browser", conn, message, now)

    # --- events: upstream ---

    def on_upstream_frame(self, req_id: str, raw: bytes, end: bool, now: float) -> list[Effect]:
        """One SERVER_RESPONSE_ANIMATION message, `raw` exactly as the ingress sent it."""
        if self._ended or self._broken is not None:
            return []
        conversation = self._conversations.expecting(req_id)
        if conversation is None:
            # Interrupted, aborted, finished or never ours: nothing of it may reach the client.
            self.stats.frames_dropped += 1
            return []
        self._begin(now)
        try:
            self._delivery.frame(conversation, raw, end)
        except Fatal as fatal:
            self._fatal(fatal)
        return self._take()

    def on_upstream_error(
        self, req_id: str, code: ErrorCode, message: str, now: float
    ) -> list[Effect]:
        """SERVER_ERROR for one request: that conversation ends with CONVERSATION_ABORTED."""
        if self._ended or self._broken is not None:
            return []
        self._begin(now)
        try:
            conversation = self._conversations.expecting(req_id)
            if conversation is not None:
                self._delivery.abort(conversation, code, message)
        except Fatal as fatal:
            self._fatal(fatal)
        return self._take()

    def on_upstream_lost(self, code: ErrorCode, message: str, now: float) -> list[Effect]:
        """The ingress connection failed: every conversation still waiting on it is aborted.
        The session stays; the shell reconnects upstream for the next conversation."""
        if self._ended or self._broken is not None:
            return []
        self._begin(now)
        try:
            for conversation in self._conversations.expecting_upstream():
                self._delivery.abort(conversation, code, message)
        except Fatal as fatal:
            self._fatal(fatal)
        return self._take()

    def on_upstream_refused(self, code: ErrorCode, message: str, now: float) -> list[Effect]:
        """Upstream will never take this session (a non-retryable close code such as
        creditsExhausted): the conversations waiting on it are aborted with that code, then the
        session ends with ERROR{code} like any fatal error (docs/protocol.md, section 3)."""
        if self._ended:
            return []
        self._begin(now)
        try:
            for conversation in self._conversations.expecting_upstream():
                self._delivery.abort(conversation, code, message)
            raise Fatal(code, message)
        except Fatal as fatal:
            self._fatal(fatal)
        return self._take()

    # --- events: time and lifecycle ---

    def on_tick(self, now: float) -> list[Effect]:
        if self._ended:
            return []
        self._begin(now)
        try:
            deadlines.expire(
                self._endpoints,
                self.limits,
                now,
                created=self._created,
                idle_since=self._idle_since,
            )
            deadlines.keep_alive(self._endpoints, self.limits, self._delivery, now)
        except Fatal as fatal:
            self._fatal(fatal)
        return self._take()

    def on_drain(self, now: float) -> list[Effect]:
        """The instance is draining: conversations in flight go on to their end, a message that
        would start a new one is not accepted (`InputRefused`, once per endpoint), and `Drained`
        follows as soon as nothing is in flight (at once when idle). The shell then hands the
        session over (`on_handover`) or ends it (`on_shutdown`)."""
        if self._ended:
            return []
        self._begin(now)
        self._drain.active = True
        return self._take()

    def on_handover(self, now: float) -> list[Effect]:
        """The session continues on another instance: the endpoints are told to reconnect and
        resume (close 1012 `sessionMoved`) and the session ends here. The shell has saved what
        the next instance needs before this."""
        if self._ended:
            return []
        self._begin(now)
        code = ErrorCode.SESSION_MOVED
        for ep in self._endpoints:
            if ep.conn is not None:
                self._out.append(CloseClient(ep.conn, spec(code).close_code, code.value))
        self._end(code)
        return self._take()

    def on_shutdown(self, now: float) -> list[Effect]:
        """The server is draining: tell the endpoints to go elsewhere, end the session."""
        if self._ended:
            return []
        self._begin(now)
        self._fatal(Fatal(ErrorCode.GOING_AWAY, "server is shutting down"))
        return self._take()

    # --- internals: an endpoint's messages ---

    def _message(
        self, ep: Endpoint, message: p.ClientMessage | pp.ProducerMessage, now: float
    ) -> list[Effect]:
        self._begin(now)
        try:
            self._endpoint_message(ep, message)
        except Fatal as fatal:
            self._fatal(fatal)
        return self._take()

    def _endpoint_message(
        self, ep: Endpoint, message: p.ClientMessage | pp.ProducerMessage
    ) -> None:
        if not ep.hello_done:
            if not isinstance(message, p.Hello | pp.Hello):
                raise Fatal(ErrorCode.INVALID_REQUEST, "the first message must be HELLO")
            self._hello(ep, message.last_seq)
            return
        match message:
            case p.ClientAudio(seq, pcm, end) | pp.Audio(seq, pcm, end):
                drain = self._drain
                if drain.active and drain.refuses(ep, seq, self._starts(ep.role), self._out):
                    return
                if self._accept(ep, seq):
                    self._input_audio(ep.role, seq, pcm, end)
                    self._count_input(ep, urgent=end)
            case p.ClientInterrupt(seq) | pp.Interrupt(seq):
                drain = self._drain
                if drain.active and drain.refuses_interrupt(ep, seq, self._out):
                    return
                if self._accept(ep, seq):
                    self._delivery.interrupt(ep.role)
                    self._count_input(ep, urgent=True)
            case p.ClientAck(seq) | pp.Ack(seq):
                ep.acknowledged(seq)
            case p.ClientPing(nonce) | pp.Ping(nonce):
                self._send(ep, ep.codec.pong(nonce))
            case p.ClientPong() | pp.Pong():
                pass
            case p.Bye() | pp.Bye():
                for other in sorted(self._endpoints, key=lambda e: e is not ep):
                    if other.conn is not None:
                        self._out.append(CloseClient(other.conn, NORMAL_CLOSE, "bye"))
                self._end(None)
            case p.Hello() | pp.Hello():
                raise Fatal(ErrorCode.INVALID_REQUEST, "HELLO sent twice")
            case pp.Pause() | pp.Resume():
                # Host Mode has no playout to hold: the page plays the audio itself.
                raise Fatal(
                    ErrorCode.PLAYBACK_CONTROL_UNAVAILABLE,
                    "pause and resume are for RTC sessions whose WELCOME declares them",
                )

    def _hello(self, ep: Endpoint, last_seq: int) -> None:
        replay = ep.replay
        conn = ep.conn
        assert conn is not None
        restored = self._restored and ep is self._browser
        if restored and last_seq > replay.last_seq:
            # The instance that died sent these before it saved them: the browser has them.
            replay.skip_to(last_seq)
        resumable = ep.check_hello(last_seq)
        lost = self._broken
        if lost is None and not resumable:
            lost = ErrorCode.RESUME_FAILED
        if lost is not None:
            available = replay.next_seq if self._broken else replay.acked + 1
            failed = ep.codec.resume_failed(last_seq, available, lost.value)
            self._out.append(SendToClient(conn, failed))
            code = ErrorCode.RESUME_FAILED
            self._out.append(CloseClient(conn, spec(code).close_code, code.value))
            ep.conn = None  # told already; the other endpoint, if any, hears ERROR
            raise Fatal(code, f"the {ep.role} could not resume")
        resumed = ep.welcomed(last_seq, self._delivery.now)
        if resumed:
            self.stats.resumes += 1
        self._send(ep, self._welcome(ep, resumed))
        for data in replay.after(last_seq):
            self.stats.replayed_messages += 1
            self._out.append(SendToClient(conn, data))
        if restored:
            self._restored = False
            in_flight, self._restored_in_flight = self._restored_in_flight, frozenset()
            for conversation in self._conversations.expecting_upstream():
                if conversation.id not in in_flight:
                    continue  # begun here, after the takeover
                self._delivery.abort(
                    conversation,
                    ErrorCode.CONNECTION_CLOSED,
                    "the instance running this conversation went away",
                )
        if ep is self._browser and self._events is not None:
            self._events.browser(_BROWSER_STATES[resumed])

    def _welcome(self, ep: Endpoint, resumed: bool) -> bytes:
        window_ms = round(self.limits.resume_window * 1000)
        return ep.codec.welcome(
            self.session_id, ep, self.sample_rate, window_ms, resumed, self.routing
        )

    def _detach(self, ep: Endpoint) -> None:
        """The endpoint's connection is gone (or replaced); a welcomed browser's departure is
        an event for the producer."""
        welcomed = ep.hello_done
        ep.detach(self._delivery.now)
        if welcomed and ep is self._browser and self._events is not None:
            self._events.browser(pp.BrowserState.DISCONNECTED)

    def _starts(self, role: Role) -> bool:
        """The endpoint's next AUDIO would start a conversation."""
        return self.routing.speaks(role) and self._conversations.would_start(role)

    def _accept(self, ep: Endpoint, seq: int) -> bool:
        """Exactly-once on the way in: old numbers are resends (re-ACK them), gaps are bugs."""
        if ep.accept(seq):
            delivery = self._delivery
            delivery.last_activity = delivery.now
            return True
        self.stats.client_duplicates += 1
        self._send_ack(ep)
        return False

    def _count_input(self, ep: Endpoint, *, urgent: bool) -> None:
        limits = self.limits
        if ep.count_input(
            self._delivery.now, urgent=urgent, every=limits.ack_every, delay=limits.ack_delay
        ):
            self._send_ack(ep)

    def _send_ack(self, ep: Endpoint) -> None:
        self._send(ep, ep.ack())

    # --- internals: speech (delivery.py puts it on the streams) ---

    def _input_audio(self, role: Role, seq: int, pcm: bytes, end: bool) -> None:
        """An endpoint's AUDIO: avatar speech, the user's microphone for the producer, or
        refused (the routing decides)."""
        routing = self.routing
        if routing.speaks(role):
            self._delivery.audio(role, seq, pcm, end)
            return
        if routing.forward_microphone and self._events is not None:
            self._events.microphone(pcm, end=end)
            return
        raise Fatal(
            ErrorCode.MICROPHONE_DISABLED,
            "this session's speech comes from a producer and browser audio is not forwarded"
            " (create the session with forwardMicrophone to send the microphone)",
        )

    # --- internals: output and endings ---

    @property
    def _out(self) -> list[Effect]:
        """The output of the event being handled."""
        return self._delivery.out

    def _begin(self, now: float) -> None:
        self._delivery.begin(now)

    def _take(self) -> list[Effect]:
        in_flight = self._conversations.live is not None
        if self._drain.done(in_flight=in_flight, ended=self._ended):
            self._out.append(Drained())
        return self._delivery.take()

    def _send(self, ep: Endpoint, data: bytes) -> None:
        self._delivery.send(ep, data)

    def _fatal(self, fatal: Fatal) -> None:
        if isinstance(fatal, Overflow) and not self.any_connected:
            self._break(fatal.code)
            return
        for ep in self._endpoints:
            if ep.conn is not None:
                self._out.append(SendToClient(ep.conn, ep.codec.error(fatal.code, fatal.message)))
                self._out.append(CloseClient(ep.conn, spec(fatal.code).close_code, fatal.code))
        self._end(fatal.code)

    def _break(self, code: ErrorCode) -> None:
        """A buffer overflowed while every endpoint was away: the gap is lost for good. Keep
        the session until the resume window closes only to answer a reconnect with
        RESUME_FAILED."""
        self._broken = code
        self._out.extend(self._conversations.drop(code))
        for ep in self._endpoints:
            ep.replay.clear()
        self._out.append(ReleaseUpstream())

    def _end(self, code: ErrorCode | None) -> None:
        self._out.extend(self._conversations.drop(code or ErrorCode.SESSION_CLOSED))
        self._ended = True
        for ep in self._endpoints:
            ep.replay.clear()
            ep.conn = None
        self._out.append(SessionEnded(code))
