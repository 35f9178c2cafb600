"""examples/speaking_agent.py as documented: a second process against `avatar-relay serve`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "speaking_agent.py"


@pytest.fixture
def served() -> Iterator[str]:
    """`avatar-relay serve` with no configuration (emulator mode), as ./scripts/serve runs it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPATIALREAL_", "AUTH_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert proc.poll() is None, "the server exited"
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


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
