"""One contract, two stores: every test runs against MemoryStore and a real Redis server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import AppError, ErrorCode
from app.settings import Settings
from app.store import MemoryStore, RedisStore, Store, store_from_settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Subject:
    store: Store
    # Lets time pass for expiry: a fake clock for memory, real (short) waits for Redis.
    advance: Callable[[float], Awaitable[None]]


@pytest.fixture(params=["memory", "redis"])
async def subject(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Subject]:
    if request.param == "memory":
        clock = FakeClock()

        async def advance(seconds: float) -> None:
            clock.now += seconds

        memory = MemoryStore(clock=clock)
        yield Subject(memory, advance)
        await memory.aclose()
        return

    async def wait(seconds: float) -> None:
        await asyncio.sleep(seconds)

    redis = RedisStore.from_url(redis_url, prefix=f"test-{uuid.uuid4().hex}:")
    yield Subject(redis, wait)
    await redis.aclose()


async def test_put_get_roundtrip(subject: Subject) -> None:
    store = subject.store
    assert await store.get("missing") is None
    assert await store.put("k", b"\x00value\xff", 60)
    assert await store.get("k") == b"\x00value\xff"
    assert await store.put("k", b"other", 60)
    assert await store.get("k") == b"other"


async def test_only_if_absent_refuses_live_value(subject: Subject) -> None:
    store = subject.store
    assert await store.put("k", b"first", 60, only_if_absent=True)
    assert not await store.put("k", b"second", 60, only_if_absent=True)
    assert await store.get("k") == b"first"
    await store.delete("k")
    assert await store.put("k", b"third", 60, only_if_absent=True)
    assert await store.get("k") == b"third"


async def test_values_expire(subject: Subject) -> None:
    store = subject.store
    await store.put("short", b"v", 0.05)
    await store.put("long", b"v", 60)
    await subject.advance(0.15)
    assert await store.get("short") is None
    assert await store.take("short") is None
    assert await store.get("long") == b"v"
    assert await store.put("short", b"again", 60, only_if_absent=True)


async def test_take_is_single_use_under_concurrency(subject: Subject) -> None:
    store = subject.store
    await store.put("ticket", b"secret", 60)
    results = await asyncio.gather(*(store.take("ticket") for _ in range(25)))
    assert [r for r in results if r is not None] == [b"secret"]
    assert await store.get("ticket") is None


async def test_delete_missing_is_quiet(subject: Subject) -> None:
    await subject.store.delete("never-there")
    assert await subject.store.get("never-there") is None


async def test_hit_allows_limit_then_refuses_with_retry_after(subject: Subject) -> None:
    store = subject.store
    now = 1_700_000_000.0
    decisions = [await store.hit("rl", 3, 60, now) for _ in range(3)]
    assert all(d.allowed for d in decisions)
    assert [d.remaining for d in decisions] == [2, 1, 0]
    refused = await store.hit("rl", 3, 60, now)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(20, abs=0.01)
    # Another key has its own bucket.
    assert (await store.hit("rl-other", 3, 60, now)).allowed
    # One emission interval later exactly one more request fits.
    later = now + 20
    assert (await store.hit("rl", 3, 60, later)).allowed
    assert not (await store.hit("rl", 3, 60, later)).allowed
    # After a full idle window the whole burst is back.
    fresh = now + 200
    assert all([(await store.hit("rl", 3, 60, fresh)).allowed for _ in range(3)])


async def test_hit_is_atomic_under_concurrency(subject: Subject) -> None:
    store = subject.store
    now = 1_700_000_000.0
    decisions = await asyncio.gather(*(store.hit("burst", 10, 60, now) for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 10
    assert all(d.retry_after > 0 for d in decisions if not d.allowed)


async def test_hit_all_charges_every_bucket_or_none(subject: Subject) -> None:
    store = subject.store
    now = 1_700_000_000.0
    first = await store.hit_all([("ip", 2), ("caller", 5)], 60, now)
    assert [d.allowed for d in first] == [True, True]
    assert [d.remaining for d in first] == [1, 4]
    await store.hit_all([("ip", 2), ("caller", 5)], 60, now)
    # The address bucket is spent: nothing is charged, the caller's bucket included.
    refused = await store.hit_all([("ip", 2), ("caller", 5)], 60, now)
    assert [d.allowed for d in refused] == [False, True]
    assert refused[0].retry_after == pytest.approx(30, abs=0.01)
    alone = [await store.hit("caller", 5, 60, now) for _ in range(4)]
    assert [d.allowed for d in alone] == [True, True, True, False]


async def test_hit_refuses_nonsense_limits(subject: Subject) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        await subject.store.hit("rl", 0, 60, 0.0)
    with pytest.raises(ValueError, match="positive window"):
        await subject.store.hit_all([("rl", 5)], 0, 0.0)


async def test_list_is_fifo(subject: Subject) -> None:
    store = subject.store
    assert await store.pop("pool") is None
    assert await store.peek("pool") is None
    assert await store.length("pool") == 0
    assert await store.push("pool", b"a", b"b") == 2
    assert await store.push("pool", b"c") == 3
    assert await store.peek("pool") == b"a"
    assert await store.length("pool") == 3
    assert [await store.pop("pool") for _ in range(4)] == [b"a", b"b", b"c", None]
    assert await store.length("pool") == 0


async def test_concurrent_pops_hand_out_each_item_once(subject: Subject) -> None:
    store = subject.store
    items = [f"tok-{i}".encode() for i in range(30)]
    await store.push("pool", *items)
    popped = await asyncio.gather(*(store.pop("pool") for _ in range(60)))
    got = [p for p in popped if p is not None]
    assert sorted(got) == sorted(items)


async def test_counter_add_and_self_removal(subject: Subject) -> None:
    store = subject.store
    assert await store.add("sessions", 1) == 1
    assert await store.add("sessions", 2) == 3
    assert await store.add("sessions", -3) == 0
    # Removed at zero: the next increment starts from scratch.
    assert await store.add("sessions", 1) == 1
    assert await store.add("sessions", -5) <= 0
    assert await store.add("sessions", 1) == 1


async def test_counter_ttl(subject: Subject) -> None:
    store = subject.store
    assert await store.add("short", 4, ttl=0.05) == 4
    assert await store.add("long", 4, ttl=60) == 4
    await subject.advance(0.15)
    assert await store.add("short", 1) == 1
    assert await store.add("long", 1) == 5


async def test_ping(subject: Subject) -> None:
    assert await subject.store.ping()


# --- implementation-specific ---


async def test_memory_store_purges_expired_keys() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    for i in range(1000):
        await store.put(f"k{i}", b"v", 1)
        await store.hit("rl", 1_000_000, 60, clock.now)
    assert len(store) == 1001
    assert len(store._expiries) <= 1001
    clock.now += 120
    assert len(store) == 0
    assert store._expiries == []


async def test_redis_keys_are_namespaced(redis_url: str) -> None:
    a = RedisStore.from_url(redis_url, prefix=f"a-{uuid.uuid4().hex}:")
    b = RedisStore.from_url(redis_url, prefix=f"b-{uuid.uuid4().hex}:")
    try:
        await a.put("same", b"from-a", 60)
        assert await b.get("same") is None
        assert await a.get("same") == b"from-a"
    finally:
        await a.aclose()
        await b.aclose()


async def test_unreachable_redis_fails_closed() -> None:
    from tests.support.servers import free_port

    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        assert not await store.ping()
        with pytest.raises(AppError) as caught:
            await store.hit("rl", 1, 60, 0.0)
        assert caught.value.code is ErrorCode.STORE_UNAVAILABLE
        assert caught.value.spec.http_status == 503
    finally:
        await store.aclose()


def test_store_from_settings(redis_url: str) -> None:
    assert isinstance(store_from_settings(Settings(redis_url=None)), MemoryStore)
    assert isinstance(store_from_settings(Settings(redis_url=redis_url)), RedisStore)


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(1, 20),
    gaps=st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=80),
)
def test_rate_never_exceeds_bucket_bound(limit: int, gaps: list[float]) -> None:
    """Whatever the arrival pattern, admissions up to time t never exceed limit + t·rate."""
    window = 60.0

    async def run() -> None:
        store = MemoryStore(clock=FakeClock())
        start = now = 5_000.0
        admitted = 0
        for gap in gaps:
            now += gap
            if (await store.hit("k", limit, window, now)).allowed:
                admitted += 1
            assert admitted <= limit + (now - start) * limit / window + 1e-6

    asyncio.run(run())
