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


def _function(frame: str) -> str:
    """`name (path:line)` -> `name (path)`: samples of one function at any line together."""
    name, _, where = frame.rpartition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if name else frame


def _area(frame: str) -> str:
    """The package a frame's file belongs to (app/relay, uvicorn, websockets, ...)."""
    where = frame.rpartition(" (")[2].rstrip(")")
    parts = where.split("/")
    if parts[0] in ("app", "clients", "bench") and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0] if len(parts) > 1 else "<other>"


def summarize(raw: Path, top: int = 30) -> dict[str, Any]:
    """Top functions by self and by total samples, and self samples by package, from py-spy's
    collapsed stacks (`--format raw`)."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    areas: dict[str, int] = {}
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        leaf = _function(frames[-1])
        own[leaf] = own.get(leaf, 0) + count
        area = _area(frames[-1])
        areas[area] = areas.get(area, 0) + count
        for function in {_function(f) for f in frames}:
            total[function] = total.get(function, 0) + count

    def ranked(counts: dict[str, int], n: int) -> list[dict[str, Any]]:
        best = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
        return [{"function": k, "samples": v, "share": round(v / samples, 4)} for k, v in best]

    return {
        "samples": samples,
        "rate_hz": RATE,
        "self": ranked(own, top),
        "total": ranked(total, top),
        "self_by_package": ranked(areas, 20),
    }
