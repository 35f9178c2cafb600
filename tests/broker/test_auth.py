"""Caller authentication: each mode with good and bad credentials, directly and over HTTP."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from app.auth import ApiKeyAuth, JwtAuth, NoAuth, authenticator_from_settings
from app.emulator import Emulator
from app.errors import AppError, ErrorCode
from app.settings import ConfigError, Settings
from tests.broker.conftest import CALLER_KEY, broker_settings, error_code, running_broker

HS_SECRET = "hs256-secret-for-tests-0123456789abcdef"
ISSUER = "https://issuer.example"
AUDIENCE = "avatar-relay"


def _rsa_pair() -> tuple[Any, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


RSA_PRIVATE, RSA_PUBLIC = _rsa_pair()
OTHER_RSA_PRIVATE, _ = _rsa_pair()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "sub": "user-42",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def bearer(token: str) -> Mapping[str, str]:
    return {"authorization": f"Bearer {token}"}


def rejected(auth: Any, headers: Mapping[str, str]) -> str:
    with pytest.raises(AppError) as caught:
        auth.authenticate(headers)
    assert caught.value.code is ErrorCode.UNAUTHORIZED
    return caught.value.message


# --- api-key ---


def test_api_key_accepts_either_header_and_names_a_stable_principal() -> None:
    auth = ApiKeyAuth([CALLER_KEY, "second-key-abcdefghijklmnopq"])
    by_bearer = auth.authenticate(bearer(CALLER_KEY))
    by_header = auth.authenticate({"x-api-key": CALLER_KEY})
    second = auth.authenticate({"x-api-key": "second-key-abcdefghijklmnopq"})
    assert by_bearer == by_header
    assert by_bearer.method == "api-key"
    assert by_bearer.id.startswith("apikey:")
    assert CALLER_KEY not in by_bearer.id
    assert second.id != by_bearer.id


def test_api_key_rejections_never_echo_the_credential() -> None:
    auth = ApiKeyAuth([CALLER_KEY])
    cases: list[Mapping[str, str]] = [
        {},
        bearer(CALLER_KEY + "x"),
        bearer(CALLER_KEY[:-1]),
        {"x-api-key": "guess-" + CALLER_KEY[6:]},
        {"authorization": f"Basic {CALLER_KEY}"},
        {"authorization": "Bearer "},
        bearer("k" * 10_000),
    ]
    for headers in cases:
        message = rejected(auth, headers)
        assert CALLER_KEY not in message
        assert "guess" not in message


def test_api_key_mode_keeps_only_digests() -> None:
    auth = ApiKeyAuth([CALLER_KEY])
    assert CALLER_KEY not in str(vars(auth))
    assert all(isinstance(d, bytes) and len(d) == 32 for d in auth._digests)


# --- jwt ---


def test_jwt_hs256_good_and_bad() -> None:
    auth = JwtAuth(secret=HS_SECRET, issuer=ISSUER, audience=AUDIENCE)
    good = jwt.encode(claims(), HS_SECRET, algorithm="HS256")
    principal = auth.authenticate(bearer(good))
    assert (principal.id, principal.method) == ("user-42", "jwt")

    expired = jwt.encode(claims(exp=int(time.time()) - 120), HS_SECRET, algorithm="HS256")
    assert rejected(auth, bearer(expired)) == "token expired"
    wrong_secret = jwt.encode(claims(), HS_SECRET + "x", algorithm="HS256")
    assert rejected(auth, bearer(wrong_secret)) == "invalid token"
    wrong_issuer = jwt.encode(claims(iss="https://evil"), HS_SECRET, algorithm="HS256")
    assert rejected(auth, bearer(wrong_issuer)) == "token issuer not accepted"
    wrong_audience = jwt.encode(claims(aud="someone-else"), HS_SECRET, algorithm="HS256")
    assert rejected(auth, bearer(wrong_audience)) == "token audience not accepted"
    no_exp = jwt.encode(claims(exp=None), HS_SECRET, algorithm="HS256")
    assert rejected(auth, bearer(no_exp)) == "token lacks the 'exp' claim"
    no_sub = jwt.encode(claims(sub=None), HS_SECRET, algorithm="HS256")
    assert rejected(auth, bearer(no_sub)) == "token lacks the 'sub' claim"
    unsigned = jwt.encode(claims(), "", algorithm="none")
    assert rejected(auth, bearer(unsigned)) == "invalid token"
    rs_signed = jwt.encode(claims(), RSA_PRIVATE, algorithm="RS256")
    assert rejected(auth, bearer(rs_signed)) == "invalid token"
    assert rejected(auth, {"x-api-key": good}).startswith("missing bearer token")
    assert rejected(auth, bearer("not.a.jwt")) == "invalid token"


def test_jwt_rs256_good_and_bad() -> None:
    auth = JwtAuth(public_key=RSA_PUBLIC, issuer=ISSUER, audience=AUDIENCE)
    good = jwt.encode(claims(sub="svc-a"), RSA_PRIVATE, algorithm="RS256")
    assert auth.authenticate(bearer(good)).id == "svc-a"
    forged = jwt.encode(claims(), OTHER_RSA_PRIVATE, algorithm="RS256")
    assert rejected(auth, bearer(forged)) == "invalid token"
    # Algorithm confusion: an HS256 token is refused by an RS256 server, whatever its key.
    hs = jwt.encode(claims(), HS_SECRET, algorithm="HS256")
    assert rejected(auth, bearer(hs)) == "invalid token"


def test_jwt_subject_must_be_sane() -> None:
    auth = JwtAuth(secret=HS_SECRET)
    for sub in ("", "x" * 257, "bad\nline"):
        token = jwt.encode(claims(sub=sub, aud=None, iss=None), HS_SECRET, algorithm="HS256")
        rejected(auth, bearer(token))
    # Without a configured audience the claim is not required.
    token = jwt.encode(claims(aud=None, iss=None), HS_SECRET, algorithm="HS256")
    assert auth.authenticate(bearer(token)).id == "user-42"


def test_bad_jwt_configuration_is_refused() -> None:
    with pytest.raises(ConfigError):
        JwtAuth(public_key="not a pem")
    with pytest.raises(ConfigError):
        JwtAuth()


# --- mode selection ---


def test_mode_from_settings() -> None:
    assert isinstance(authenticator_from_settings(Settings(_env_file=None)), NoAuth)  # type: ignore[call-arg]
    assert NoAuth().authenticate({}).id == "anonymous"
    api = Settings(_env_file=None, auth_mode="api-key", auth_api_keys=[SecretStr(CALLER_KEY)])  # type: ignore[call-arg]
    assert isinstance(authenticator_from_settings(api), ApiKeyAuth)
    rs = Settings(_env_file=None, auth_mode="jwt", jwt_public_key=RSA_PUBLIC)  # type: ignore[call-arg]
    assert isinstance(authenticator_from_settings(rs), JwtAuth)
    production_none = Settings(_env_file=None).model_copy(update={"app_env": "production"})  # type: ignore[call-arg]
    with pytest.raises(ConfigError):
        authenticator_from_settings(production_none)


# --- over HTTP, through the one dependency ---


async def test_none_mode_over_http(emu: Emulator) -> None:
    async with running_broker(broker_settings(emu, auth_mode="none", auth_api_keys=[])) as broker:
        response = await broker.mint(key=None)
    assert response.status_code == 201


async def test_api_key_mode_over_http(emu: Emulator) -> None:
    async with running_broker(broker_settings(emu)) as broker:
        good = await broker.mint()
        via_header = await broker.mint(key=None, headers={"X-API-Key": CALLER_KEY})
        bad = await broker.mint(key="wrong-key")
        missing = await broker.mint(key=None)
    assert good.status_code == via_header.status_code == 201
    for response in (bad, missing):
        assert response.status_code == 401
        assert error_code(response) == "unauthorized"
        assert response.headers["www-authenticate"] == 'Bearer realm="avatar-relay"'
    assert emu.stats.tokens_minted == 2


@pytest.mark.parametrize("algorithm", ["HS256", "RS256"])
async def test_jwt_mode_over_http(emu: Emulator, algorithm: str) -> None:
    if algorithm == "HS256":
        extra: dict[str, Any] = {"jwt_secret": SecretStr(HS_SECRET)}
        signing: Any = HS_SECRET
    else:
        extra = {"jwt_public_key": RSA_PUBLIC}
        signing = RSA_PRIVATE
    settings = broker_settings(
        emu,
        auth_mode="jwt",
        auth_api_keys=[],
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        **extra,
    )
    async with running_broker(settings) as broker:
        good = await broker.mint(key=jwt.encode(claims(), signing, algorithm=algorithm))
        expired = await broker.mint(
            key=jwt.encode(claims(exp=int(time.time()) - 60), signing, algorithm=algorithm)
        )
        api_key = await broker.mint(key=CALLER_KEY)
    assert good.status_code == 201
    assert expired.status_code == api_key.status_code == 401
    assert expired.json()["error"]["message"] == "token expired"
