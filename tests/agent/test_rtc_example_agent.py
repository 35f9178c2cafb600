"""examples/rtc_agent.py as documented: a second process against `avatar-relay serve` with no
configuration, whose built-in emulator stands in for LiveKit too."""

from __future__ import annotations

import json
import subprocess
import sys

from livekit.api import TokenVerifier

from app.emulator import DEFAULT_LIVEKIT_API_KEY, DEFAULT_LIVEKIT_API_SECRET
from tests.agent.conftest import ROOT, serving
from tests.support.servers import free_port

EXAMPLE = ROOT / "examples" / "rtc_agent.py"


def test_the_rtc_example_agent_speaks_in_a_room() -> None:
    emulator_port = free_port()
    # Only the emulator's port is fixed, to know the room's URL: no LIVEKIT_* settings.
    with serving(EMULATOR_PORT=str(emulator_port)) as served:
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), "Hello from the room", "--server", served],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    page, summary = (json.loads(line) for line in done.stdout.splitlines())
    # What the page joins with: a token for that room, by LiveKit's own verifier.
    claims = TokenVerifier(DEFAULT_LIVEKIT_API_KEY, DEFAULT_LIVEKIT_API_SECRET).verify(
        page["token"]
    )
    assert claims.video is not None
    assert claims.video.room == page["roomName"]
    assert page["url"] == f"ws://127.0.0.1:{emulator_port}"
    assert summary["rtc"] is True
    assert summary["outcome"] == "ConversationCompleted"
    assert summary["events"] == ["ConversationStarted", "FirstFrame", "ConversationCompleted"]
    # Every millisecond espeak-ng spoke went to the avatar, which played it out in the room.
    assert summary["spokenMs"] > 500
    assert summary["audioMs"] == summary["spokenMs"]
    assert summary["playbackSignals"] >= 1
