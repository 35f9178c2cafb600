"""Drive the official `avatarkit` SDK through scenarios and print what it saw, as JSON.

Run in a subprocess only (its protobuf package clashes with app.proto in one process):
    python tests/emulator/sdk_probe.py '<json list of scenarios>'

Each scenario: name, console_url, ingress_url, api_key, app_id, avatar_id, and optionally
use_query_auth (false), sample_rate (16000), expire_in (seconds, 600), livekit (false),
requests: list of {"audio_file": path} or {"silence_bytes": n}, each sent with end=True,
chunk_bytes (send each request's audio in chunks of this size, then an empty end message),
wait_error (wait for a runtime error without sending audio), continue_after_error (false).
Output: one JSON list, one result per scenario, in order.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from avatarkit import AvatarSDKError, LiveKitEgressConfig, new_avatar_session

WAIT_SECONDS = 20.0


def describe(error: BaseException) -> dict[str, Any]:
    if isinstance(error, AvatarSDKError):
        return {
            "code": error.code.value,
            "phase": error.phase,
            "http_status": error.http_status,
            "server_code": error.server_code,
            "server_detail": error.server_detail,
            "req_id": error.req_id,
            "connection_id": error.connection_id,
        }
    return {"code": f"python:{type(error).__name__}", "phase": None, "detail": str(error)}


def request_audio(request: dict[str, Any]) -> bytes:
    if "audio_file" in request:
        return Path(request["audio_file"]).read_bytes()
    return b"\x00" * int(request.get("silence_bytes", 0))


async def run(scenario: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "name": scenario["name"],
        "connection_id": None,
        "req_ids": [],
        "frames": [],
        "last": [],
        "error": None,
        "runtime_errors": [],
    }
    current: list[str] = []
    flags: list[bool] = []
    done = asyncio.Event()

    def on_frame(data: bytes, last: bool) -> None:
        current.append(data.hex())
        flags.append(last)
        if last:
            done.set()

    def on_error(error: Exception) -> None:
        result["runtime_errors"].append(describe(error))
        done.set()

    options: dict[str, Any] = {
        "avatar_id": scenario["avatar_id"],
        "api_key": scenario["api_key"],
        "app_id": scenario["app_id"],
        "use_query_auth": scenario.get("use_query_auth", False),
        "sample_rate": scenario.get("sample_rate", 16000),
        "expire_at": datetime.now(UTC) + timedelta(seconds=scenario.get("expire_in", 600)),
        "console_endpoint_url": scenario["console_url"],
        "ingress_endpoint_url": scenario["ingress_url"],
        "transport_frames": on_frame,
        "on_error": on_error,
    }
    if scenario.get("livekit"):
        options["livekit_egress"] = LiveKitEgressConfig(
            url="wss://livekit.invalid", api_token="t", room_name="room"
        )
    session = new_avatar_session(**options)
    try:
        await session.init()
        result["connection_id"] = await session.start()
        if scenario.get("wait_error"):
            await asyncio.wait_for(done.wait(), WAIT_SECONDS)
        for request in scenario.get("requests", []):
            done.clear()
            current.clear()
            flags.clear()
            data = request_audio(request)
            chunk = int(scenario.get("chunk_bytes", 0))
            if chunk:
                for start in range(0, len(data), chunk):
                    req_id = await session.send_audio(data[start : start + chunk])
                req_id = await session.send_audio(b"", end=True)
            else:
                req_id = await session.send_audio(data, end=True)
            result["req_ids"].append(req_id)
            await asyncio.wait_for(done.wait(), WAIT_SECONDS)
            result["frames"].append(list(current))
            result["last"].append(list(flags))
            if result["runtime_errors"] and not scenario.get("continue_after_error"):
                break
    except AvatarSDKError as error:
        result["error"] = describe(error)
    except TimeoutError:
        result["error"] = {"code": "probe:timeout", "phase": None}
    finally:
        await session.close()
    return result


async def main(scenarios: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [await run(scenario) for scenario in scenarios]


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
