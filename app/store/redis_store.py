"""The shared store: Redis, so that every instance sees one set of limits, tickets and tokens.

Single commands are atomic in Redis already (SET NX PX, GETDEL, LPOP, ...); the two compound
operations (a rate-limit step and a self-deleting counter) are Lua scripts, which Redis runs
atomically. Every key is prefixed so one Redis can serve several deployments. A Redis failure
becomes `storeUnavailable` (503): limits and single-use guarantees fail closed, never open.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from functools import wraps
from typing import Any, ParamSpec, TypeVar, cast

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from app.errors import AppError, ErrorCode
from app.store.base import RateDecision, check_rules

log = logging.getLogger("avatar_relay.store")

P = ParamSpec("P")
T = TypeVar("T")

# GCRA (see base.gcra) over every bucket in KEYS, all or nothing. ARGV: window, now, then one
# limit per key. Each bucket holds its theoretical arrival time as a float string. The reply is
# one string, "allowed retry_after remaining" per key joined by ";": a single bulk reply costs the
# client far less to parse than nested arrays (this runs on every authenticated request).
_HIT = """
local window = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local out = {}
local new_tats = {}
local allowed = true
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 + i])
  local interval = window / limit
  local tat = tonumber(redis.call('GET', KEYS[i]) or '')
  if tat == nil or tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - window
  if allow_at - now > 0.001 then
    allowed = false
    table.insert(out, string.format('0 %.6f 0', allow_at - now))
  else
    new_tats[i] = new_tat
    local remaining = math.floor((window - (new_tat - now)) / interval + 0.000001)
    if remaining < 0 then remaining = 0 end
    table.insert(out, string.format('1 0 %d', remaining))
  end
end
if allowed then
  for i = 1, #KEYS do
    redis.call('SET', KEYS[i], string.format('%.17g', new_tats[i]), 'PX',
               math.max(1, math.ceil((new_tats[i] - now) * 1000)))
  end
end
return table.concat(out, ';')
"""

# A counter that removes itself at zero; ARGV[2] is a TTL in ms or '' for none.
_ADD = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if value <= 0 then
  redis.call('DEL', KEYS[1])
  return value
end
if ARGV[2] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return value
"""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def guarded(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    @wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (RedisError, OSError) as error:
            # The error text may hold the URL (and its password): log only the type.
            log.warning("redis call failed", extra={"error_type": type(error).__name__})
            raise AppError(ErrorCode.STORE_UNAVAILABLE, retry_after=1) from None

    return wrapper


class RedisStore:
    def __init__(self, client: aioredis.Redis, *, prefix: str = "avatar-relay:") -> None:
        self._redis = client
        self._prefix = prefix
        self._hit = client.register_script(_HIT)
        self._add = client.register_script(_ADD)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "avatar-relay:", timeout: float = 2.0
    ) -> RedisStore:
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
        )
        return cls(client, prefix=prefix)

    @property
    def prefix(self) -> str:
        return self._prefix

    def _k(self, key: str) -> str:
        return self._prefix + key

    @guarded
    async def put(
        self, key: str, value: bytes, ttl: float, *, only_if_absent: bool = False
    ) -> bool:
        done = await self._redis.set(self._k(key), value, px=_ms(ttl), nx=only_if_absent)
        return bool(done)

    @guarded
    async def get(self, key: str) -> bytes | None:
        return cast("bytes | None", await self._redis.get(self._k(key)))

    @guarded
    async def take(self, key: str) -> bytes | None:
        return cast("bytes | None", await self._redis.getdel(self._k(key)))

    @guarded
    async def delete(self, key: str) -> None:
        await self._redis.delete(self._k(key))

    async def hit(self, key: str, limit: int, window: float, now: float) -> RateDecision:
        return (await self.hit_all([(key, limit)], window, now))[0]

    @guarded
    async def hit_all(
        self, rules: Sequence[tuple[str, int]], window: float, now: float
    ) -> list[RateDecision]:
        check_rules(rules, window)
        keys = [self._k(key) for key, _ in rules]
        args: list[str | int] = [repr(window), repr(now), *(limit for _, limit in rules)]
        reply: bytes = await self._hit(keys=keys, args=args)
        decisions = []
        for entry in reply.split(b";"):
            allowed, retry_after, remaining = entry.split()
            decisions.append(RateDecision(allowed == b"1", float(retry_after), int(remaining)))
        return decisions

    @guarded
    async def push(self, key: str, *values: bytes) -> int:
        if not values:
            return int(await self._redis.llen(self._k(key)))
        return int(await self._redis.rpush(self._k(key), *values))

    @guarded
    async def pop(self, key: str) -> bytes | None:
        return cast("bytes | None", await self._redis.lpop(self._k(key)))

    @guarded
    async def peek(self, key: str) -> bytes | None:
        return cast("bytes | None", await self._redis.lindex(self._k(key), 0))

    @guarded
    async def length(self, key: str) -> int:
        return int(await self._redis.llen(self._k(key)))

    @guarded
    async def add(self, key: str, delta: int, ttl: float | None = None) -> int:
        reply = await self._add(keys=[self._k(key)], args=[delta, "" if ttl is None else _ms(ttl)])
        return int(reply)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def aclose(self) -> None:
        await self._redis.aclose()
