"""The official `avatarkit` SDK (0.1.7) against the emulator: end to end and error classification.

The SDK runs in a subprocess (tests/emulator/sdk_probe.py): its protobuf package clashes with
app.proto in one process. The emulators run here, in the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from app.emulator import Emulator, Faults, animation_message
from tests.support.servers import FIXTURES

PROBE = Path(__file__).with_name("sdk_probe.py")
SHORT = FIXTURES / "short_16000.pcm"
FRAME_16K = 1280


async def probe(scenarios: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Run the scenarios through the SDK; results by scenario name."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PROBE),
        json.dumps(scenarios),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()
    results: list[dict[str, Any]] = json.loads(stdout)
    return {result["name"]: result for result in results}


def scenario(emu: Emulator, name: str, **options: Any) -> dict[str, Any]:
    base = {
        "name": name,
        "console_url": emu.console_url,
        "ingress_url": emu.ingress_url,
        "api_key": emu.api_keys[0],
        "app_id": emu.app_id,
        "avatar_id": emu.avatars[0],
    }
    return base | options


def expected_frames(emu: Emulator, connection_id: str, req_id: str, count: int) -> list[str]:
    return [
        animation_message(connection_id, req_id, i, i == count - 1, emu.frame_bytes).hex()
        for i in range(count)
    ]


async def test_sdk_end_to_end_header_and_query_auth() -> None:
    async with Emulator(speed=100, frame_bytes=300, record=True) as emu:
        requests = [{"audio_file": str(SHORT)}, {"silence_bytes": FRAME_16K * 3 + 7}]
        results = await probe(
            [
                scenario(emu, "header", requests=requests),
                scenario(emu, "query", requests=requests, use_query_auth=True),
                scenario(emu, "chunked", requests=requests[:1], chunk_bytes=3000),
            ]
        )
        counts = [math.ceil(SHORT.stat().st_size / FRAME_16K), 4]
        for name in ("header", "query", "chunked"):
            result = results[name]
            assert result["error"] is None, result
            assert result["runtime_errors"] == []
            assert len(result["req_ids"]) == (1 if name == "chunked" else 2)
            connection_id = result["connection_id"]
            assert connection_id in emu.sent
            for n, req_id in enumerate(result["req_ids"]):
                # transport_frames received exactly the emulator's bytes, last flag on the end.
                assert result["frames"][n] == expected_frames(emu, connection_id, req_id, counts[n])
                assert result["last"][n] == [False] * (counts[n] - 1) + [True]
        assert emu.received_audio[results["chunked"]["req_ids"][0]] == SHORT.read_bytes()
        assert emu.stats.tokens_minted == 3
        assert emu.stats.connections_opened == 3
        await emu.wait_until(lambda: emu.stats.connections_active == 0)


def outcome(result: dict[str, Any]) -> tuple[str, str] | None:
    """(code, phase) of the first failure the SDK reported, raised or through on_error."""
    error = result["error"] or (result["runtime_errors"] or [None])[0]
    return None if error is None else (error["code"], error["phase"])


async def test_sdk_classifies_every_failure() -> None:
    # Faults are per avatar, so one emulator serves most scenarios; console faults need their own.
    avatars = [
        "ok",
        "up400",
        "up401",
        "up402",
        "up404",
        "up500",
        "up503",
        "credits",
        "duration",
        "midrequest",
        "upstream-status",
        "drop",
    ]
    main = Emulator(speed=100, avatars=avatars, apps={"other-key": "other-app"})
    console_500 = Emulator(faults=Faults(console_status=500))
    console_503 = Emulator(faults=Faults(console_fail_next=5))
    console_402 = Emulator(faults=Faults(console_status=402))
    console_404 = Emulator(faults=Faults(console_status=404))
    idle = Emulator(speed=100, idle_timeout=0.3)
    # Every token is already expired when it reaches the ingress: the clock jumps a day ahead
    # once one has been minted.
    expiring = Emulator(clock=lambda: time.time() + (86_400 if expiring.stats.tokens_minted else 0))
    emulators = [main, console_500, console_503, console_402, console_404, idle, expiring]
    for emu in emulators:
        await emu.start()
    try:
        for status in (400, 401, 402, 404, 500, 503):
            main.set_avatar_faults(f"up{status}", Faults(upgrade_status=status))
        main.set_avatar_faults("credits", Faults(handshake_error=(4001, "credits exhausted")))
        main.set_avatar_faults(
            "duration", Faults(handshake_error=(4002, "maximum session duration"))
        )
        main.set_avatar_faults(
            "midrequest", Faults(error_after_frames=(5, 0, "driven server request failed"))
        )
        main.set_avatar_faults(
            "upstream-status",
            Faults(error_after_frames=(0, 0, "driven server returned non-200 status code")),
        )
        main.set_avatar_faults("drop", Faults(drop_after_frames=3))
        talk = [{"audio_file": str(SHORT)}]
        scenarios = [
            scenario(console_500, "console 500"),
            scenario(console_503, "console 503"),
            scenario(console_402, "console 402"),
            scenario(console_404, "console 404"),
            scenario(main, "bad api key", api_key="wrong"),
            scenario(main, "expireAt in the past", expire_in=-60),
            scenario(main, "expireAt beyond 24h", expire_in=90_000),
            scenario(main, "upgrade 400", avatar_id="up400"),
            scenario(main, "upgrade 401", avatar_id="up401"),
            scenario(main, "upgrade 402", avatar_id="up402"),
            scenario(main, "upgrade 404", avatar_id="up404"),
            scenario(main, "upgrade 500", avatar_id="up500"),
            scenario(main, "upgrade 503", avatar_id="up503", use_query_auth=True),
            scenario(main, "unknown avatar", avatar_id="nobody"),
            scenario(main, "unknown app", app_id="nobody"),
            scenario(main, "app id mismatch", api_key="other-key"),
            scenario(expiring, "expired token"),
            scenario(main, "unsupported rate", sample_rate=12345),
            scenario(main, "egress", livekit=True),
            scenario(main, "credits", avatar_id="credits"),
            scenario(main, "duration", avatar_id="duration"),
            scenario(main, "mid-request error", avatar_id="midrequest", requests=talk),
            scenario(main, "upstream status", avatar_id="upstream-status", requests=talk),
            scenario(main, "drop", avatar_id="drop", requests=talk),
            scenario(idle, "idle", wait_error=True),
            scenario(main, "fine", requests=talk),
        ]
        results = await probe(scenarios)
    finally:
        for emu in emulators:
            await emu.stop()

    got = {name: outcome(result) for name, result in results.items()}
    connect, handshake, runtime = "websocket_connect", "websocket_handshake", "websocket_runtime"
    assert got == {
        "console 500": ("serverError", "session_token"),
        "console 503": ("serverError", "session_token"),
        "console 402": ("billingRequired", "session_token"),
        "console 404": ("appIDUnrecognized", "session_token"),
        "bad api key": ("sessionTokenExpired", "session_token"),
        "expireAt in the past": ("invalidRequest", "session_token"),
        "expireAt beyond 24h": ("invalidRequest", "session_token"),
        "upgrade 400": ("sessionTokenInvalid", connect),
        "upgrade 401": ("sessionTokenExpired", connect),
        "upgrade 402": ("billingRequired", connect),
        "upgrade 404": ("avatarNotFound", connect),
        "upgrade 500": ("serverError", connect),
        "upgrade 503": ("serverError", connect),
        "unknown avatar": ("avatarNotFound", connect),
        "unknown app": ("appIDUnrecognized", connect),
        "app id mismatch": ("appIDMismatch", connect),
        "expired token": ("sessionTokenExpired", connect),
        "unsupported rate": ("unsupportedSampleRate", handshake),
        "egress": ("egressUnavailable", handshake),
        "credits": ("creditsExhausted", handshake),
        "duration": ("sessionDurationExceeded", handshake),
        "mid-request error": ("upstreamError", runtime),
        "upstream status": ("upstreamError", runtime),
        "drop": ("connectionClosed", runtime),
        "idle": ("idleTimeout", runtime),
        "fine": None,
    }
    # Details the SDK carries along.
    assert results["upgrade 402"]["error"]["http_status"] == 402
    assert results["unsupported rate"]["error"]["server_detail"] == "unsupported sample rate: 12345"
    mid = results["mid-request error"]
    assert mid["runtime_errors"][0]["req_id"] == mid["req_ids"][0]
    assert mid["runtime_errors"][0]["connection_id"] == mid["connection_id"]
    assert len(mid["frames"][0]) == 5
    assert len(results["drop"]["frames"][0]) == 3
    assert len(results["idle"]["runtime_errors"]) == 1
