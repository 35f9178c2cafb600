"""Regional fallback: run one attempt per region, in breaker order, until one succeeds.

Shared by the console client (mint a token) and the ingress client (mint + connect), so both move
between regions by the same rule: on transport failures, timeouts and 5xx only. A 4xx is the
region answering "no"; asking another region would get the same answer, so it is raised at once
and counts as the region being healthy.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from app.errors import AppError, ErrorCode, Phase
from app.settings import Endpoint
from app.spatialreal.regions import RegionBreakers

T = TypeVar("T")

log = logging.getLogger("avatar_relay.spatialreal")

# Phases in which a transport failure means "this region is unreachable", not "this session broke".
_CONNECT_PHASES = (Phase.SESSION_TOKEN, Phase.WEBSOCKET_CONNECT, Phase.WEBSOCKET_HANDSHAKE)


def worth_another_region(error: AppError) -> bool:
    """Transport failures, timeouts and 5xx while reaching a region; never a 4xx."""
    if error.code is ErrorCode.CONNECTION_FAILED:
        return True
    if error.code is ErrorCode.CONNECTION_CLOSED:
        return error.phase in _CONNECT_PHASES
    status = error.upstream_http_status
    return status is not None and status >= 500


async def try_regions(
    endpoints: Sequence[Endpoint],
    breakers: RegionBreakers,
    clock: Callable[[], float],
    attempt: Callable[[Endpoint], Awaitable[T]],
) -> T:
    """Run `attempt` against each region the breakers allow until one succeeds.

    Raises the last region's error when all fail, or UPSTREAM_UNAVAILABLE when the breakers allow
    no region at all. Each attempt is responsible for its own timeout.
    """
    last: AppError | None = None
    for endpoint in breakers.order(endpoints, clock()):
        region = endpoint.region
        if not breakers.begin(region, clock()):
            continue  # another caller took the half-open probe meanwhile
        try:
            result = await attempt(endpoint)
        except AppError as error:
            if not worth_another_region(error):
                breakers.success(region, clock())
                raise
            breakers.failure(region, clock())
            log.warning(
                "upstream region %s failed; trying the next region if any",
                region,
                extra=error.log_fields(),
            )
            last = error
            continue
        except BaseException:
            breakers.release(region, clock())
            raise
        breakers.success(region, clock())
        return result
    if last is not None:
        raise last
    # Every allowed region was claimed by concurrent probes: same answer as "all open".
    raise breakers.unavailable(endpoints, clock())
