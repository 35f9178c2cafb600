"""Our client through each provider flavour, against the emulator (explicit URL overrides, as
against a real deployment with custom hosts): the right token route, either answer key."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from app.emulator import Emulator
from app.errors import AppError, ErrorCode
from app.settings import Endpoint, Settings, TokenApi, load_settings
from app.spatialreal import ConsoleClient, IngressClient
from app.spatialreal.console import session_token_url
from tests.spatialreal.conftest import AVATAR
from tests.support.servers import running_app


def expire_in(seconds: int = 600) -> int:
    return int(time.time()) + seconds


def provider_settings(emu: Emulator, provider: str, console_url: str) -> Settings:
    return load_settings(
        _env_file=None,
        spatialreal_provider=provider,
        spatialreal_console_url=console_url,
        spatialreal_ingress_url=emu.ingress_url,
        spatialreal_fallback_regions=[],
        spatialreal_api_key=SecretStr(emu.api_keys[0]),
        spatialreal_app_id=emu.app_id,
        default_avatar_id=AVATAR,
    )


@pytest.mark.parametrize(
    ("provider", "root", "auth_route"),
    [
        ("spatialreal", True, True),  # the API root, as the SDK takes it
        ("spatialreal", False, True),  # a .../v1/console URL is taken as the root too
        ("spatialwalk", False, False),
        ("spatius", False, False),
    ],
)
async def test_each_provider_mints_on_its_route_and_connects(
    emu: Emulator, provider: str, root: bool, auth_route: bool
) -> None:
    settings = provider_settings(emu, provider, emu.api_url if root else emu.console_url)
    async with ConsoleClient.from_settings(settings) as console:
        minted = await console.mint(expire_in())
        assert minted.session_token
        assert emu.stats.auth_route_requests == (1 if auth_route else 0)
        ingress = IngressClient.from_settings(settings, console)
        async with await ingress.connect(AVATAR, 16000) as conn:
            assert conn.connection_id
    assert emu.stats.tokens_minted == 2
    assert emu.stats.handshakes_completed == 1


def test_token_urls() -> None:
    auth = TokenApi.AUTH
    assert session_token_url(Endpoint("r", "https://api.x", "", auth)) == (
        "https://api.x/v1/auth/session-token"
    )
    assert session_token_url(Endpoint("r", "https://api.x/v1/console/", "", auth)) == (
        "https://api.x/v1/auth/session-token"
    )
    assert session_token_url(Endpoint("r", "https://c.x/v1/console", "", TokenApi.CONSOLE)) == (
        "https://c.x/v1/console/session-tokens"
    )


@pytest.fixture
async def swapped_keys() -> AsyncIterator[str]:
    """A console whose routes answer with each other's key (as an alias may)."""
    fake = FastAPI()

    @fake.post("/v1/auth/session-token")
    async def auth() -> dict[str, str]:
        return {"sessionToken": "from-auth-route"}

    @fake.post("/v1/console/session-tokens")
    async def legacy() -> dict[str, str]:
        return {"session_token": "from-console-route"}

    async with running_app(fake) as url:
        yield url


@pytest.mark.parametrize(
    ("token_api", "expected"),
    [(TokenApi.AUTH, "from-auth-route"), (TokenApi.CONSOLE, "from-console-route")],
)
async def test_either_answer_key_is_accepted_from_either_route(
    swapped_keys: str, token_api: TokenApi, expected: str
) -> None:
    endpoint = Endpoint("r", swapped_keys + "/v1/console", "ws://unused", token_api)
    async with ConsoleClient([endpoint], SecretStr("k")) as console:
        assert (await console.mint(expire_in())).session_token == expected


async def test_an_answer_with_neither_key_is_a_protocol_error(emu: Emulator) -> None:
    fake = FastAPI()

    @fake.post("/v1/auth/session-token")
    async def wrong() -> dict[str, str]:
        return {"token": "x"}

    async with running_app(fake) as url:
        endpoint = Endpoint("r", url, "ws://unused", TokenApi.AUTH)
        async with ConsoleClient([endpoint], SecretStr("k")) as console:
            with pytest.raises(AppError) as caught:
                await console.mint(expire_in())
    assert caught.value.code is ErrorCode.PROTOCOL_ERROR
