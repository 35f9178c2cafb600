"""Circuit breakers, sans I/O: every method takes `now` (monotonic seconds).

A region (or one avatar in a region, see `IngressBreakers`) that keeps failing is skipped for a
cool-down instead of costing every caller a timeout, then probed with one real request:

    closed ──(failure_threshold consecutive failures)──▶ open
    open ──(cooldown elapsed)──▶ half-open   (derived from `now`, no timer needed)
    half-open ──(the one probe succeeds)──▶ closed
    half-open ──(the probe fails)──▶ open again, for a fresh cool-down

Only one probe runs at a time; other callers may wait for its verdict (`on_verdict` tells them,
`app.spatialreal.fallback` does the waiting). A probe that never reports (its caller was cancelled
and forgot to `release`) is assumed lost after another cool-down, so a region can never stay stuck
half-open.

Who shares which breaker (issue 13, items 11-12): the console's breakers are keyed by region and
fed by token mints only. The ingress has its own (`IngressBreakers`): one per region for failures
that got no answer at all (the host is unreachable), one per (region, avatar) for failures the
ingress answered (5xx upgrades, failed handshakes). So one avatar's trouble skips that avatar's
region, not the region, and ingress trouble never stops token minting: a region is unreachable
for minting only when its console is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from app.errors import AppError, ErrorCode
from app.settings import Endpoint


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class CircuitBreaker:
    """One region's breaker. Callers: `allows` → `begin` → `success` | `failure` | `release`."""

    failure_threshold: int = 3
    cooldown: float = 30.0
    _failures: int = field(default=0, init=False)
    _opened_at: float | None = field(default=None, init=False)
    _probe_started_at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.cooldown <= 0:
            raise ValueError("cooldown must be positive")

    def state(self, now: float) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if now < self._opened_at + self.cooldown:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def _probe_busy(self, now: float) -> bool:
        started = self._probe_started_at
        return started is not None and now < started + self.cooldown

    def probing(self, now: float) -> bool:
        """Half-open with its probe in flight: a verdict is coming soon."""
        return self.state(now) is BreakerState.HALF_OPEN and self._probe_busy(now)

    def allows(self, now: float) -> bool:
        """Whether an attempt could start now (changes nothing)."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        return state is BreakerState.HALF_OPEN and not self._probe_busy(now)

    def begin(self, now: float) -> bool:
        """Claim the right to attempt now; in half-open this takes the single probe slot."""
        if not self.allows(now):
            return False
        if self.state(now) is BreakerState.HALF_OPEN:
            self._probe_started_at = now
        return True

    def success(self, now: float) -> None:
        """The region answered (any answer that is not a transport failure or 5xx)."""
        self._failures = 0
        self._opened_at = None
        self._probe_started_at = None

    def failure(self, now: float) -> None:
        """A transport failure, timeout or 5xx."""
        state = self.state(now)
        if state is BreakerState.OPEN:
            # A straggler that started before the breaker opened: already counted in spirit,
            # and extending the cool-down for it would punish the region twice.
            return
        if state is BreakerState.HALF_OPEN:
            self._open(now)
            return
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._open(now)

    def release(self, now: float) -> None:
        """An attempt ended without a verdict (cancelled): free the probe slot, nothing else."""
        self._probe_started_at = None

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._probe_started_at = None
        self._failures = 0

    def retry_after(self, now: float) -> float:
        """Seconds until this breaker would allow an attempt (0 when it does now)."""
        if self.allows(now):
            return 0.0
        if self.state(now) is BreakerState.OPEN:
            assert self._opened_at is not None
            return self._opened_at + self.cooldown - now
        assert self._probe_started_at is not None
        return self._probe_started_at + self.cooldown - now


# Breakers kept per set; beyond this the oldest idle ones are forgotten (a forgotten breaker is
# a closed one with no failures, so forgetting loses at most a partial failure streak).
MAX_BREAKERS: int = 4096

Listener = Callable[[], None]


class RegionBreakers:
    """One breaker per key (a region name, or `region/avatar`), created on first use, shared by
    everyone whose attempts it judges."""

    def __init__(
        self, failure_threshold: int = 3, cooldown: float = 30.0, *, max_keys: int = MAX_BREAKERS
    ) -> None:
        # Validate once, eagerly, rather than on the first failure.
        CircuitBreaker(failure_threshold, cooldown)
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self.max_keys = max_keys
        self._breakers: dict[str, CircuitBreaker] = {}
        self._listeners: dict[str, list[Listener]] = {}

    def __repr__(self) -> str:
        return (
            f"RegionBreakers(failure_threshold={self.failure_threshold},"
            f" cooldown={self.cooldown}, keys={sorted(self._breakers)})"
        )

    def __len__(self) -> int:
        return len(self._breakers)

    def breaker(self, key: str) -> CircuitBreaker:
        found = self._breakers.get(key)
        if found is None:
            if len(self._breakers) >= self.max_keys:
                self._forget_one()
            found = self._breakers[key] = CircuitBreaker(self.failure_threshold, self.cooldown)
        return found

    def _forget_one(self) -> None:
        for key in self._breakers:  # oldest first
            if key not in self._listeners:
                del self._breakers[key]
                return

    def state(self, key: str, now: float) -> BreakerState:
        found = self._breakers.get(key)
        return BreakerState.CLOSED if found is None else found.state(now)

    def order(self, endpoints: Sequence[Endpoint], now: float) -> list[Endpoint]:
        """The endpoints worth trying now, in configured order (open regions left out).

        Half-open regions keep their place: putting them last would mean a recovered primary is
        never probed while a fallback works. Raises UPSTREAM_UNAVAILABLE (with `retry_after`, the
        seconds until the first region may be tried again) when no region may be tried.
        """
        allowed = [ep for ep in endpoints if self.breaker(ep.region).allows(now)]
        if allowed or not endpoints:
            return allowed
        raise self.unavailable(endpoints, now)

    def unavailable(self, endpoints: Sequence[Endpoint], now: float) -> AppError:
        """The error for "no region may be tried now", with the wait until one may."""
        waits = [self.breaker(ep.region).retry_after(now) for ep in endpoints]
        return unavailable_error(waits)

    def begin(self, key: str, now: float) -> bool:
        return self.breaker(key).begin(now)

    def probing(self, key: str, now: float) -> bool:
        found = self._breakers.get(key)
        return found is not None and found.probing(now)

    def success(self, key: str, now: float) -> None:
        self.breaker(key).success(now)
        self._notify(key)

    def failure(self, key: str, now: float) -> None:
        self.breaker(key).failure(now)
        self._notify(key)

    def release(self, key: str, now: float) -> None:
        self.breaker(key).release(now)
        self._notify(key)

    def on_verdict(self, key: str, listener: Listener) -> Callable[[], None]:
        """Call `listener` after the next verdict (success, failure, release) on `key`; returns
        the function that unsubscribes it. A breaker with listeners is never forgotten."""
        self.breaker(key)
        self._listeners.setdefault(key, []).append(listener)

        def unsubscribe() -> None:
            listeners = self._listeners.get(key)
            if listeners is not None and listener in listeners:
                listeners.remove(listener)
                if not listeners:
                    del self._listeners[key]

        return unsubscribe

    def _notify(self, key: str) -> None:
        listeners = self._listeners.get(key)
        if listeners:
            for listener in list(listeners):
                listener()


def unavailable_error(waits: Sequence[float]) -> AppError:
    return AppError(
        ErrorCode.UPSTREAM_UNAVAILABLE,
        "every upstream region is failing; retry later",
        retry_after=max(min(waits, default=0.0), 0.0),
    )


class IngressBreakers:
    """The ingress's breakers: `hosts` per region (no answer at all: connection refused, DNS,
    timeouts before any HTTP answer), `avatars` per (region, avatar) (failures the ingress
    answered). Separate from the console's, so ingress trouble never blocks token minting."""

    def __init__(
        self, failure_threshold: int = 3, cooldown: float = 30.0, *, max_keys: int = MAX_BREAKERS
    ) -> None:
        self.hosts = RegionBreakers(failure_threshold, cooldown, max_keys=max_keys)
        self.avatars = RegionBreakers(failure_threshold, cooldown, max_keys=max_keys)

    def __repr__(self) -> str:
        return f"IngressBreakers(hosts={self.hosts!r}, avatars={self.avatars!r})"

    @staticmethod
    def avatar_key(region: str, avatar_id: str) -> str:
        return f"{region}/{avatar_id}"
