"""Request ids for upstream requests: `YYYYMMDDHHMMSS_<12-character nanoid>`, UTC.

The official SDKs name every utterance this way and SpatialReal's logs are keyed by it, so ours
look the same. The clock is passed in (callers use `datetime.now(UTC)`) to keep this testable.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

# The nanoid URL-safe alphabet. It has exactly 64 symbols, so `byte & 63` picks one uniformly.
NANOID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
NANOID_LENGTH = 12
REQUEST_ID_PATTERN = re.compile(r"\A\d{14}_[A-Za-z0-9_-]{12}\Z")

assert len(NANOID_ALPHABET) == 64


def new_request_id(now: datetime) -> str:
    """A fresh request id stamped with `now` in UTC.

    `now` must be timezone-aware: a naive datetime would silently stamp local time.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (use datetime.now(UTC))")
    stamp = now.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    suffix = "".join(NANOID_ALPHABET[byte & 63] for byte in secrets.token_bytes(NANOID_LENGTH))
    return f"{stamp}_{suffix}"


def is_request_id(value: str) -> bool:
    """True when `value` has the request id shape (it says nothing about who made it)."""
    return REQUEST_ID_PATTERN.match(value) is not None
