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
messages too). See docs/protocol.md for the rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final

from app.errors import ErrorCode, RelayError, spec
from app.relay.conversations import AudioRouting, Conversation, Conversations, Item, Role
from app.relay.effects import (
    CloseClient,
    ConversationEnded,
    Drained,
    Effect,
    InputRefused,
    Outcome,
    ReleaseUpstream,
    SendToClient,
    SendUpstream,
    SessionEnded,
)
from app.relay.endpoint import Endpoint, Fatal, Overflow
from app.relay.limits import RelayLimits, RelayStats
from app.relay.producer_events import ProducerEvents
from avatar_relay_client import browser_protocol as p
from avatar_relay_client import producer_protocol as pp

__all__ = ["NORMAL_CLOSE", "RelayLimits", "RelaySession", "RelayStats"]

NORMAL_CLOSE = 1000


# Plain ints: compared once per message on the frame path.
_AUDIO = int(p.ServerType.AUDIO)
_FRAME = int(p.ServerType.FRAME)
_ABORTED = int(p.ServerType.CONVERSATION_ABORTED)


_BROWSER_STATES: Final = (pp.BrowserState.CONNECTED, pp.BrowserState.RESUMED)


class RelaySession:
    """Feed events in, get effects out. Every `on_*` method returns the effects to perform.

    Connection numbers (`conn`) are the shell's, unique across the session's endpoints.
    """

    def __init__(
        self,
        session_id: str,
        *,
        sample_rate: int,
        limits: RelayLimits,
        new_conversation_id: Callable[[], str],
        now: float,
        routing: AudioRouting | None = None,
    ) -> None:
        self.session_id = session_id
        self.sample_rate = sample_rate
        self.limits = limits
        self.routing = routing if routing is not None else AudioRouting()
        self.stats = RelayStats()
        self._created = now
        self._now = now
        self._last_activity = now
        self._out: list[Effect] = []

        self._ended = False
        self._broken: ErrorCode | None = None  # buffer lost while away: resume must fail

        self._browser = Endpoint("browser", now=now)
        self._producer: Endpoint | None = None
        self._events: ProducerEvents | None = None
        if self.routing.has_producer:
            self._producer = Endpoint("producer", now=now, required=self.routing.producer_required)
            self._events = ProducerEvents(self._producer, self._emit, sample_rate)
            self._endpoints: tuple[Endpoint, ...] = (self._browser, self._producer)
        else:
            self._endpoints = (self._browser,)
        self._conversations = Conversations(new_conversation_id)

        # draining (on_drain): no new conversations; Drained once nothing is in flight
        self._draining = False
        self._refused_from: dict[Role, int] = {}  # per endpoint, the first seq not accepted
        self._drain_now = False  # refused input holds an interrupt: hand over at once
        self._drained = False
        # Restored from another instance's saved state: the conversations it had in flight
        # are aborted when the browser is back (`restore`).
        self._restored = False

    # --- read-only views for the shell ---

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def connected(self) -> bool:
        """The browser is connected."""
        return self._browser.conn is not None

    @property
    def any_connected(self) -> bool:
        return any(ep.conn is not None for ep in self._endpoints)

    @property
    def connection(self) -> int | None:
        """The browser's current connection."""
        return self._browser.conn

    @property
    def client_seq(self) -> int:
        """Highest contiguous browser sequence number accepted."""
        return self._browser.client_seq

    @property
    def server_seq(self) -> int:
        """Highest sequence number assigned on the browser's stream."""
        return self._browser.replay.last_seq

    def endpoint(self, role: Role) -> Endpoint | None:
        """The endpoint's state (read it, do not change it); None: the session has none."""
        return self._browser if role == "browser" else self._producer

    def is_current(self, role: Role, conn: int) -> bool:
        """`conn` is the endpoint's current connection."""
        ep = self.endpoint(role)
        return ep is not None and ep.conn == conn

    @property
    def buffered_messages(self) -> int:
        return len(self._browser.replay) + self._conversations.held_messages

    @property
    def buffered_bytes(self) -> int:
        return self._browser.replay.size + self._conversations.held_bytes

    def next_deadline(self) -> float | None:
        """When the shell should call `on_tick` next at the latest (None: never again)."""
        if self._ended:
            return None
        limits = self.limits
        times = [self._created + limits.max_session]
        if self._broken is None:
            times.append(self._last_activity + limits.idle_timeout)
        for ep in self._endpoints:
            if ep.disconnected_at is not None:
                times.append(ep.disconnected_at + limits.resume_window)
            if ep.conn is not None:
                if not ep.hello_done:
                    times.append(ep.connected_at + limits.hello_timeout)
                else:
                    times.append(ep.last_ping + limits.ping_interval)
                    if ep.ack_due is not None:
                        times.append(ep.ack_due)
        return min(times)

    @property
    def roles(self) -> tuple[Role, ...]:
        return tuple(ep.role for ep in self._endpoints)

    @property
    def shape_version(self) -> int:
        """Grows whenever `snapshot` would say something new (conversations started, ended,
        held, an endpoint's standing); not with released messages or acknowledgements."""
        return self._conversations.version + sum(ep.hellos + ep.required for ep in self._endpoints)

    # --- continuing on another instance ---

    def snapshot(self, now: float) -> dict[str, Any]:
        """What another instance needs, besides each endpoint's seqs and replay buffer (saved
        as they change), to continue this session: plain data for `restore`."""
        return {
            "age": now - self._created,
            "idle": now - self._last_activity,
            "broken": self._broken.value if self._broken is not None else None,
            "endpoints": {
                ep.role: {"required": ep.required, "hellos": ep.hellos} for ep in self._endpoints
            },
            "conversations": self._conversations.snapshot(),
        }

    def restore(
        self,
        snapshot: dict[str, Any],
        endpoints: dict[str, tuple[int, int, list[bytes]]],
        now: float,
    ) -> None:
        """Continue a session another instance ran (a fresh core, created with the same id,
        rate, limits and routing). `endpoints`: per role, (seq accepted from it, seq it
        acknowledged, the messages sent to it after that). The upstream connection died with
        that instance: the conversations in flight are aborted (`connectionClosed`) when the
        browser is back, after its replay, numbered after what it says it has."""
        self._created = now - float(snapshot["age"])
        self._last_activity = now - float(snapshot["idle"])
        broken = snapshot["broken"]
        self._broken = ErrorCode(broken) if broken is not None else None
        for ep in self._endpoints:
            standing = snapshot["endpoints"].get(ep.role, {})
            ep.required = bool(standing.get("required", ep.required))
            ep.hellos = int(standing.get("hellos", 0))
            client_seq, acked, messages = endpoints.get(ep.role, (0, 0, []))
            ep.client_seq = client_seq
            ep.replay.restore(acked, messages)
            ep.disconnected_at = now if ep.required else None
        self._conversations.restore(snapshot["conversations"])
        self._restored = True

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
            item = (conversation, _FRAME, raw, p.FLAG_END if end else 0, "", "")
            self._deliver(conversation, item)
            if end:
                self._finish(conversation, "completed", None)
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
                self._abort(conversation, code, message)
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
                self._abort(conversation, code, message)
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
                self._abort(conversation, code, message)
            raise Fatal(code, message)
        except Fatal as fatal:
            self._fatal(fatal)
        return self._take()

    # --- events: time and lifecycle ---

    def on_tick(self, now: float) -> list[Effect]:
        if self._ended:
            return []
        self._begin(now)
        limits = self.limits
        try:
            for ep in self._endpoints:
                if (
                    ep.disconnected_at is not None
                    and now - ep.disconnected_at >= limits.resume_window
                ):
                    raise Fatal(
                        ErrorCode.SESSION_CLOSED,
                        f"the {ep.role} did not reconnect within the resume window",
                    )
            if now - self._created >= limits.max_session:
                raise Fatal(ErrorCode.SESSION_DURATION_EXCEEDED, "maximum session duration")
            if self._broken is None and now - self._last_activity >= limits.idle_timeout:
                raise Fatal(ErrorCode.IDLE_TIMEOUT, "no activity")
            for ep in self._endpoints:
                if ep.conn is None:
                    continue
                if not ep.hello_done:
                    if now - ep.connected_at >= limits.hello_timeout:
                        code = ErrorCode.INVALID_REQUEST
                        self._out.append(CloseClient(ep.conn, spec(code).close_code, "no HELLO"))
                        ep.detach(now)
                    continue
                if ep.ack_due is not None and now >= ep.ack_due:
                    self._send_ack(ep)
                if now - ep.last_ping >= limits.ping_interval:
                    self._send(ep, ep.next_ping(now))
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
        self._draining = True
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
                if self._draining and self._refused(ep, seq, self._starts(ep.role)):
                    return
                if self._accept(ep, seq):
                    self._input_audio(ep.role, seq, pcm, end)
                    self._count_input(ep, urgent=end)
            case p.ClientInterrupt(seq) | pp.Interrupt(seq):
                if self._draining and self._refused(ep, seq, False):
                    self._drain_now = True
                    return
                if self._accept(ep, seq):
                    self._interrupt(ep.role)
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
        resumed = ep.welcomed(last_seq, self._now)
        if resumed:
            self.stats.resumes += 1
        self._send(ep, self._welcome(ep, resumed))
        for data in replay.after(last_seq):
            self.stats.replayed_messages += 1
            self._out.append(SendToClient(conn, data))
        if restored:
            self._restored = False
            for conversation in self._conversations.expecting_upstream():
                self._abort(
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
        ep.detach(self._now)
        if welcomed and ep is self._browser and self._events is not None:
            self._events.browser(pp.BrowserState.DISCONNECTED)

    def _starts(self, role: Role) -> bool:
        """The endpoint's next AUDIO would start a conversation."""
        return self.routing.speaks(role) and self._conversations.would_start(role)

    def _refused(self, ep: Endpoint, seq: int, starts: bool) -> bool:
        """While draining: not accepting `seq` (neither processed nor acknowledged) because it,
        or a message before it, would start a new conversation. Resends of accepted numbers
        and sequence gaps take their usual paths."""
        if seq <= ep.client_seq:
            return False
        if ep.role not in self._refused_from:
            if not starts or seq != ep.client_seq + 1:
                return False
            self._refused_from[ep.role] = seq
            self._out.append(InputRefused(seq, ErrorCode.GOING_AWAY))
        return True

    def _accept(self, ep: Endpoint, seq: int) -> bool:
        """Exactly-once on the way in: old numbers are resends (re-ACK them), gaps are bugs."""
        if ep.accept(seq):
            self._last_activity = self._now
            return True
        self.stats.client_duplicates += 1
        self._send_ack(ep)
        return False

    def _count_input(self, ep: Endpoint, *, urgent: bool) -> None:
        limits = self.limits
        if ep.count_input(self._now, urgent=urgent, every=limits.ack_every, delay=limits.ack_delay):
            self._send_ack(ep)

    def _send_ack(self, ep: Endpoint) -> None:
        self._send(ep, ep.ack())

    # --- internals: conversations (their rules live in conversations.py) ---

    def _input_audio(self, role: Role, seq: int, pcm: bytes, end: bool) -> None:
        """An endpoint's AUDIO: avatar speech, the user's microphone for the producer, or
        refused (the routing decides)."""
        routing = self.routing
        if routing.speaks(role):
            self._audio(role, seq, pcm, end)
            return
        if routing.forward_microphone and self._events is not None:
            self._events.microphone(pcm, end=end)
            return
        raise Fatal(
            ErrorCode.MICROPHONE_DISABLED,
            "this session's speech comes from a producer and browser audio is not forwarded"
            " (create the session with forwardMicrophone to send the microphone)",
        )

    def _audio(self, role: Role, seq: int, pcm: bytes, end: bool) -> None:
        taken = self._conversations.take_audio(end, role)
        if taken is None:
            return  # the rest of an utterance whose conversation already ended
        conversation, first = taken
        if first:
            self.stats.conversations_started += 1
            if self._events is not None:
                self._events.started(conversation, seq, by_browser=role == "browser")
        self._out.append(SendUpstream(conversation.id, pcm, end))
        flags = (p.FLAG_FIRST if first else 0) | (p.FLAG_END if end else 0)
        self._deliver(conversation, (conversation, _AUDIO, pcm, flags, "", ""))

    def _interrupt(self, by: Role) -> None:
        conversations = self._conversations
        live = conversations.live  # INTERRUPTED names the conversation being delivered
        tag = live.tag if live is not None else p.EMPTY_TAG
        events = self._events
        by_browser = by == "browser"
        if events is not None and by_browser:
            events.barge_in(tag)
        for effect in conversations.interrupt():
            self._out.append(effect)
            if events is not None and type(effect) is ConversationEnded:
                events.interrupted(effect, by_browser=by_browser)
        self._release(p.encode_interrupted(self._browser.replay.next_seq, tag))

    def _abort(self, conversation: Conversation, code: ErrorCode, message: str) -> None:
        conversation.message = message
        self._deliver(conversation, (conversation, _ABORTED, b"", 0, code.value, message))
        self._finish(conversation, "aborted", code)

    def _finish(self, conversation: Conversation, outcome: Outcome, code: ErrorCode | None) -> None:
        self._flush(self._conversations.finish(conversation, outcome, code))

    # --- internals: sequencing, the replay buffers and their bounds ---

    def _deliver(self, conversation: Conversation, item: Item) -> None:
        """Release now if the conversation is live, else it waits (and counts) in the queue."""
        if self._conversations.hold(conversation, item):
            self._check_bounds(self._browser)
        else:
            self._release_item(item)

    def _flush(self, steps: Iterator[Item | ConversationEnded]) -> None:
        """Release what the conversations hand back, in their order, as they hand it back."""
        for step in steps:
            if type(step) is ConversationEnded:
                self._out.append(step)
                if self._events is not None:
                    self._events.ended(step)
            else:
                self._release_item(step)  # type: ignore[arg-type]

    def _release_item(self, item: Item) -> None:
        """The message as it goes out: numbered with the next seq of the browser's stream."""
        conversation, kind, payload, flags, code, text = item
        seq = self._browser.replay.next_seq
        if kind == _FRAME:
            self._release(
                p.encode_frame(seq, conversation.tag, payload, end=bool(flags & p.FLAG_END))
            )
            conversation.frames += 1
            if conversation.frames == 1 and self._events is not None:
                self._events.first_frame(conversation)
        elif kind == _AUDIO:
            conversation.audio_bytes += len(payload)
            self._release(
                p.encode_audio(
                    seq,
                    conversation.tag,
                    payload,
                    first=bool(flags & p.FLAG_FIRST),
                    end=bool(flags & p.FLAG_END),
                )
            )
        else:
            self._release(p.encode_aborted(seq, conversation.tag, code, text))

    def _release(self, data: bytes) -> None:
        """Give `data` the browser's next seq (the caller encoded it so), keep it, send it."""
        browser = self._browser
        browser.replay.append(data)
        self._last_activity = self._now
        self._send(browser, data)
        self._check_bounds(browser)

    def _emit(self, producer: Endpoint, data: bytes) -> None:
        """An event on the producer's stream (encoded with its next seq): kept, sent."""
        producer.replay.append(data)
        self.stats.producer_events += 1
        self._send(producer, data)
        self._check_bounds(producer)

    def _check_bounds(self, ep: Endpoint) -> None:
        limits = self.limits
        messages, size = len(ep.replay), ep.replay.size
        if ep is self._browser:
            messages += self._conversations.held_messages
            size += self._conversations.held_bytes
        if messages > limits.replay_buffer_messages or size > limits.replay_buffer_bytes:
            raise Overflow(ep)

    # --- internals: output and endings ---

    def _begin(self, now: float) -> None:
        self._now = now
        self._out = []

    def _take(self) -> list[Effect]:
        if (
            self._draining
            and not self._drained
            and not self._ended
            and (self._drain_now or self._conversations.live is None)
        ):
            self._drained = True
            self._out.append(Drained())
        out = self._out
        self._out = []
        return out

    def _send(self, ep: Endpoint, data: bytes) -> None:
        """Unsequenced or live output: only a connection past HELLO receives anything."""
        if ep.conn is not None and ep.hello_done:
            self._out.append(SendToClient(ep.conn, data))

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
