"""Regional fallback: run one attempt per region, in breaker order, until one succeeds.

Shared by the console client (mint a token) and the ingress client (mint + connect), so both move
between regions by the same rule: on transport failures, timeouts, 5xx and retryable close codes
only. A 4xx (or a 40xx close code) is the region answering "no"; asking another region would get
the same answer, so it is raised at once and counts as the region being healthy.

Each attempt passes a `Gate`: the breakers that judge it, outermost first (the console: its
region's; the ingress: its region's host, then the avatar in that region). A failure blames one
of them (`Judge`); the ones outside it answered, so they count a success. A region whose breaker
is half-open with its probe in flight is not given up on at once: when no other region could be
tried, callers wait up to `probe_wait` seconds for the probe's verdict (issue 13, item 12).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from app.errors import AppError, ErrorCode, Phase
from app.settings import Endpoint
from app.spatialreal.regions import BreakerState, RegionBreakers, unavailable_error

T = TypeVar("T")

log = logging.getLogger("avatar_relay.spatialreal")

# Phases in which a transport failure means "this region is unreachable", not "this session broke".
_CONNECT_PHASES = (Phase.SESSION_TOKEN, Phase.WEBSOCKET_CONNECT, Phase.WEBSOCKET_HANDSHAKE)

# What a `Judge` may answer besides the index of the gate part to blame.
ANSWERED: Final = -1  # the region answered: every breaker counts a success, the error is final
ABSTAIN: Final = -2  # the failure says nothing about this region: no verdict, the error is final

Judge = Callable[[AppError], int]


def worth_another_region(error: AppError) -> bool:
    """Transport failures, timeouts, 5xx and retryable close codes while reaching a region."""
    if error.close_code is not None and error.phase in _CONNECT_PHASES:
        return error.retryable  # the close-code contract decides
    if error.code is ErrorCode.CONNECTION_FAILED:
        return True
    if error.code is ErrorCode.CONNECTION_CLOSED:
        return error.phase in _CONNECT_PHASES
    status = error.upstream_http_status
    return status is not None and status >= 500


def judge_region(error: AppError) -> int:
    """The console's judge: one breaker, blamed for what is worth another region."""
    return 0 if worth_another_region(error) else ANSWERED


@dataclass(frozen=True, slots=True)
class Gate:
    """The breakers one attempt in one region must pass, as (breakers, key), outermost first."""

    parts: tuple[tuple[RegionBreakers, str], ...]

    def allows(self, now: float) -> bool:
        return all(breakers.breaker(key).allows(now) for breakers, key in self.parts)

    def begin(self, now: float) -> bool:
        """Claim every breaker (a half-open one's probe slot) or none."""
        if not self.allows(now):
            return False
        for breakers, key in self.parts:
            breakers.begin(key, now)
        return True

    def probing(self, now: float) -> bool:
        """Nothing here is open and some probe is in flight: a verdict is worth waiting for."""
        parts = self.parts
        if any(b.state(k, now) is BreakerState.OPEN for b, k in parts):
            return False
        return any(b.probing(k, now) for b, k in parts)

    def retry_after(self, now: float) -> float:
        return max(breakers.breaker(key).retry_after(now) for breakers, key in self.parts)

    def succeed(self, now: float) -> None:
        for breakers, key in self.parts:
            breakers.success(key, now)

    def release(self, now: float) -> None:
        for breakers, key in self.parts:
            breakers.release(key, now)

    def blame(self, index: int, now: float) -> None:
        """Part `index` failed; those outside it answered; those inside it were never reached."""
        for position, (breakers, key) in enumerate(self.parts):
            if position < index:
                breakers.success(key, now)
            elif position == index:
                breakers.failure(key, now)
            else:
                breakers.release(key, now)

    def on_verdict(self, listener: Callable[[], None]) -> Callable[[], None]:
        unsubscribes = [breakers.on_verdict(key, listener) for breakers, key in self.parts]

        def unsubscribe() -> None:
            for undo in unsubscribes:
                undo()

        return unsubscribe


@dataclass(frozen=True, slots=True)
class _Failed(Generic[T]):
    error: AppError


async def _wait_for_turn(gate: Gate, clock: Callable[[], float], deadline: float) -> bool:
    """Wait (until the loop time `deadline`) for a probe's verdict; True once `gate` is ours."""
    loop = asyncio.get_running_loop()
    while True:
        now = clock()
        if gate.begin(now):
            return True
        remaining = deadline - loop.time()
        if remaining <= 0 or not gate.probing(now):
            return False
        verdict: asyncio.Future[None] = loop.create_future()

        def wake(verdict: asyncio.Future[None] = verdict) -> None:
            if not verdict.done():
                verdict.set_result(None)

        unsubscribe = gate.on_verdict(wake)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await verdict
        finally:
            unsubscribe()


async def try_regions(
    endpoints: Sequence[Endpoint],
    gate_for: Callable[[Endpoint], Gate],
    clock: Callable[[], float],
    attempt: Callable[[Endpoint], Awaitable[T]],
    *,
    judge: Judge = judge_region,
    probe_wait: float = 0.0,
) -> T:
    """Run `attempt` against each region its gate lets through until one succeeds.

    Raises the last region's error when all fail, or UPSTREAM_UNAVAILABLE when no gate let any
    attempt through. Each attempt is responsible for its own timeout.
    """

    async def run(endpoint: Endpoint, gate: Gate) -> T | _Failed[T]:
        try:
            result = await attempt(endpoint)
        except AppError as error:
            verdict = judge(error)
            if verdict == ANSWERED:
                gate.succeed(clock())
                raise
            if verdict == ABSTAIN:
                gate.release(clock())
                raise
            gate.blame(verdict, clock())
            log.warning(
                "upstream region %s failed; trying the next region if any",
                endpoint.region,
                extra=error.log_fields(),
            )
            return _Failed(error)
        except BaseException:
            gate.release(clock())
            raise
        gate.succeed(clock())
        return result

    last: AppError | None = None
    waiting: list[tuple[Endpoint, Gate]] = []
    gates: list[Gate] = []
    for endpoint in endpoints:
        gate = gate_for(endpoint)
        gates.append(gate)
        now = clock()
        if not gate.begin(now):
            if probe_wait > 0 and gate.probing(now):
                waiting.append((endpoint, gate))
            continue
        outcome = await run(endpoint, gate)
        if not isinstance(outcome, _Failed):
            return outcome
        last = outcome.error
    if waiting:
        # Every region that could be tried now failed or was open: rather than fail, wait a
        # little for the probes already in flight (a recovered region lets everyone through).
        deadline = asyncio.get_running_loop().time() + probe_wait
        for endpoint, gate in waiting:
            if await _wait_for_turn(gate, clock, deadline):
                outcome = await run(endpoint, gate)
                if not isinstance(outcome, _Failed):
                    return outcome
                last = outcome.error
    if last is not None:
        raise last
    now = clock()
    raise unavailable_error([gate.retry_after(now) for gate in gates])
