"""A lean HTTP/1.1 keep-alive transport for httpx, for the console's small request/response calls.

    client = httpx.AsyncClient(transport=KeepAliveTransport(ssl_context=ctx, max_connections=64))

httpx's default transport (httpcore) costs ~0.5 ms of CPU per call one at a time and over 1 ms
with 50 in flight (pool bookkeeping, anyio cancel scopes, per-request readability polls). This one
plugs in at httpx's documented extension point (`AsyncBaseTransport`) and does only what the
console needs: asyncio streams, h11 for the framing, a LIFO pool of idle connections per origin,
at most `max_connections` requests in flight, the request's own timeouts, and errors raised as
the httpx exceptions httpcore would raise, so callers see no difference. No proxies, no HTTP/2,
no streaming: the body is read whole (console answers are a few hundred bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import urllib.request
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import h11
import httpx

_Origin = tuple[str, str, int]
_DEFAULT_PORTS = {"http": 80, "https": 443}
_READ_SIZE = 65536


@dataclass(slots=True, eq=False)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    origin: _Origin
    state: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    idle_since: float = 0.0

    def usable(self) -> bool:
        # A server that closed an idle connection has fed EOF (or an error) to the reader.
        reader = self.reader
        return not (self.writer.is_closing() or reader.at_eof() or reader.exception() is not None)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class _Stale(Exception):
    """A reused connection failed before any byte of the answer arrived: worth one retry."""

    def __init__(self, error: httpx.TransportError) -> None:
        super().__init__(str(error))
        self.error = error


def proxy_applies(urls: Iterable[str]) -> bool:
    """Whether the environment's proxy settings (as httpx's `trust_env` reads them) cover any URL.

    Mirrors httpx: `<scheme>_proxy` or `all_proxy`, unless NO_PROXY matches the host.
    """
    proxies = urllib.request.getproxies()
    for url in urls:
        parsed = httpx.URL(url)
        if not (proxies.get(parsed.scheme) or proxies.get("all")):
            continue
        if not urllib.request.proxy_bypass(parsed.host):
            return True
    return False


def _timeout(timeouts: dict[str, float | None], name: str) -> float | None:
    value = timeouts.get(name)
    return None if value is None else float(value)


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over pooled keep-alive connections (asyncio streams + h11).

    At most `max_connections` requests are in flight, and as many connections are open; a request
    beyond that waits (bounded by the request's `pool` timeout). Idle connections are reused
    newest first and dropped after `keepalive_expiry` seconds. A reused connection that the server
    closed while it sat idle is retried once on a fresh one, provided nothing of the answer came.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 64,
        keepalive_expiry: float = 5.0,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[_Origin, deque[_Connection]] = {}
        self._open_count = 0
        self._closed = False

    @property
    def open_connections(self) -> int:
        """Connections currently open, idle or in use."""
        return self._open_count

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        origin = (scheme, url.host, url.port or _DEFAULT_PORTS[scheme])
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        await self._acquire_slot(_timeout(timeouts, "pool"), request)
        try:
            conn = self._take_idle(origin)
            if conn is not None:
                try:
                    return await self._exchange(conn, request, body, timeouts)
                except _Stale:
                    pass  # the server dropped it while idle: once more on a fresh connection
            conn = await self._connect(origin, _timeout(timeouts, "connect"), request)
            try:
                return await self._exchange(conn, request, body, timeouts)
            except _Stale as stale:
                raise stale.error from None
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        """Close the idle connections; requests in flight close theirs when they end."""
        self._closed = True
        idle = [conn for conns in self._idle.values() for conn in conns]
        self._idle.clear()
        for conn in idle:
            self._discard(conn)
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()

    async def _acquire_slot(self, seconds: float | None, request: httpx.Request) -> None:
        if not self._slots.locked():
            await self._slots.acquire()
            return
        try:
            async with asyncio.timeout(seconds):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no connection slot free in time", request=request) from None

    def _take_idle(self, origin: _Origin) -> _Connection | None:
        conns = self._idle.get(origin)
        if not conns:
            return None
        oldest_allowed = time.monotonic() - self._keepalive_expiry
        while conns:
            conn = conns.pop()
            if conn.idle_since < oldest_allowed:
                # The newest has expired, so have all older ones.
                self._discard(conn)
                while conns:
                    self._discard(conns.pop())
                return None
            if conn.usable():
                return conn
            self._discard(conn)
        return None

    def _release(self, conn: _Connection) -> None:
        if self._closed:
            self._discard(conn)
            return
        conn.idle_since = time.monotonic()
        conns = self._idle.get(conn.origin)
        if conns is None:
            conns = self._idle[conn.origin] = deque()
        conns.append(conn)

    def _discard(self, conn: _Connection) -> None:
        self._open_count -= 1
        conn.close()

    def _evict_one_idle(self) -> None:
        """Make room for a new connection by closing the longest-idle one (any origin)."""
        oldest: deque[_Connection] | None = None
        for conns in self._idle.values():
            if conns and (oldest is None or conns[0].idle_since < oldest[0].idle_since):
                oldest = conns
        if oldest is not None:
            self._discard(oldest.popleft())

    async def _connect(
        self, origin: _Origin, seconds: float | None, request: httpx.Request
    ) -> _Connection:
        # Requests in flight are bounded by the slots, so when every connection is taken, at
        # least one of them is idle (kept for another origin): close it.
        if self._open_count >= self._max_connections:
            self._evict_one_idle()
        scheme, host, port = origin
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            tls = self._ssl_context or httpx.create_ssl_context()
        try:
            async with asyncio.timeout(seconds):
                reader, writer = await asyncio.open_connection(host, port, ssl=tls)
        except TimeoutError:
            raise httpx.ConnectTimeout("timed out connecting", request=request) from None
        except OSError as exc:  # refused, unreachable, DNS (gaierror), TLS (SSLError)
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from None
        self._open_count += 1
        return _Connection(reader, writer, origin)

    async def _exchange(
        self,
        conn: _Connection,
        request: httpx.Request,
        body: bytes,
        timeouts: dict[str, float | None],
    ) -> httpx.Response:
        """One request/response on `conn`; it goes back to the pool only if h11 says it may."""
        done = False
        try:
            response = await self._round_trip(conn, request, body, timeouts)
            state = conn.state
            if state.our_state is h11.DONE and state.their_state is h11.DONE:
                state.start_next_cycle()
                done = True
            return response
        finally:
            # Any failure or cancellation leaves the connection in an unknown state: close it.
            if done:
                self._release(conn)
            else:
                self._discard(conn)

    async def _round_trip(
        self,
        conn: _Connection,
        request: httpx.Request,
        body: bytes,
        timeouts: dict[str, float | None],
    ) -> httpx.Response:
        state = conn.state
        try:
            data = state.send(
                h11.Request(
                    method=request.method, target=request.url.raw_path, headers=request.headers.raw
                )
            )
            if body:
                data += state.send(h11.Data(data=body))
            data += state.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc), request=request) from None
        assert data is not None
        await self._write(conn, data, _timeout(timeouts, "write"), request)
        return await self._read_response(conn, _timeout(timeouts, "read"), request)

    @staticmethod
    async def _write(
        conn: _Connection, data: bytes, seconds: float | None, request: httpx.Request
    ) -> None:
        try:
            conn.writer.write(data)
            async with asyncio.timeout(seconds):
                await conn.writer.drain()
        except TimeoutError:
            raise httpx.WriteTimeout("timed out writing the request", request=request) from None
        except OSError as exc:
            # Nothing was read yet: a reused connection the server had dropped.
            error = httpx.WriteError(str(exc) or type(exc).__name__, request=request)
            raise _Stale(error) from None

    @staticmethod
    async def _read_response(
        conn: _Connection, seconds: float | None, request: httpx.Request
    ) -> httpx.Response:
        state, reader = conn.state, conn.reader
        received = False
        head: h11.Response | None = None
        chunks: list[bytes] = []
        try:
            while True:
                event = state.next_event()
                if event is h11.NEED_DATA:
                    try:
                        if seconds is None:
                            data = await reader.read(_READ_SIZE)
                        else:
                            async with asyncio.timeout(seconds):
                                data = await reader.read(_READ_SIZE)
                    except TimeoutError:
                        raise httpx.ReadTimeout("timed out reading", request=request) from None
                    except OSError as exc:
                        error = httpx.ReadError(str(exc) or type(exc).__name__, request=request)
                        if received:
                            raise error from None
                        raise _Stale(error) from None
                    if not data and not received:
                        raise _Stale(
                            httpx.RemoteProtocolError(
                                "Server disconnected without sending a response.", request=request
                            )
                        )
                    received = True
                    state.receive_data(data)
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.Response):
                    head = event
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise httpx.RemoteProtocolError(
                        "Server disconnected before the response ended.", request=request
                    )
                # h11.InformationalResponse (1xx): nothing to keep.
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from None
        assert head is not None
        return httpx.Response(
            head.status_code,
            headers=head.headers.raw_items(),
            content=b"".join(chunks),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": bytes(head.reason)},
        )
