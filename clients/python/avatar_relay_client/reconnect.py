"""When the link reconnects, and how soon: which endings a new socket may fix.

A lost connection (a cut, a silent path, a transient refusal) is worth a new ticket and socket;
the server's final refusals (session gone, resume impossible, closed) end the link with their
stable code. Attempts are spaced by `Backoff`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.typing import Origin, Subprotocol

from avatar_relay_client.errors import ErrorCode, RelayError, error_code


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay between reconnect attempts: exponential with full jitter, capped."""

    initial: float = 0.05
    factor: float = 2.0
    maximum: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        return rng.uniform(ceiling / 2, ceiling)


# Close codes after which reconnecting cannot help: the server ended the session or refuses it.
# Anything else (1006 abnormal, 1001-less transport errors, 1012/1013, 4008 slow consumer) is a
# lost connection, and the server decides on the reconnect whether the gap can still be filled.
CLOSE_CODES: Final[dict[int, ErrorCode]] = {
    1000: ErrorCode.SESSION_CLOSED,
    1001: ErrorCode.GOING_AWAY,
    1009: ErrorCode.MESSAGE_TOO_LARGE,
    1011: ErrorCode.INTERNAL_ERROR,
    4001: ErrorCode.CONNECTION_REPLACED,
    4400: ErrorCode.INVALID_REQUEST,
    4401: ErrorCode.TICKET_INVALID,
    4403: ErrorCode.ORIGIN_NOT_ALLOWED,
    4404: ErrorCode.SESSION_NOT_FOUND,
    4408: ErrorCode.IDLE_TIMEOUT,
    4409: ErrorCode.RESUME_FAILED,
    4410: ErrorCode.SESSION_CLOSED,
    4429: ErrorCode.SESSION_LIMIT,
}
RETRYABLE_CLOSES: Final = frozenset({1005, 1006, 1012, 1013, 1014, 4008})
# HTTP statuses on the upgrade (or the ticket route) that a retry may fix.
RETRYABLE_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
STATUS_CODES: Final[dict[int, ErrorCode]] = {
    400: ErrorCode.INVALID_REQUEST,
    401: ErrorCode.TICKET_INVALID,
    403: ErrorCode.ORIGIN_NOT_ALLOWED,
    404: ErrorCode.SESSION_NOT_FOUND,
    409: ErrorCode.SESSION_CLOSED,
    410: ErrorCode.SESSION_CLOSED,
    429: ErrorCode.SESSION_LIMIT,
}


class Lost(Exception):
    """The current socket is gone; reconnect."""


def closed_error(exc: ConnectionClosed) -> Exception:
    """A closed socket: `Lost` if reconnecting may help, else the RelayError that ended it."""
    close = exc.rcvd
    if close is None or close.code in RETRYABLE_CLOSES:
        return Lost(str(exc))
    fallback = CLOSE_CODES.get(close.code, ErrorCode.CONNECTION_CLOSED)
    code = error_code(close.reason, fallback) if close.reason else fallback
    return RelayError(code, f"relay server closed the connection ({close.code} {close.reason})")


def upgrade_refused(status: int) -> Exception:
    """The socket upgrade answered HTTP `status`: `Lost` if a retry may fix it, else final."""
    code = STATUS_CODES.get(status, ErrorCode.CONNECTION_FAILED)
    error = RelayError(code, f"relay socket refused: HTTP {status}", http_status=status)
    if status in RETRYABLE_STATUSES:
        return Lost(str(error))
    return error


def worth_retrying(exc: RelayError) -> bool:
    """Whether a failed reconnect (ticket or socket) may succeed on the next attempt.

    A refused ticket can be a race with its expiry, a 5xx or 429 is transient; the server's other
    refusals (unknown session, resume impossible, closed) are final.
    """
    return (
        exc.code in (ErrorCode.CONNECTION_FAILED, ErrorCode.TICKET_INVALID)
        or exc.http_status in RETRYABLE_STATUSES
    )


async def open_socket(
    url: str, *, subprotocol: str, origin: str | None, open_timeout: float, max_size: int
) -> ClientConnection:
    """Open the session's socket; a failure raises `Lost` if a retry may fix it, else final."""
    try:
        return await ws_connect(
            url,
            subprotocols=[Subprotocol(subprotocol)],
            origin=None if origin is None else Origin(origin),
            open_timeout=open_timeout,
            max_size=max_size,
            compression=None,
            ping_interval=None,  # the protocol has its own PING; the server sends it
        )
    except InvalidStatus as exc:
        raise upgrade_refused(exc.response.status_code) from None
    except (OSError, WebSocketException, TimeoutError) as exc:
        raise Lost(f"connect failed: {exc}") from None


async def retry_within(
    window: float, backoff: Backoff, rng: random.Random, attempt: Callable[[], Awaitable[None]]
) -> None:
    """Call `attempt` until it succeeds within `window` seconds, or raise the RelayError that
    says why not: a final refusal as it is, running out of time as RESUME_FAILED.

    At least one attempt is made even past the window, so the server's own verdict
    (resumeFailed, sessionNotFound, ...) is what the consumer sees.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + window
    tries = 0
    while True:
        tries += 1
        try:
            await attempt()
        except Lost as exc:
            last = str(exc)
        except RelayError as exc:
            if not worth_retrying(exc):
                raise
            last = exc.message
        else:
            return
        if loop.time() >= deadline:
            raise RelayError(
                ErrorCode.RESUME_FAILED,
                f"could not reconnect within the {window:g}s resume window ({last})",
            )
        await asyncio.sleep(backoff.delay(tries, rng))
