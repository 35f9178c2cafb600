"""The token broker: one fresh single-use session token per successful call.

`TokenService.issue` decides where a token comes from:

- a retried request (same caller, same `Idempotency-Key`) gets the answer recorded for the first
  one. The record is claimed with an atomic put-if-absent "in flight" marker before minting, so
  concurrent duplicates cannot mint twice: the losers get `requestInProgress` (409) and retry;
- with a pool configured and the pool's TTL wanted, a token pre-minted by the background refiller
  and popped atomically from the store (so no instance hands the same token out twice); tokens
  too close to expiry are discarded, never handed out;
- otherwise the console mints one now (regional fallback and circuit breakers live in the console
  client).

Tokens only ever leave this module in the returned value: never in logs (the audit line carries
principal, region and request id) and never in error messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

from app.errors import AppError, ErrorCode
from app.metrics import Metrics
from app.settings import ConfigError, Settings
from app.store import Store

log = logging.getLogger("avatar_relay.tokens")
audit = logging.getLogger("avatar_relay.audit")


class Minted(Protocol):
    @property
    def session_token(self) -> str: ...
    @property
    def expire_at(self) -> int: ...
    @property
    def region(self) -> str: ...


class Minter(Protocol):
    """What the broker needs from the console client."""

    async def mint(self, expire_at: int) -> Minted: ...


@dataclass(frozen=True, slots=True)
class IssuedToken:
    session_token: str
    expire_at: int
    app_id: str
    region: str

    def __repr__(self) -> str:
        return f"IssuedToken(expire_at={self.expire_at}, app_id={self.app_id!r}, region=...)"

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> IssuedToken | None:
        try:
            data = json.loads(raw)
            return cls(
                str(data["session_token"]),
                int(data["expire_at"]),
                str(data["app_id"]),
                str(data["region"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True, slots=True)
class Issue:
    """The outcome of one `issue` call."""

    token: IssuedToken
    pooled: bool = False
    replayed: bool = False


_IN_FLIGHT = b"in-flight:"
_DONE = b"done:"
# How many refill mints run at once: enough to refill quickly, not enough to hammer the console.
REFILL_CONCURRENCY = 4
# How often the refiller looks at the pool without being woken by a take.
REFILL_INTERVAL_SECONDS = 5.0


def _hashed(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def resolve_ttl(low: int, default: int, high: int, ttl_seconds: int | None) -> int:
    """The TTL policy (TOKEN_TTL_*_SECONDS), the same for the REST API and the CLI."""
    if ttl_seconds is None:
        return default
    if not low <= ttl_seconds <= high:
        raise AppError(ErrorCode.INVALID_REQUEST, f"ttlSeconds must be between {low} and {high}")
    return ttl_seconds


class TokenService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        minter: Minter,
        *,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._minter = minter
        self._clock = clock
        self._metrics = metrics
        self.app_id = settings.app_id
        self.ttl_default = settings.token_ttl_default_seconds
        self.ttl_min = settings.token_ttl_min_seconds
        self.ttl_max = settings.token_ttl_max_seconds
        self.pool_size = settings.token_pool_size
        self.pool_min_remaining = settings.token_pool_min_remaining_seconds
        if self.pool_size > 0 and self.pool_min_remaining >= self.ttl_default:
            # Every pooled token would be stale at birth: the refiller would mint and discard
            # forever.
            raise ConfigError(
                [
                    "TOKEN_POOL_MIN_REMAINING_SECONDS: must be below TOKEN_TTL_DEFAULT_SECONDS"
                    " when TOKEN_POOL_SIZE > 0"
                ]
            )
        self.idempotency_ttl = settings.idempotency_ttl_seconds
        # The marker must outlive the slowest mint: every region timing out in turn.
        self._in_flight_ttl = settings.upstream_request_timeout * len(settings.endpoints()) + 5
        self.pool_key = f"tokens:pool:{settings.app_id}:{self.ttl_default}"
        self._refill_lock_key = self.pool_key + ":refilling"
        self._wake = asyncio.Event()
        self.pool_filled = asyncio.Event()
        self._refiller: asyncio.Task[None] | None = None

    # --- policy ---

    def resolve_ttl(self, ttl_seconds: int | None) -> int:
        return resolve_ttl(self.ttl_min, self.ttl_default, self.ttl_max, ttl_seconds)

    # --- issuing ---

    async def issue(
        self,
        principal: str,
        ttl_seconds: int | None = None,
        *,
        idempotency_key: str | None = None,
        request_id: str = "-",
    ) -> Issue:
        ttl = self.resolve_ttl(ttl_seconds)
        if idempotency_key is None:
            outcome = await self._obtain(ttl)
        else:
            outcome = await self._idempotent(principal, ttl, idempotency_key)
        audit.info(
            "session token issued",
            extra={
                "principal": principal,
                "region": outcome.token.region,
                "request_id": request_id,
                "expire_at": outcome.token.expire_at,
                "pooled": outcome.pooled,
                "replayed": outcome.replayed,
            },
        )
        return outcome

    async def _obtain(self, ttl: int) -> Issue:
        if self.pool_size > 0 and ttl == self.ttl_default:
            pooled = await self._take_from_pool()
            if pooled is not None:
                return Issue(pooled, pooled=True)
        return Issue(await self._mint(ttl))

    async def _mint(self, ttl: int) -> IssuedToken:
        try:
            minted = await self._minter.mint(int(self._clock()) + ttl)
        except AppError as error:
            if self._metrics is not None:
                self._metrics.upstream_error(error.code)
            if error.code is ErrorCode.INVALID_REQUEST:
                # The console rejected what *we* sent (our TTL policy is checked above): that is
                # a server-side fault, not the caller's, so it must not surface as a 400.
                raise AppError(
                    ErrorCode.UPSTREAM_ERROR,
                    error.message,
                    phase=error.phase,
                    http_status=error.upstream_http_status,
                    server_code=error.server_code,
                ) from None
            raise
        if self._metrics is not None:
            self._metrics.token_minted(minted.region, "success")
        return IssuedToken(minted.session_token, minted.expire_at, self.app_id, minted.region)

    async def _idempotent(self, principal: str, ttl: int, key: str) -> Issue:
        record_key = f"idem:{_hashed(principal)}:{_hashed(key)}"
        fingerprint = str(ttl).encode()
        claimed = await self._store.put(
            record_key, _IN_FLIGHT + fingerprint, self._in_flight_ttl, only_if_absent=True
        )
        if not claimed:
            return await self._replay(record_key, fingerprint)
        try:
            outcome = await self._obtain(ttl)
        except BaseException:
            # Failures are not remembered: a retry gets a fresh attempt.
            with contextlib.suppress(AppError):
                await self._store.delete(record_key)
            raise
        record = _DONE + fingerprint + b"\n" + outcome.token.encode()
        try:
            await self._store.put(record_key, record, self.idempotency_ttl)
        except AppError:
            log.warning("could not record the idempotent answer", extra={"record": record_key})
        return outcome

    async def _replay(self, record_key: str, fingerprint: bytes) -> Issue:
        record = await self._store.get(record_key)
        if record is None:
            # Expired or failed between our put and get: ask the caller to retry rather than race.
            raise AppError(ErrorCode.REQUEST_IN_PROGRESS, retry_after=1)
        if record.startswith(_IN_FLIGHT):
            if record[len(_IN_FLIGHT) :] != fingerprint:
                raise AppError(ErrorCode.IDEMPOTENCY_KEY_REUSED)
            raise AppError(ErrorCode.REQUEST_IN_PROGRESS, retry_after=1)
        head, _, body = record[len(_DONE) :].partition(b"\n")
        if head != fingerprint:
            raise AppError(ErrorCode.IDEMPOTENCY_KEY_REUSED)
        token = IssuedToken.decode(body)
        if token is None:
            raise AppError(ErrorCode.INTERNAL_ERROR, "idempotency record unreadable")
        return Issue(token, replayed=True)

    # --- the pool ---

    def _fresh(self, token: IssuedToken) -> bool:
        return token.expire_at - self._clock() >= self.pool_min_remaining

    async def _take_from_pool(self) -> IssuedToken | None:
        try:
            # Bounded: a pool full of stale tokens costs at most one pass over it.
            for _ in range(self.pool_size + 1):
                raw = await self._store.pop(self.pool_key)
                if raw is None:
                    return None
                token = IssuedToken.decode(raw)
                if token is not None and self._fresh(token):
                    return token
                log.debug("discarded a pooled token too close to expiry")
            return None
        finally:
            self.pool_filled.clear()
            self._wake.set()

    async def trim_pool(self) -> int:
        """Drop stale tokens from the head of the pool (the oldest end); returns how many."""
        dropped = 0
        while (head := await self._store.peek(self.pool_key)) is not None:
            token = IssuedToken.decode(head)
            if token is not None and self._fresh(token):
                break
            taken = await self._store.pop(self.pool_key)
            if taken is None:
                break
            popped = IssuedToken.decode(taken)
            if popped is not None and self._fresh(popped):
                # Someone took the stale head first and we got a fresh one: put it back.
                await self._store.push(self.pool_key, taken)
                break
            dropped += 1
        return dropped

    async def refill_pool(self) -> int:
        """Mint until the pool holds `pool_size` tokens; returns how many were added.

        One instance refills at a time (a short lock in the store), and the deficit is measured
        before minting, so instances sharing a pool do not overfill it.
        """
        if self.pool_size <= 0:
            return 0
        lock_ttl = self._in_flight_ttl * 2
        if not await self._store.put(self._refill_lock_key, b"1", lock_ttl, only_if_absent=True):
            return 0
        try:
            added = 0
            while (missing := self.pool_size - await self._store.length(self.pool_key)) > 0:
                batch = min(missing, REFILL_CONCURRENCY)
                tokens = await asyncio.gather(*(self._mint(self.ttl_default) for _ in range(batch)))
                await self._store.push(self.pool_key, *(t.encode() for t in tokens))
                added += batch
            self.pool_filled.set()
            return added
        finally:
            await self._store.delete(self._refill_lock_key)

    async def _refill_loop(self) -> None:
        backoff = 1.0
        while True:
            self._wake.clear()
            try:
                await self.trim_pool()
                await self.refill_pool()
                backoff = 1.0
                wait = REFILL_INTERVAL_SECONDS
            except AppError as error:
                log.warning("token pool refill failed", extra=error.log_fields())
                wait = backoff = min(backoff * 2, 30.0)
            except Exception:
                log.exception("token pool refill crashed")
                wait = backoff = min(backoff * 2, 30.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def start(self) -> None:
        """Start the background refiller (only when a pool is configured)."""
        if self.pool_size > 0 and self._refiller is None:
            self._refiller = asyncio.create_task(self._refill_loop(), name="token-pool-refill")

    async def aclose(self) -> None:
        if self._refiller is not None:
            self._refiller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refiller
            self._refiller = None
