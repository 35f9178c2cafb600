"""Relay tickets: the single-use, short-lived credential a WebSocket presents in its URL.

Browsers cannot set headers on a WebSocket, so `POST /v1/relay/sessions` (authenticated like every
`/v1` route) hands out a ticket, and the socket presents it as `?ticket=...`. A ticket is 32 random
bytes (URL-safe base64), bound to one relay session and the principal that asked for it, valid for
`TICKET_TTL_SECONDS` and redeemable once: redemption is an atomic `Store.take`, so of two sockets
racing with the same ticket exactly one gets in, on any instance sharing the store.

Only the SHA-256 digest of a ticket is stored (a store dump yields nothing usable), and tickets are
never logged or put in error messages.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Final

from app.errors import AppError, ErrorCode
from app.metrics import Metrics
from app.store import Store

TICKET_BYTES: Final = 32
# token_urlsafe(32) is 43 characters; anything much longer is not one of ours and is not hashed.
MAX_TICKET_LENGTH: Final = 128
KEY_PREFIX: Final = "relay:ticket:"


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

    async def issue(self, session_id: str, principal_id: str) -> str:
        """A fresh ticket for `principal_id` to attach one socket to `session_id`."""
        ticket = secrets.token_urlsafe(TICKET_BYTES)
        record = json.dumps({"s": session_id, "p": principal_id}, separators=(",", ":"))
        await self._store.put(_key(ticket), record.encode(), self.ttl_seconds)
        if self._metrics is not None:
            self._metrics.tickets_issued_total.inc()
        return ticket

    async def redeem(self, session_id: str, ticket: str) -> TicketGrant:
        """Consume `ticket` for `session_id`; raises AppError(ticketInvalid) when it is missing,
        unknown, used, expired or issued for another session. A ticket presented for the wrong
        session is consumed too: it has been exposed."""
        if not ticket or len(ticket) > MAX_TICKET_LENGTH or not ticket.isascii():
            raise _invalid()
        raw = await self._store.take(_key(ticket))
        if raw is None:
            raise _invalid()
        try:
            data = json.loads(raw)
            grant = TicketGrant(str(data["s"]), str(data["p"]))
        except (ValueError, KeyError, TypeError):
            raise _invalid() from None
        if not secrets.compare_digest(grant.session_id.encode(), session_id.encode()):
            raise _invalid()
        return grant
