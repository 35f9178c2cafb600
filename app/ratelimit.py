"""Request rate limits per principal and per client address, shared through the store.

Each limit is a GCRA bucket in the store (see `Store.hit`): bursts up to the limit, refilled at
`limit` per minute. With Redis every instance charges the same buckets, so N instances enforce one
limit. A limit of 0 turns that limit off.

The client address is the TCP peer, unless the peer is a configured trusted proxy: then the
`X-Forwarded-For` chain is walked from the right, skipping trusted proxies, and the first address
not in the list is the client. Addresses further left are client-supplied and never trusted.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from app.errors import AppError, ErrorCode
from app.metrics import Metrics, RateLimitScope
from app.settings import ConfigError, Settings
from app.store import RateDecision, Store

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

WINDOW_SECONDS = 60.0


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    networks: list[Network] = []
    bad: list[str] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            bad.append(entry)
    if bad:
        raise ConfigError([f"TRUSTED_PROXIES: not an IP address or network: {', '.join(bad)}"])
    return tuple(networks)


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_ip(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address: `peer`, or the right-most untrusted hop of X-Forwarded-For."""
    current = _address(peer) if peer else None
    if current is None:
        return peer or "unknown"
    if not trusted:
        return str(current)
    hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
    while any(current in network for network in trusted) and hops:
        previous = _address(hops.pop())
        if previous is None:
            # Unparseable text can only come from the client's side of the chain; stop at the
            # last proxy we trust rather than let the client name its own bucket.
            break
        current = previous
    return str(current)


@dataclass(frozen=True, slots=True)
class Charge:
    """What charging a request found: the answer headers for every bucket it counted against
    (IETF `RateLimit-Policy` / `RateLimit`, draft-ietf-httpapi-ratelimit-headers), and the
    refusal to raise when a bucket said no."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    refusal: AppError | None = None


def _quota_headers(
    rules: Sequence[tuple[RateLimitScope, str, int]],
    decisions: Sequence[RateDecision],
    window: float,
    *,
    charged: bool,
) -> list[tuple[str, str]]:
    policies: list[str] = []
    states: list[str] = []
    for (scope, _, limit), decision in zip(rules, decisions, strict=True):
        # Each decision is "as if alone"; a refused request charged no bucket at all.
        left = decision.remaining + (1 if decision.allowed and not charged else 0)
        remaining = max(0, min(limit, left))
        # GCRA refills one request every window/limit seconds: full again after this long.
        reset = math.ceil((limit - remaining) * window / limit)
        policies.append(f'"{scope}";q={limit};w={round(window)}')
        states.append(f'"{scope}";r={remaining};t={reset}')
    return [("RateLimit-Policy", ", ".join(policies)), ("RateLimit", ", ".join(states))]


class RateLimiter:
    def __init__(
        self,
        store: Store,
        *,
        per_principal: int,
        per_ip: int,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._store = store
        self._per_principal = per_principal
        self._per_ip = per_ip
        self._window = window
        self._clock = clock

    @classmethod
    def from_settings(
        cls, settings: Settings, store: Store, metrics: Metrics | None = None
    ) -> RateLimiter:
        return cls(
            store,
            per_principal=settings.rate_limit_principal_per_minute,
            per_ip=settings.rate_limit_ip_per_minute,
            metrics=metrics,
        )

    def _rules(
        self, address: str, principal_id: str | None
    ) -> list[tuple[RateLimitScope, str, int]]:
        rules: list[tuple[RateLimitScope, str, int]] = []
        if self._per_ip > 0:
            rules.append(("ip", "rl:ip:" + address, self._per_ip))
        if principal_id is not None and self._per_principal > 0:
            rules.append(("principal", "rl:principal:" + principal_id, self._per_principal))
        return rules

    async def charge(self, address: str, principal_id: str | None = None) -> Charge:
        """Charge the address (and the principal, when known) in one atomic step; all or nothing.

        Never raises a refusal itself: `Charge.refusal` is rateLimited with the longest wait
        among the buckets that refused, and `Charge.headers` describe every bucket either way.
        """
        rules = self._rules(address, principal_id)
        if not rules:
            return Charge()
        buckets = [(key, limit) for _, key, limit in rules]
        decisions = await self._store.hit_all(buckets, self._window, self._clock())
        refused = [
            (scope, decision)
            for (scope, _, _), decision in zip(rules, decisions, strict=True)
            if not decision.allowed
        ]
        headers = _quota_headers(rules, decisions, self._window, charged=not refused)
        if not refused:
            return Charge(headers)
        if self._metrics is not None:
            for scope, _ in refused:
                self._metrics.rate_limited(scope)
        scope, decision = max(refused, key=lambda item: item[1].retry_after)
        what = "client address" if scope == "ip" else "caller"
        refusal = AppError(
            ErrorCode.RATE_LIMITED,
            f"too many requests for this {what}; retry later",
            retry_after=decision.retry_after,
        )
        return Charge(headers, refusal)

    async def check(self, address: str, principal_id: str | None = None) -> None:
        """`charge`, raising its refusal."""
        charged = await self.charge(address, principal_id)
        if charged.refusal is not None:
            raise charged.refusal

    async def check_ip(self, address: str) -> None:
        await self.check(address)

    async def check_principal(self, principal_id: str) -> None:
        if self._per_principal > 0:
            rules = [("rl:principal:" + principal_id, self._per_principal)]
            decision = (await self._store.hit_all(rules, self._window, self._clock()))[0]
            if not decision.allowed:
                if self._metrics is not None:
                    self._metrics.rate_limited("principal")
                raise AppError(
                    ErrorCode.RATE_LIMITED,
                    "too many requests for this caller; retry later",
                    retry_after=decision.retry_after,
                )
