"""The cost of durable relay sessions (a script, not a test): `uv run --frozen python
bench/durable.py`.

The same relay, in the same run and with rounds interleaved so both meet the same background
load, served twice: with the in-process store (nothing saved) and with Redis (every session's
seqs, acks, replay buffer and core state saved write-behind, `app/store/relay_state.py`, and its
output gated as `app/relay/durable.py` says). Both are driven by bench/relay.py's load
(`bench/relaybench`): the speech fixture in real time, 40 ms chunks, N sessions, against the
emulator. Reported per variant and N: server CPU per relayed media message, the hop
(upstream message in hand -> written to the browser socket, from the server's histogram) and
transit (emulator send -> client receive) percentiles, and Redis's own CPU share. The ratio of
the two CPU figures is the cost of durability; the issue's targets: <= 1.3x CPU per message,
hop p99 <= 2 ms at 200 sessions. How long a takeover takes is in bench/results/relay_state.json
(claim + load) and bounded by the heartbeat TTL (app/store/relay_state.py).

Results: bench/results/durable.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import free_port, logged_process, process, redis_args  # noqa: E402
from bench.relaybench import roles  # noqa: E402

RESULTS: Final = ROOT / "bench" / "results" / "durable.json"
VARIANTS: Final = ("memory", "redis")


def target(port: int, pid: int, emulator_pid: int, sessions: int, redis_pid: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    return {
        "kind": "relay",
        "url": base,
        "sessions": sessions,
        "server_pids": [pid],
        "emulator_pid": emulator_pid,
        "metrics_urls": [base + "/metrics"],
        "other_pids": {"redis": [redis_pid]},
    }


def summary(steps: list[dict[str, Any]]) -> dict[str, Any]:
    def med(path: tuple[str, ...]) -> float | None:
        values = []
        for step in steps:
            value: Any = step
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, int | float):
                values.append(float(value))
        return round(statistics.median(values), 3) if values else None

    return {
        "rounds": len(steps),
        "server_cpu_us_per_message": med(("server_cpu_us_per_message",)),
        "hop_p50_ms": med(("hop", "p50_ms")),
        "hop_p99_ms": med(("hop", "p99_ms")),
        "transit_p99_ms": med(("transit_ms", "p99")),
        "real_time": all(step["verdict"]["real_time"] for step in steps),
        "contended_rounds": sum(bool(step["contended"]) for step in steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", default="50,200")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    steps = [int(n) for n in args.steps.split(",") if n]
    logs = Path(tempfile.mkdtemp(prefix="durable-bench-"))
    print(f"server logs: {logs}", file=sys.stderr)
    started = time.time()
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {v: {n: [] for n in steps} for v in VARIANTS}
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as workdir:
        emu_port = free_port()
        emulator = stack.enter_context(
            logged_process([*roles.ME, "emulator", str(emu_port)], emu_port, logs / "emu.log")
        )
        emulator_url = f"http://127.0.0.1:{emu_port}"
        redis_port = free_port()
        redis = stack.enter_context(
            process(
                redis_args(redis_port, Path(workdir)),
                redis_port,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        up: dict[str, tuple[int, int]] = {}
        for variant in VARIANTS:
            port = free_port()
            proc = stack.enter_context(
                roles.server(
                    "relay",
                    emulator_url,
                    port,
                    logs / f"{variant}.log",
                    redis_url=redis_url if variant == "redis" else "",
                )
            )
            up[variant] = (port, proc.pid)
        for n in steps:
            for round_ in range(args.rounds):
                for variant in VARIANTS:
                    port, pid = up[variant]
                    step = roles.load_step(
                        target(port, pid, emulator.pid, n, redis.pid), until_real_time=False
                    )
                    runs[variant][n].append(step)
                    brief = {
                        "cpu_us": step["server_cpu_us_per_message"],
                        "hop": step["hop"],
                        "transit": step["transit_ms"],
                        "real_time": step["verdict"]["real_time"],
                    }
                    print(f"{variant} N={n} round {round_}: {json.dumps(brief)}", file=sys.stderr)
    per_step = []
    for n in steps:
        memory, durable = summary(runs["memory"][n]), summary(runs["redis"][n])
        cpu_ratio = None
        if memory["server_cpu_us_per_message"] and durable["server_cpu_us_per_message"]:
            cpu_ratio = round(
                durable["server_cpu_us_per_message"] / memory["server_cpu_us_per_message"], 3
            )
        per_step.append(
            {
                "sessions": n,
                "memory": memory,
                "redis": durable,
                "cpu_per_message_ratio": cpu_ratio,
                "target_cpu_ratio": 1.3,
                "target_hop_p99_ms": 2.0,
            }
        )
    result = {
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_end": list(os.getloadavg()),
        },
        "setup": {
            "load": "bench/relay.py's load: speech fixture in real time, 40 ms chunks, N sessions",
            "variants": "memory: in-process store; redis: the Redis store with durable sessions",
            "rounds": "interleaved memory/redis, medians reported",
            "cpu": "server utime+stime per relayed media message (Redis's own CPU: other_cpu)",
            "duration_seconds": round(time.time() - started),
        },
        "steps": per_step,
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(per_step, indent=2))


if __name__ == "__main__":
    main()
