"""Profile a server under a load step: py-spy samples the server process (emulator and load
generator in their own processes, as in a run) while N sessions play the speech.

    uv run --frozen python bench/relay.py profile --sessions 100 --kind relay --out /tmp/relay.txt

py-spy comes from PyPI (`uvx py-spy`, or `py-spy` on PATH); the output is collapsed stacks
(`--format raw`: one line per stack with its sample count), ready for a flame-graph tool or grep.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import free_port, logged_process
from bench.relaybench import roles
from bench.relaybench.loadclient import CHUNK_SECONDS, chunks

RATE = 250  # samples per second


def py_spy() -> list[str]:
    found = shutil.which("py-spy")
    return [found] if found else ["uvx", "py-spy"]


def profile(kind: str, sessions: int, out: Path, native: bool = False) -> dict[str, Any]:
    logs = Path(tempfile.mkdtemp(prefix="relay-profile-"))
    # Session set-up, then the playback: the recording covers both.
    duration = int(len(chunks()) * CHUNK_SECONDS) + 2 + sessions // 20
    port = free_port()
    with (
        logged_process([*roles.ME, "emulator", str(port)], port, logs / "emulator.log") as emu,
        contextlib.ExitStack() as stack,
    ):
        emulator_url = f"http://127.0.0.1:{port}"
        server_port = free_port()
        server = stack.enter_context(
            roles.server(kind, emulator_url, server_port, logs / f"{kind}.log")
        )
        base = f"http://127.0.0.1:{server_port}"
        record = [
            *py_spy(),
            "record",
            *("--pid", str(server.pid), "--duration", str(duration), "--rate", str(RATE)),
            *("--format", "raw", "--output", str(out), "--nonblocking"),
            *(["--native"] if native else []),
        ]
        spy = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        step = roles.load_step(
            {
                "kind": kind,
                "url": base,
                "sessions": sessions,
                "server_pids": [server.pid],
                "emulator_pid": emu.pid,
                "metrics_urls": [base + "/metrics"],
            },
            until_real_time=False,
            attempts=1,
        )
        _, err = spy.communicate(timeout=duration + 60)
        if spy.returncode != 0:
            print(err.decode(errors="replace")[-2000:], file=sys.stderr)
    return {"profile": str(out), "logs": str(logs), "step": step}
