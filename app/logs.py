"""Structured logs: one JSON object per line, with request/session context and secrets redacted.

Every record becomes `{"ts", "level", "logger", "msg", ...}` plus, when known, the context fields
(`request_id`, `principal`, `session_id`, `conversation_id`, `connection_id`, `region`,
`error_code`, `phase`) and any `extra={...}` the call site passed. Context comes from two places:

- `bind(**fields)`: a context manager setting fields for everything logged inside it, including
  tasks started inside it (contextvars are copied into new tasks). The HTTP middleware binds
  `request_id`; the relay binds `session_id`/`connection_id` for a socket's lifetime.
- `extra=`: per-call fields, which win over bound ones.

Redaction is a guard, not the plan: secrets should never be passed to a logger in the first place.
Still, nothing reaches the output unscrubbed:

- a field whose key names a secret (api_key, token, sessionToken, ticket, authorization, secret,
  password, cookie, ...) is printed as "[redacted]", at any depth;
- values registered with `register_secret` (the API key, caller keys, the JWT secret: done by
  `configure_logging`) are replaced wherever they appear, in messages, fields and tracebacks;
- `ticket=`/`token=`/`key=` query parameters and `Bearer` credentials are masked in all text, so
  an access-log line for `/v1/relay?session=...&ticket=...` does not carry the ticket.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Final

from pydantic import SecretStr

from app.settings import Settings

REDACTED: Final = "[redacted]"

CONTEXT_FIELDS: Final[tuple[str, ...]] = (
    "request_id",
    "principal",
    "session_id",
    "conversation_id",
    "connection_id",
    "region",
    "error_code",
    "phase",
)

_context: ContextVar[Mapping[str, object] | None] = ContextVar("avatar_relay_log", default=None)


@contextlib.contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Add `fields` to every record logged in this context (None values are ignored)."""
    current = _context.get() or {}
    merged = {**current, **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def bound() -> Mapping[str, object]:
    """The fields bound in the current context."""
    return _context.get() or {}


# --- redaction ---

# Key names are compared lower-cased with `_`/`-` removed: "sessionToken", "session_token" and
# "X-Api-Key" all match. A suffix match catches "upstreamApiKey", "jwt_secret", "relay_ticket".
_SECRET_KEY_SUFFIXES: Final = (
    "apikey",
    "apikeys",
    "token",
    "tokens",
    "ticket",
    "tickets",
    "secret",
    "secrets",
    "password",
    "authorization",
    "cookie",
    "credential",
    "credentials",
    "privatekey",
)

_QUERY_SECRET = re.compile(
    r"(?i)(?P<key>\b(?:ticket|token|session_?token|access_?token|api_?key|key|secret|password)=)"
    r"(?P<value>[^&\s\"'#]+)"
)
_BEARER = re.compile(r"(?i)\b(?P<key>bearer\s+)(?P<value>[A-Za-z0-9._~+/=-]+)")
_HEADER_SECRET = re.compile(
    r"(?i)(?P<key>\b(?:x-api-key|authorization)\s*[:=]\s*)(?P<value>[^\s,;\"']+)"
)

# Too-short values would scrub ordinary words; real secrets are longer than this.
_MIN_SECRET_LENGTH: Final = 6
_secrets: set[str] = set()
_secrets_pattern: re.Pattern[str] | None = None
_secrets_lock = threading.Lock()


@functools.lru_cache(maxsize=1024)
def is_secret_key(key: str) -> bool:
    # Cached: the same few field names come by on every record.
    normal = key.lower().replace("_", "").replace("-", "")
    return normal.endswith(_SECRET_KEY_SUFFIXES)


def register_secret(value: str | SecretStr | None) -> None:
    """Never print `value`: it is replaced by "[redacted]" wherever it appears in a record."""
    global _secrets_pattern
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not raw or len(raw) < _MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        if raw in _secrets:
            return
        _secrets.add(raw)
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _secrets_pattern = re.compile("|".join(re.escape(s) for s in ordered))


def scrub(text: str) -> str:
    """`text` with registered secrets, secret query parameters and credentials masked."""
    pattern = _secrets_pattern
    if pattern is not None and len(text) >= _MIN_SECRET_LENGTH:
        text = pattern.sub(REDACTED, text)
    # Each rule runs only when the text has what it needs to match (most log text has none of
    # it): exact for ASCII text; other text always gets every rule (IGNORECASE folds some
    # non-ASCII letters onto ASCII ones).
    plain = text.isascii()
    if "=" in text:
        text = _QUERY_SECRET.sub(_mask, text)
    if not plain or "bearer" in text.lower():
        text = _BEARER.sub(_mask, text)
    if (":" in text or "=" in text) and (not plain or _names_header(text.lower())):
        text = _HEADER_SECRET.sub(_mask, text)
    return text


def _mask(match: re.Match[str]) -> str:
    return f"{match.group('key')}{REDACTED}"


def _names_header(lower: str) -> bool:
    return "x-api-key" in lower or "authorization" in lower


def redact(value: object, key: str | None = None) -> object:
    """A JSON-ready copy of `value` with secret-named fields and secret text removed."""
    if key is not None and is_secret_key(key):
        return REDACTED
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if isinstance(value, SecretStr):
        return REDACTED
    return scrub(str(value))


# --- formatting ---

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    # uvicorn's ANSI-coloured copy of the message: noise in JSON.
    | {"message", "asctime", "color_message"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, redacted (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields: dict[str, object] = dict(bound())
        if (
            record.name == "uvicorn.access"
            and isinstance(record.args, tuple)
            and (len(record.args) == 5)
        ):
            client, method, path, _version, status = record.args
            out["msg"] = f"{method} {path} {status}"
            fields |= {"client": client, "method": method, "path": path, "status": status}
        else:
            out["msg"] = record.getMessage()
        fields |= {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}
        for name, value in fields.items():
            if name not in out:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        redacted = redact(out)
        return json.dumps(redacted, ensure_ascii=False, separators=(",", ":"), default=str)


# Chatty libraries: their INFO lines repeat what our own logs say (and may carry URLs).
_QUIET_LOGGERS: Final = ("httpx", "httpcore", "websockets", "hpack", "asyncio")


def configure_logging(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """Send every logger (ours, uvicorn's, libraries') through one JSON handler on `stream`.

    Also registers the configured secrets for scrubbing. Returns the handler (tests remove it).
    Call before starting uvicorn, and start uvicorn with `log_config=None` so it keeps these.
    """
    register_secret(settings.spatialreal_api_key)
    register_secret(settings.upstream_api_key)
    register_secret(settings.jwt_secret)
    for key in settings.auth_api_keys:
        register_secret(key)

    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return handler
