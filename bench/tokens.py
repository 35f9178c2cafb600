"""Token-endpoint benchmark (a script, not a test): `uv run --frozen python bench/tokens.py`.

Starts, each in its own process, a real Redis server, the SpatialReal emulator and our app (one
worker, run by `app.server.run` as `avatar-relay serve` runs it: uvloop + httptools), then drives
the app from this process with 50 concurrent keep-alive connections speaking plain HTTP/1.1 (a
deliberately thin client on uvloop, so the load generator steals as little CPU as possible from
the server on a small machine). Measured in each run:

1. baseline: GET /healthz (no auth, no store) - the ceiling of this app on this machine;
2. mint: POST /v1/session-tokens, api-key auth, both rate limits on (set high), Redis store, no
   pool: every request mints at the emulator console (which answers at once);
3. pool-warm: the same with a token pool pre-filled, while the console answers in 150 ms: what a
   caller sees when tokens are pre-minted. The pool is filled before the console is slowed down,
   and is large enough that the measured requests never drain it. Measured paced (200 req/s,
   open loop: p99 without queueing) and with 50 callers as fast as they go.

Three runs by default (`--runs`): the run with the median no-pool ratio is reported in full, with
every run's headline figures and their medians. Results (requests/s, p50/p99 in ms, ratios to
the baseline of the same run) go to bench/results/tokens.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import free_port, process  # noqa: E402

ME = [sys.executable, str(Path(__file__).resolve())]
RESULTS = ROOT / "bench" / "results" / "tokens.json"
CALLER_KEY = "bench-caller-key-0123456789abcdef"
CONCURRENCY = 50
CONSOLE_LATENCY = 0.150
POOL_SIZE = 20000
POOL_REQUESTS = 15000
PACED_RATE = 200.0
PACED_SECONDS = 5.0
PACED_ROUNDS = 3


# --- child roles ---


def run_emulator(port: int) -> None:
    """The emulator; reads `latency <seconds>` lines on stdin to change its console latency."""
    from app.emulator import Emulator

    async def main() -> None:
        async with Emulator(port=port) as emulator:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
            while line := await reader.readline():
                command, _, value = line.decode().strip().partition(" ")
                if command == "latency":
                    emulator.faults.console_latency = float(value)
                    print("ok", flush=True)

    # uvloop here too: the emulator shares the two cores with the app it serves.
    uvloop.run(main())


def run_app() -> None:
    """Our app from environment settings, run the way `avatar-relay serve` runs it: one worker,
    JSON logging, uvicorn settings from app.server, uvloop + httptools (imported here so the
    figures never silently come from the slower fallbacks)."""
    import httptools  # noqa: F401

    from app.server import run
    from app.settings import load_settings

    run(load_settings())


# --- the load generator ---


@dataclass
class Result:
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """Read one HTTP/1.1 response (Content-Length framed, as uvicorn answers); return its head."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return head


async def _worker(
    port: int,
    request: bytes,
    expect: bytes,
    until: float,
    budget: list[int],
    latencies: list[float],
    errors: list[int],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            writer.write(request)
            head = await read_response(reader)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(expect):
                errors[0] += 1
    finally:
        writer.close()


async def paced(port: int, request: bytes, expect: bytes, rate: float, seconds: float) -> Result:
    """Open loop: one request every 1/rate s on any free connection, latency counted from the
    moment it was due (so a stalled server cannot hide its stalls by slowing the sender)."""
    connections: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(CONCURRENCY):
        connections.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    errors = [0]

    async def one(due: float) -> None:
        reader, writer = await connections.get()
        writer.write(request)
        head = await read_response(reader)
        latencies.append(time.perf_counter() - due)
        if not head.startswith(expect):
            errors[0] += 1
        connections.put_nowait((reader, writer))

    started = time.perf_counter()
    tasks = []
    for index in range(int(rate * seconds)):
        due = started + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    while not connections.empty():
        connections.get_nowait()[1].close()
    return _summary(latencies, errors[0], elapsed)


def _summary(latencies: list[float], errors: int, elapsed: float) -> Result:
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2)

    return Result(
        requests=len(ordered),
        errors=errors,
        seconds=round(elapsed, 2),
        rps=round(len(ordered) / elapsed, 1),
        p50_ms=pct(0.50),
        p90_ms=pct(0.90),
        p99_ms=pct(0.99),
        max_ms=round(ordered[-1] * 1000, 2),
    )


def _request(method: str, path: str, body: bytes = b"", auth: bool = False) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if auth:
        lines.append(f"Authorization: Bearer {CALLER_KEY}")
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def load(
    port: int, request: bytes, expect: bytes, *, seconds: float = 60, total: int = 10**9
) -> Result:
    latencies: list[float] = []
    errors = [0]
    budget = [total]
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(
        *(
            _worker(port, request, expect, until, budget, latencies, errors)
            for _ in range(CONCURRENCY)
        )
    )
    return _summary(latencies, errors[0], time.perf_counter() - started)


def _pool_length(redis_port: int) -> int:
    import redis

    client = redis.Redis(port=redis_port)
    try:
        keys: list[bytes] = list(client.keys("avatar-relay:tokens:pool:*"))  # type: ignore[arg-type]
        lengths = [client.llen(key) for key in keys if not key.endswith(b":refilling")]
        return sum(int(n) for n in lengths)
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", choices=["bench", "emulator", "app"], default="bench")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=8.0)
    # Several runs: on a shared 2-core machine one run can land on a busy moment.
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.role == "emulator":
        run_emulator(args.port)
        return
    if args.role == "app":
        run_app()
        return
    # The load generator on uvloop steals less CPU from the server it measures.
    uvloop.run(bench(args.seconds, args.runs))


async def measure(seconds: float) -> dict[str, Any]:
    """One full run: fresh Redis, emulator and app processes for every scenario."""
    from app.settings import EMULATOR_API_KEY, EMULATOR_APP_ID

    redis_binary = shutil.which("redis-server")
    if redis_binary is None:
        raise SystemExit("redis-server not found (scripts/ensure-system-deps installs it)")
    me = ME
    redis_port, emu_port = free_port(), free_port()
    env_base = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "APP_ENV": "test",
        "SPATIALREAL_API_KEY": EMULATOR_API_KEY,
        "SPATIALREAL_APP_ID": EMULATOR_APP_ID,
        "DEFAULT_AVATAR_ID": "emulator-avatar",
        "SPATIALREAL_CONSOLE_URL": f"http://127.0.0.1:{emu_port}/v1/console",
        "SPATIALREAL_INGRESS_URL": f"ws://127.0.0.1:{emu_port}/v2/driveningress",
        "SPATIALREAL_FALLBACK_REGIONS": "",
        "AUTH_MODE": "api-key",
        "AUTH_API_KEYS": CALLER_KEY,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "RATE_LIMIT_PRINCIPAL_PER_MINUTE": "1000000000",
        "RATE_LIMIT_IP_PER_MINUTE": "1000000000",
        "LOG_LEVEL": "warning",
    }
    healthz = _request("GET", "/healthz")
    mint = _request("POST", "/v1/session-tokens", b"{}", auth=True)
    results: dict[str, Any] = {}

    with (
        tempfile.TemporaryDirectory() as workdir,
        process(
            [
                redis_binary,
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            redis_port,
            stdout=subprocess.DEVNULL,
        ),
        process(
            [*me, "--role", "emulator", "--port", str(emu_port)],
            emu_port,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env_base,
        ) as emulator,
    ):

        def set_latency(value: float) -> None:
            stdin, stdout = emulator.stdin, emulator.stdout
            assert stdin is not None
            assert stdout is not None
            stdin.write(f"latency {value}\n".encode())
            stdin.flush()
            stdout.readline()

        # Phases 1 and 2: no pool.
        app_port = free_port()
        env = {**env_base, "PORT": str(app_port), "TOKEN_POOL_SIZE": "0"}
        with process([*me, "--role", "app"], app_port, env=env):
            await load(app_port, healthz, b"HTTP/1.1 200", seconds=1)  # warm-up
            results["baseline_healthz"] = asdict(
                await load(app_port, healthz, b"HTTP/1.1 200", seconds=seconds)
            )
            await load(app_port, mint, b"HTTP/1.1 201", seconds=1)
            results["mint_no_pool"] = asdict(
                await load(app_port, mint, b"HTTP/1.1 201", seconds=seconds)
            )

        # Phase 3: a warm pool while the console is slow.
        app_port = free_port()
        env = {**env_base, "PORT": str(app_port), "TOKEN_POOL_SIZE": str(POOL_SIZE)}
        with process([*me, "--role", "app"], app_port, env=env):
            deadline = time.monotonic() + 180
            while _pool_length(redis_port) < POOL_SIZE:
                if time.monotonic() > deadline:
                    raise RuntimeError("the pool did not fill in time")
                await asyncio.sleep(0.2)
            set_latency(CONSOLE_LATENCY)
            await asyncio.sleep(1)  # let the refiller notice the pool is full and go idle
            # Three rounds: on a shared 2-core machine one scheduler hiccup moves a p99 a lot.
            rounds = [
                await paced(app_port, mint, b"HTTP/1.1 201", PACED_RATE, PACED_SECONDS)
                for _ in range(PACED_ROUNDS)
            ]
            warm_paced = sorted(rounds, key=lambda r: r.p99_ms)[len(rounds) // 2]
            results["mint_pool_warm_console_150ms_paced"] = asdict(warm_paced)
            results["mint_pool_warm_console_150ms_paced_rounds_p99_ms"] = [r.p99_ms for r in rounds]
            pool_warm = await load(
                app_port, mint, b"HTTP/1.1 201", seconds=120, total=POOL_REQUESTS
            )
            results["mint_pool_warm_console_150ms"] = asdict(pool_warm)
            results["pool_left_after_run"] = _pool_length(redis_port)

    return results


def _ratios(results: dict[str, Any]) -> dict[str, float]:
    base = results["baseline_healthz"]
    warm = results["mint_pool_warm_console_150ms"]
    return {
        "mint_no_pool_rps_vs_healthz": round(results["mint_no_pool"]["rps"] / base["rps"], 3),
        "pool_warm_rps_vs_healthz": round(warm["rps"] / base["rps"], 3),
        "pool_warm_p99_at_50_callers_vs_healthz_p99": round(warm["p99_ms"] / base["p99_ms"], 2),
    }


def _headline(results: dict[str, Any]) -> dict[str, float]:
    return {
        "healthz_rps": results["baseline_healthz"]["rps"],
        "mint_no_pool_rps": results["mint_no_pool"]["rps"],
        "mint_no_pool_p99_ms": results["mint_no_pool"]["p99_ms"],
        "pool_warm_rps": results["mint_pool_warm_console_150ms"]["rps"],
        "pool_warm_p99_ms": results["mint_pool_warm_console_150ms"]["p99_ms"],
        "pool_warm_paced_p99_ms": results["mint_pool_warm_console_150ms_paced"]["p99_ms"],
        **_ratios(results),
    }


async def bench(seconds: float, runs: int) -> None:
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    measured: list[dict[str, Any]] = []
    for index in range(runs):
        measured.append(await measure(seconds))
        print(f"run {index + 1}/{runs}: {_headline(measured[-1])}", file=sys.stderr, flush=True)
    # The run with the median no-pool ratio is reported in full; every run's headline figures are
    # kept, with their per-figure medians (each ratio against the baseline of its own run).
    ranked = sorted(measured, key=lambda r: _ratios(r)["mint_no_pool_rps_vs_healthz"])
    results = ranked[len(ranked) // 2]
    headlines = [_headline(r) for r in measured]
    medians = {name: statistics.median(h[name] for h in headlines) for name in headlines[0]}
    warm = results["mint_pool_warm_console_150ms"]
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            # Other work on the machine skews every figure; ratios to the baseline less so.
            "load_average_at_start": load_at_start,
        },
        "setup": {
            "concurrency": CONCURRENCY,
            "auth": "api-key",
            "rate_limits": "on (principal + ip, limits set high), Redis",
            "store": "redis",
            "server": "1 uvicorn worker via app.server.run (uvloop + httptools, JSON logging at"
            " warning, heap frozen after startup); emulator and Redis in own processes",
            "client": "raw HTTP/1.1 keep-alive, one connection per caller, same machine, uvloop",
            "phase_seconds": seconds,
            "pool_size": POOL_SIZE,
            "pool_requests": POOL_REQUESTS,
            "console_latency_ms_during_pool_run": CONSOLE_LATENCY * 1000,
            "paced_rate_per_second": PACED_RATE,
            "paced_seconds": PACED_SECONDS,
            "paced_rounds": PACED_ROUNDS,
            "paced_reported": "the round with the median p99",
            "runs": runs,
            "reported_run": "the run with the median mint_no_pool_rps_vs_healthz",
        },
        "results": results,
        "ratios": _ratios(results),
        "median_of_runs": medians,
        "runs": headlines,
        "targets": {
            "rps_at_least": 1500,
            "pool_warm_p99_ms_at_most": 10,
            "rps_met_by": [
                name
                for name in ("mint_no_pool", "mint_pool_warm_console_150ms")
                if float(results[name]["rps"]) >= 1500
            ],
            "pool_warm_p99_met_at_paced_load": medians["pool_warm_paced_p99_ms"] <= 10,
            "pool_warm_p99_met_at_50_callers": warm["p99_ms"] <= 10,
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
