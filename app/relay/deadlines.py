"""A session's deadlines: when it ends by time, and what its timer keeps alive.

Pure, like the rest of the core: the session asks when its shell should tick it next
(`next_deadline`) and, on each tick, what has expired (`expire`: the resume window, the
maximum duration, the idle timeout, each raising the fatal error that ends the session) and
what is due on each connection (`keep_alive`: HELLO's timeout, a delayed ACK, a PING).
"""

from __future__ import annotations

from app.errors import ErrorCode, spec
from app.relay.delivery import Delivery
from app.relay.effects import CloseClient
from app.relay.endpoint import Endpoint, Fatal
from app.relay.limits import RelayLimits


def next_deadline(
    endpoints: tuple[Endpoint, ...],
    limits: RelayLimits,
    *,
    created: float,
    idle_since: float | None,
) -> float:
    """The earliest of the session's deadlines. `idle_since`: None when the idle timeout does
    not apply (a broken session waits out its resume window only)."""
    # Plain comparisons, no list: this runs after every event the session handles.
    earliest = created + limits.max_session
    if idle_since is not None:
        at = idle_since + limits.idle_timeout
        if at < earliest:
            earliest = at
    for ep in endpoints:
        if ep.disconnected_at is not None:
            at = ep.disconnected_at + limits.resume_window
            if at < earliest:
                earliest = at
        if ep.conn is not None:
            if not ep.hello_done:
                at = ep.connected_at + limits.hello_timeout
            else:
                at = ep.last_ping + limits.ping_interval
                ack_due = ep.ack_due
                if ack_due is not None and ack_due < at:
                    at = ack_due
            if at < earliest:
                earliest = at
    return earliest


def expire(
    endpoints: tuple[Endpoint, ...],
    limits: RelayLimits,
    now: float,
    *,
    created: float,
    idle_since: float | None,
) -> None:
    """Raise the fatal error of the first of the session's time limits that has passed."""
    for ep in endpoints:
        if ep.disconnected_at is not None and now - ep.disconnected_at >= limits.resume_window:
            raise Fatal(
                ErrorCode.SESSION_CLOSED,
                f"the {ep.role} did not reconnect within the resume window",
            )
    if now - created >= limits.max_session:
        raise Fatal(ErrorCode.SESSION_DURATION_EXCEEDED, "maximum session duration")
    if idle_since is not None and now - idle_since >= limits.idle_timeout:
        raise Fatal(ErrorCode.IDLE_TIMEOUT, "no activity")


def keep_alive(
    endpoints: tuple[Endpoint, ...], limits: RelayLimits, delivery: Delivery, now: float
) -> None:
    """Per connection: close one that sent no HELLO in time; send a delayed ACK, a PING."""
    for ep in endpoints:
        if ep.conn is None:
            continue
        if not ep.hello_done:
            if now - ep.connected_at >= limits.hello_timeout:
                code = ErrorCode.INVALID_REQUEST
                delivery.out.append(CloseClient(ep.conn, spec(code).close_code, "no HELLO"))
                ep.detach(now)
            continue
        if ep.ack_due is not None and now >= ep.ack_due:
            delivery.send(ep, ep.ack())
        if now - ep.last_ping >= limits.ping_interval:
            delivery.send(ep, ep.next_ping(now))
