"""Profile the benchmark's own processes (the emulator and the load generator) while producer-fed
sessions play: `uv run --frozen python bench/producers.py profile --sessions 150`.

py-spy (from PyPI: `uvx py-spy`, or `py-spy` on PATH) samples both processes during the playback
(`py-spy record --pid PID --duration D --rate 100 --format raw --nonblocking`); each recording is
kept as collapsed stacks and summarised: the share of samples per leaf function (self) and per
function anywhere on the stack (inclusive), with each process's CPU share over the same window.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

from bench.relaybench import stats
from bench.relaybench.profile import py_spy

RATE: Final = 100  # samples per second: enough for shares, little load on a 2-core machine
TOP: Final = 25


def _function(frame: str) -> str:
    # py-spy raw frames read `name (path:line)`; the line is dropped so a function sums up.
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    # Library paths are cut to the package (the project's own are relative to the tree already).
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif "/lib/python3" in path:
        path = path.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return f"{name} ({path})"


def summarise(raw: Path, top: int = TOP) -> dict[str, Any]:
    """Self and inclusive sample shares per function of a py-spy raw (collapsed) recording."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";") if f]
        # The first frame is the thread (`process ... "MainThread"`); leaves come last.
        frames = [f for f in frames if not f.startswith("process ") and "Thread" not in f[:20]]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count

    def shares(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(n / total, 3)) for name, n in counter.most_common(top)]

    return {"samples": total, "self": shares(own), "inclusive": shares(inclusive)}


def record(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    args = [
        *py_spy(),
        "record",
        *("--pid", str(pid), "--duration", str(seconds), "--rate", str(RATE)),
        *("--format", "raw", "--output", str(out), "--nonblocking"),
    ]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def profile_run(
    load_args: list[str], emulator_pid: int, sessions: int, seconds: int, out_dir: Path
) -> dict[str, Any]:
    """Start the load (a child process), record the emulator and it once the sessions play."""
    out_dir.mkdir(parents=True, exist_ok=True)
    load = subprocess.Popen(load_args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # The sessions open first; the load says "playing" on stderr when the playback starts.
    assert load.stderr is not None
    for line in load.stderr:
        if line.strip() == b"playing":
            break
    time.sleep(1.0)  # past the first chunks, into the steady state
    files = {
        "emulator": out_dir / f"emulator-{sessions}.raw.txt",
        "load_generator": out_dir / f"loadgen-{sessions}.raw.txt",
    }
    cpu0 = {
        "emulator": stats.cpu_seconds(emulator_pid),
        "load_generator": stats.cpu_seconds(load.pid),
    }
    t0 = time.monotonic()
    spies = {
        "emulator": record(emulator_pid, seconds, files["emulator"]),
        "load_generator": record(load.pid, seconds, files["load_generator"]),
    }
    for name, spy in spies.items():
        _, err = spy.communicate(timeout=seconds + 60)
        if spy.returncode != 0:
            print(f"py-spy {name}: {err.decode(errors='replace')[-1000:]}", file=sys.stderr)
    wall = time.monotonic() - t0
    cpu1 = {
        "emulator": stats.cpu_seconds(emulator_pid),
        "load_generator": stats.cpu_seconds(load.pid),
    }
    out, _ = load.communicate(timeout=600)  # reads the rest of stderr too
    step = out.decode().strip().splitlines()[-1] if out.strip() else "{}"
    result: dict[str, Any] = {"sessions": sessions, "seconds": seconds, "load_result": step}
    for name, path in files.items():
        result[name] = {
            "cpu_share_while_sampled": round((cpu1[name] - cpu0[name]) / wall, 3),
            "raw": str(path),
            **(summarise(path) if path.exists() else {"samples": 0}),
        }
    return result
