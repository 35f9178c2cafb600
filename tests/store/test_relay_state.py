"""Relay sessions' durable state against a real Redis: leases and takeover, the write-behind
pipeline, replay lists trimmed on ack and bounded, expiry, and a model check of random runs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import asyncio as aioredis

from app.store.relay_state import (
    DRAINING,
    SERVING,
    EndpointDelta,
    RelayStateStore,
    Saved,
    SessionDelta,
)


@dataclass
class Endpoint:
    """An endpoint's delivery state as a live session keeps it (the model)."""

    name: str
    client_seq: int = 0
    acked: int = 0
    kept: list[bytes] = field(default_factory=list)  # seq acked+1 ..
    saved_upto: int = 0  # highest seq handed to a delta

    @property
    def last(self) -> int:
        return self.acked + len(self.kept)

    def send(self, data: bytes) -> None:
        self.kept.append(data)

    def ack(self, seq: int) -> None:
        del self.kept[: seq - self.acked]
        self.acked = seq


class Session:
    """A `Saving` source: the deltas a shell would hand the flusher."""

    def __init__(self, session_id: str, names: Sequence[str] = ("browser",)) -> None:
        self.session_id = session_id
        self.endpoints = {name: Endpoint(name) for name in names}
        self.core = b"core-0"
        self.core_dirty = True
        self.full = False
        self.live = True  # its endpoints are connected to the instance saving it
        self.outcomes: list[Saved] = []

    @property
    def endpoint_names(self) -> Sequence[str]:
        return tuple(self.endpoints)

    def delta(self) -> SessionDelta:
        deltas = []
        for ep in self.endpoints.values():
            start = ep.acked if self.full else max(ep.acked, ep.saved_upto)
            entries = ep.kept[start - ep.acked :]
            deltas.append(
                EndpointDelta(ep.name, ep.client_seq, ep.acked, start + 1, entries, self.live)
            )
            ep.saved_upto = ep.last
        core = self.core if self.core_dirty or self.full else None
        self.core_dirty = False
        self.full = False
        return SessionDelta(deltas, core)

    def lost(self) -> None:
        self.outcomes.append(Saved.LOST)

    def saved(self, delta: SessionDelta, outcome: Saved) -> None:
        self.outcomes.append(outcome)
        if outcome is Saved.RESYNC:
            self.full = True


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}:"


Factory = Callable[..., RelayStateStore]


@pytest.fixture
async def instances(redis: aioredis.Redis, prefix: str) -> AsyncIterator[Factory]:
    made: list[RelayStateStore] = []

    def make(**kwargs: object) -> RelayStateStore:
        store = RelayStateStore(redis, prefix=prefix, **kwargs)  # type: ignore[arg-type]
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


async def running(make: Factory, count: int = 1, **kwargs: object) -> list[RelayStateStore]:
    """`count` instances, heartbeats started, and one session claimed by the first."""
    stores = [make(**kwargs) for _ in range(count)]
    for store in stores:
        await store.start()
    return stores


def sid() -> str:
    return "rs_" + uuid.uuid4().hex[:12]


async def claimed(store: RelayStateStore) -> Session:
    """A new session, claimed by `store`."""
    session = Session(sid())
    assert (await store.claim(session.session_id)).claimed
    return session


async def save(store: RelayStateStore, session: Session) -> Saved:
    store.mark(session)
    await store.settled(within=5)
    return session.outcomes[-1]


# --- leases ---


async def test_a_session_is_claimed_once_while_its_owner_serves(instances: Factory) -> None:
    a, b = await running(instances, 2)
    s = sid()
    assert (await a.claim(s)).claimed
    assert await a.owner(s) == a.instance_id
    await save(a, Session(s))  # its browser is connected there
    again = await a.claim(s)
    assert again.claimed
    assert again.previous == a.instance_id
    refused = await b.claim(s)
    assert not refused.claimed
    assert refused.previous == a.instance_id
    assert await a.owner(s) == a.instance_id


async def test_an_endpoint_routed_elsewhere_takes_its_session_along(instances: Factory) -> None:
    """The owner serves, but the endpoint asking is not connected there (the proxy's ring
    changed): the session follows it, and the old owner learns at its next save."""
    a, b = await running(instances, 2)
    session = await claimed(a)
    session.live = True
    await save(a, session)
    assert not (await b.claim(session.session_id, asking="browser")).claimed
    session.live = False  # the browser dropped from a...
    await save(a, session)
    took = await b.claim(session.session_id, asking="browser")  # ...and reached b
    assert took.claimed
    assert took.previous == a.instance_id
    session.endpoints["browser"].send(b"late")
    assert await save(a, session) is Saved.LOST


async def test_an_idle_owner_learns_it_lost_the_lease_from_its_touch(instances: Factory) -> None:
    a = instances(ttl=0.6, heartbeat_interval=0.05)
    b = instances()
    await a.start()
    await b.start()
    session = await claimed(a)
    session.live = False
    await save(a, session)
    assert (await b.claim(session.session_id)).claimed
    await asyncio.sleep(0.5)  # a's heartbeat touches its sessions' keys
    assert session.outcomes[-1] is Saved.LOST


async def test_a_draining_owners_sessions_can_be_taken_over(instances: Factory) -> None:
    a, b = await running(instances, 2)
    s = sid()
    await a.claim(s)
    await a.set_draining()
    assert await a.instance_state(a.instance_id) == DRAINING
    took = await b.claim(s)
    assert took.claimed
    assert took.previous == a.instance_id
    assert await b.owner(s) == b.instance_id


async def test_a_dead_owners_sessions_can_be_taken_over_once_its_heartbeat_expires(
    instances: Factory,
) -> None:
    a = instances(heartbeat_interval=0.05, heartbeat_ttl=0.3)
    b = instances()
    await a.start()
    await b.start()
    s = sid()
    await a.claim(s)
    await save(a, Session(s))  # its browser is connected there
    assert await a.instance_state(a.instance_id) == SERVING
    # SIGKILL: the heartbeat stops without a word.
    assert a._heartbeat is not None
    a._heartbeat.cancel()
    assert not (await b.claim(s)).claimed
    await asyncio.sleep(0.4)
    assert await a.instance_state(a.instance_id) is None
    took = await b.claim(s)
    assert took.claimed
    assert took.previous == a.instance_id


async def test_a_closed_instance_frees_its_sessions_at_once(instances: Factory) -> None:
    a, b = await running(instances, 2)
    s = sid()
    await a.claim(s)
    await a.aclose()
    assert (await b.claim(s)).claimed


async def test_the_lease_fences_writes_of_an_instance_that_lost_it(instances: Factory) -> None:
    a, b = await running(instances, 2)
    session = await claimed(a)
    s = session.session_id
    session.endpoints["browser"].send(b"one")
    assert await save(a, session) is Saved.SAVED
    await a.set_draining()
    await b.claim(s)
    session.endpoints["browser"].send(b"two")
    session.core, session.core_dirty = b"core-1", True
    assert await save(a, session) is Saved.LOST
    saved = await b.load(s)
    assert saved is not None
    assert saved.core == b"core-0"
    assert saved.endpoints["browser"].messages == [b"one"]
    assert a.stats.lost == 1


async def test_release_keeps_the_state_and_forget_deletes_it(instances: Factory) -> None:
    a, b = await running(instances, 2)
    session = await claimed(a)
    s = session.session_id
    session.endpoints["browser"].send(b"kept")
    await save(a, session)
    assert await a.release(s)
    assert await a.owner(s) is None
    assert (await b.claim(s)).claimed
    saved = await b.load(s)
    assert saved is not None
    assert saved.endpoints["browser"].messages == [b"kept"]
    assert not await a.forget(s)  # not ours any more: nothing deleted
    assert await b.forget(s)
    assert await b.load(s) is None
    assert await b.owner(s) is None


# --- the write path ---


async def test_saved_state_loads_byte_exact_with_acks_trimming(instances: Factory) -> None:
    (a,) = await running(instances)
    s = sid()
    await a.claim(s, ["browser", "producer"])
    session = Session(s, ["browser", "producer"])
    browser, producer = session.endpoints["browser"], session.endpoints["producer"]
    payloads = [bytes([n]) * (n + 1) + b"\x00\xff" for n in range(10)]
    for data in payloads:
        browser.send(data)
    browser.client_seq = 7
    producer.send(b"event-1")
    producer.client_seq = 3
    assert await save(a, session) is Saved.SAVED
    browser.ack(4)
    producer.ack(1)
    browser.send(b"eleven")
    assert await save(a, session) is Saved.SAVED
    saved = await a.load(s)
    assert saved is not None
    assert saved.core == b"core-0"
    got = saved.endpoints["browser"]
    assert (got.client_seq, got.acked, got.last) == (7, 4, 11)
    assert got.messages == [*payloads[4:], b"eleven"]
    got = saved.endpoints["producer"]
    assert (got.client_seq, got.acked, got.messages) == (3, 1, [])


async def test_messages_sent_and_acked_within_one_turn_are_never_written(
    instances: Factory,
) -> None:
    (a,) = await running(instances)
    session = await claimed(a)
    s = session.session_id
    browser = session.endpoints["browser"]
    browser.send(b"1")
    await save(a, session)
    for n in range(2, 7):
        browser.send(str(n).encode())
    browser.ack(5)  # 2..5 came and went in the same turn
    assert await save(a, session) is Saved.SAVED
    saved = await a.load(s)
    assert saved is not None
    assert (saved.endpoints["browser"].acked, saved.endpoints["browser"].messages) == (5, [b"6"])
    assert a.stats.messages == 2  # "1" and "6"


async def test_a_delta_that_does_not_continue_the_saved_state_asks_for_a_full_one(
    instances: Factory, redis: aioredis.Redis
) -> None:
    (a,) = await running(instances)
    session = await claimed(a)
    s = session.session_id
    browser = session.endpoints["browser"]
    browser.send(b"1")
    browser.send(b"2")
    await save(a, session)
    # The saved state vanished (a Redis restart, an eviction): the lease is re-taken and the
    # session sends everything it keeps.
    await redis.delete(a._state_key(s), a._replay_key(s, "browser"))
    browser.send(b"3")
    assert await save(a, session) is Saved.SAVED
    assert session.outcomes == [Saved.SAVED, Saved.RESYNC, Saved.SAVED]
    saved = await a.load(s)
    assert saved is not None
    assert saved.endpoints["browser"].messages == [b"1", b"2", b"3"]
    assert saved.core == b"core-0"


async def test_every_dirty_session_of_a_turn_goes_in_one_pipeline(instances: Factory) -> None:
    (a,) = await running(instances)
    sessions = [Session(sid()) for _ in range(50)]
    for session in sessions:
        await a.claim(session.session_id)
    before = a.stats.pipelines
    for n, session in enumerate(sessions):
        session.endpoints["browser"].send(b"frame-%d" % n)
        a.mark(session)
        a.mark(session)  # twice in a turn: saved once
    await a.settled(within=5)
    assert a.stats.pipelines == before + 1
    assert all(session.outcomes == [Saved.SAVED] for session in sessions)


async def test_an_urgent_change_does_not_wait_for_the_flush_interval(
    instances: Factory,
) -> None:
    (a,) = await running(instances, flush_interval=5.0)
    lazy, urgent = await claimed(a), await claimed(a)
    await save(a, lazy)  # the first batch: the next may start only 5 s later...
    loop = asyncio.get_running_loop()
    started = loop.time()
    lazy.endpoints["browser"].send(b"can wait")
    a.mark(lazy)
    await asyncio.sleep(0.05)
    assert lazy.outcomes == [Saved.SAVED]  # still waiting
    urgent.endpoints["browser"].send(b"cannot")
    a.mark(urgent, urgent=True)  # ...unless output waits for it
    await a.settled(within=2)
    assert loop.time() - started < 1.0
    assert urgent.outcomes == [Saved.SAVED]
    assert lazy.outcomes == [Saved.SAVED, Saved.SAVED]  # in the same batch


async def test_replay_lists_are_capped(instances: Factory) -> None:
    a = instances(max_messages=5)
    await a.start()
    session = await claimed(a)
    s = session.session_id
    for n in range(1, 9):
        session.endpoints["browser"].send(b"m%d" % n)
    await save(a, session)
    saved = await a.load(s)
    assert saved is not None
    got = saved.endpoints["browser"]
    # The oldest fell off, and the state says so (a resume from before them must fail).
    assert (got.acked, got.last) == (3, 8)
    assert got.messages == [b"m4", b"m5", b"m6", b"m7", b"m8"]


async def test_state_expires_unless_its_owner_keeps_it(
    instances: Factory, redis: aioredis.Redis
) -> None:
    kept_by = instances(ttl=0.6, heartbeat_interval=0.05)
    await kept_by.start()
    alive, orphan = Session(sid()), Session(sid())
    for session in (alive, orphan):
        await kept_by.claim(session.session_id)
        session.endpoints["browser"].send(b"x")
        await save(kept_by, session)
    await kept_by.release(orphan.session_id)
    await asyncio.sleep(1.0)
    assert await kept_by.load(alive.session_id) is not None  # touched by the heartbeat
    assert await kept_by.load(orphan.session_id) is None
    assert await redis.exists(kept_by._replay_key(orphan.session_id, "browser")) == 0
    ttl = await redis.pttl(kept_by._replay_key(alive.session_id, "browser"))
    assert 0 < ttl <= 600


async def test_a_redis_outage_keeps_changes_until_it_is_back(
    instances: Factory, redis_url: str
) -> None:
    """Saves that fail are retried in full; nothing is lost, nothing doubled."""
    broken = aioredis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
    (a,) = await running(instances)
    session = await claimed(a)
    s = session.session_id
    session.endpoints["browser"].send(b"1")
    await save(a, session)
    good = a._redis
    a._redis = broken
    a._save = broken.register_script(a._save.script)
    session.endpoints["browser"].send(b"2")
    a.mark(session)
    await asyncio.sleep(0.5)
    assert a.stats.failures >= 1
    a._redis = good
    a._save = good.register_script(a._save.script)
    await a.settled(within=5)
    saved = await a.load(s)
    assert saved is not None
    assert saved.endpoints["browser"].messages == [b"1", b"2"]
    await broken.aclose()


# --- random runs against the model ---

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.binary(max_size=12)),
        st.tuples(st.just("ack"), st.integers(0, 6)),
        st.tuples(st.just("accept"), st.integers(1, 3)),
        st.tuples(st.just("core"), st.binary(max_size=8)),
        st.tuples(st.just("flush"), st.just(0)),
        st.tuples(st.just("wipe"), st.just(0)),
    ),
    max_size=40,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
async def test_what_loads_is_what_the_session_keeps(
    ops: list[tuple[str, object]], redis: aioredis.Redis, prefix: str
) -> None:
    a = RelayStateStore(redis, prefix=prefix, max_messages=64)
    await a.start()
    session = await claimed(a)
    s = session.session_id
    browser = session.endpoints["browser"]
    a.mark(session)
    try:
        for op, value in ops:
            if op == "send":
                assert isinstance(value, bytes)
                browser.send(value)
                a.mark(session)
            elif op == "ack":
                assert isinstance(value, int)
                browser.ack(min(browser.last, browser.acked + value))
                a.mark(session)
            elif op == "accept":
                assert isinstance(value, int)
                browser.client_seq += value
                a.mark(session)
            elif op == "core":
                assert isinstance(value, bytes)
                session.core, session.core_dirty = value, True
                a.mark(session)
            elif op == "flush":
                await a.settled(within=5)
            else:
                await a.settled(within=5)
                await redis.delete(a._state_key(s), a._replay_key(s, "browser"))
                session.core_dirty = True  # the model: whatever the store lost, it is re-sent
                browser.saved_upto = 0
                a.mark(session)
        await a.settled(within=5)
        saved = await a.load(s)
        assert saved is not None
        got = saved.endpoints["browser"]
        assert (got.client_seq, got.acked, got.messages) == (
            browser.client_seq,
            browser.acked,
            browser.kept,
        )
        assert saved.core == session.core
    finally:
        await a.forget(s)
        await a.aclose()
