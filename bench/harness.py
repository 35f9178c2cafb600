"""What both benchmarks need to run servers in their own processes on loopback."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Return once something listens on `port`; fail fast if `proc` died first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port}")


@contextlib.contextmanager
def process(args: list[str], port: int, **popen: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A child process serving on `port`, terminated (then killed) when the block ends."""
    proc: subprocess.Popen[bytes] = subprocess.Popen(args, **popen)
    try:
        wait_port(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def logged_process(args: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`process` with stdout and stderr appended to `log`."""
    with log.open("ab") as sink, process(args, port, stdout=sink, stderr=sink) as proc:
        yield proc
