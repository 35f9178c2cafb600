"""The Python reference client for the relay protocol `avatar-relay.v1` (docs/protocol.md).

For tests, benchmarks and non-browser integrators. It behaves like the browser client: it creates
a relay session over REST, keeps the socket alive across drops (new ticket, `HELLO{lastSeq}`,
resend of unacknowledged audio) and hands the consumer every sequenced server message exactly
once and in order.

    async with RelayClient("http://127.0.0.1:8080", headers={"Authorization": "Bearer ..."}) as c:
        for chunk in chunks:
            await c.send_audio(chunk)
        await c.send_audio(b"", end=True)
        async for event in c.events():
            match event:
                case Audio(): play(event.pcm, event.end)                   # yieldAudioData
                case Frame(): animate([event.payload], event.conversation_id)  # yieldFramesData
                case ConversationAborted(): animate([], event.conversation_id)
                case Interrupted(): controller_interrupt()
            if isinstance(event, Frame) and event.end:
                break

`events()` raises `AppError` when the session is over for good (the server refused a resume,
the session is gone, a protocol error ended it, or no reconnect succeeded within the resume
window); it simply ends after `close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.typing import Origin, Subprotocol

from app.errors import AppError, ErrorCode
from app.relay import protocol as p

log = logging.getLogger("app.relay.client")

# Consumer-facing events. The sequenced server messages are the codec's own dataclasses (each
# keeps its `seq`); only connection state changes are the client's own.
Audio = p.ServerAudio
Frame = p.ServerFrame
ConversationAborted = p.ConversationAborted
Interrupted = p.Interrupted

State = Literal["connected", "disconnected", "resumed"]


@dataclass(frozen=True, slots=True)
class StateChange:
    """The socket went down or came back. `resumed`: a reconnect continued the session."""

    state: State
    reconnects: int


Event = p.ServerAudio | p.ServerFrame | p.ConversationAborted | p.Interrupted | StateChange


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay between reconnect attempts: exponential with full jitter, capped."""

    initial: float = 0.05
    factor: float = 2.0
    maximum: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        return rng.uniform(ceiling / 2, ceiling)


@dataclass(slots=True)
class ClientStats:
    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    connections: int = 0
    reconnects: int = 0
    resent: int = 0  # client AUDIO/INTERRUPT written again after a reconnect
    missed: int = 0  # server messages sent while we were away (replayed after WELCOME)
    acks_sent: int = 0
    pings_sent: int = 0
    drops: int = 0  # connections killed by drop_connection()
    out_of_order: int = 0  # sequenced messages that were not lastSeq + 1 (a server bug)


# Close codes after which reconnecting cannot help: the server ended the session or refuses it.
# Anything else (1006 abnormal, 1001-less transport errors, 1012/1013, 4008 slow consumer) is a
# lost connection, and the server decides on the reconnect whether the gap can still be filled.
_CLOSE_CODES: Final[dict[int, ErrorCode]] = {
    1000: ErrorCode.SESSION_CLOSED,
    1001: ErrorCode.GOING_AWAY,
    1009: ErrorCode.MESSAGE_TOO_LARGE,
    1011: ErrorCode.INTERNAL_ERROR,
    4001: ErrorCode.CONNECTION_REPLACED,
    4400: ErrorCode.INVALID_REQUEST,
    4401: ErrorCode.TICKET_INVALID,
    4403: ErrorCode.ORIGIN_NOT_ALLOWED,
    4404: ErrorCode.SESSION_NOT_FOUND,
    4408: ErrorCode.IDLE_TIMEOUT,
    4409: ErrorCode.RESUME_FAILED,
    4410: ErrorCode.SESSION_CLOSED,
    4429: ErrorCode.SESSION_LIMIT,
}
_RETRYABLE_CLOSES: Final = frozenset({1005, 1006, 1012, 1013, 1014, 4008})
# HTTP statuses on the upgrade (or the ticket route) that a retry may fix.
_RETRYABLE_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
_STATUS_CODES: Final[dict[int, ErrorCode]] = {
    400: ErrorCode.INVALID_REQUEST,
    401: ErrorCode.TICKET_INVALID,
    403: ErrorCode.ORIGIN_NOT_ALLOWED,
    404: ErrorCode.SESSION_NOT_FOUND,
    409: ErrorCode.SESSION_CLOSED,
    410: ErrorCode.SESSION_CLOSED,
    429: ErrorCode.SESSION_LIMIT,
}


class _Lost(Exception):
    """The current socket is gone; reconnect."""


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default verifying context, built once: building it costs ~20 ms per client."""
    return httpx.create_ssl_context()


def _error_code(text: str, fallback: ErrorCode) -> ErrorCode:
    try:
        return ErrorCode(text)
    except ValueError:
        return fallback


def _ws_url(base_url: str, url: str, ticket: str) -> str:
    """The socket URL from the server's answer (absolute or a path), carrying `ticket`."""
    parts = urlsplit(url)
    if not parts.scheme:
        base = urlsplit(base_url)
        parts = parts._replace(scheme=base.scheme, netloc=base.netloc)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "ticket"]
    query.append(("ticket", ticket))
    return urlunsplit(parts._replace(scheme=scheme, query=urlencode(query)))


@dataclass(slots=True)
class _Pending:
    """A client AUDIO/INTERRUPT kept until the server acknowledges its seq."""

    seq: int
    data: bytes


_END: Final = object()  # closes the event stream


class RelayClient:
    """One relay session: REST to create it and get tickets, one WebSocket at a time to use it.

    `headers` authenticate the REST calls (the socket is authenticated by its ticket).
    `reconnect=False` turns a lost connection into an immediate `AppError(connectionClosed)`.
    `max_unacked_bytes` bounds the resend queue: `send_audio` waits while more than that is
    unacknowledged. `max_pending_events` bounds the events not yet taken by the consumer; when
    full, the client stops reading the socket (so a stalled consumer becomes the server's
    slow-consumer case instead of growing memory here).
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        avatar_id: str | None = None,
        sample_rate: int | None = None,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        origin: str | None = None,
        ack_every: int = 10,
        ack_interval: float = 0.25,
        liveness_timeout: float = 45.0,
        open_timeout: float = 10.0,
        max_unacked_bytes: int = 4 * 1024 * 1024,
        max_pending_events: int = 100_000,
        max_message_bytes: int = 1024 * 1024,
        http: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers or {})
        self._requested_avatar = avatar_id
        self._requested_rate = sample_rate
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self._origin = origin
        self._ack_every = ack_every
        self._ack_interval = ack_interval
        self._liveness_timeout = liveness_timeout
        self._last_rx = 0.0  # loop time of the last message from the server
        self._ping_nonce = 0
        self._open_timeout = open_timeout
        self._max_unacked_bytes = max_unacked_bytes
        self._max_message_bytes = max_message_bytes
        self._http = http
        self._own_http = http is None
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self.stats = ClientStats()

        # From the server once the session exists.
        self.session_id = ""
        self.sample_rate = 0
        self.avatar_id = ""
        self.resume_window = 0.0
        self._url = ""

        # server -> client
        self._last_seq = 0  # highest contiguous server seq received
        self._acked = 0  # highest server seq we acknowledged
        # Unbounded queue, bounded by the reader: it waits for room before the next message, so
        # the end marker can always be queued.
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._max_pending_events = max_pending_events
        self._room = asyncio.Event()

        # client -> server
        self._next_seq = 1
        self._pending: deque[_Pending] = deque()
        self._pending_bytes = 0
        self._sent_upto = 0  # highest client seq written on the current connection
        self._written_max = 0  # highest client seq ever written
        self._send_lock = asyncio.Lock()
        self._acked_changed = asyncio.Event()

        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._acker: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self._error: AppError | None = None
        self._offline_until = 0.0
        self._connected = asyncio.Event()

    # --- lifecycle ---

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Create the session and open its first connection (returns after WELCOME)."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._open_timeout, verify=_tls_context())
        try:
            body: dict[str, Any] = {}
            if self._requested_avatar is not None:
                body["avatarId"] = self._requested_avatar
            if self._requested_rate is not None:
                body["sampleRate"] = self._requested_rate
            answer = await self._post("/v1/relay/sessions", body)
            self.session_id = str(answer["sessionId"])
            self.sample_rate = int(answer["sampleRate"])
            self.avatar_id = str(answer["avatarId"])
            self.resume_window = float(answer["resumeWindowSeconds"])
            self._url = str(answer["url"])
            await self._connect(str(answer["ticket"]))
        except _Lost as exc:
            await self._shutdown()
            raise AppError(ErrorCode.CONNECTION_FAILED, f"relay socket: {exc}") from None
        except BaseException:
            await self._shutdown()
            raise
        self._reader = asyncio.create_task(self._run(), name=f"relay-client-{self.session_id}")
        self._acker = asyncio.create_task(self._ack_timer())

    async def close(self, *, bye: bool = True) -> None:
        """End the session (BYE: the server releases the upstream at once) and stop.

        `bye=False` only closes the socket; the session stays resumable for its resume window.
        """
        if self._closing:
            return
        self._closing = True
        ws = self._ws
        if ws is not None and self._error is None:
            with contextlib.suppress(ConnectionClosed, OSError):
                if self._last_seq > self._acked:
                    await self._write(ws, p.encode_client(p.ClientAck(self._last_seq)))
                if bye:
                    await self._write(ws, p.encode_client(p.Bye()))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
        await self._shutdown()
        self._push_end()

    async def _shutdown(self) -> None:
        self._closing = True
        current = asyncio.current_task()
        for task in (self._reader, self._acker, self._flusher):
            if task is not None and task is not current and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._ws is not None:
            self._ws.transport.abort()
            self._ws = None
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    # --- sending ---

    async def send_audio(self, pcm: bytes, end: bool = False) -> int:
        """Queue one chunk of the current utterance; returns its client seq.

        The chunk is kept until the server acknowledges it and resent after a reconnect, so a
        drop never loses or duplicates audio. Raises AppError once the session is over.
        """
        if len(pcm) % 2:
            raise AppError(ErrorCode.BAD_AUDIO, "PCM s16le needs an even number of bytes")
        if not pcm and not end:
            raise AppError(ErrorCode.BAD_AUDIO, "an empty chunk must carry end=True")
        return await self._enqueue(lambda seq: p.ClientAudio(seq, pcm, end), len(pcm))

    async def interrupt(self) -> int:
        """Cancel every conversation started so far (sequenced like audio); returns its seq."""
        return await self._enqueue(p.ClientInterrupt, 0)

    async def _enqueue(self, build: Callable[[int], p.ClientMessage], size: int) -> int:
        self._check_usable()
        while self._pending_bytes + size > self._max_unacked_bytes and self._pending:
            self._acked_changed.clear()
            await self._acked_changed.wait()
            self._check_usable()
        seq = self._next_seq
        self._next_seq += 1
        data = p.encode_client(build(seq))
        self._pending.append(_Pending(seq, data))
        self._pending_bytes += len(data)
        await self._flush()
        return seq

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closing:
            raise AppError(ErrorCode.SESSION_CLOSED, "the relay client is closed")

    async def _flush(self) -> None:
        """Write, in order, every pending message not yet written on the current connection."""
        async with self._send_lock:
            while True:
                ws = self._ws
                if ws is None or not self._pending:
                    return
                index = self._sent_upto + 1 - self._pending[0].seq
                if index >= len(self._pending):
                    return
                item = self._pending[max(0, index)]
                try:
                    await self._write(ws, item.data)
                except (ConnectionClosed, OSError):
                    return  # the reader notices the loss and reconnects
                if item.seq <= self._written_max:
                    self.stats.resent += 1
                self._written_max = max(self._written_max, item.seq)
                if ws is self._ws:
                    self._sent_upto = item.seq

    async def _write(self, ws: ClientConnection, data: bytes) -> None:
        await ws.send(data)
        self.stats.messages_sent += 1
        self.stats.bytes_sent += len(data)

    def _on_ack(self, seq: int) -> None:
        while self._pending and self._pending[0].seq <= seq:
            self._pending_bytes -= len(self._pending.popleft().data)
        self._sent_upto = max(self._sent_upto, seq)
        self._acked_changed.set()

    @property
    def unacked(self) -> int:
        """Client messages the server has not acknowledged yet."""
        return len(self._pending)

    @property
    def last_seq(self) -> int:
        """Highest server seq received (what the next HELLO will carry)."""
        return self._last_seq

    # --- receiving ---

    async def events(self) -> AsyncIterator[Event]:
        """Every sequenced server message exactly once, in order, plus state changes."""
        while True:
            item = await self._take()
            if item is _END:
                self._push_end()  # let a second iterator end too
                if self._error is not None:
                    raise self._error
                return
            yield item

    async def next_event(self) -> Event:
        """The next event; raises AppError when the stream is over."""
        item = await self._take()
        if item is _END:
            self._push_end()
            raise self._error or AppError(ErrorCode.SESSION_CLOSED, "the relay client is closed")
        event: Event = item
        return event

    async def _take(self) -> Any:
        item = await self._events.get()
        self._room.set()
        return item

    def _push_end(self) -> None:
        self._events.put_nowait(_END)

    @property
    def error(self) -> AppError | None:
        """Why the session ended, if it failed."""
        return self._error

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def wait_connected(self) -> None:
        """Return once a socket is open and welcomed; raises AppError if the session is over."""
        self._check_usable()
        await self._connected.wait()
        self._check_usable()

    # --- testing and demos ---

    def drop_connection(self, offline_for: float = 0.0) -> bool:
        """Kill the current socket abruptly (TCP abort, no close frame), like a network cut.

        The client then reconnects and resumes as it would after a real drop, after staying
        offline for `offline_for` seconds (a tunnel, a sleeping laptop). False when no socket
        was open.
        """
        ws = self._ws
        if ws is None:
            return False
        self.stats.drops += 1
        self._offline_until = asyncio.get_running_loop().time() + offline_for
        self._ws = None  # nothing more is written to it; the reader sees the loss and resumes
        self._connected.clear()
        ws.transport.abort()
        return True

    # --- connection management ---

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self._http is not None
        try:
            response = await self._http.post(self.base_url + path, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise AppError(
                ErrorCode.CONNECTION_FAILED, f"relay server unreachable: {exc}"
            ) from None
        if response.status_code >= 400:
            raise self._http_error(response)
        answer: dict[str, Any] = response.json()
        return answer

    @staticmethod
    def _http_error(response: httpx.Response) -> AppError:
        status = response.status_code
        fallback = _STATUS_CODES.get(status, ErrorCode.UNKNOWN)
        try:
            error = response.json()["error"]
            code = _error_code(str(error["code"]), fallback)
            message = str(error.get("message") or "")
        except (ValueError, KeyError, TypeError):
            code, message = fallback, ""
        return AppError(code, message or f"relay server answered HTTP {status}", http_status=status)

    async def _connect(self, ticket: str) -> None:
        """Open a socket, say HELLO{lastSeq}, take the WELCOME, then resend what is unacked."""
        url = _ws_url(self.base_url, self._url, ticket)
        try:
            ws = await ws_connect(
                url,
                subprotocols=[Subprotocol(p.SUBPROTOCOL)],
                origin=None if self._origin is None else Origin(self._origin),
                open_timeout=self._open_timeout,
                max_size=self._max_message_bytes,
                compression=None,
                ping_interval=None,  # the protocol has its own PING; the server sends it
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            code = _STATUS_CODES.get(status, ErrorCode.CONNECTION_FAILED)
            error = AppError(code, f"relay socket refused: HTTP {status}", http_status=status)
            if status in _RETRYABLE_STATUSES:
                raise _Lost(str(error)) from None
            raise error from None
        except (OSError, WebSocketException, TimeoutError) as exc:
            raise _Lost(f"connect failed: {exc}") from None
        try:
            welcome = await self._handshake(ws)
        except BaseException:
            ws.transport.abort()
            raise
        self.stats.connections += 1
        self.stats.missed += welcome.server_seq - self._last_seq
        if welcome.sample_rate:
            self.sample_rate = welcome.sample_rate
        self._on_ack(welcome.client_ack)
        # What the server accepted on earlier connections is not resent; everything after it is.
        self._sent_upto = welcome.client_ack
        self._ws = ws
        self._connected.set()
        self._acked = self._last_seq  # HELLO{lastSeq} acknowledges everything up to it
        self._flusher = asyncio.create_task(self._flush())

    async def _handshake(self, ws: ClientConnection) -> p.Welcome:
        try:
            await self._write(ws, p.encode_client(p.Hello(self._last_seq)))
            async with asyncio.timeout(self._open_timeout):
                raw = await ws.recv()
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from None
        except (OSError, TimeoutError) as exc:
            raise _Lost(f"no WELCOME: {exc}") from None
        message = self._decode(raw)
        match message:
            case p.Welcome():
                if message.server_seq < self._last_seq:
                    raise AppError(
                        ErrorCode.RESUME_FAILED,
                        f"server is at seq {message.server_seq}, client already has"
                        f" {self._last_seq}",
                    )
                return message
            case p.ResumeFailed(last_seq, available_from, code):
                raise AppError(
                    _error_code(code, ErrorCode.RESUME_FAILED),
                    f"cannot resume after seq {last_seq}: the server can replay from"
                    f" {available_from} ({code})",
                )
            case p.ServerError(code, text):
                raise AppError(_error_code(code, ErrorCode.UNKNOWN), text or code)
        raise AppError(ErrorCode.PROTOCOL_ERROR, f"expected WELCOME, got {type(message).__name__}")

    def _decode(self, raw: str | bytes) -> p.ServerMessage:
        self._last_rx = asyncio.get_running_loop().time()
        if isinstance(raw, str):
            raise AppError(ErrorCode.PROTOCOL_ERROR, "relay server sent a text frame")
        self.stats.messages_received += 1
        self.stats.bytes_received += len(raw)
        try:
            return p.decode_server(raw)
        except AppError as exc:
            raise AppError(ErrorCode.PROTOCOL_ERROR, f"bad server message: {exc.message}") from None

    def _closed_error(self, exc: ConnectionClosed) -> Exception:
        """A closed socket: `_Lost` if reconnecting may help, else the AppError that ended it."""
        close = exc.rcvd
        if close is None or close.code in _RETRYABLE_CLOSES:
            return _Lost(str(exc))
        fallback = _CLOSE_CODES.get(close.code, ErrorCode.CONNECTION_CLOSED)
        code = _error_code(close.reason, fallback) if close.reason else fallback
        return AppError(code, f"relay server closed the connection ({close.code} {close.reason})")

    async def _run(self) -> None:
        """Read until the session ends; reconnect (new ticket, HELLO{lastSeq}) after each drop."""
        try:
            while not self._closing:
                ws = self._ws
                try:
                    if ws is None:
                        raise _Lost("not connected")
                    await self._read(ws)
                    return
                except _Lost:
                    pass
                if self._closing:
                    return
                self._ws = None
                self._connected.clear()
                if ws is not None:
                    ws.transport.abort()
                await self._put(StateChange("disconnected", self.stats.reconnects))
                if not self.reconnect:
                    raise AppError(ErrorCode.CONNECTION_CLOSED, "relay connection lost")
                await self._resume()
                await self._put(StateChange("resumed", self.stats.reconnects))
        except AppError as exc:
            self._fail(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must still end the stream, not hang the consumer
            log.exception("relay client reader failed")
            self._fail(AppError(ErrorCode.INTERNAL_ERROR, f"relay client failed: {exc!r}"))

    def _fail(self, error: AppError) -> None:
        if self._error is None and not self._closing:
            self._error = error
        self._closing = True
        self._acked_changed.set()
        self._connected.set()  # wake wait_connected(), which then raises
        if self._ws is not None:
            self._ws.transport.abort()
            self._ws = None
        self._push_end()

    async def _resume(self) -> None:
        """Reconnect within the resume window, or raise the AppError that says why not.

        At least one attempt is made even past the window, so the server's own verdict
        (resumeFailed, sessionNotFound, ...) is what the consumer sees.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.resume_window
        offline = self._offline_until - loop.time()
        if offline > 0:
            await asyncio.sleep(offline)
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = await self._post(f"/v1/relay/sessions/{self.session_id}/tickets", {})
                if answer.get("url"):
                    self._url = str(answer["url"])
                await self._connect(str(answer["ticket"]))
            except _Lost as exc:
                last = str(exc)
            except AppError as exc:
                # A refused ticket can be a race with its expiry, a 5xx or 429 is transient; the
                # server's other refusals (unknown session, resume impossible, closed) are final.
                if exc.code not in (ErrorCode.CONNECTION_FAILED, ErrorCode.TICKET_INVALID) and (
                    exc.upstream_http_status not in _RETRYABLE_STATUSES
                ):
                    raise
                last = exc.message
            else:
                self.stats.reconnects += 1
                return
            if loop.time() >= deadline:
                raise AppError(
                    ErrorCode.RESUME_FAILED,
                    f"could not reconnect within the {self.resume_window:g}s resume window"
                    f" ({last})",
                )
            await asyncio.sleep(self.backoff.delay(attempt, self._rng))

    async def _read(self, ws: ClientConnection) -> None:
        """Handle server messages until the socket closes; returns only on our own close."""
        while True:
            try:
                raw = await ws.recv()
            except ConnectionClosed as exc:
                if self._closing:
                    return
                raise self._closed_error(exc) from None
            except OSError as exc:
                raise _Lost(str(exc)) from None
            message = self._decode(raw)
            match message:
                case p.ServerAudio() | p.ServerFrame() | p.ConversationAborted() | p.Interrupted():
                    if message.seq != self._last_seq + 1:
                        # A correct server never does this; a fresh HELLO gets the exact gap.
                        self.stats.out_of_order += 1
                        raise _Lost(f"got seq {message.seq} after {self._last_seq}")
                    self._last_seq = message.seq
                    await self._put(message)
                    if self._last_seq - self._acked >= self._ack_every:
                        await self._send_ack(ws)
                case p.ServerAck(seq):
                    self._on_ack(seq)
                case p.ServerPing(nonce):
                    with contextlib.suppress(ConnectionClosed, OSError):
                        await self._write(ws, p.encode_client(p.ClientPong(nonce)))
                case p.ServerPong():
                    pass
                case p.ServerError(code, text):
                    raise AppError(_error_code(code, ErrorCode.UNKNOWN), text or code)
                case p.ResumeFailed(_, _, code):
                    raise AppError(_error_code(code, ErrorCode.RESUME_FAILED), code)
                case p.Welcome():
                    raise AppError(ErrorCode.PROTOCOL_ERROR, "a second WELCOME")

    async def _put(self, event: Event) -> None:
        while self._events.qsize() >= self._max_pending_events:
            self._room.clear()
            await self._room.wait()
        self._events.put_nowait(event)

    async def _send_ack(self, ws: ClientConnection) -> None:
        seq = self._last_seq
        with contextlib.suppress(ConnectionClosed, OSError):
            await self._write(ws, p.encode_client(p.ClientAck(seq)))
            self._acked = max(self._acked, seq)
            self.stats.acks_sent += 1

    async def _ack_timer(self) -> None:
        """Acknowledge what arrived within `ack_interval` even when fewer than `ack_every` did;
        watch liveness: a silent socket gets a PING, and is dropped (then resumed) when nothing
        at all arrives for `liveness_timeout` (a dead network path sends no FIN)."""
        loop = asyncio.get_running_loop()
        pinged_at = 0.0
        while not self._closing:
            await asyncio.sleep(self._ack_interval)
            ws = self._ws
            if ws is None:
                continue
            if self._last_seq > self._acked:
                await self._send_ack(ws)
            silent = loop.time() - self._last_rx
            if silent > self._liveness_timeout:
                log.info("relay connection silent for %.0fs; reconnecting", silent)
                ws.transport.abort()
            elif silent > self._liveness_timeout / 3 and pinged_at < self._last_rx:
                pinged_at = loop.time()
                self._ping_nonce = (self._ping_nonce + 1) & p.MAX_SEQ
                with contextlib.suppress(ConnectionClosed, OSError):
                    await self._write(ws, p.encode_client(p.ClientPing(self._ping_nonce)))
                    self.stats.pings_sent += 1
