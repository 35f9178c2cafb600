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

The protocol's own bytes stay out of it: a `Wire` (`wire`) says how to write the link's messages
(HELLO, ACK, PING, PONG, BYE) and how to read the server's into the link's vocabulary (`Inbound`).
This module is the I/O shell; the rest lives beside it: `connection` (one greeted socket),
`outbox` (what to write again), `inbox` (what reaches the consumer, exactly once, in order),
`liveness` (when a quiet socket is dead), `reconnect` (which endings a new socket may fix,
backoff), `rest` (the REST calls and socket URLs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic

import httpx
from websockets.exceptions import ConnectionClosed

from avatar_relay_client.connection import Connection, connect
from avatar_relay_client.errors import ErrorCode, RelayError, error_code
from avatar_relay_client.events import SESSION_LOST, SessionLost, StateChange
from avatar_relay_client.inbox import Inbox
from avatar_relay_client.liveness import Liveness
from avatar_relay_client.outbox import Outbox, Pending
from avatar_relay_client.reconnect import Backoff, Lost, closed_error, retry_within
from avatar_relay_client.rest import post_json, tls_context, ws_url
from avatar_relay_client.stats import ClientStats
from avatar_relay_client.stream import Ended
from avatar_relay_client.wire import (
    Acked,
    Delivery,
    E,
    Greeting,
    Inbound,
    Pinged,
    Ponged,
    Refused,
    Wire,
)

# The link's interface for the protocol clients on top (`browser`, `producer`): the link itself,
# the vocabulary a `Wire` speaks, and the events and errors the consumer sees.
__all__ = [
    "Acked",
    "Backoff",
    "ClientStats",
    "Delivery",
    "Greeting",
    "Inbound",
    "Pinged",
    "Ponged",
    "Refused",
    "ReliableLink",
    "SessionLost",
    "StateChange",
    "Wire",
    "error_code",
    "ws_url",
]

log = logging.getLogger("avatar_relay_client.link")

# Mints the next ticket without the REST route: `{"ticket": ..., "url"?: ...}` as it answers.
TicketSource = Callable[[], Awaitable[Mapping[str, Any]]]


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
        ack_every: int = 25,
        ack_interval: float = 1.0,
        liveness_timeout: float = 45.0,
        open_timeout: float = 10.0,
        max_unacked_bytes: int = 4 * 1024 * 1024,
        max_pending_events: int = 100_000,
        max_message_bytes: int = 1024 * 1024,
        http: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
        on_greeting: Callable[[Greeting], None] | None = None,
        on_delivery: Callable[[E], None] | None = None,
        expand: Callable[[E], Sequence[E]] | None = None,
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
        self._liveness = Liveness(liveness_timeout)
        self._open_timeout = open_timeout
        self._max_unacked_bytes = max_unacked_bytes
        self._max_message_bytes = max_message_bytes
        self._http = http
        self._own_http = http is None
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._on_greeting = on_greeting
        self._on_failure = on_failure  # called once, when the link fails for good
        self.stats = ClientStats()

        # From `open`.
        self.resume_window = 0.0
        self._url = ""
        self._ticket_path = ""
        self._mint: TicketSource | None = None
        self._name = ""

        # server -> client
        self._inbox: Inbox[E] = Inbox(max_pending_events, on_delivery=on_delivery, expand=expand)

        # client -> server
        self._outbox = Outbox()
        self._send_lock = asyncio.Lock()
        self._acked_changed = asyncio.Event()

        self._ws: Connection[E] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._acker: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self._error: RelayError | None = None
        self._offline_until = 0.0
        self._losses = 0  # writes lose_next_message() asked to lose, not lost yet
        self._connected = asyncio.Event()

    # --- lifecycle ---

    async def open(
        self,
        *,
        url: str,
        ticket: str,
        ticket_path: str,
        resume_window: float,
        name: str = "",
        tickets: TicketSource | None = None,
    ) -> None:
        """Open the first connection (returns after the greeting) and keep it alive from then on.

        `ticket_path` is the REST route (POST, empty body) answering `{"ticket", "url"?}` for
        each reconnect; `tickets`, when given, answers the same instead of that route. On failure
        the link is shut down and the error raised.
        """
        self._url, self._ticket_path, self.resume_window = url, ticket_path, resume_window
        self._mint = tickets
        self._name = name
        try:
            await self._connect(ticket)
        except Lost as exc:
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
                if self._inbox.unacked > 0:
                    await ws.write(self._wire.ack(self._inbox.last_seq))
                if bye:
                    await ws.write(self._wire.bye())
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
        await self.shutdown()
        self._inbox.end()

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
            self._ws.abort()
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
        while self._outbox.bytes + size > self._max_unacked_bytes and self._outbox:
            self._acked_changed.clear()
            await self._acked_changed.wait()
            self.check_usable()
        seq = self._outbox.add(build)
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
                item = None if ws is None else self._outbox.next_unwritten()
                if ws is None or item is None:
                    return
                if self._losses:
                    self._lose_in_flight(ws, item)
                    return
                try:
                    await ws.write(item.data)
                except (ConnectionClosed, OSError):
                    return  # the reader notices the loss and reconnects
                if self._outbox.written(item, current=ws is self._ws):
                    self.stats.resent += 1

    def _on_ack(self, seq: int) -> None:
        self._outbox.ack(seq)
        self._acked_changed.set()

    @property
    def unacked(self) -> int:
        """Client messages the server has not acknowledged yet."""
        return len(self._outbox)

    @property
    def last_seq(self) -> int:
        """Highest server seq received (what the next HELLO will carry)."""
        return self._inbox.last_seq

    # --- receiving ---

    async def events(self) -> AsyncIterator[E | StateChange | SessionLost]:
        """Every sequenced server message exactly once, in order, plus state changes."""
        while True:
            item = await self._inbox.take()
            if isinstance(item, Ended):
                if self._error is not None:
                    raise self._error
                return
            yield item

    async def next_event(self) -> E | StateChange | SessionLost:
        """The next event; raises RelayError when the stream is over."""
        item = await self._inbox.take()
        if isinstance(item, Ended):
            raise self._error or RelayError(ErrorCode.SESSION_CLOSED, "the relay client is closed")
        return item

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
        self._drop(ws, offline_for)
        return True

    def lose_next_message(self) -> None:
        """Cut the connection as the next client message is written (on whichever socket is
        current then; called n times, the next n writes): the link takes the message as
        written, but it never reaches the server, like bytes lost on a path that just died. The
        link then resumes as after any drop, and the greeting's clientAck obliges it to write
        that message again (`stats.lost` counts these, `stats.resent` the rewrites)."""
        self._losses += 1

    def _lose_in_flight(self, ws: Connection[E], item: Pending) -> None:
        self._losses -= 1
        # Not written at all rather than written and aborted: bytes that reached the kernel are
        # still read by the server after an abort, so only withholding them makes the loss sure.
        if self._outbox.written(item, current=True):
            self.stats.resent += 1
        self.stats.lost += 1
        self._drop(ws, 0.0)

    def _drop(self, ws: Connection[E], offline_for: float) -> None:
        self.stats.drops += 1
        self._offline_until = asyncio.get_running_loop().time() + offline_for
        self._ws = None  # nothing more is written to it; the reader sees the loss and resumes
        self._connected.clear()
        ws.abort()

    # --- REST ---

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON to the relay's REST API; a refusal raises RelayError with the server's code."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._open_timeout, verify=tls_context())
        return await post_json(self._http, self.base_url + path, body, self._headers)

    # --- connection management ---

    async def _connect(self, ticket: str) -> None:
        """Open a greeted socket (`connection`), then resend what the server has not accepted."""
        ws, greeting = await connect(
            self._wire,
            ws_url(self.base_url, self._url, ticket),
            last_seq=self._inbox.last_seq,
            stats=self.stats,
            liveness=self._liveness,
            origin=self._origin,
            open_timeout=self._open_timeout,
            max_size=self._max_message_bytes,
        )
        self.stats.connections += 1
        self.stats.missed += greeting.server_seq - self._inbox.last_seq
        if self._on_greeting is not None:
            self._on_greeting(greeting)
        self._outbox.reconnected(greeting.client_ack)
        self._acked_changed.set()
        self._ws = ws
        self._connected.set()
        self._inbox.acked = self._inbox.last_seq  # HELLO{lastSeq} acknowledges everything up to it
        self._flusher = asyncio.create_task(self._flush())

    async def _run(self) -> None:
        """Read until the session ends; reconnect (new ticket, HELLO{lastSeq}) after each drop."""
        try:
            while not self._closing:
                ws = self._ws
                try:
                    if ws is None:
                        raise Lost("not connected")
                    await self._read(ws)
                    return
                except Lost:
                    pass
                if self._closing:
                    return
                self._ws = None
                self._connected.clear()
                if ws is not None:
                    ws.abort()
                await self._inbox.changed(StateChange("disconnected", self.stats.reconnects))
                if not self.reconnect:
                    raise RelayError(ErrorCode.CONNECTION_CLOSED, "relay connection lost")
                await self._resume()
                await self._inbox.changed(StateChange("resumed", self.stats.reconnects))
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
                self._inbox.lost(SessionLost(error.code, error.message))
        self._closing = True
        self._acked_changed.set()
        self._connected.set()  # wake wait_connected(), which then raises
        if self._ws is not None:
            self._ws.abort()
            self._ws = None
        self._inbox.end()
        if self._on_failure is not None and self._error is not None:
            self._on_failure(self._error)

    async def _resume(self) -> None:
        """Reconnect within the resume window, or raise the RelayError that says why not."""
        offline = self._offline_until - asyncio.get_running_loop().time()
        if offline > 0:
            await asyncio.sleep(offline)
        await retry_within(self.resume_window, self.backoff, self._rng, self._reconnect_once)
        self.stats.reconnects += 1

    async def _reconnect_once(self) -> None:
        answer = await (self._mint() if self._mint else self.post(self._ticket_path, {}))
        if answer.get("url"):
            self._url = str(answer["url"])
        await self._connect(str(answer["ticket"]))

    async def _read(self, ws: Connection[E]) -> None:
        """Handle server messages until the socket closes; returns only on our own close."""
        while True:
            try:
                message = await ws.receive()
            except ConnectionClosed as exc:
                if self._closing:
                    return
                raise closed_error(exc) from None
            except OSError as exc:
                raise Lost(str(exc)) from None
            match message:
                case Delivery(seq, event):
                    if not await self._inbox.accept(seq, event):
                        # A correct server never does this; a fresh HELLO gets the exact gap.
                        self.stats.out_of_order += 1
                        raise Lost(f"got seq {seq} after {self._inbox.last_seq}")
                    if self._inbox.unacked >= self._ack_every:
                        await self._send_ack(ws)
                case Acked(seq):
                    self._on_ack(seq)
                case Pinged(nonce):
                    with contextlib.suppress(ConnectionClosed, OSError):
                        await ws.write(self._wire.pong(nonce))
                case Ponged():
                    pass
                case Refused(error):
                    raise error
                case Greeting():
                    raise RelayError(ErrorCode.PROTOCOL_ERROR, "a second greeting")

    def inject(self, events: Sequence[E]) -> None:
        """Give the consumer events the client made itself, after everything queued so far."""
        self._inbox.inject(events)

    async def _send_ack(self, ws: Connection[E]) -> None:
        seq = self._inbox.last_seq
        with contextlib.suppress(ConnectionClosed, OSError):
            await ws.write(self._wire.ack(seq))
            self._inbox.acked = max(self._inbox.acked, seq)
            self.stats.acks_sent += 1

    async def _ack_timer(self) -> None:
        """Acknowledge what arrived within `ack_interval` even when fewer than `ack_every` did;
        watch liveness: a silent socket gets a PING, and is dropped (then resumed) when nothing
        at all arrives for `liveness_timeout`."""
        loop = asyncio.get_running_loop()
        # Often enough for both: a silent socket is pinged after a third of the timeout.
        period = min(self._ack_interval, self._liveness.timeout / 3)
        while not self._closing:
            await asyncio.sleep(period)
            ws = self._ws
            if ws is None:
                continue
            if self._inbox.unacked > 0:
                await self._send_ack(ws)
            now = loop.time()
            match self._liveness.check(now):
                case "drop":
                    silent = now - self._liveness.last_rx
                    log.info("relay connection silent for %.0fs; reconnecting", silent)
                    ws.abort()
                case "ping":
                    with contextlib.suppress(ConnectionClosed, OSError):
                        await ws.write(self._wire.ping(self._liveness.next_nonce()))
                        self.stats.pings_sent += 1
