"""The three official SDKs, unmodified, against the emulator: the cases every SDK shares.

Each SDK's expected outcome comes from its own code (tests/sdk/expected.py); the server
behaviour is the same for all three.
"""

from __future__ import annotations

import pytest

from app.emulator import Emulator
from tests.sdk.expected import CONNECT, EXPECTED, SPATIALREAL_RETRYABLE, SUCCESS
from tests.sdk.stage import (
    CONTRACT_CODES,
    FRAMES_BEFORE_FAULT,
    SHORT,
    TALK,
    TALK_FRAMES,
    Run,
    expected_frames,
    sent_animation,
)
from tests.sdk.venvs import SDKS

CASES = [(sdk, name) for sdk in SDKS for name in EXPECTED[sdk]]


@pytest.mark.parametrize(("sdk", "name"), CASES)
def test_outcome(sdk_runs: dict[str, Run], sdk: str, name: str) -> None:
    assert sdk_runs[sdk].outcome(name) == EXPECTED[sdk][name]


@pytest.mark.parametrize("sdk", SDKS)
def test_every_scenario_has_an_expectation(sdk_runs: dict[str, Run], sdk: str) -> None:
    played = {name for name, result in sdk_runs[sdk].results.items() if "sessions" not in result}
    assert played == set(EXPECTED[sdk])


@pytest.mark.parametrize("sdk", SDKS)
@pytest.mark.parametrize("name", SUCCESS)
def test_application_gets_the_emulators_bytes(
    sdk_runs: dict[str, Run], sdk: str, name: str
) -> None:
    run = sdk_runs[sdk]
    emu = run.emulators["main"]
    result = run.results[name]
    assert result["error"] is None
    assert result["runtime_errors"] == []
    avatar = "second-avatar" if name == "second avatar" else "emulator-avatar"
    requests = {"chunked": 1, "second avatar": 1}.get(name, 2)
    counts = TALK_FRAMES[1:] if name == "second avatar" else TALK_FRAMES[:requests]
    # Several requests on one connection, each with fresh ids.
    assert len(result["req_ids"]) == requests
    assert len(set(result["req_ids"])) == requests
    connection_id = result["connection_id"]
    for n, req_id in enumerate(result["req_ids"]):
        assert result["frames"][n] == expected_frames(emu, connection_id, req_id, counts[n], avatar)
        assert result["last"][n] == [False] * (counts[n] - 1) + [True]
    # What the application was handed is exactly what the emulator put on the wire.
    handed = [frame for frames in result["frames"] for frame in frames]
    assert handed == sent_animation(emu, connection_id)


@pytest.mark.parametrize("sdk", SDKS)
def test_audio_arrives_intact(sdk_runs: dict[str, Run], sdk: str) -> None:
    run = sdk_runs[sdk]
    emu = run.emulators["main"]
    (chunked,) = run.results["chunked"]["req_ids"]
    assert emu.received_audio[chunked] == SHORT.read_bytes()
    first, second = run.results["header"]["req_ids"]
    assert emu.received_audio[first] == SHORT.read_bytes()
    assert emu.received_audio[second] == b"\x00" * TALK[1]["silence_bytes"]


@pytest.mark.parametrize("sdk", SDKS)
def test_token_route_per_sdk(sdk_runs: dict[str, Run], sdk: str) -> None:
    # spatialreal 0.2.2 mints on /v1/auth/session-token only; the older SDKs on the console route.
    emu = sdk_runs[sdk].emulators["main"]
    assert emu.stats.console_requests > 10
    newest = sdk == "spatialreal"
    assert emu.stats.auth_route_requests == (emu.stats.console_requests if newest else 0)


@pytest.mark.parametrize("sdk", SDKS)
def test_failure_details(sdk_runs: dict[str, Run], sdk: str) -> None:
    run = sdk_runs[sdk]
    for status in (400, 401, 402, 403, 404, 500, 503):
        error = run.first_error(f"upgrade {status}")
        assert (error["http_status"], error["phase"]) == (status, CONNECT)
    rate = run.first_error("unsupported rate")
    assert rate["server_detail"] == "unsupported sample rate: 12345"
    mid = run.results["mid-request error"]
    assert mid["runtime_errors"][0]["req_id"] == mid["req_ids"][0]
    assert mid["runtime_errors"][0]["connection_id"] == mid["connection_id"]
    assert len(mid["frames"][0]) == FRAMES_BEFORE_FAULT
    assert len(run.results["drop"]["frames"][0]) == 3
    assert len(run.results["idle"]["runtime_errors"]) == 1


@pytest.mark.parametrize("sdk", SDKS)
@pytest.mark.parametrize("code", CONTRACT_CODES)
def test_close_codes_reach_the_sdk(sdk_runs: dict[str, Run], sdk: str, code: int) -> None:
    run = sdk_runs[sdk]
    for name in (f"handshake close {code}", f"runtime close {code}"):
        # Every SDK keeps the close code; only spatialreal gives it a meaning.
        assert run.first_error(name)["close_code"] == code
    for name in (f"runtime close {code}", f"runtime error {code}"):
        assert len(run.results[name]["frames"][0]) == FRAMES_BEFORE_FAULT
    for name in (f"handshake error {code}", f"runtime error {code}"):
        assert run.first_error(name)["server_code"] == str(code)
    if sdk == "spatialreal":
        for kind in ("handshake close", "runtime close", "handshake error", "runtime error"):
            error = run.first_error(f"{kind} {code}")
            assert error["close_code"] == code
            assert error["retryable"] is SPATIALREAL_RETRYABLE[code]


@pytest.mark.parametrize("sdk", SDKS)
def test_handshake_timeout_leaves_the_confirm_unsent(sdk_runs: dict[str, Run], sdk: str) -> None:
    emu: Emulator = sdk_runs[sdk].emulators["main"]
    assert emu.stats.handshakes_unanswered == 1
    assert sdk_runs[sdk].results["handshake timeout"]["connection_id"] is None


@pytest.mark.parametrize("sdk", SDKS)
def test_reused_token_was_really_spent(sdk_runs: dict[str, Run], sdk: str) -> None:
    run = sdk_runs[sdk]
    reused = run.emulators["reused"]
    # One session spent it before the SDK got it from the console; the SDK's upgrade was refused.
    assert reused.stats.handshakes_completed == 1
    assert reused.stats.upgrades_rejected == 1
    assert run.first_error("reused token")["http_status"] == 400
