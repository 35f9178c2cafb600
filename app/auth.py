"""Who is calling: the principal behind a request, found by one of three configured modes.

- `none`: everyone is "anonymous" (development only; settings refuse it in production);
- `api-key`: `Authorization: Bearer <key>` or `X-API-Key: <key>`, checked against the configured
  keys. Only SHA-256 digests of the keys are kept, and the digest of the presented key is compared
  with every one of them in constant time, so neither timing nor early exit tells which was close;
- `jwt`: `Authorization: Bearer <jwt>`, HS256 (shared secret) or RS256 (public key), with expiry,
  and issuer and audience when configured, enforced. The principal is the `sub` claim.

Failures raise AppError(unauthorized) with a message that never repeats the credential.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from app.errors import AppError, ErrorCode
from app.settings import ConfigError, Settings

log = logging.getLogger("avatar_relay.auth")

AuthMethod = Literal["none", "api-key", "jwt"]

# Generous, but bounded: nothing larger is hashed or parsed.
MAX_CREDENTIAL_LENGTH = 8192
MAX_PRINCIPAL_LENGTH = 256
# Clock skew tolerated on `exp` / `nbf` / `iat`.
JWT_LEEWAY_SECONDS = 30


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: `id` keys rate limits, session quotas and audit lines."""

    id: str
    method: AuthMethod


ANONYMOUS = Principal("anonymous", "none")


class Authenticator(Protocol):
    method: AuthMethod

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The principal for these request headers, or AppError(unauthorized)."""
        ...


def _unauthorized(message: str) -> AppError:
    return AppError(ErrorCode.UNAUTHORIZED, message)


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The credential of `Authorization: Bearer …` (None when the header is absent)."""
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, credential = value.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise _unauthorized("Authorization header must be 'Bearer <credential>'")
    return credential


def _bounded(credential: str) -> str:
    if len(credential) > MAX_CREDENTIAL_LENGTH:
        raise _unauthorized("credential too long")
    return credential


class NoAuth:
    method: AuthMethod = "none"

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        return ANONYMOUS


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class ApiKeyAuth:
    """Static API keys. The principal id is derived from a digest, never from the key itself."""

    method: AuthMethod = "api-key"

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ConfigError(["AUTH_API_KEYS: required when AUTH_MODE=api-key"])
        short = sum(1 for key in keys if len(key) < 16)
        if short:
            log.warning("%d configured API key(s) are shorter than 16 characters", short)
        self._digests = [_digest(key) for key in keys]
        # Domain-separated so the id cannot be used as a lookup for the key digest.
        self._ids = [
            "apikey:" + hashlib.sha256(b"avatar-relay principal\x00" + d).hexdigest()[:16]
            for d in self._digests
        ]

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        presented = bearer_token(headers)
        if presented is None:
            presented = headers.get("x-api-key")
        if not presented:
            raise _unauthorized("missing API key (Authorization: Bearer <key> or X-API-Key)")
        digest = _digest(_bounded(presented.strip()))
        match = -1
        # Compare against every key, without stopping early.
        for index, known in enumerate(self._digests):
            if hmac.compare_digest(digest, known):
                match = index
        if match < 0:
            raise _unauthorized("invalid API key")
        return Principal(self._ids[match], "api-key")


class JwtAuth:
    method: AuthMethod = "jwt"

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
    ) -> None:
        if (secret is None) == (public_key is None):
            raise ConfigError(["JWT_SECRET / JWT_PUBLIC_KEY: set exactly one when AUTH_MODE=jwt"])
        self._key: Any
        if secret is not None:
            if len(secret.encode()) < 32:
                log.warning("JWT_SECRET is shorter than 32 bytes; HS256 wants at least 256 bits")
            self._key, self._algorithm = secret, "HS256"
        else:
            assert public_key is not None
            try:
                self._key = load_pem_public_key(public_key.encode())
            except (ValueError, TypeError) as error:
                raise ConfigError([f"JWT_PUBLIC_KEY: not a PEM public key ({error})"]) from None
            self._algorithm = "RS256"
        self._issuer = issuer
        self._audience = audience

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        token = bearer_token(headers)
        if token is None:
            raise _unauthorized("missing bearer token (Authorization: Bearer <jwt>)")
        required = ["exp", "sub"]
        if self._issuer is not None:
            required.append("iss")
        if self._audience is not None:
            required.append("aud")
        try:
            claims = jwt.decode(
                _bounded(token),
                self._key,
                algorithms=[self._algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=JWT_LEEWAY_SECONDS,
                options={"require": required, "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("token expired") from None
        except jwt.InvalidIssuerError:
            raise _unauthorized("token issuer not accepted") from None
        except jwt.InvalidAudienceError:
            raise _unauthorized("token audience not accepted") from None
        except jwt.MissingRequiredClaimError as error:
            raise _unauthorized(f"token lacks the '{error.claim}' claim") from None
        except jwt.InvalidTokenError:
            raise _unauthorized("invalid token") from None
        subject = claims.get("sub")
        if (
            not isinstance(subject, str)
            or not 0 < len(subject) <= MAX_PRINCIPAL_LENGTH
            or not subject.isprintable()
        ):
            raise _unauthorized("token subject is not acceptable")
        return Principal(subject, "jwt")


def authenticator_from_settings(settings: Settings) -> Authenticator:
    if settings.auth_mode == "api-key":
        return ApiKeyAuth([key.get_secret_value() for key in settings.auth_api_keys])
    if settings.auth_mode == "jwt":
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        return JwtAuth(
            secret=secret,
            public_key=settings.jwt_public_key,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    if settings.app_env == "production":
        # Settings refuse this already; a second guard costs nothing.
        raise ConfigError(["AUTH_MODE: 'none' is refused when APP_ENV=production"])
    return NoAuth()
