"""Each part of a run in its own process: `python bench/relay.py <role> ...` (see bench/relay.py
for the dispatch), started and waited for from the orchestrator."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from bench.harness import logged_process, machine_load

ROOT: Final = Path(__file__).resolve().parents[2]
SCRIPT: Final = ROOT / "bench" / "relay.py"
ME: Final = [sys.executable, str(SCRIPT)]
QUIET_THRESHOLD: Final = 0.3  # cores busy elsewhere before a step may start
QUIET_MAX_WAIT: Final = 15.0
# CPU used during a step by nothing this run started (other engineers' work on the shared
# machine): above this the step is marked contended and run once more.
CONTENDED: Final = 0.5
ATTEMPTS: Final = 2


def child(args: list[str], timeout: float) -> Any:
    """Run a role to completion; its last stdout line is its JSON answer."""
    out = subprocess.run(
        [*ME, *args], capture_output=True, timeout=timeout, check=False, cwd=ROOT, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def server(
    kind: str,
    emulator_url: str,
    port: int,
    log: Path,
    *,
    pool: int = 0,
    compression: bool = False,
    redis_url: str = "",
    checkout: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process; `checkout`: another copy of the tree (its bench/relay.py, its app/),
    e.g. `git archive` of an earlier commit, for a before/after comparison in one run."""
    spec = {
        "kind": kind,
        "emulator_url": emulator_url,
        "port": port,
        "pool": pool,
        "compression": compression,
        "redis_url": redis_url,
    }
    me = ME if checkout is None else [sys.executable, str(checkout / "bench" / "relay.py")]
    with logged_process([*me, "server", json.dumps(spec)], port, log) as proc:
        yield proc


def load_step(
    target: dict[str, Any], *, until_real_time: bool = True, attempts: int = ATTEMPTS
) -> dict[str, Any]:
    """One measured step; run once more when other work took the machine during it or (with
    `until_real_time`) when it missed real time, which other work on the machine can cause."""
    step: dict[str, Any] = {}
    for attempt in range(1, attempts + 1):
        background = wait_quiet() if attempts > 1 else machine_load(0.2)
        step = child(["load", json.dumps(target)], 300)
        step["attempt"] = attempt
        step["background_cpu_before"] = background
        step["contended"] = step["unaccounted_cpu_share"] > CONTENDED
        time.sleep(2.0)  # let closed sessions release their upstreams
        if attempt == attempts:
            break
        if step["contended"] or (until_real_time and not step["verdict"]["real_time"]):
            continue
        break
    return step


def wait_quiet(max_wait: float = QUIET_MAX_WAIT) -> float:
    """Wait (bounded) until the machine is nearly idle between steps: other work on a shared
    2-core box starves a real-time run. Returns the background load (cores) last seen."""
    deadline = time.monotonic() + max_wait
    while True:
        load = machine_load(1.0)
        if load <= QUIET_THRESHOLD or time.monotonic() >= deadline:
            return round(load, 3)


def cores() -> int:
    return os.cpu_count() or 1
