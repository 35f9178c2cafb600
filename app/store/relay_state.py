"""Relay sessions' durable state in Redis: what another instance needs to continue a session.

A live relay session runs in one process (its core, its upstream connection). What must outlive
that process is kept here, so that the session can resume on **any** instance sharing the Redis:

    relay:lease:<sid>            string  the instance running the session (its instance id)
    relay:instance:<iid>         string  "serving" | "draining"; expires HEARTBEAT_TTL after the
                                         instance's last heartbeat (it renews it every
                                         HEARTBEAT_INTERVAL): gone means the instance is dead
    relay:state:<sid>            hash    core        the core's own state (opaque bytes)
                                         <ep>:in     highest seq accepted from endpoint <ep>
                                         <ep>:acked  highest seq endpoint <ep> acknowledged
                                         <ep>:last   highest seq sent to endpoint <ep>
    relay:replay:<sid>:<ep>      list    the messages sent to <ep> and not acknowledged:
                                         seq <ep>:acked+1 .. <ep>:last, oldest first

**Leases.** `claim` takes a session for this instance atomically (a Lua script): free, already
ours, or held by an instance whose heartbeat is gone or that is draining. A second instance
therefore never runs a session at once with a live, serving owner. Every save checks the lease
in the same script (fencing): an instance that lost its lease learns it at its next save and
stops, and writes nothing more.

**Write path.** Write-behind, batched: a session marks itself dirty (`mark`); at the end of the
event-loop turn (and at most once per `flush_interval`) the flusher asks every dirty session for
its delta (new messages, the new acks and client seq, the core's state when it changed) and
sends them all in **one** script call, so that a batch costs one command to encode and one reply
to read whatever the number of sessions; a session learns the outcome in `saved`. One batch is
in flight at a time, so a session's saves apply in order. Replay lists are trimmed on ack, capped
at `max_messages`, and every key lives `ttl` seconds after its last write (the resume window plus
the touch interval): a session nobody continues disappears on its own.

Redis is required (Lua, one node: a script reads the owner's heartbeat key, which a Redis Cluster
would refuse). The in-process store has no counterpart: with one instance nothing needs to move.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, Protocol, cast

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from app.store.redis_store import guarded
from app.store.relay_state_scripts import CLAIM, RELEASE, SAVE, TOUCH

log = logging.getLogger("avatar_relay.store.relay_state")

HEARTBEAT_INTERVAL: Final = 0.25
# A dead instance's sessions can be taken over this long after its last heartbeat at the latest.
HEARTBEAT_TTL: Final = 1.0
# At most one pipeline starts per interval: what changes meanwhile waits, batched. Sends to
# clients never wait for it; acknowledgements of client messages do (a client seq is saved before
# its ACK goes out), and a crash may lose what changed within the last interval and round trip.
FLUSH_INTERVAL: Final = 0.05
# Saved state lives this much longer than the resume window after its last write or touch, so
# that a client gets its whole window after a crash (the owner touches its keys every quarter of
# the TTL).
RESUME_MARGIN_SECONDS: Final = 10.0
# After a failed save, wait this long before the next attempt (the sessions stay dirty).
RETRY_DELAY: Final = 0.1

SERVING: Final = b"serving"
DRAINING: Final = b"draining"


class Saved(Enum):
    SAVED = "saved"
    LOST = "lost"  # another instance holds the lease: stop running the session here
    RESYNC = "resync"  # the next delta must be full (everything kept, the core's state)


@dataclass(frozen=True, slots=True)
class EndpointDelta:
    """What changed for one endpoint since the last save. `entries` are the messages with seq
    `first`, `first + 1`, ... sent to it and not yet saved (a full delta: every unacknowledged
    one, `first` = `acked + 1`)."""

    name: str
    client_seq: int
    acked: int
    first: int
    entries: Sequence[bytes] = ()
    live: bool = False  # connected to this instance


@dataclass(frozen=True, slots=True)
class SessionDelta:
    endpoints: Sequence[EndpointDelta]
    core: bytes | None = None  # the core's state, when it changed


@dataclass(frozen=True, slots=True)
class EndpointState:
    """One endpoint as saved: `messages` carry seq `acked + 1` .. `last`."""

    name: str
    client_seq: int
    acked: int
    messages: list[bytes]

    @property
    def last(self) -> int:
        return self.acked + len(self.messages)


@dataclass(frozen=True, slots=True)
class SavedSession:
    core: bytes | None
    endpoints: dict[str, EndpointState]


@dataclass(frozen=True, slots=True)
class Claim:
    """`claimed`: the session is ours now. `previous`: the instance that held it before (None:
    nobody; our own id: it was ours already)."""

    claimed: bool
    previous: str | None


class Saving(Protocol):
    """A live session as the flusher sees it."""

    @property
    def session_id(self) -> str: ...

    @property
    def endpoint_names(self) -> Sequence[str]: ...

    def delta(self) -> SessionDelta:
        """What to save now; called by the flusher, at most once per pipeline."""
        ...

    def saved(self, delta: SessionDelta, outcome: Saved) -> None:
        """The delta's fate (RESYNC and LOST: nothing of it was written)."""
        ...

    def lost(self) -> None:
        """Another instance holds the session's lease now (found without a save)."""
        ...


@dataclass(slots=True)
class FlushStats:
    pipelines: int = 0
    saves: int = 0
    messages: int = 0
    bytes: int = 0
    failures: int = 0
    lost: int = 0
    resyncs: int = 0
    durations: list[float] = field(default_factory=list)


def new_instance_id() -> str:
    return "i_" + secrets.token_urlsafe(9)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RelayStateStore:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "avatar-relay:",
        instance_id: str | None = None,
        ttl: float = 40.0,
        max_messages: int = 4096,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        heartbeat_ttl: float = HEARTBEAT_TTL,
        flush_interval: float = FLUSH_INTERVAL,
        keep_durations: bool = False,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self.instance_id = instance_id or new_instance_id()
        self._me = self.instance_id.encode()
        self.ttl = ttl
        self._ttl_ms = _ms(ttl)
        self._max_messages = max_messages
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_ttl_ms = _ms(heartbeat_ttl)
        self._keep_durations = keep_durations
        self._save = client.register_script(SAVE)
        self._claim = client.register_script(CLAIM)
        self._release = client.register_script(RELEASE)
        self._touch = client.register_script(TOUCH)
        self._state_word = SERVING
        self._heartbeat: asyncio.Task[None] | None = None
        # Write-behind.
        self._dirty: dict[str, Saving] = {}
        self._owned: dict[str, Sequence[str]] = {}  # session id -> endpoint names
        self._sources: dict[str, Saving] = {}  # the live sessions that saved here
        self._scheduled = False
        self._scheduled_soon = False
        self._urgent = False
        self._wake = asyncio.Event()
        self._flush_interval = flush_interval
        self._next_flush = 0.0  # loop time before which no pipeline starts
        self._flushing: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.stats = FlushStats()

    # --- keys ---

    def _k(self, key: str) -> str:
        return self._prefix + key

    def lease_key(self, session_id: str) -> str:
        return self._k(f"relay:lease:{session_id}")

    def instance_key(self, instance_id: str) -> str:
        return self._k(f"relay:instance:{instance_id}")

    def _state_key(self, session_id: str) -> str:
        return self._k(f"relay:state:{session_id}")

    def _replay_key(self, session_id: str, endpoint: str) -> str:
        return self._k(f"relay:replay:{session_id}:{endpoint}")

    def _session_keys(self, session_id: str, endpoints: Sequence[str]) -> list[str]:
        return [
            self.lease_key(session_id),
            self._state_key(session_id),
            *(self._replay_key(session_id, name) for name in endpoints),
        ]

    # --- the instance ---

    async def start(self) -> None:
        """Announce this instance (serving) and keep announcing it (Redis may be down now:
        the heartbeat keeps trying, and readiness says so meanwhile)."""
        try:
            await self._beat()
        except (RedisError, OSError) as error:
            log.warning("relay heartbeat failed", extra={"error_type": type(error).__name__})
        self._heartbeat = asyncio.create_task(self._beating(), name="relay-state-heartbeat")

    async def set_draining(self) -> None:
        """From now on other instances may take this one's sessions over."""
        self._state_word = DRAINING
        with contextlib.suppress(RedisError, OSError):
            await self._beat()

    async def aclose(self) -> None:
        """Stop the heartbeat and withdraw it: this instance's sessions are free at once."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self.settled(within=2.0)
            await self._redis.delete(self.instance_key(self.instance_id))

    async def _beat(self) -> None:
        await self._redis.set(
            self.instance_key(self.instance_id), self._state_word, px=self._heartbeat_ttl_ms
        )

    async def _beating(self) -> None:
        touch_every = max(self._heartbeat_interval, (self.ttl - self._heartbeat_interval) / 4)
        touched = time.monotonic()
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            try:
                await self._beat()
                if time.monotonic() - touched >= touch_every:
                    touched = time.monotonic()
                    await self._touch_owned()
            except (RedisError, OSError) as error:
                log.warning("relay heartbeat failed", extra={"error_type": type(error).__name__})

    async def _touch_owned(self) -> None:
        """Keep the keys of every session this instance runs from expiring while it is quiet."""
        owned = list(self._owned.items())
        if not owned:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id, endpoints in owned:
                keys = self._session_keys(session_id, endpoints)
                await self._touch(keys=keys, args=[self._me, self._ttl_ms], client=pipe)
            results = await pipe.execute(raise_on_error=False)
        for (session_id, _), result in zip(owned, results, strict=True):
            if result == 0:
                log.info("relay lease lost", extra={"session_id": session_id})
                self._owned.pop(session_id, None)
                source = self._sources.pop(session_id, None)
                if source is not None:
                    source.lost()

    async def owner(self, session_id: str) -> str | None:
        raw = cast("bytes | None", await self._redis.get(self.lease_key(session_id)))
        return None if raw is None else raw.decode()

    async def instance_state(self, instance_id: str) -> bytes | None:
        return cast("bytes | None", await self._redis.get(self.instance_key(instance_id)))

    # --- sessions ---

    @guarded
    async def claim(
        self,
        session_id: str,
        endpoints: Sequence[str] = ("browser",),
        *,
        asking: str = "browser",
    ) -> Claim:
        """Make the session ours if it is free, ours, or held by a dead or draining instance,
        or by one where the endpoint `asking` (whose socket reached this instance) is not
        connected."""
        prefix = self.instance_key("")
        keys = [self.lease_key(session_id), self._state_key(session_id)]
        reply = await self._claim(keys=keys, args=[self._me, self._ttl_ms, prefix, asking])
        claimed, previous = int(reply[0]), bytes(reply[1]).decode()
        if claimed:
            self._owned[session_id] = tuple(endpoints)
        return Claim(bool(claimed), previous or None)

    @guarded
    async def load(self, session_id: str) -> SavedSession | None:
        """The session's saved state (None: nothing saved, or it expired)."""
        state = cast("dict[bytes, bytes]", await self._redis.hgetall(self._state_key(session_id)))
        if not state:
            return None
        fields = {k.decode(): v for k, v in state.items()}
        names = sorted({name.rsplit(":", 1)[0] for name in fields if ":" in name})
        async with self._redis.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.lrange(self._replay_key(session_id, name), 0, -1)
            lists = await pipe.execute()
        endpoints = {}
        for name, messages in zip(names, lists, strict=True):
            acked = int(fields.get(f"{name}:acked", b"0"))
            last = int(fields.get(f"{name}:last", b"0"))
            kept = [bytes(m) for m in messages][-(last - acked) :] if last > acked else []
            endpoints[name] = EndpointState(name, int(fields.get(f"{name}:in", b"0")), acked, kept)
        return SavedSession(fields.get("core"), endpoints)

    @guarded
    async def release(self, session_id: str) -> bool:
        """Give the session up (its state stays, for the instance that continues it)."""
        self._owned.pop(session_id, None)
        self._dirty.pop(session_id, None)
        self._sources.pop(session_id, None)
        return bool(await self._release(keys=[self.lease_key(session_id)], args=[self._me]))

    @guarded
    async def forget(self, session_id: str, endpoints: Sequence[str] = ("browser",)) -> bool:
        """The session is over: delete its lease and state (while they are ours)."""
        self._owned.pop(session_id, None)
        self._dirty.pop(session_id, None)
        self._sources.pop(session_id, None)
        keys = self._session_keys(session_id, endpoints)
        return bool(await self._release(keys=keys, args=[self._me]))

    # --- write-behind ---

    def mark(self, session: Saving, *, urgent: bool = False) -> None:
        """`session` has changes to save: they go out with the next batch, at the end of this
        event-loop turn or, unless `urgent` (output waits for the save), once the flush interval
        since the last batch has passed."""
        self._dirty[session.session_id] = session
        self._sources[session.session_id] = session
        self._idle.clear()
        if urgent:
            self._urgent = True
            self._wake.set()
        if self._flushing is not None:
            return
        loop = asyncio.get_running_loop()
        wait = 0.0 if self._urgent else self._next_flush - loop.time()
        if self._scheduled and (wait > 0 or self._scheduled_soon):
            return
        self._scheduled = True
        self._scheduled_soon = wait <= 0
        if wait > 0:
            loop.call_later(wait, self._kick)
        else:
            loop.call_soon(self._kick)

    def _kick(self) -> None:
        self._scheduled = False
        self._scheduled_soon = False
        if self._flushing is None and self._dirty:
            self._flushing = asyncio.create_task(self._flush(), name="relay-state-flush")

    async def settled(self, within: float | None = None) -> None:
        """Until every change marked so far has been saved (or given up); TimeoutError after
        `within` seconds."""
        async with asyncio.timeout(within):
            while not self._idle.is_set():
                await self._idle.wait()

    async def _flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            while self._dirty:
                wait = self._next_flush - loop.time()
                if wait > 0 and not self._urgent:
                    await self._wait_or_urgent(wait)
                self._urgent = False
                self._next_flush = loop.time() + self._flush_interval
                batch = list(self._dirty.values())
                self._dirty = {}
                deltas = [(session, session.delta()) for session in batch]
                started = time.perf_counter()
                try:
                    results = await self._send(deltas)
                except (RedisError, OSError) as error:
                    self.stats.failures += 1
                    log.warning(
                        "relay state save failed", extra={"error_type": type(error).__name__}
                    )
                    for session, delta in deltas:
                        session.saved(delta, Saved.RESYNC)
                        self._dirty.setdefault(session.session_id, session)
                    await asyncio.sleep(RETRY_DELAY)
                    continue
                if self._keep_durations:
                    self.stats.durations.append(time.perf_counter() - started)
                self.stats.pipelines += 1
                for (session, delta), outcome in zip(deltas, results, strict=True):
                    if outcome is Saved.LOST:
                        self.stats.lost += 1
                        self._owned.pop(session.session_id, None)
                        self._sources.pop(session.session_id, None)
                    elif outcome is Saved.RESYNC:
                        self.stats.resyncs += 1
                        self._dirty.setdefault(session.session_id, session)
                    session.saved(delta, outcome)
        finally:
            self._flushing = None
            if self._dirty:
                self._kick()
            else:
                self._idle.set()

    async def _wait_or_urgent(self, wait: float) -> None:
        """Sleep out the flush interval unless urgent changes come first."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), wait)

    async def _send(self, deltas: list[tuple[Saving, SessionDelta]]) -> list[Saved]:
        """One script call for the whole batch: one command to encode, one reply to read."""
        args: list[bytes | str | int] = [self._me, self._ttl_ms, self._max_messages, self._prefix]
        args.append(len(deltas))
        stats = self.stats
        for session, delta in deltas:
            args.append(session.session_id)
            args += ["0", b""] if delta.core is None else ["1", delta.core]
            args.append(len(delta.endpoints))
            for ep in delta.endpoints:
                entries = ep.entries
                header = f"{ep.name} {ep.client_seq} {ep.acked} {ep.first} {len(entries)}"
                args.append(f"{header} {int(ep.live)}")
                args += entries
                stats.messages += len(entries)
                stats.bytes += sum(map(len, entries))
        stats.saves += len(deltas)
        reply: bytes = await self._save(keys=[], args=args)
        return [_OUTCOMES[char] for char in reply.decode()]


_OUTCOMES: Final = {"1": Saved.SAVED, "0": Saved.LOST, "r": Saved.RESYNC}
