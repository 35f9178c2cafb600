"""`avatar-relay token` end to end: a subprocess minting through an emulator in this test's loop."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from app.emulator import Emulator

ROOT = Path(__file__).resolve().parents[2]


async def run_token_command(emu: Emulator, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPATIALREAL_", "APP_"))}
    env |= {
        "PYTHONPATH": str(ROOT),
        "SPATIALREAL_CONSOLE_URL": emu.console_url,
        "SPATIALREAL_INGRESS_URL": emu.ingress_url,
        "SPATIALREAL_FALLBACK_REGIONS": "",
        "UPSTREAM_REQUEST_TIMEOUT": "5",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "token",
        *args,
        cwd=tmp_path,  # no stray .env
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_token_command_prints_a_minted_token(emu: Emulator, tmp_path: Path) -> None:
    code, out, err = await run_token_command(emu, tmp_path, "--ttl", "300")
    assert code == 0, err
    answer = json.loads(out)
    assert set(answer) == {"sessionToken", "expireAt", "appId", "region"}
    assert answer["sessionToken"]
    assert answer["appId"] == emu.app_id
    assert answer["region"] == "us-west"
    assert abs(answer["expireAt"] - (time.time() + 300)) < 60
    assert emu.stats.tokens_minted == 1
    assert emu.tokens.check(answer["sessionToken"], emu.app_id).value == "ok"


async def test_token_command_reports_a_classified_error_without_the_key(
    emu: Emulator, tmp_path: Path
) -> None:
    emu.faults.console_status = 402
    code, out, err = await run_token_command(emu, tmp_path)
    assert code == 1
    assert out == ""
    # The REST API's error shape, camelCase keys (`code`, `message`, upstream details).
    error = json.loads(err)["error"]
    assert error["code"] == "billingRequired"
    assert error["message"]
    assert error["phase"] == "session_token"
    assert error["upstreamStatus"] == 402
    assert emu.api_keys[0] not in err
