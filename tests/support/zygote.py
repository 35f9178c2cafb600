"""Starts real server instances fast: a process that imports the server once, then forks one
child per instance (`python -m tests.support.zygote`).

Tests that kill and drain dozens of instances cannot afford a fresh interpreter (seconds of
imports on a busy machine) for each. Every child is a real, separate process: its own event loop,
sockets, Redis connections, signal handlers, exactly as `avatar-relay serve` runs (`app.server.run`
with the settings given); SIGTERM drains it, SIGKILL kills it.

Protocol, one JSON object a line: the parent writes `{"settings": {...}, "log": "<path>"}`; the
zygote answers `{"spawned": <pid>}` and, whenever a child exits, `{"exited": <pid>, "status": n}`.
It exits (killing its children) when its stdin closes.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
from typing import Any

# Imported once here (app.server imports the whole app), inherited by every child.
import app.server
from app.settings import Settings


def _child(settings: dict[str, Any], log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    code = 0
    try:
        app.server.run(Settings(_env_file=None, **settings))  # type: ignore[call-arg]
    except BaseException:  # the parent reads the log; the status says it failed
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _reap(children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        _say({"exited": pid, "status": os.waitstatus_to_exitcode(status)})


def main() -> None:
    children: set[int] = set()
    buffer = b""
    try:
        while True:
            ready, _, _ = select.select([sys.stdin.fileno()], [], [], 0.02)
            _reap(children)
            if not ready:
                continue
            chunk = os.read(sys.stdin.fileno(), 65536)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(request["settings"], request["log"])
                children.add(pid)
                _say({"spawned": pid})
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
