"""When a relay session reconnects upstream, sans I/O: the close-code contract, as decisions.

After its ingress connection is lost, or a connect fails, a session's `UpstreamLink` asks its
`Reconnect` what to do (docs/protocol.md, section 3, "Upstream failure"):

- **refuse**: a non-retryable close code (4001 credits exhausted, 4003 concurrency limit, 4010
  session token invalid, any other 40xx, or a SERVER_ERROR carrying one). The link never connects
  again; the session ends with `ERROR{code}`. Another token would be spent for the same answer.
- **roll over**: 4002 (the upstream session reached its maximum duration) on a connection that
  had worked: open a fresh one at once. Only the conversation in flight, if any, is aborted.
- **retry** after a delay: everything else (4503 and other 45xx, a lost connection, a failed
  connect). The delay grows exponentially with consecutive failures, with jitter, so sessions
  that lost upstream together do not come back together: "equal jitter", half the step fixed and
  half random. A first plain loss (no close code: a network blip) reconnects at once.

A conversation that completes resets the failure count.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from app.errors import SESSION_ROLLOVER_CLOSE, AppError

if TYPE_CHECKING:
    from app.settings import Settings


class Action(Enum):
    REFUSE = "refuse"
    ROLL_OVER = "roll_over"
    RETRY = "retry"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay: float = 0.0  # seconds before the next connect (RETRY only)


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """The backoff between upstream reconnects, shared by every session of an instance."""

    initial: float = 0.5
    maximum: float = 30.0
    jitter: Callable[[], float] = field(default=random.random, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError("backoff needs 0 < initial <= maximum")

    @classmethod
    def from_settings(cls, settings: Settings) -> ReconnectPolicy:
        return cls(
            settings.upstream_backoff_initial_seconds,
            max(settings.upstream_backoff_max_seconds, settings.upstream_backoff_initial_seconds),
        )

    def delay(self, failures: int) -> float:
        """The wait after `failures` consecutive failures: in [step / 2, step], step doubling
        from `initial` up to `maximum`."""
        if failures <= 0:
            return 0.0
        step = min(self.maximum, self.initial * 2.0 ** min(failures - 1, 62))
        return step / 2 + self.jitter() * step / 2


def refuses(error: AppError) -> bool:
    """Upstream said, with a close code, that reconnecting cannot help."""
    return error.close_code is not None and not error.retryable


class Reconnect:
    """One session's reconnect state: consecutive failures, and a refusal once there is one."""

    def __init__(self, policy: ReconnectPolicy) -> None:
        self.policy = policy
        self.failures = 0
        self.refused: AppError | None = None

    def after_loss(self, error: AppError, *, delivered: bool) -> Decision:
        """A connection was lost with `error`; `delivered`: it had delivered a frame."""
        if refuses(error):
            return self._refuse(error)
        if error.close_code == SESSION_ROLLOVER_CLOSE and delivered:
            self.failures = 0
            return Decision(Action.ROLL_OVER)
        self.failures += 1
        if error.close_code is None and self.failures == 1:
            return Decision(Action.RETRY)
        return Decision(Action.RETRY, self.policy.delay(self.failures))

    def after_connect_failure(self, error: AppError) -> Decision:
        if refuses(error):
            return self._refuse(error)
        self.failures += 1
        return Decision(Action.RETRY, self.policy.delay(self.failures))

    def healthy(self) -> None:
        """A conversation completed: upstream works again."""
        self.failures = 0

    def _refuse(self, error: AppError) -> Decision:
        self.refused = error
        return Decision(Action.REFUSE)
