"""KeepAliveTransport over real loopback sockets: the emulator, and small asyncio servers for the
edge cases (chunked bodies, closes at every point, hangs, TLS, the pool bound)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h11
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from app.emulator import Emulator
from app.spatialreal import ConsoleClient
from app.spatialreal.transport import KeepAliveTransport, proxy_applies
from tests.spatialreal.conftest import endpoint
from tests.support.servers import free_port

# What a test server does with one request: raw bytes to send and whether to close afterwards,
# or None to close without answering. Arguments: the request, its body, its index on the
# connection (0 for the first request a connection carries).
Answer = tuple[bytes, bool] | None
Respond = Callable[[h11.Request, bytes, int], Awaitable[Answer]]


def ok(body: bytes = b"hello", *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)
    return head + b"".join(line + b"\r\n" for line in extra) + b"\r\n" + body


async def answer_ok(request: h11.Request, body: bytes, index: int) -> Answer:
    return ok(b"echo:" + body), False


@dataclass
class RawServer:
    """An HTTP/1.1 server on loopback whose every answer the test writes byte by byte."""

    respond: Respond
    accepted: int = 0
    open_now: int = 0
    max_open: int = 0
    requests: list[tuple[h11.Request, bytes]] = field(default_factory=list)
    closed_by_client: int = 0
    client_closed: asyncio.Event = field(default_factory=asyncio.Event)
    handler_done: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        try:
            index = 0
            while True:
                parsed = await self._read_request(reader)
                if parsed is None:
                    self.closed_by_client += 1
                    self.client_closed.set()
                    return
                self.requests.append(parsed)
                answer = await self.respond(*parsed, index)
                index += 1
                if answer is None:
                    return
                data, close = answer
                writer.write(data)
                await writer.drain()
                if close:
                    return
        except (ConnectionError, h11.RemoteProtocolError):
            return
        finally:
            self.open_now -= 1
            writer.close()
            self.handler_done.set()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> tuple[h11.Request, bytes] | None:
        # A parser per request: the client never pipelines, so nothing is left over.
        parser = h11.Connection(h11.SERVER)
        head: h11.Request | None = None
        body = b""
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                if not data and head is None:
                    return None
                parser.receive_data(data)
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return head, body
            elif isinstance(event, h11.ConnectionClosed):
                return None


@asynccontextmanager
async def raw_server(
    respond: Respond, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[RawServer, str]]:
    server = RawServer(respond)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    scheme = "https" if tls else "http"
    try:
        yield server, f"{scheme}://127.0.0.1:{port}"
    finally:
        listener.close()


@asynccontextmanager
async def client(
    *, timeout: httpx.Timeout | float = 5.0, **kwargs: object
) -> AsyncIterator[tuple[httpx.AsyncClient, KeepAliveTransport]]:
    transport = KeepAliveTransport(**kwargs)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as http:
        yield http, transport


# --- the happy paths ---


async def test_requests_reuse_one_keep_alive_connection() -> None:
    async with raw_server(answer_ok) as (server, base), client() as (http, transport):
        for n in range(20):
            response = await http.post(f"{base}/a/b?x={n}", content=b"body%d" % n)
            assert response.status_code == 200
            assert response.content == b"echo:body%d" % n
        assert server.accepted == 1
        assert transport.open_connections == 1
    request, body = server.requests[-1]
    assert request.method == b"POST"
    assert request.target == b"/a/b?x=19"
    headers = dict(request.headers)
    assert headers[b"host"] == base.removeprefix("http://").encode()
    assert headers[b"content-length"] == b"6"
    assert body == b"body19"


async def test_headers_status_and_reason_reach_the_response() -> None:
    async def teapot(request: h11.Request, body: bytes, index: int) -> Answer:
        return b"HTTP/1.1 418 I'm a teapot\r\nX-Thing: 1\r\nContent-Length: 2\r\n\r\nno", False

    async with raw_server(teapot) as (_, base), client() as (http, _):
        response = await http.get(base, headers={"X-Api-Key": "k"})
    assert response.status_code == 418
    assert response.reason_phrase == "I'm a teapot"
    assert response.headers["x-thing"] == "1"
    assert response.text == "no"
    assert response.http_version == "HTTP/1.1"


async def test_chunked_response_is_assembled_and_the_connection_reused() -> None:
    async def chunked(request: h11.Request, body: bytes, index: int) -> Answer:
        data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        data += b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
        return data, False

    async with raw_server(chunked) as (server, base), client() as (http, transport):
        for _ in range(3):
            assert (await http.get(base)).content == b"hello world"
        assert server.accepted == 1
        assert transport.open_connections == 1


async def test_connection_close_answer_is_read_then_the_connection_dropped() -> None:
    async def closing(request: h11.Request, body: bytes, index: int) -> Answer:
        # No Content-Length: the body runs to the end of the connection.
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil eof", True

    async with raw_server(closing) as (server, base), client() as (http, transport):
        assert (await http.get(base)).content == b"until eof"
        assert transport.open_connections == 0
        assert (await http.get(base)).content == b"until eof"
        assert server.accepted == 2


async def test_head_and_no_content_answers_carry_no_body() -> None:
    async def no_body(request: h11.Request, body: bytes, index: int) -> Answer:
        if request.method == b"HEAD":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", False
        return b"HTTP/1.1 204 No Content\r\n\r\n", False

    async with raw_server(no_body) as (server, base), client() as (http, _):
        head = await http.head(base)
        assert (head.status_code, head.content) == (200, b"")
        empty = await http.delete(base)
        assert (empty.status_code, empty.content) == (204, b"")
        assert server.accepted == 1


# --- connections the server closes ---


async def test_request_on_a_connection_the_server_dropped_is_retried_once_on_a_fresh_one() -> None:
    async def drop_second(request: h11.Request, body: bytes, index: int) -> Answer:
        # The first connection answers once, then closes on the next request without a byte
        # of answer: the race of a server timing out an idle connection as a request arrives.
        return None if index == 1 else (ok(), False)

    async with raw_server(drop_second) as (server, base), client() as (http, _):
        assert (await http.get(base)).content == b"hello"
        assert (await http.get(base)).content == b"hello"
    assert server.accepted == 2
    assert len(server.requests) == 3  # the dropped request was sent again


async def test_server_closed_while_idle_is_not_reused() -> None:
    async def close_after_answer(request: h11.Request, body: bytes, index: int) -> Answer:
        return ok(), True

    async with raw_server(close_after_answer) as (server, base), client() as (http, transport):
        # Content-Length framing and no Connection: close, so h11 would keep the connection;
        # the server closes it anyway. Whether the client notices the close before sending or
        # only on the retry path, the second request must succeed on a new connection.
        assert (await http.get(base)).content == b"hello"
        await server.handler_done.wait()
        assert (await http.get(base)).content == b"hello"
        assert server.accepted == 2
        assert transport.open_connections == 1


async def test_a_fresh_connection_closed_without_an_answer_is_not_retried() -> None:
    async def never(request: h11.Request, body: bytes, index: int) -> Answer:
        return None

    async with raw_server(never) as (server, base), client() as (http, transport):
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(base)
        assert server.accepted == 1
        assert transport.open_connections == 0


async def test_the_retry_happens_once_only() -> None:
    async def first_then_never(request: h11.Request, body: bytes, index: int) -> Answer:
        return (ok(), False) if len(server.requests) == 1 else None

    async with raw_server(first_then_never) as (server, base), client() as (http, _):
        await http.get(base)
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(base)
    assert server.accepted == 2  # the reused one and a single fresh one


async def test_server_closing_mid_answer_is_an_error_and_not_retried() -> None:
    async def truncated(request: h11.Request, body: bytes, index: int) -> Answer:
        if index == 0:
            return ok(), False
        return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b", True

    async with raw_server(truncated) as (server, base), client() as (http, transport):
        await http.get(base)
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await http.get(base)
        assert server.accepted == 1  # part of the answer came: never sent again
        assert len(server.requests) == 2
        assert transport.open_connections == 0


async def test_garbage_answer_is_a_remote_protocol_error() -> None:
    async def garbage(request: h11.Request, body: bytes, index: int) -> Answer:
        return b"NOT HTTP AT ALL\r\n\r\n", False

    async with raw_server(garbage) as (_, base), client() as (http, transport):
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(base)
        assert transport.open_connections == 0


# --- failures before and during the exchange ---


async def test_refused_connection_is_a_connect_error() -> None:
    async with client() as (http, transport):
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{free_port()}/")
        assert transport.open_connections == 0


async def test_silent_server_is_a_read_timeout_and_the_connection_dropped() -> None:
    release = asyncio.Event()

    async def hang(request: h11.Request, body: bytes, index: int) -> Answer:
        await release.wait()
        return None

    async with (
        raw_server(hang) as (_, base),
        client(timeout=httpx.Timeout(5, read=0.1)) as (
            http,
            transport,
        ),
    ):
        with pytest.raises(httpx.ReadTimeout):
            await http.get(base)
        assert transport.open_connections == 0
        release.set()


async def test_cancelled_request_closes_its_connection() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def hang(request: h11.Request, body: bytes, index: int) -> Answer:
        started.set()
        await release.wait()
        return None

    async with raw_server(hang) as (_, base), client() as (http, transport):
        task = asyncio.create_task(http.get(base))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert transport.open_connections == 0
        release.set()


async def test_unsupported_scheme_is_refused() -> None:
    async with client() as (http, _):
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.get("ftp://127.0.0.1/")


# --- the pool ---


async def test_pool_bound_holds_under_200_concurrent_requests() -> None:
    bound = 8
    waiting = 0
    full = asyncio.Event()

    async def gated(request: h11.Request, body: bytes, index: int) -> Answer:
        # Hold every answer until `bound` requests wait at once: were the bound broken, more
        # connections than that would be open by then.
        nonlocal waiting
        waiting += 1
        if waiting >= bound:
            full.set()
        await full.wait()
        return ok(body), False

    async with (
        raw_server(gated) as (server, base),
        client(max_connections=bound) as (
            http,
            transport,
        ),
    ):
        responses = await asyncio.gather(*(http.post(base, content=b"%d" % n) for n in range(200)))
        assert [r.content for r in responses] == [b"%d" % n for n in range(200)]
        assert server.max_open == bound
        assert server.accepted == bound
        assert transport.open_connections == bound


async def test_pool_timeout_when_every_slot_stays_taken() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def hang(request: h11.Request, body: bytes, index: int) -> Answer:
        started.set()
        await release.wait()
        return ok(), False

    async with (
        raw_server(hang) as (_, base),
        client(max_connections=1, timeout=httpx.Timeout(5, pool=0.05)) as (http, _),
    ):
        first = asyncio.create_task(http.get(base))
        await started.wait()
        with pytest.raises(httpx.PoolTimeout):
            await http.get(base)
        release.set()
        assert (await first).status_code == 200


async def test_connections_to_another_origin_evict_idle_ones_at_the_bound() -> None:
    async with (
        raw_server(answer_ok) as (one, base_one),
        raw_server(answer_ok) as (two, base_two),
        client(max_connections=1) as (http, transport),
    ):
        await http.get(base_one)
        await http.get(base_two)
        assert transport.open_connections == 1
        await one.client_closed.wait()  # the idle one was closed to make room
        assert (one.accepted, two.accepted) == (1, 1)


async def test_expired_idle_connections_are_not_reused() -> None:
    async with (
        raw_server(answer_ok) as (server, base),
        client(keepalive_expiry=0.0) as (
            http,
            transport,
        ),
    ):
        await http.get(base)
        start = time.monotonic()
        while time.monotonic() == start:  # the clock must move past the expiry
            await asyncio.sleep(0)
        await http.get(base)
        assert server.accepted == 2
        assert transport.open_connections == 1


async def test_aclose_closes_idle_connections() -> None:
    async with raw_server(answer_ok) as (server, base):
        transport = KeepAliveTransport()
        async with httpx.AsyncClient(transport=transport) as http:
            await http.get(base)
        await server.client_closed.wait()
        assert transport.open_connections == 0
        with pytest.raises(RuntimeError):
            await transport.handle_async_request(httpx.Request("GET", base))


# --- TLS ---


@dataclass(frozen=True)
class Certificate:
    server: ssl.SSLContext
    trusting_client: ssl.SSLContext


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, and contexts to serve it and to trust it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory: Path = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    trusting = ssl.create_default_context(cafile=str(cert_file))
    return Certificate(server, trusting)


async def test_https_with_a_trusted_self_signed_certificate(certificate: Certificate) -> None:
    async with (
        raw_server(answer_ok, tls=certificate.server) as (server, base),
        client(ssl_context=certificate.trusting_client) as (http, transport),
    ):
        assert base.startswith("https://")
        for _ in range(3):
            assert (await http.post(base, content=b"x")).content == b"echo:x"
        assert server.accepted == 1
        assert transport.open_connections == 1


async def test_https_with_an_untrusted_certificate_is_a_connect_error(
    certificate: Certificate,
) -> None:
    async with (
        raw_server(answer_ok, tls=certificate.server) as (server, base),
        client(ssl_context=ssl.create_default_context()) as (http, transport),
    ):
        with pytest.raises(httpx.ConnectError):
            await http.get(base)
        assert transport.open_connections == 0
        assert server.requests == []


# --- the console client on this transport, against the emulator ---


async def test_console_client_mints_through_the_transport_on_few_connections(
    emu: Emulator,
) -> None:
    transport = KeepAliveTransport(max_connections=4)
    region = endpoint("ap-northeast", emu)
    async with (
        httpx.AsyncClient(transport=transport, timeout=5) as http,
        ConsoleClient([region], SecretStr(emu.api_keys[0]), http=http) as console,
    ):
        expire = int(time.time()) + 600
        sequential = [await console.mint(expire) for _ in range(10)]
        assert transport.open_connections == 1
        concurrent = await asyncio.gather(*(console.mint(expire) for _ in range(40)))
        assert transport.open_connections <= 4
    tokens = {minted.session_token for minted in [*sequential, *concurrent]}
    assert len(tokens) == 50


async def test_console_client_uses_the_transport_by_default(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    async with ConsoleClient(
        [endpoint("ap-northeast", emu)], SecretStr(emu.api_keys[0])
    ) as console:
        assert isinstance(console._http._transport, KeepAliveTransport)
        assert (await console.mint(int(time.time()) + 600)).session_token


async def test_with_a_proxy_in_the_environment_the_console_goes_through_it(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def proxy_answer(request: h11.Request, body: bytes, index: int) -> Answer:
        return ok(b'{"sessionToken":"via-proxy"}'), False

    async with raw_server(proxy_answer) as (proxy, proxy_url):
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        region = endpoint("ap-northeast", emu)
        assert proxy_applies([region.console_url])
        async with ConsoleClient([region], SecretStr(emu.api_keys[0])) as console:
            minted = await console.mint(int(time.time()) + 600)
        assert minted.session_token == "via-proxy"
        # httpx's own transport spoke to the proxy in absolute form.
        assert proxy.requests[0][0].target.startswith(region.console_url.encode())

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert not proxy_applies([region.console_url])
        async with ConsoleClient([region], SecretStr(emu.api_keys[0])) as console:
            minted = await console.mint(int(time.time()) + 600)
            assert isinstance(console._http._transport, KeepAliveTransport)
        assert minted.session_token != "via-proxy"
        assert len(proxy.requests) == 1
