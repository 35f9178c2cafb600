"""The reliable link: one relay session seen through a succession of WebSockets.

Whatever the protocol on top (the browser's `avatar-relay.v1`, a producer's), the relay's
sockets give the same guarantees, and this module keeps them on the client side:

- every client message gets a sequence number and is kept until the server acknowledges it;
  after a reconnect, what the server did not accept is written again, in order;
- every sequenced server message reaches the consumer exactly once and in order; the highest one
  received goes into the next `HELLO{lastSeq}`, so the server replays exactly the gap;
- a lost socket (a cut, a silent path, a transient refusal) is replaced with a fresh ticket from
  the REST API, with jittered backoff, until the session's resume window runs out; the server's
  final refusals (session gone, resume impossible) end the link with their stable code.

The protocol's own bytes stay out of it: a `Wire` says how to write the link's messages (HELLO,
ACK, PING, PONG, BYE) and how to read the server's into the link's vocabulary (`Inbound`).
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
from typing import Any, Final, Generic, Literal, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.typing import Origin, Subprotocol

from avatar_relay_client.errors import ErrorCode, RelayError

log = logging.getLogger("avatar_relay_client.link")

MAX_NONCE: Final = 0xFFFF_FFFF

E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)

State = Literal["connected", "disconnected", "resumed"]


@dataclass(frozen=True, slots=True)
class StateChange:
    """The socket went down or came back. `resumed`: a reconnect continued the session."""

    state: State
    reconnects: int


# Endings after which this session cannot continue but a new one would work: the link puts one
# `SessionLost` event in the stream for them, right before the stream ends with the error.
SESSION_LOST: Final = frozenset(
    {
        ErrorCode.SESSION_NOT_FOUND,
        ErrorCode.GOING_AWAY,
        ErrorCode.RESUME_FAILED,
        ErrorCode.SESSION_CLOSED,
        ErrorCode.IDLE_TIMEOUT,
        ErrorCode.SESSION_DURATION_EXCEEDED,
    }
)


@dataclass(frozen=True, slots=True)
class SessionLost:
    """The session is over and cannot be resumed, but nothing is wrong with the setup (its
    instance died and its state was not kept, it expired, the server shut down without handing
    it over, ...). `action` says what to do: "newSession", create a new session. The last event
    of the stream, which then raises the RelayError with the same code."""

    code: ErrorCode
    message: str
    action: Literal["newSession"] = "newSession"


# --- what a server message means to the link ---


@dataclass(frozen=True, slots=True)
class Greeting:
    """The server's answer to HELLO: what it accepted from us and how far it has got.
    `message` is the protocol's own welcome, for the client on top."""

    client_ack: int
    server_seq: int
    message: object


@dataclass(frozen=True, slots=True)
class Delivery(Generic[E_co]):
    """A sequenced server message, for the consumer."""

    seq: int
    event: E_co


@dataclass(frozen=True, slots=True)
class Acked:
    seq: int


@dataclass(frozen=True, slots=True)
class Pinged:
    nonce: int


@dataclass(frozen=True, slots=True)
class Ponged:
    pass


@dataclass(frozen=True, slots=True)
class Refused:
    """The server ended the session in-band (ERROR, RESUME_FAILED): the link stops with it."""

    error: RelayError


Inbound = Greeting | Delivery[E] | Acked | Pinged | Ponged | Refused


class Wire(Protocol[E_co]):
    """A protocol's link messages. `read` raises RelayError on bytes it cannot parse."""

    @property
    def subprotocol(self) -> str: ...

    def hello(self, last_seq: int) -> bytes: ...

    def ack(self, seq: int) -> bytes: ...

    def ping(self, nonce: int) -> bytes: ...

    def pong(self, nonce: int) -> bytes: ...

    def bye(self) -> bytes: ...

    def read(self, data: bytes) -> Inbound[E_co]: ...


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
    resent: int = 0  # client messages written again after a reconnect
    missed: int = 0  # server messages sent while we were away (replayed after the greeting)
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


def error_code(text: str, fallback: ErrorCode) -> ErrorCode:
    """The stable code a server sent as text; `fallback` for one this client does not know."""
    try:
        return ErrorCode(text)
    except ValueError:
        return fallback


def ws_url(base_url: str, url: str, ticket: str) -> str:
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
    """A client message kept until the server acknowledges its seq."""

    seq: int
    data: bytes


_END: Final = object()  # closes the event stream


class ReliableLink(Generic[E]):
    """REST calls to the relay, and one socket at a time to its session, kept alive.

    `post` works from the start (to create the session); `open` then takes the first ticket and
    socket URL, plus the REST path that mints the next tickets. See the client on top (e.g.
    `RelayClient`) for what each option means to a user.
    """

    def __init__(
        self,
        wire: Wire[E],
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
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
        on_greeting: Callable[[Greeting], None] | None = None,
        on_delivery: Callable[[E], None] | None = None,
        on_failure: Callable[[RelayError], None] | None = None,
    ) -> None:
        self._wire = wire
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers or {})
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
        self._on_greeting = on_greeting
        # Called from the reader as a sequenced message is accepted (exactly once, in order),
        # before the consumer sees it; and once when the link fails for good.
        self._on_delivery = on_delivery
        self._on_failure = on_failure
        self.stats = ClientStats()

        # From `open`.
        self.resume_window = 0.0
        self._url = ""
        self._ticket_path = ""
        self._name = ""

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
        self._error: RelayError | None = None
        self._offline_until = 0.0
        self._connected = asyncio.Event()

    # --- lifecycle ---

    async def open(
        self, *, url: str, ticket: str, ticket_path: str, resume_window: float, name: str = ""
    ) -> None:
        """Open the first connection (returns after the greeting) and keep it alive from then on.

        `ticket_path` is the REST route (POST, empty body) answering `{"ticket", "url"?}` for
        each reconnect. On failure the link is shut down and the error raised.
        """
        self._url, self._ticket_path, self.resume_window = url, ticket_path, resume_window
        self._name = name
        try:
            await self._connect(ticket)
        except _Lost as exc:
            await self.shutdown()
            raise RelayError(ErrorCode.CONNECTION_FAILED, f"relay socket: {exc}") from None
        except BaseException:
            await self.shutdown()
            raise
        self._reader = asyncio.create_task(self._run(), name=f"relay-link-{name}")
        self._acker = asyncio.create_task(self._ack_timer())

    async def close(self, *, bye: bool = True) -> None:
        """Say BYE (unless `bye=False`: the session stays resumable) and stop."""
        if self._closing:
            return
        self._closing = True
        ws = self._ws
        if ws is not None and self._error is None:
            with contextlib.suppress(ConnectionClosed, OSError):
                if self._last_seq > self._acked:
                    await self._write(ws, self._wire.ack(self._last_seq))
                if bye:
                    await self._write(ws, self._wire.bye())
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
        await self.shutdown()
        self._push_end()

    async def shutdown(self) -> None:
        """Stop at once: no BYE, no close handshake."""
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

    @property
    def closing(self) -> bool:
        return self._closing

    # --- sending ---

    async def send(self, build: Callable[[int], bytes], size: int) -> int:
        """Give the next client seq to `build`, keep its bytes until acknowledged, write them.

        Waits while more than `max_unacked_bytes` is unacknowledged (`size` is what this message
        adds to that count). Returns the seq; raises RelayError once the link is over.
        """
        self.check_usable()
        while self._pending_bytes + size > self._max_unacked_bytes and self._pending:
            self._acked_changed.clear()
            await self._acked_changed.wait()
            self.check_usable()
        seq = self._next_seq
        self._next_seq += 1
        data = build(seq)
        self._pending.append(_Pending(seq, data))
        self._pending_bytes += len(data)
        await self._flush()
        return seq

    def check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closing:
            raise RelayError(ErrorCode.SESSION_CLOSED, "the relay client is closed")

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

    async def events(self) -> AsyncIterator[E | StateChange | SessionLost]:
        """Every sequenced server message exactly once, in order, plus state changes."""
        while True:
            item = await self._take()
            if item is _END:
                self._push_end()  # let a second iterator end too
                if self._error is not None:
                    raise self._error
                return
            yield item

    async def next_event(self) -> E | StateChange | SessionLost:
        """The next event; raises RelayError when the stream is over."""
        item = await self._take()
        if item is _END:
            self._push_end()
            raise self._error or RelayError(ErrorCode.SESSION_CLOSED, "the relay client is closed")
        event: E | StateChange | SessionLost = item
        return event

    async def _take(self) -> Any:
        item = await self._events.get()
        self._room.set()
        return item

    def _push_end(self) -> None:
        self._events.put_nowait(_END)

    @property
    def error(self) -> RelayError | None:
        """Why the link ended, if it failed."""
        return self._error

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def wait_connected(self) -> None:
        """Return once a socket is open and greeted; raises RelayError if the link is over."""
        self.check_usable()
        await self._connected.wait()
        self.check_usable()

    def drop_connection(self, offline_for: float = 0.0) -> bool:
        """Kill the current socket abruptly (TCP abort, no close frame), like a network cut;
        reconnect after `offline_for` seconds. False when no socket was open."""
        ws = self._ws
        if ws is None:
            return False
        self.stats.drops += 1
        self._offline_until = asyncio.get_running_loop().time() + offline_for
        self._ws = None  # nothing more is written to it; the reader sees the loss and resumes
        self._connected.clear()
        ws.transport.abort()
        return True

    # --- REST ---

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON to the relay's REST API; a refusal raises RelayError with the server's code."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._open_timeout, verify=_tls_context())
        try:
            response = await self._http.post(self.base_url + path, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise RelayError(
                ErrorCode.CONNECTION_FAILED, f"relay server unreachable: {exc}"
            ) from None
        if response.status_code >= 400:
            raise _http_error(response)
        answer: dict[str, Any] = response.json()
        return answer

    # --- connection management ---

    async def _connect(self, ticket: str) -> None:
        """Open a socket, say HELLO{lastSeq}, take the greeting, then resend what is unacked."""
        url = ws_url(self.base_url, self._url, ticket)
        try:
            ws = await ws_connect(
                url,
                subprotocols=[Subprotocol(self._wire.subprotocol)],
                origin=None if self._origin is None else Origin(self._origin),
                open_timeout=self._open_timeout,
                max_size=self._max_message_bytes,
                compression=None,
                ping_interval=None,  # the protocol has its own PING; the server sends it
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            code = _STATUS_CODES.get(status, ErrorCode.CONNECTION_FAILED)
            error = RelayError(code, f"relay socket refused: HTTP {status}", http_status=status)
            if status in _RETRYABLE_STATUSES:
                raise _Lost(str(error)) from None
            raise error from None
        except (OSError, WebSocketException, TimeoutError) as exc:
            raise _Lost(f"connect failed: {exc}") from None
        try:
            greeting = await self._handshake(ws)
        except BaseException:
            ws.transport.abort()
            raise
        self.stats.connections += 1
        self.stats.missed += greeting.server_seq - self._last_seq
        if self._on_greeting is not None:
            self._on_greeting(greeting)
        self._on_ack(greeting.client_ack)
        # What the server accepted on earlier connections is not resent; everything after it is.
        self._sent_upto = greeting.client_ack
        self._ws = ws
        self._connected.set()
        self._acked = self._last_seq  # HELLO{lastSeq} acknowledges everything up to it
        self._flusher = asyncio.create_task(self._flush())

    async def _handshake(self, ws: ClientConnection) -> Greeting:
        try:
            await self._write(ws, self._wire.hello(self._last_seq))
            async with asyncio.timeout(self._open_timeout):
                raw = await ws.recv()
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from None
        except (OSError, TimeoutError) as exc:
            raise _Lost(f"no greeting: {exc}") from None
        message = self._decode(raw)
        match message:
            case Greeting():
                if message.server_seq < self._last_seq:
                    raise RelayError(
                        ErrorCode.RESUME_FAILED,
                        f"server is at seq {message.server_seq}, client already has"
                        f" {self._last_seq}",
                    )
                return message
            case Refused(error):
                raise error
            case Delivery(_, event):
                got = type(event).__name__
            case _:
                got = type(message).__name__
        raise RelayError(ErrorCode.PROTOCOL_ERROR, f"expected the greeting, got {got}")

    def _decode(self, raw: str | bytes) -> Inbound[E]:
        self._last_rx = asyncio.get_running_loop().time()
        if isinstance(raw, str):
            raise RelayError(ErrorCode.PROTOCOL_ERROR, "relay server sent a text frame")
        self.stats.messages_received += 1
        self.stats.bytes_received += len(raw)
        try:
            return self._wire.read(raw)
        except RelayError as exc:
            raise RelayError(
                ErrorCode.PROTOCOL_ERROR, f"bad server message: {exc.message}"
            ) from None

    def _closed_error(self, exc: ConnectionClosed) -> Exception:
        """A closed socket: `_Lost` if reconnecting may help, else the RelayError that ended it."""
        close = exc.rcvd
        if close is None or close.code in _RETRYABLE_CLOSES:
            return _Lost(str(exc))
        fallback = _CLOSE_CODES.get(close.code, ErrorCode.CONNECTION_CLOSED)
        code = error_code(close.reason, fallback) if close.reason else fallback
        return RelayError(code, f"relay server closed the connection ({close.code} {close.reason})")

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
                    raise RelayError(ErrorCode.CONNECTION_CLOSED, "relay connection lost")
                await self._resume()
                await self._put(StateChange("resumed", self.stats.reconnects))
        except RelayError as exc:
            self._fail(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must still end the stream, not hang the consumer
            log.exception("relay link reader failed")
            self._fail(RelayError(ErrorCode.INTERNAL_ERROR, f"relay client failed: {exc!r}"))

    def _fail(self, error: RelayError) -> None:
        if self._error is None and not self._closing:
            self._error = error
            if error.code in SESSION_LOST:
                self._events.put_nowait(SessionLost(error.code, error.message))
        self._closing = True
        self._acked_changed.set()
        self._connected.set()  # wake wait_connected(), which then raises
        if self._ws is not None:
            self._ws.transport.abort()
            self._ws = None
        self._push_end()
        if self._on_failure is not None and self._error is not None:
            self._on_failure(self._error)

    async def _resume(self) -> None:
        """Reconnect within the resume window, or raise the RelayError that says why not.

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
                answer = await self.post(self._ticket_path, {})
                if answer.get("url"):
                    self._url = str(answer["url"])
                await self._connect(str(answer["ticket"]))
            except _Lost as exc:
                last = str(exc)
            except RelayError as exc:
                # A refused ticket can be a race with its expiry, a 5xx or 429 is transient; the
                # server's other refusals (unknown session, resume impossible, closed) are final.
                if exc.code not in (ErrorCode.CONNECTION_FAILED, ErrorCode.TICKET_INVALID) and (
                    exc.http_status not in _RETRYABLE_STATUSES
                ):
                    raise
                last = exc.message
            else:
                self.stats.reconnects += 1
                return
            if loop.time() >= deadline:
                raise RelayError(
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
                case Delivery(seq, event):
                    if seq != self._last_seq + 1:
                        # A correct server never does this; a fresh HELLO gets the exact gap.
                        self.stats.out_of_order += 1
                        raise _Lost(f"got seq {seq} after {self._last_seq}")
                    self._last_seq = seq
                    if self._on_delivery is not None:
                        self._on_delivery(event)
                    await self._put(event)
                    if self._last_seq - self._acked >= self._ack_every:
                        await self._send_ack(ws)
                case Acked(seq):
                    self._on_ack(seq)
                case Pinged(nonce):
                    with contextlib.suppress(ConnectionClosed, OSError):
                        await self._write(ws, self._wire.pong(nonce))
                case Ponged():
                    pass
                case Refused(error):
                    raise error
                case Greeting():
                    raise RelayError(ErrorCode.PROTOCOL_ERROR, "a second greeting")

    async def _put(self, event: E | StateChange) -> None:
        while self._events.qsize() >= self._max_pending_events:
            self._room.clear()
            await self._room.wait()
        self._events.put_nowait(event)

    async def _send_ack(self, ws: ClientConnection) -> None:
        seq = self._last_seq
        with contextlib.suppress(ConnectionClosed, OSError):
            await self._write(ws, self._wire.ack(seq))
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
                self._ping_nonce = (self._ping_nonce + 1) & MAX_NONCE
                with contextlib.suppress(ConnectionClosed, OSError):
                    await self._write(ws, self._wire.ping(self._ping_nonce))
                    self.stats.pings_sent += 1


def _http_error(response: httpx.Response) -> RelayError:
    status = response.status_code
    fallback = _STATUS_CODES.get(status, ErrorCode.UNKNOWN)
    try:
        error = response.json()["error"]
        code = error_code(str(error["code"]), fallback)
        message = str(error.get("message") or "")
    except (ValueError, KeyError, TypeError):
        code, message = fallback, ""
    return RelayError(code, message or f"relay server answered HTTP {status}", http_status=status)
