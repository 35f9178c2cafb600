"""The API key and session tokens never reach logs or errors, even with every logger at DEBUG."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from app.emulator import Emulator, Faults
from app.errors import AppError
from app.settings import Endpoint
from app.spatialreal import ConsoleClient, IngressClient, MintedToken, RegionBreakers
from tests.spatialreal.conftest import AVATAR, FakeClock, endpoint
from tests.support.servers import free_port


class RecordingConsole(ConsoleClient):
    """Remembers every token it minted, so the test knows what must not leak."""

    minted: list[str]

    async def mint_at(self, endpoint: Endpoint, expire_at: int) -> MintedToken:
        token = await super().mint_at(endpoint, expire_at)
        self.minted.append(token.session_token)
        return token


async def test_no_secret_in_debug_logs_or_errors(
    emu: Emulator, emu2: Emulator, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = emu.api_keys[0]
    dead = Endpoint("ap-northeast", emu.console_url, f"http://127.0.0.1:{free_port()}/v2/x")
    errors: list[str] = []
    async with RecordingConsole(
        [dead, endpoint("us-west", emu2)],
        SecretStr(key),
        clock=clock,
        breakers=RegionBreakers(failure_threshold=100),  # keep visiting the dead region
    ) as console:
        console.minted = []
        ingress = IngressClient(console, emu.app_id)
        for query_auth in (False, True):
            async with await ingress.connect(AVATAR, 16000, query_auth=query_auth) as conn:
                await conn.send_audio("20240101000000_AAAAAAAAAAAA", bytes(2560), end=True)
                async for message in conn:
                    if message.end:
                        break
            emu2.set_avatar_faults(AVATAR, Faults(upgrade_status=401))
            with pytest.raises(AppError) as caught:
                await ingress.connect(AVATAR, 16000, query_auth=query_auth)
            errors += [str(caught.value), repr(caught.value), str(caught.value.log_fields())]
            emu2.set_avatar_faults(AVATAR, None)
        errors.append(repr(console))
    assert len(console.minted) == 8
    assert caplog.records  # the scan below must have something to scan
    everything = caplog.text + "\n".join(errors)
    assert key not in everything
    for token in console.minted:
        assert token not in everything
