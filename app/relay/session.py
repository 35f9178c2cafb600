"""The relay session core: one pure state machine per relay session.

It performs no I/O and reads no clock: the shell feeds it events (with `now`, in seconds on any
monotonic scale) and performs the effects it returns, in order, before the next event. A client
message goes: decode, dedupe by client seq (and acknowledge), then the conversations
(`conversations.py`: which one, live or held), then the server seq and the replay buffer
(`replay.py`), then out as an effect (`effects.py`). Upstream frames join at the conversations.

The session itself owns what makes delivery exactly-once across reconnects: client sequence
numbers and acks, server sequence numbers, resume, liveness and the limits (the buffer bounds
count held messages too). See docs/protocol.md for the rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.errors import ErrorCode, RelayError, spec
from app.relay.conversations import Conversation, Conversations, Item
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
from app.relay.replay import ReplayBuffer
from avatar_relay_client import browser_protocol as p

if TYPE_CHECKING:
    from app.settings import Settings

NORMAL_CLOSE = 1000


@dataclass(frozen=True, slots=True)
class RelayLimits:
    max_message_bytes: int = 256 * 1024
    replay_buffer_messages: int = 4096
    replay_buffer_bytes: int = 16 * 1024 * 1024
    resume_window: float = 30.0
    idle_timeout: float = 120.0
    max_session: float = 3600.0
    ping_interval: float = 15.0
    hello_timeout: float = 10.0
    # Acknowledge client chunks in small batches: an ACK per chunk would double the messages.
    ack_every: int = 8
    ack_delay: float = 0.2

    @classmethod
    def from_settings(cls, settings: Settings) -> RelayLimits:
        return cls(
            max_message_bytes=settings.max_message_bytes,
            replay_buffer_messages=settings.replay_buffer_messages,
            replay_buffer_bytes=settings.replay_buffer_bytes,
            resume_window=float(settings.resume_window_seconds),
            idle_timeout=settings.idle_timeout_seconds,
            max_session=settings.max_session_seconds,
        )


@dataclass(slots=True)
class RelayStats:
    """Counters for metrics and tests; the shell reads them, the core only increments."""

    conversations_started: int = 0
    client_duplicates: int = 0
    frames_dropped: int = 0
    resumes: int = 0
    replayed_messages: int = 0


# Plain ints: compared once per message on the frame path.
_AUDIO = int(p.ServerType.AUDIO)
_FRAME = int(p.ServerType.FRAME)
_ABORTED = int(p.ServerType.CONVERSATION_ABORTED)


class _Fatal(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Overflow(_Fatal):
    pass


class RelaySession:
    """Feed events in, get effects out. Every `on_*` method returns the effects to perform."""

    def __init__(
        self,
        session_id: str,
        *,
        sample_rate: int,
        limits: RelayLimits,
        new_conversation_id: Callable[[], str],
        now: float,
    ) -> None:
        self.session_id = session_id
        self.sample_rate = sample_rate
        self.limits = limits
        self.stats = RelayStats()
        self._created = now
        self._now = now
        self._last_activity = now
        self._out: list[Effect] = []

        self._ended = False
        self._broken: ErrorCode | None = None  # buffer lost while away: resume must fail

        # client connection
        self._conn: int | None = None
        self._hello_done = False
        self._connected_at = now
        self._disconnected_at: float | None = now  # no client yet: the resume window applies
        self._hellos = 0
        self._last_ping = now
        self._ping_nonce = 0

        # client -> server
        self._client_seq = 0
        self._unacked_in = 0
        self._ack_due: float | None = None

        # server -> client
        self._conversations = Conversations(new_conversation_id)
        self._replay = ReplayBuffer()

        # draining (on_drain): no new conversations; Drained once nothing is in flight
        self._draining = False
        self._refused_from: int | None = None  # first client seq not accepted while draining
        self._drain_now = False  # the refused input holds an interrupt: hand over at once
        self._drained = False

    # --- read-only views for the shell ---

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def connection(self) -> int | None:
        return self._conn

    @property
    def client_seq(self) -> int:
        """Highest contiguous client sequence number accepted."""
        return self._client_seq

    @property
    def server_seq(self) -> int:
        """Highest server sequence number assigned."""
        return self._replay.last_seq

    @property
    def buffered_messages(self) -> int:
        return len(self._replay) + self._conversations.held_messages

    @property
    def buffered_bytes(self) -> int:
        return self._replay.size + self._conversations.held_bytes

    def next_deadline(self) -> float | None:
        """When the shell should call `on_tick` next at the latest (None: never again)."""
        if self._ended:
            return None
        limits = self.limits
        times = [self._created + limits.max_session]
        if self._disconnected_at is not None:
            times.append(self._disconnected_at + limits.resume_window)
        if self._broken is None:
            times.append(self._last_activity + limits.idle_timeout)
        if self._conn is not None:
            if not self._hello_done:
                times.append(self._connected_at + limits.hello_timeout)
            else:
                times.append(self._last_ping + limits.ping_interval)
                if self._ack_due is not None:
                    times.append(self._ack_due)
        return min(times)

    # --- events: the client connection ---

    def on_client_connected(self, conn: int, now: float) -> list[Effect]:
        """A new, authenticated transport for this session; it must send HELLO first."""
        if self._ended:
            code = ErrorCode.SESSION_CLOSED
            return [CloseClient(conn, spec(code).close_code, code.value)]
        self._begin(now)
        if self._conn is not None:
            code = ErrorCode.CONNECTION_REPLACED
            self._out.append(CloseClient(self._conn, spec(code).close_code, code.value))
        self._conn = conn
        self._hello_done = False
        self._connected_at = now
        self._disconnected_at = None
        return self._take()

    def on_client_disconnected(self, conn: int, now: float) -> list[Effect]:
        if self._ended or conn != self._conn:
            return []
        self._begin(now)
        self._conn = None
        self._hello_done = False
        self._disconnected_at = now
        self._ack_due = None
        return self._take()

    def on_client_data(self, conn: int, data: bytes, now: float) -> list[Effect]:
        """One binary message from the client: decoded here so every violation has one path."""
        if self._ended or conn != self._conn:
            return []
        try:
            message = p.decode_client(data, self.limits.max_message_bytes)
        except RelayError as error:
            self._begin(now)
            self._fatal(_Fatal(error.code, error.message))
            return self._take()
        return self.on_client_message(conn, message, now)

    def on_client_error(self, conn: int, code: ErrorCode, message: str, now: float) -> list[Effect]:
        """A violation the transport detected (a text frame, a client that stopped reading):
        handled like a protocol error found by the decoder, so it has the same single path."""
        if self._ended or conn != self._conn:
            return []
        self._begin(now)
        self._fatal(_Fatal(code, message))
        return self._take()

    def on_client_message(self, conn: int, message: p.ClientMessage, now: float) -> list[Effect]:
        if self._ended or conn != self._conn:
            return []
        self._begin(now)
        try:
            self._client_message(message)
        except _Fatal as fatal:
            self._fatal(fatal)
        return self._take()

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
            item = (conversation.tag, _FRAME, raw, p.FLAG_END if end else 0, "", "")
            self._deliver(conversation, item)
            if end:
                self._finish(conversation, "completed", None)
        except _Fatal as fatal:
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
        except _Fatal as fatal:
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
        except _Fatal as fatal:
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
            raise _Fatal(code, message)
        except _Fatal as fatal:
            self._fatal(fatal)
        return self._take()

    # --- events: time and lifecycle ---

    def on_tick(self, now: float) -> list[Effect]:
        if self._ended:
            return []
        self._begin(now)
        limits = self.limits
        try:
            if (
                self._disconnected_at is not None
                and now - self._disconnected_at >= limits.resume_window
            ):
                self._end(ErrorCode.SESSION_CLOSED)
            elif now - self._created >= limits.max_session:
                raise _Fatal(ErrorCode.SESSION_DURATION_EXCEEDED, "maximum session duration")
            elif self._broken is None and now - self._last_activity >= limits.idle_timeout:
                raise _Fatal(ErrorCode.IDLE_TIMEOUT, "no activity")
            elif self._conn is not None and not self._hello_done:
                if now - self._connected_at >= limits.hello_timeout:
                    code = ErrorCode.INVALID_REQUEST
                    self._out.append(CloseClient(self._conn, spec(code).close_code, "no HELLO"))
                    self._conn = None
                    self._disconnected_at = now
            elif self._conn is not None:
                if self._ack_due is not None and now >= self._ack_due:
                    self._send_ack()
                if now - self._last_ping >= limits.ping_interval:
                    self._ping_nonce = (self._ping_nonce + 1) & p.MAX_SEQ
                    self._last_ping = now
                    self._send(p.encode_server(p.ServerPing(self._ping_nonce)))
        except _Fatal as fatal:
            self._fatal(fatal)
        return self._take()

    def on_drain(self, now: float) -> list[Effect]:
        """The instance is draining: conversations in flight go on to their end, a message that
        would start a new one is not accepted (`InputRefused`, once), and `Drained` follows as
        soon as nothing is in flight (at once when idle). The shell then hands the session over
        (`on_handover`) or ends it (`on_shutdown`)."""
        if self._ended:
            return []
        self._begin(now)
        self._draining = True
        return self._take()

    def on_handover(self, now: float) -> list[Effect]:
        """The session continues on another instance: the client is told to reconnect and
        resume (close 1012 `sessionMoved`) and the session ends here. The shell has saved
        what the next instance needs before this."""
        if self._ended:
            return []
        self._begin(now)
        code = ErrorCode.SESSION_MOVED
        if self._conn is not None:
            self._out.append(CloseClient(self._conn, spec(code).close_code, code.value))
        self._end(code)
        return self._take()

    def on_shutdown(self, now: float) -> list[Effect]:
        """The server is draining: tell the client to go elsewhere, end the session."""
        if self._ended:
            return []
        self._begin(now)
        self._fatal(_Fatal(ErrorCode.GOING_AWAY, "server is shutting down"))
        return self._take()

    # --- internals: client messages ---

    def _client_message(self, message: p.ClientMessage) -> None:
        if not self._hello_done:
            if not isinstance(message, p.Hello):
                raise _Fatal(ErrorCode.INVALID_REQUEST, "the first message must be HELLO")
            self._hello(message.last_seq)
            return
        match message:
            case p.ClientAudio(seq, pcm, end):
                if self._draining and self._refused(seq, self._conversations.would_start):
                    return
                if self._accept(seq):
                    self._audio(pcm, end)
                    self._count_input(urgent=end)
            case p.ClientInterrupt(seq):
                if self._draining and self._refused(seq, False):
                    self._drain_now = True
                    return
                if self._accept(seq):
                    self._interrupt()
                    self._count_input(urgent=True)
            case p.ClientAck(seq):
                if seq > self._replay.last_seq:
                    raise _Fatal(ErrorCode.BAD_ACK, f"ack {seq} for a message never sent")
                self._replay.ack(seq)
            case p.ClientPing(nonce):
                self._send(p.encode_server(p.ServerPong(nonce)))
            case p.ClientPong():
                pass
            case p.Bye():
                conn = self._conn
                assert conn is not None
                self._out.append(CloseClient(conn, NORMAL_CLOSE, "bye"))
                self._end(None)
            case p.Hello():
                raise _Fatal(ErrorCode.INVALID_REQUEST, "HELLO sent twice")

    def _hello(self, last_seq: int) -> None:
        replay = self._replay
        conn = self._conn
        assert conn is not None
        if last_seq > replay.last_seq:
            raise _Fatal(ErrorCode.BAD_ACK, f"resume from {last_seq}, never sent")
        lost = self._broken
        if lost is None and last_seq < replay.acked:
            lost = ErrorCode.RESUME_FAILED
        if lost is not None:
            available = replay.next_seq if self._broken else replay.acked + 1
            failed = p.ResumeFailed(last_seq, available, lost.value)
            self._out.append(SendToClient(conn, p.encode_server(failed)))
            code = ErrorCode.RESUME_FAILED
            self._out.append(CloseClient(conn, spec(code).close_code, code.value))
            self._end(code)
            return
        replay.ack(last_seq)
        self._hello_done = True
        resumed = self._hellos > 0
        self._hellos += 1
        if resumed:
            self.stats.resumes += 1
        welcome = p.Welcome(
            self.session_id,
            self._client_seq,
            replay.last_seq,
            self.sample_rate,
            round(self.limits.resume_window * 1000),
            resumed,
        )
        self._send(p.encode_server(welcome))
        self._unacked_in = 0
        self._ack_due = None
        self._last_ping = self._now
        for data in replay.after(last_seq):
            self.stats.replayed_messages += 1
            self._out.append(SendToClient(conn, data))

    def _refused(self, seq: int, starts: bool) -> bool:
        """While draining: not accepting `seq` (neither processed nor acknowledged) because it,
        or a message before it, would start a new conversation. Resends of accepted numbers
        and sequence gaps take their usual paths."""
        if seq <= self._client_seq:
            return False
        if self._refused_from is None:
            if not starts or seq != self._client_seq + 1:
                return False
            self._refused_from = seq
            self._out.append(InputRefused(seq, ErrorCode.GOING_AWAY))
        return True

    def _accept(self, seq: int) -> bool:
        """Exactly-once on the way up: old numbers are resends (re-ACK them), gaps are bugs."""
        expected = self._client_seq + 1
        if seq == expected:
            self._client_seq = seq
            self._last_activity = self._now
            return True
        if seq < expected:
            self.stats.client_duplicates += 1
            self._send_ack()
            return False
        raise _Fatal(ErrorCode.BAD_SEQUENCE, f"expected client seq {expected}, got {seq}")

    def _count_input(self, *, urgent: bool) -> None:
        self._unacked_in += 1
        if urgent or self._unacked_in >= self.limits.ack_every:
            self._send_ack()
        elif self._ack_due is None:
            self._ack_due = self._now + self.limits.ack_delay

    def _send_ack(self) -> None:
        self._unacked_in = 0
        self._ack_due = None
        self._send(p.encode_server(p.ServerAck(self._client_seq)))

    # --- internals: conversations (their rules live in conversations.py) ---

    def _audio(self, pcm: bytes, end: bool) -> None:
        taken = self._conversations.take_audio(end)
        if taken is None:
            return  # the rest of an utterance whose conversation already ended
        conversation, first = taken
        if first:
            self.stats.conversations_started += 1
        self._out.append(SendUpstream(conversation.id, pcm, end))
        flags = (p.FLAG_FIRST if first else 0) | (p.FLAG_END if end else 0)
        self._deliver(conversation, (conversation.tag, _AUDIO, pcm, flags, "", ""))

    def _interrupt(self) -> None:
        conversations = self._conversations
        live = conversations.live  # INTERRUPTED names the conversation being delivered
        tag = live.tag if live is not None else p.EMPTY_TAG
        self._out.extend(conversations.interrupt())
        self._release(p.encode_interrupted(self._replay.next_seq, tag))

    def _abort(self, conversation: Conversation, code: ErrorCode, message: str) -> None:
        self._deliver(conversation, (conversation.tag, _ABORTED, b"", 0, code.value, message))
        self._finish(conversation, "aborted", code)

    def _finish(self, conversation: Conversation, outcome: Outcome, code: ErrorCode | None) -> None:
        self._flush(self._conversations.finish(conversation, outcome, code))

    # --- internals: sequencing, the replay buffer and its bounds ---

    def _deliver(self, conversation: Conversation, item: Item) -> None:
        """Release now if the conversation is live, else it waits (and counts) in the queue."""
        if self._conversations.hold(conversation, item):
            self._check_bounds()
        else:
            self._release(self._encode(item))

    def _flush(self, steps: Iterator[Item | ConversationEnded]) -> None:
        """Release what the conversations hand back, in their order, as they hand it back."""
        for step in steps:
            if isinstance(step, ConversationEnded):
                self._out.append(step)
            else:
                self._release(self._encode(step))

    def _encode(self, item: Item) -> bytes:
        """The message as it goes out: numbered with the next server seq."""
        tag, kind, payload, flags, code, text = item
        seq = self._replay.next_seq
        if kind == _FRAME:
            return p.encode_frame(seq, tag, payload, end=bool(flags & p.FLAG_END))
        if kind == _AUDIO:
            return p.encode_audio(
                seq, tag, payload, first=bool(flags & p.FLAG_FIRST), end=bool(flags & p.FLAG_END)
            )
        return p.encode_aborted(seq, tag, code, text)

    def _release(self, data: bytes) -> None:
        """Give `data` the next server seq (the caller encoded it so), keep it, send it."""
        self._replay.append(data)
        self._last_activity = self._now
        self._send(data)
        self._check_bounds()

    def _check_bounds(self) -> None:
        limits = self.limits
        if (
            len(self._replay) + self._conversations.held_messages > limits.replay_buffer_messages
            or self._replay.size + self._conversations.held_bytes > limits.replay_buffer_bytes
        ):
            raise _Overflow(ErrorCode.SLOW_CONSUMER, "unacknowledged messages exceed the buffer")

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

    def _send(self, data: bytes) -> None:
        """Unsequenced or live output: only a connection past HELLO receives anything."""
        if self._conn is not None and self._hello_done:
            self._out.append(SendToClient(self._conn, data))

    def _fatal(self, fatal: _Fatal) -> None:
        if isinstance(fatal, _Overflow) and self._conn is None:
            self._break(fatal.code)
            return
        if self._conn is not None:
            self._out.append(
                SendToClient(self._conn, p.encode_server(p.ServerError(fatal.code, fatal.message)))
            )
            self._out.append(CloseClient(self._conn, spec(fatal.code).close_code, fatal.code))
        self._end(fatal.code)

    def _break(self, code: ErrorCode) -> None:
        """The buffer overflowed while the client was away: the gap is lost for good. Keep the
        session until the resume window closes only to answer a reconnect with RESUME_FAILED."""
        self._broken = code
        self._out.extend(self._conversations.drop(code))
        self._replay.clear()
        self._out.append(ReleaseUpstream())

    def _end(self, code: ErrorCode | None) -> None:
        self._out.extend(self._conversations.drop(code or ErrorCode.SESSION_CLOSED))
        self._replay.clear()
        self._ended = True
        self._conn = None
        self._out.append(SessionEnded(code))
