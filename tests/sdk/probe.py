"""Drive one official SDK, unmodified, through scenarios and print what it saw, as JSON.

Runs inside that SDK's own venv (tests/sdk/venvs.py), never in the project's environment, and
imports nothing from this project:
    <sdk venv>/bin/python tests/sdk/probe.py <avatarkit|spatius|spatialreal> < plan.json

The plan is {"telemetry_url": str | None, "scenarios": [...]}; all scenarios run concurrently.
A scenario: name, console_url, ingress_url, api_key, app_id, avatar_id, and optionally
use_query_auth (false), sample_rate (16000), expire_in (seconds, 600), livekit (false),
extra_params ({}), requests: [{"audio_file": path} | {"silence_bytes": n}, with "chunk_bytes"
(send in chunks, then an empty end message) and "pause_after" (frames; then pause for
"pause_seconds" and resume)], wait_error (wait for a runtime error without sending audio),
start_timeout (seconds for start(), the upgrade and handshake; default 20), prewarm (spatius:
prefetch a token with prewarm() and open this many sessions with it, one after another).
Output: {"results": [one per scenario, in order], "schema": {message: {field: [number, type]}}}.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# The one project module the probe uses; it imports nothing (tests/sdk/descriptors.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.sdk.descriptors import schema_of

SDK_NAME = sys.argv[1]
sdk: Any = importlib.import_module(SDK_NAME)
WAIT_SECONDS = 20.0


def describe(error: BaseException) -> dict[str, Any]:
    if isinstance(error, sdk.AvatarSDKError):
        retryable = getattr(error, "retryable", None)  # spatialreal only
        return {
            "code": error.code.value,
            "phase": error.phase,
            "http_status": error.http_status,
            "server_code": error.server_code,
            "server_detail": error.server_detail,
            "req_id": error.req_id,
            "connection_id": error.connection_id,
            "close_code": getattr(error, "close_code", None),
            "retryable": retryable if isinstance(retryable, bool) else None,
        }
    return {"code": f"python:{type(error).__name__}", "phase": None, "detail": str(error)}


def request_audio(request: dict[str, Any]) -> bytes:
    if "audio_file" in request:
        return Path(request["audio_file"]).read_bytes()
    return b"\x00" * int(request.get("silence_bytes", 0))


class Recorder:
    """Everything the SDK hands the application, in arrival order."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.last: list[bool] = []
        self.events: list[list[Any]] = []
        self.runtime_errors: list[dict[str, Any]] = []
        self.closed = 0
        self.changed = asyncio.Event()

    def on_frame(self, data: bytes, last: bool) -> None:
        self.frames.append(data.hex())
        self.last.append(last)
        self.events.append(["frame", last])
        self.changed.set()

    def on_error(self, error: Exception) -> None:
        self.runtime_errors.append(describe(error))
        self.events.append(["error", describe(error)["code"]])
        self.changed.set()

    def on_close(self) -> None:
        self.closed += 1

    def on_playback(self, signal: Any) -> None:
        self.events.append(
            ["signal", signal.req_id, signal.end, signal.avatar_id, signal.has_animation]
        )

    def on_playback_state(self, event: Any) -> None:
        self.events.append(["state", event.state.value, event.played_ms, event.reason])
        self.changed.set()

    async def wait(self, predicate: Any) -> None:
        async with asyncio.timeout(WAIT_SECONDS):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


def session_options(scenario: dict[str, Any], recorder: Recorder) -> dict[str, Any]:
    options: dict[str, Any] = {
        "avatar_id": scenario["avatar_id"],
        "api_key": scenario["api_key"],
        "app_id": scenario["app_id"],
        "use_query_auth": scenario.get("use_query_auth", False),
        "sample_rate": scenario.get("sample_rate", 16000),
        "expire_at": datetime.now(UTC) + timedelta(seconds=scenario.get("expire_in", 600)),
        "console_endpoint_url": scenario["console_url"],
        "ingress_endpoint_url": scenario["ingress_url"],
        "transport_frames": recorder.on_frame,
        "on_error": recorder.on_error,
        "on_close": recorder.on_close,
    }
    if SDK_NAME == "spatialreal":
        options["on_playback"] = recorder.on_playback
        options["on_playback_state"] = recorder.on_playback_state
    if scenario.get("extra_params"):
        options["extra_params"] = scenario["extra_params"]
    if scenario.get("livekit"):
        options["livekit_egress"] = sdk.LiveKitEgressConfig(
            url="wss://livekit.invalid", api_token="t", room_name="room"
        )
    return options


async def send_request(session: Any, recorder: Recorder, request: dict[str, Any]) -> str:
    data = request_audio(request)
    chunk = int(request.get("chunk_bytes", 0))
    pause_after = request.get("pause_after")
    first = len(recorder.frames)
    if not chunk and pause_after is None:
        return str(await session.send_audio(data, end=True))
    step = chunk or len(data) or 1
    req_id = ""
    for start in range(0, len(data), step):
        req_id = await session.send_audio(data[start : start + step])
    if pause_after is not None:
        await recorder.wait(lambda: len(recorder.frames) - first >= pause_after)
        await session.pause()
        await asyncio.sleep(float(request.get("pause_seconds", 0.3)))
        recorder.events.append(["resume sent"])
        await session.resume()
    return str(await session.send_audio(b"", end=True) or req_id)


async def run(scenario: dict[str, Any]) -> dict[str, Any]:
    recorder = Recorder()
    result: dict[str, Any] = {
        "name": scenario["name"],
        "connection_id": None,
        "capabilities": None,
        "req_ids": [],
        "frames": [],
        "last": [],
        "error": None,
    }
    session = sdk.new_avatar_session(**session_options(scenario, recorder))
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            await session.init()
        async with asyncio.timeout(float(scenario.get("start_timeout", WAIT_SECONDS))):
            result["connection_id"] = await session.start()
        capabilities = getattr(session, "capabilities", None)  # spatialreal only
        result["capabilities"] = None if capabilities is None else list(capabilities)
        if scenario.get("wait_error"):
            await recorder.wait(lambda: bool(recorder.runtime_errors))
        for request in scenario.get("requests", []):
            frames_before = len(recorder.frames)
            errors_before = len(recorder.runtime_errors)
            result["req_ids"].append(await send_request(session, recorder, request))
            await recorder.wait(
                lambda errors=errors_before, frames=frames_before: (
                    len(recorder.runtime_errors) > errors
                    or (len(recorder.last) > frames and recorder.last[-1])
                )
            )
            result["frames"].append(recorder.frames[frames_before:])
            result["last"].append(recorder.last[frames_before:])
            if len(recorder.runtime_errors) > errors_before:
                break
        if SDK_NAME == "spatialreal" and scenario.get("requests"):
            # Playback states come after the end frame; give the last one a moment to land.
            await asyncio.sleep(0.05)
    except sdk.AvatarSDKError as error:
        result["error"] = describe(error)
    except TimeoutError:
        result["error"] = {"code": "probe:timeout", "phase": None}
    finally:
        await session.close()
    result["runtime_errors"] = recorder.runtime_errors
    result["events"] = recorder.events
    result["closed"] = recorder.closed
    return result


async def run_prewarmed(scenario: dict[str, Any]) -> dict[str, Any]:
    """spatius: prewarm() prefetches one token; the next sessions all start with it."""
    warmed = await sdk.prewarm(
        app_id=scenario["app_id"],
        api_key=scenario["api_key"],
        console_endpoint_url=scenario["console_url"],
        ingress_endpoint_url=scenario["ingress_url"],
        warm_tls=False,
        prefetch_session_token=True,
    )
    sessions = []
    for n in range(int(scenario["prewarm"])):
        single = dict(scenario, name=f"{scenario['name']} #{n}", prewarm=None)
        sessions.append(await run(single))
    return {
        "name": scenario["name"],
        "prefetched": warmed.session_token_prefetched,
        "sessions": sessions,
    }


def schema() -> dict[str, Any]:
    module = importlib.import_module(f"{SDK_NAME}.proto.generated.message_pb2")
    found: dict[str, Any] = schema_of(module.DESCRIPTOR)
    return found


async def main(plan: dict[str, Any]) -> dict[str, Any]:
    if SDK_NAME == "spatius":
        # Its default telemetry endpoint is on the internet: keep every export on loopback.
        sdk.configure_telemetry(plan.get("telemetry_url") or "")
    started = time.monotonic()
    runs = [
        run_prewarmed(scenario) if scenario.get("prewarm") else run(scenario)
        for scenario in plan["scenarios"]
    ]
    results = list(await asyncio.gather(*runs))
    return {"results": results, "schema": schema(), "seconds": time.monotonic() - started}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.load(sys.stdin)))))
