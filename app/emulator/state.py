"""What the emulator remembers: issued session tokens and counters."""

from __future__ import annotations

import heapq
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum

# The console accepts expireAt strictly before now + 24 h (spec: "Console API").
MAX_TOKEN_LIFETIME_SECONDS = 24 * 3600
EXPIRED_TOKEN_MEMORY_SECONDS = 3600


@dataclass
class EmulatorStats:
    """Counters. Read as attributes (`stats.frames_sent`) or items (`stats["frames_sent"]`)."""

    console_requests: int = 0
    auth_route_requests: int = 0
    console_failures: int = 0
    tokens_minted: int = 0
    upgrades_rejected: int = 0
    connections_opened: int = 0
    connections_active: int = 0
    handshakes_completed: int = 0
    handshakes_failed: int = 0
    handshakes_unanswered: int = 0
    requests_started: int = 0
    requests_completed: int = 0
    audio_bytes_received: int = 0
    frames_sent: int = 0
    errors_sent: int = 0
    interrupts_received: int = 0
    pauses_received: int = 0
    resumes_received: int = 0
    playback_states_sent: int = 0
    connections_dropped: int = 0
    closes_sent: int = 0
    idle_timeouts: int = 0
    egress_sessions: int = 0
    livekit_requests: int = 0
    egress_signals_sent: int = 0
    requests_interrupted: int = 0

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        # Every counter change wakes `Emulator.wait_until` waiters.
        hook = self.__dict__.get("_on_change")
        if hook is not None:
            hook()

    def on_change(self, hook: Callable[[], None]) -> None:
        object.__setattr__(self, "_on_change", hook)

    def __getitem__(self, name: str) -> int:
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return int(getattr(self, name))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class TokenRecord:
    app_id: str
    expire_at: int
    used: bool = False


class TokenCheck(Enum):
    OK = "ok"
    UNKNOWN = "unknown"  # never issued, or already used
    EXPIRED = "expired"
    APP_MISMATCH = "app_mismatch"


class TokenStore:
    """Session tokens, each bound to an app id and an expiry (unix seconds).

    Single use unless `multi_use`: then a token opens any number of sessions until it expires.
    """

    def __init__(self, clock: Callable[[], float], *, multi_use: bool = False) -> None:
        self._clock = clock
        self.multi_use = multi_use
        self._tokens: dict[str, TokenRecord] = {}
        # (expire_at, token) for every stored token, soonest first: purging looks only at what
        # is due instead of scanning every token on every mint (O(log n) amortised per mint).
        self._expiries: list[tuple[int, str]] = []

    def mint(self, app_id: str, expire_at: int) -> str:
        self._forget_expired()
        token = secrets.token_urlsafe(32)
        self._tokens[token] = TokenRecord(app_id=app_id, expire_at=expire_at)
        heapq.heappush(self._expiries, (expire_at, token))
        return token

    def check(self, token: str, app_id: str) -> TokenCheck:
        record = self._tokens.get(token)
        if record is None or record.used:
            return TokenCheck.UNKNOWN
        if self._clock() >= record.expire_at:
            return TokenCheck.EXPIRED
        if record.app_id != app_id:
            return TokenCheck.APP_MISMATCH
        return TokenCheck.OK

    def consume(self, token: str) -> None:
        record = self._tokens.get(token)
        if record is not None and not self.multi_use:
            record.used = True

    def _forget_expired(self) -> None:
        # Keeps memory bounded in long standalone runs. Tokens stay known for an hour past expiry
        # so a late use is still reported as "token is expired", not as an unknown token.
        horizon = self._clock() - EXPIRED_TOKEN_MEMORY_SECONDS
        expiries = self._expiries
        while expiries and expiries[0][0] <= horizon:
            _, token = heapq.heappop(expiries)
            record = self._tokens.get(token)
            if record is not None and record.expire_at <= horizon:
                del self._tokens[token]
