"""The stage the SDK conformance cases run on: emulators with their faults, the scenarios, and one
probe subprocess per SDK that plays all of them at once (tests/sdk/probe.py).

Every SDK meets the same server behaviour; what differs per SDK is only where it reads the URLs
from and the scenarios that exercise an API only it has (pause/resume, prewarm, extra_params).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.emulator import CLOSE_REASONS, Emulator, Faults, animation_message
from app.proto import message_pb2
from tests.emulator.helpers import handshake, open_ws
from tests.sdk.venvs import sdk_python
from tests.support.servers import FIXTURES

PROBE = Path(__file__).with_name("probe.py")
SHORT = FIXTURES / "short_16000.pcm"
FRAME_16K = 1280
# The happy path: a file and a bit of silence on one connection; frames per request.
TALK: list[dict[str, Any]] = [{"audio_file": str(SHORT)}, {"silence_bytes": FRAME_16K * 3 + 7}]
TALK_FRAMES = [math.ceil(SHORT.stat().st_size / FRAME_16K), 4]
CONTRACT_CODES = tuple(CLOSE_REASONS)  # 4001, 4002, 4003, 4010, 4503
FRAMES_BEFORE_FAULT = 5
# The handshake-timeout case: spatius gives up by itself after 10 s; the others wait forever, so
# the probe stops waiting sooner (long enough for a busy machine to get the configure message
# out: the tests check that the emulator saw it).
OWN_HANDSHAKE_TIMEOUT = {"spatius": 15.0}
PROBE_HANDSHAKE_WAIT = 4.0


@dataclass
class Run:
    """What one SDK saw, and the emulators it saw it on (stopped, their records kept)."""

    sdk: str
    results: dict[str, dict[str, Any]]
    schema: dict[str, Any]
    emulators: dict[str, Emulator] = field(default_factory=dict)
    reused_token: str = ""

    def outcome(self, name: str) -> tuple[str, str | None] | None:
        """(code, phase) of the first failure the SDK reported, raised or through on_error."""
        result = self.results[name]
        error = result["error"] or (result["runtime_errors"] or [None])[0]
        return None if error is None else (error["code"], error["phase"])

    def first_error(self, name: str) -> dict[str, Any]:
        result = self.results[name]
        error = result["error"] or result["runtime_errors"][0]
        assert isinstance(error, dict)
        return error


def expected_frames(
    emu: Emulator, connection_id: str, req_id: str, count: int, avatar_id: str
) -> list[str]:
    return [
        animation_message(
            connection_id, req_id, i, i == count - 1, emu.frame_bytes, avatar_id=avatar_id
        ).hex()
        for i in range(count)
    ]


def sent_animation(emu: Emulator, connection_id: str) -> list[str]:
    """The animation messages the emulator sent on a connection, in order, as hex."""
    out = []
    for raw in emu.sent[connection_id]:
        message = message_pb2.Message()
        message.ParseFromString(raw)
        if message.type == message_pb2.MESSAGE_SERVER_RESPONSE_ANIMATION:
            out.append(raw.hex())
    return out


def _fault_avatars() -> dict[str, Faults]:
    faults = {
        **{f"up{status}": Faults(upgrade_status=status) for status in (400, 401, 402, 403)},
        **{f"up{status}": Faults(upgrade_status=status) for status in (404, 500, 503)},
        "hang": Faults(handshake_hang=True),
        "midrequest": Faults(
            error_after_frames=(FRAMES_BEFORE_FAULT, 0, "driven server request failed")
        ),
        "upstream-status": Faults(
            error_after_frames=(0, 0, "driven server returned non-200 status code")
        ),
        "drop": Faults(drop_after_frames=3),
    }
    for code in CONTRACT_CODES:
        reason = CLOSE_REASONS[code]
        faults[f"hs-error-{code}"] = Faults(handshake_error=(code, reason))
        faults[f"hs-close-{code}"] = Faults(close_at_handshake=code)
        faults[f"rt-error-{code}"] = Faults(error_after_frames=(FRAMES_BEFORE_FAULT, code, reason))
        faults[f"rt-close-{code}"] = Faults(close_after_frames=(FRAMES_BEFORE_FAULT, code))
    return faults


def _emulators() -> dict[str, Emulator]:
    faults = _fault_avatars()
    main = Emulator(
        speed=100,
        frame_bytes=300,
        record=True,
        avatars=("emulator-avatar", "second-avatar", *faults),
        apps={"other-key": "other-app"},
    )
    for avatar, avatar_faults in faults.items():
        main.set_avatar_faults(avatar, avatar_faults)
    # Every token is already expired when it reaches the ingress: the clock jumps a day ahead
    # once one has been minted.
    expiring = Emulator(clock=lambda: time.time() + (86_400 if expiring.stats.tokens_minted else 0))
    return {
        "main": main,
        "console 500": Emulator(faults=Faults(console_status=500)),
        "console 503": Emulator(faults=Faults(console_fail_next=5)),
        "console 402": Emulator(faults=Faults(console_status=402)),
        "console 404": Emulator(faults=Faults(console_status=404)),
        "console 429": Emulator(faults=Faults(console_status=429)),
        "idle": Emulator(speed=100, idle_timeout=0.3),
        "expiring": expiring,
        "reused": Emulator(),
        "bad token": Emulator(faults=Faults(console_token="not-a-token-anyone-issued")),
        # Real-time pacing: the pause lands mid-request even on a busy machine.
        "playback": Emulator(speed=1, playback_control=True, record=True, frame_bytes=64),
        "prewarm multi-use": Emulator(multi_use_tokens=True, record=True),
        "prewarm single-use": Emulator(record=True),
    }


class Stage:
    def __init__(self, sdk: str) -> None:
        self.sdk = sdk
        self.emulators = _emulators()

    def scenario(self, emulator: str, name: str, **options: Any) -> dict[str, Any]:
        emu = self.emulators[emulator]
        # spatialreal 0.2.2 takes the API root (it posts to {root}/v1/auth/session-token); the
        # older SDKs take the console URL. Only the URLs are overridden, nothing else.
        console = emu.api_url if self.sdk == "spatialreal" else emu.console_url
        base = {
            "name": name,
            "console_url": console,
            "ingress_url": emu.ingress_url,
            "api_key": emu.api_keys[0],
            "app_id": emu.app_id,
            "avatar_id": emu.avatars[0],
        }
        return base | options

    def scenarios(self) -> list[dict[str, Any]]:
        s = self.scenario
        talk: list[dict[str, Any]] = [{"audio_file": str(SHORT)}]
        hang_wait = OWN_HANDSHAKE_TIMEOUT.get(self.sdk, PROBE_HANDSHAKE_WAIT)
        out = [
            s("main", "header", requests=TALK),
            s("main", "query", requests=TALK, use_query_auth=True),
            s("main", "chunked", requests=[{**TALK[0], "chunk_bytes": 3000}]),
            s("main", "second avatar", requests=TALK[1:], avatar_id="second-avatar"),
            s("console 500", "console 500"),
            s("console 503", "console 503"),
            s("console 402", "console 402"),
            s("console 404", "console 404"),
            s("console 429", "console 429"),
            s("main", "bad api key", api_key="wrong"),
            s("main", "expireAt in the past", expire_in=-60),
            s("main", "expireAt beyond 24h", expire_in=90_000),
            *(
                s("main", f"upgrade {status}", avatar_id=f"up{status}")
                for status in (400, 401, 402, 403, 404, 500)
            ),
            s("main", "upgrade 503", avatar_id="up503", use_query_auth=True),
            s("main", "unknown avatar", avatar_id="nobody"),
            s("main", "unknown app", app_id="nobody"),
            s("main", "app id mismatch", api_key="other-key"),
            s("expiring", "expired token"),
            s("reused", "reused token"),
            s("bad token", "bad token"),
            s("main", "unsupported rate", sample_rate=12345),
            s("main", "egress", livekit=True),
            s("main", "handshake timeout", avatar_id="hang", start_timeout=hang_wait),
            s("main", "mid-request error", avatar_id="midrequest", requests=talk),
            s("main", "upstream status", avatar_id="upstream-status", requests=talk),
            s("main", "drop", avatar_id="drop", requests=talk),
            s("idle", "idle", wait_error=True),
        ]
        for code in CONTRACT_CODES:
            out += [
                s("main", f"handshake error {code}", avatar_id=f"hs-error-{code}"),
                s("main", f"handshake close {code}", avatar_id=f"hs-close-{code}"),
                s("main", f"runtime error {code}", avatar_id=f"rt-error-{code}", requests=talk),
                s("main", f"runtime close {code}", avatar_id=f"rt-close-{code}", requests=talk),
            ]
        pausing = [{**TALK[0], "chunk_bytes": 12_800, "pause_after": 5, "pause_seconds": 0.3}]
        if self.sdk == "spatialreal":
            main = self.emulators["main"]
            out += [
                # The old console URL is still accepted: the SDK strips /v1/console.
                s("main", "console url with /v1/console", console_url=main.console_url),
                s("main", "pause ignored", requests=pausing),
                s("playback", "pause and resume", requests=pausing),
            ]
        if self.sdk == "spatius":
            out += [
                s("main", "extra params", requests=TALK[1:], extra_params={"voice": "calm"}),
                s("prewarm multi-use", "prewarm multi-use", requests=TALK[1:], prewarm=2),
                s("prewarm single-use", "prewarm single-use", requests=TALK[1:], prewarm=2),
            ]
        return out

    async def prepare(self) -> str:
        """Start the emulators; spend the token the `reused` emulator will hand out again."""
        for emu in self.emulators.values():
            await emu.start()
        reused = self.emulators["reused"]
        token = reused.mint_token()
        ws = await open_ws(reused, token)
        await handshake(ws)
        await ws.close()
        reused.faults.console_token = token
        return token

    async def stop(self) -> None:
        for emu in self.emulators.values():
            await emu.stop()


async def probe(sdk: str, plan: dict[str, Any]) -> dict[str, Any]:
    python = await asyncio.to_thread(sdk_python, sdk)
    process = await asyncio.create_subprocess_exec(
        str(python),
        str(PROBE),
        sdk,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(
        process.communicate(json.dumps(plan).encode()), timeout=120
    )
    assert process.returncode == 0, stderr.decode()
    answer: dict[str, Any] = json.loads(stdout)
    return answer


async def run_sdk(sdk: str) -> Run:
    """Every scenario through `sdk`, in one subprocess."""
    stage = Stage(sdk)
    try:
        reused = await stage.prepare()
        plan = {
            "scenarios": stage.scenarios(),
            # spatius exports telemetry; point it at loopback so trace context is on.
            "telemetry_url": stage.emulators["main"].base_url,
        }
        answer = await probe(sdk, plan)
    finally:
        await stage.stop()
    results = {result["name"]: result for result in answer["results"]}
    return Run(sdk, results, answer["schema"], stage.emulators, reused)
