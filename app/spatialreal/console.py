"""The SpatialReal console client: mint single-use session tokens, with regional fallback.

    async with ConsoleClient.from_settings(settings) as console:
        minted = await console.mint(expire_at=int(time.time()) + 600)
        minted.session_token, minted.region

`mint` tries the regions in order (primary first), skipping regions whose circuit breaker is open;
it moves on only after a transport failure, a timeout or a 5xx, each attempt under its own timeout.
The API key is sent in one header and nowhere else: not in errors, logs or reprs.

Each endpoint names its token API (`Endpoint.token_api`): today's `POST {api root}/v1/auth/
session-token` (a configured URL ending in `/v1/console` is taken as the root, as the
`spatialreal` SDK does) or the legacy `POST {console}/session-tokens`. Either answer key
(`session_token` or `sessionToken`) is accepted from either.

A 401/403 means this server's own API key is wrong: `upstreamCredentialsRejected` (502) for the
caller, and one ERROR log line for the operator saying what to fix (at most one per region every
`CREDENTIALS_LOG_INTERVAL` seconds, however many callers hit it).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self

import httpx
from pydantic import SecretStr

from app.errors import AppError, ErrorCode, Phase
from app.settings import Endpoint, Settings, TokenApi
from app.spatialreal.classify import console_status_code
from app.spatialreal.fallback import Gate, try_regions
from app.spatialreal.regions import RegionBreakers
from app.spatialreal.transport import KeepAliveTransport, proxy_applies

log = logging.getLogger("avatar_relay.spatialreal")

SESSION_TOKENS_PATH = "/session-tokens"  # legacy: under the console URL (…/v1/console)
# Today's route, under the API root (a route, not a secret).
AUTH_SESSION_TOKEN_PATH = "/v1/auth/session-token"  # noqa: S105
LEGACY_CONSOLE_SUFFIX = "/v1/console"
# Answer keys, today's first.
_TOKEN_KEYS = ("session_token", "sessionToken")
CREDENTIALS_LOG_INTERVAL = 300.0
# Connections kept to the console (all regions together). Mints beyond this many in flight wait
# for a free one: with an upstream round trip of R seconds, mints are capped at N / R a second.
DEFAULT_MAX_CONNECTIONS = 64
# An idle connection is dropped after this long (httpx's default).
KEEPALIVE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class MintedToken:
    """A freshly minted session token and where it came from. Its repr hides the token."""

    session_token: str = field(repr=False)
    expire_at: int
    region: str
    endpoint: Endpoint


def _scrub(text: str, *secrets: str) -> str:
    """Defence in depth: should a server ever echo a secret back, it stops here."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Built once per process (~20 ms each) and shared, as a context safely can be; it honours
    # SSL_CERT_FILE / SSL_CERT_DIR like httpx's own default.
    return httpx.create_ssl_context()


def _default_http(
    endpoints: Sequence[Endpoint], timeout: float, max_connections: int
) -> httpx.AsyncClient:
    """An httpx client on the lean keep-alive transport, or httpx's own when a proxy applies.

    The lean transport speaks no proxy protocol, and httpx ignores the environment's proxies
    once a transport is given; so when one covers a console URL, httpx's default transport
    (which honours it) is kept. Every connection may stay alive either way: with fewer
    keep-alive slots than connections, a burst of mints reopens a connection per mint.
    """
    transport: httpx.AsyncBaseTransport | None = None
    if not proxy_applies(ep.console_url for ep in endpoints):
        transport = KeepAliveTransport(
            ssl_context=_tls_context(),
            max_connections=max_connections,
            keepalive_expiry=KEEPALIVE_SECONDS,
        )
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=KEEPALIVE_SECONDS,
        ),
        verify=_tls_context(),
        follow_redirects=False,
        transport=transport,
    )


def session_token_url(endpoint: Endpoint) -> str:
    """Where `endpoint`'s console mints tokens, by its token API."""
    base = endpoint.console_url.rstrip("/")
    if endpoint.token_api is TokenApi.AUTH:
        return base.removesuffix(LEGACY_CONSOLE_SUFFIX) + AUTH_SESSION_TOKEN_PATH
    return base + SESSION_TOKENS_PATH


def _token_of(body: object) -> str | None:
    if not isinstance(body, dict):
        return None
    for key in _TOKEN_KEYS:
        token = body.get(key)
        if isinstance(token, str) and token:
            return token
    return None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _first_error(body: object) -> dict[str, Any]:
    """The first entry of a JSON:API `errors` list (or the body itself when it is flat)."""
    if not isinstance(body, dict):
        return {}
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return errors[0]
    return body


def _error_text(details: dict[str, Any]) -> str:
    parts = [details.get("title"), details.get("detail") or details.get("message")]
    text = " - ".join(str(part) for part in parts if part)
    code = details.get("code") or details.get("id")
    return text or (str(code) if code else "")


def _status_of(details: dict[str, Any], default: int) -> int:
    try:
        return int(details["status"])
    except (KeyError, TypeError, ValueError):
        return default


class ConsoleClient:
    """Mints session tokens with `X-Api-Key`, at each endpoint's token API.

    `endpoints` are tried in order; `breakers` (shared with other clients of the same regions,
    typically the ingress client) decide which may be tried now. `timeout` bounds each attempt as
    a whole. Pass `http` to reuse an httpx client; otherwise one (keeping at most
    `max_connections` connections alive) is created here and closed with this object.

    The client created here runs on `KeepAliveTransport` (asyncio streams + h11) rather than
    httpx's default transport, whose per-call CPU (httpcore pool bookkeeping, anyio) capped
    no-pool mints; with a proxy in the environment, httpx's default transport is kept.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        api_key: SecretStr,
        *,
        timeout: float = 10.0,
        breakers: RegionBreakers | None = None,
        clock: Callable[[], float] = time.monotonic,
        http: httpx.AsyncClient | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        probe_wait: float = 0.0,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is required")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._endpoints = tuple(endpoints)
        self._api_key = api_key
        self._timeout = timeout
        self.breakers = breakers if breakers is not None else RegionBreakers()
        self.clock = clock
        self.probe_wait = probe_wait
        self._gates = {ep: Gate(((self.breakers, ep.region),)) for ep in self._endpoints}
        self._owns_http = http is None
        self._http = http or _default_http(self._endpoints, timeout, max_connections)
        # Built once, not per request: the headers and each region's URL. Sent per request
        # rather than as client defaults, so that a client passed in needs no set-up.
        self._headers = {
            "X-Api-Key": api_key.get_secret_value(),
            "Content-Type": "application/json",
        }
        self._urls: dict[Endpoint, str] = {}
        self._credentials_logged: dict[str, float] = {}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        breakers: RegionBreakers | None = None,
        clock: Callable[[], float] = time.monotonic,
        http: httpx.AsyncClient | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> Self:
        if breakers is None:
            breakers = RegionBreakers(
                settings.breaker_failure_threshold, settings.breaker_cooldown_seconds
            )
        return cls(
            settings.endpoints(),
            settings.upstream_api_key,
            timeout=settings.upstream_request_timeout,
            breakers=breakers,
            clock=clock,
            http=http,
            max_connections=max_connections,
            probe_wait=settings.breaker_probe_wait_seconds,
        )

    def __repr__(self) -> str:
        regions = ", ".join(ep.region for ep in self._endpoints)
        return f"ConsoleClient(regions=[{regions}], timeout={self._timeout})"

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The configured regions, primary first."""
        return self._endpoints

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            await self._http.aclose()

    def _url(self, endpoint: Endpoint) -> str:
        url = self._urls.get(endpoint)
        if url is None:
            url = self._urls[endpoint] = session_token_url(endpoint)
        return url

    async def mint(self, expire_at: int, *, prefer: str | None = None) -> MintedToken:
        """Mint one token valid until `expire_at` (unix seconds), falling back across regions.

        `prefer` names a region to try first (the ingress mints where it connects: tokens are
        valid in every region, but the same region is the shortest path). Raises AppError (phase
        `session_token`): the failing region's code when every region failed or one refused
        with a 4xx; `upstreamUnavailable` when every breaker is open.
        """

        async def attempt(endpoint: Endpoint) -> MintedToken:
            return await self.mint_at(endpoint, expire_at)

        endpoints: Sequence[Endpoint] = self._endpoints
        if prefer is not None and endpoints[0].region != prefer:
            endpoints = sorted(endpoints, key=lambda ep: ep.region != prefer)
        return await try_regions(
            endpoints, self._gates.__getitem__, self.clock, attempt, probe_wait=self.probe_wait
        )

    async def mint_at(self, endpoint: Endpoint, expire_at: int) -> MintedToken:
        """One attempt at one region: no fallback and no breaker bookkeeping."""
        try:
            # asyncio.timeout bounds the attempt as a whole; httpx's own timeout bounds each
            # phase. The body is written as bytes: `json=` would encode a dict per call.
            async with asyncio.timeout(self._timeout):
                response = await self._http.post(
                    self._url(endpoint),
                    content=b'{"expireAt":%d}' % expire_at,
                    headers=self._headers,
                )
        except (httpx.HTTPError, httpx.InvalidURL, OSError, TimeoutError) as exc:
            # `from None`: httpx errors hold the request, and the request holds the key.
            key = self._api_key.get_secret_value()
            reason = _scrub(str(exc), key) or type(exc).__name__
            if isinstance(exc, TimeoutError | httpx.TimeoutException):
                reason = f"timed out after {self._timeout:g}s"
            raise AppError(
                ErrorCode.CONNECTION_FAILED,
                f"console in {endpoint.region} unreachable: {reason}",
                phase=Phase.SESSION_TOKEN,
            ) from None
        return self._read_answer(
            endpoint, expire_at, response.status_code, response.reason_phrase, response.content
        )

    def _read_answer(
        self, endpoint: Endpoint, expire_at: int, status: int, reason: str | None, raw: bytes
    ) -> MintedToken:
        key = self._api_key.get_secret_value()
        try:
            body: object = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        errors = body.get("errors") if isinstance(body, dict) else None
        if status != 200 or errors:
            details = _first_error(body)
            if status == 200:
                status = _status_of(details, status)
            text = _scrub(_error_text(details) or reason or _phrase(status), key)
            code = details.get("code") or details.get("id")
            error_code = console_status_code(status)
            message = f"console in {endpoint.region} refused the token (HTTP {status}): {text}"
            if error_code is ErrorCode.UPSTREAM_CREDENTIALS_REJECTED:
                self._tell_operator(endpoint, status, text)
                # The caller is told it is not their fault; the detail is the operator's.
                message = (
                    f"the service's SpatialReal credentials were rejected (HTTP {status}); the"
                    " operator must fix its configuration"
                )
            raise AppError(
                error_code,
                message,
                phase=Phase.SESSION_TOKEN,
                http_status=status,
                server_code=str(code) if code else None,
            )
        token = _token_of(body)
        if token is None:
            raise AppError(
                ErrorCode.PROTOCOL_ERROR,
                f"console in {endpoint.region} answered 200 without a session token",
                phase=Phase.SESSION_TOKEN,
                http_status=status,
            )
        return MintedToken(token, expire_at, endpoint.region, endpoint)

    def _tell_operator(self, endpoint: Endpoint, status: int, text: str) -> None:
        now = self.clock()
        last = self._credentials_logged.get(endpoint.region)
        if last is not None and now - last < CREDENTIALS_LOG_INTERVAL:
            return
        self._credentials_logged[endpoint.region] = now
        log.error(
            "SpatialReal refused this server's API key (HTTP %d from %s: %s): set"
            " SPATIALREAL_API_KEY to a valid key of the app SPATIALREAL_APP_ID and check"
            " SPATIALREAL_PROVIDER (%s token API at %s); every token mint fails until then",
            status,
            endpoint.region,
            text or "no detail",
            endpoint.token_api.value,
            endpoint.console_url,
            extra={"error_code": ErrorCode.UPSTREAM_CREDENTIALS_REJECTED.value},
        )
