"""examples/speaking_agent.py as documented: a second process against `avatar-relay serve`."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.agent.conftest import ROOT

EXAMPLE = ROOT / "examples" / "speaking_agent.py"


def test_the_example_agent_speaks_through_a_session_a_page_listens_to(served: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "Hello from the example agent",
            "--server",
            served,
            "--listen",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    credentials, summary = (json.loads(line) for line in done.stdout.splitlines())
    assert credentials["browserUrl"].startswith("ws://127.0.0.1:")
    assert "ticket=" in credentials["browserUrl"]
    assert summary["outcome"] == "ConversationCompleted"
    # Every millisecond espeak-ng spoke reached the page's socket, with its frames (one per 40 ms).
    assert summary["spokenMs"] > 800
    assert summary["deliveredAudioMs"] == summary["spokenMs"]
    assert summary["deliveredFrames"] >= summary["spokenMs"] // 40
    # The page itself heard it all: every byte once, and the frames up to the last.
    assert summary["pageAudioMs"] == summary["spokenMs"]
    assert summary["pageFrames"] == summary["deliveredFrames"]
