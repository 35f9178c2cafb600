"""`avatar-relay serve` as a separate process, the way the example agents run beside it."""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def serving(**env: str) -> Iterator[str]:
    """`avatar-relay serve` with no SpatialReal configuration (emulator mode), as ./scripts/serve
    runs it, plus `env`; its base URL once it accepts connections."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SPATIALREAL_", "AUTH_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=base | env,
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


@pytest.fixture
def served() -> Iterator[str]:
    with serving() as url:
        yield url
