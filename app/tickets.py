"""Relay tickets: the single-use, short-lived credential a WebSocket presents in its URL.

Browsers cannot set headers on a WebSocket, so `POST /v1/relay/sessions` (authenticated like every
`/v1` route) hands out a ticket, and the socket presents it as `?ticket=...`. A ticket is 32 random
bytes (URL-safe base64), bound to one relay session and the principal that asked for it, valid for
`TICKET_TTL_SECONDS` and redeemable once: redemption is an atomic `Store.take`, so of two sockets
racing with the same ticket exactly one gets in, on any instance sharing the store.

A ticket has a **kind**: `browser` (for `GET /v1/relay`), `producer` (for `GET
/v1/relay/producer`, a server-side producer's socket) or `rtc-producer` (for `GET
/v1/rtc/producer`, the producer of an RTC session). Kinds are not interchangeable: a ticket
redeemed at the other socket is refused as invalid (and spent), so the browser's credential can
never be used to speak as the avatar's producer, nor a producer's to take the browser's place.

Only the SHA-256 digest of a ticket is stored (a store dump yields nothing usable), and tickets are
never logged or put in error messages.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Final, Literal

from app.errors import AppError, ErrorCode
from app.metrics import Metrics
from app.store import Store

TICKET_BYTES: Final = 32
# token_urlsafe(32) is 43 characters; anything much longer is not one of ours and is not hashed.
MAX_TICKET_LENGTH: Final = 128
KEY_PREFIX: Final = "relay:ticket:"

TicketKind = Literal["browser", "producer", "rtc-producer"]


@dataclass(frozen=True, slots=True)
class TicketGrant:
    """What a redeemed ticket proves: this principal may attach to this session."""

    session_id: str
    principal_id: str


def _key(ticket: str) -> str:
    return KEY_PREFIX + hashlib.sha256(ticket.encode()).hexdigest()


def _invalid() -> AppError:
    # One message for every failure: callers learn nothing about which tickets exist.
    return AppError(ErrorCode.TICKET_INVALID, "ticket unknown, used or expired")


class TicketService:
    def __init__(self, store: Store, ttl_seconds: float, metrics: Metrics | None = None) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self._store = store
        self.ttl_seconds = ttl_seconds
        self._metrics = metrics

    async def issue(self, session_id: str, principal_id: str, kind: TicketKind = "browser") -> str:
        """A fresh ticket for `principal_id` to attach one socket of `kind` to `session_id`."""
        ticket = secrets.token_urlsafe(TICKET_BYTES)
        fields = {"s": session_id, "p": principal_id, "k": kind}
        record = json.dumps(fields, separators=(",", ":"))
        await self._store.put(_key(ticket), record.encode(), self.ttl_seconds)
        if self._metrics is not None:
            self._metrics.tickets_issued_total.inc()
        return ticket

    async def redeem(
        self, session_id: str, ticket: str, kind: TicketKind = "browser"
    ) -> TicketGrant:
        """Consume `ticket` for a `kind` socket of `session_id`; raises AppError(ticketInvalid)
        when it is missing, unknown, used, expired, or issued for another session or the other
        kind of socket. A ticket presented at the wrong place is consumed too: it has been
        exposed."""
        if not ticket or len(ticket) > MAX_TICKET_LENGTH or not ticket.isascii():
            raise _invalid()
        raw = await self._store.take(_key(ticket))
        if raw is None:
            raise _invalid()
        try:
            data = json.loads(raw)
            grant = TicketGrant(str(data["s"]), str(data["p"]))
            issued_for = str(data.get("k", "browser"))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _invalid() from None
        if not secrets.compare_digest(grant.session_id.encode(), session_id.encode()):
            raise _invalid()
        if issued_for != kind:
            raise _invalid()
        return grant
