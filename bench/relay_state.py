"""The cost of relay sessions' durable state (a script, not a test):
`uv run --frozen python bench/relay_state.py`.

Drives `app.store.relay_state.RelayStateStore` against a real redis-server (started here, its own
process, loopback) the way live relay sessions would, and measures in one run:

- write cost: N sessions each send one 1 KiB message every 20 ms (a frame or an audio echo: 50
  messages a second, more than a talking avatar's 25 frames), the client acknowledges every 10,
  and a client chunk is accepted every 40 ms. Every change marks its session dirty; the store
  saves once per event-loop turn. The same load runs once without the store (marks go nowhere):
  the difference in this process's CPU time, divided by the messages, is what durability costs
  the relay's process per message; Redis's own CPU (INFO cpu) is reported beside it;
- save latency: from a session's first mark to the pipeline that carried it coming back (what a
  message waits before it may be sent when sends follow their save), p50/p99/max;
- batching: sessions and messages per pipeline;
- takeover: `claim` + `load` of a session holding K unacknowledged 1 KiB messages, on a second
  instance after the owner went away (its heartbeat withdrawn), p50/p99 over repeated trials.

Results: bench/results/relay_state.json.
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from redis import asyncio as aioredis  # noqa: E402

from app.store.relay_state import (  # noqa: E402
    EndpointDelta,
    RelayStateStore,
    Saved,
    SessionDelta,
)
from bench.harness import free_port, process  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "relay_state.json"
MESSAGE_BYTES: Final = 1024
INTERVAL: Final = 0.020
ACK_EVERY: Final = 10
ACCEPT_EVERY: Final = 2  # one client chunk per two messages: 40 ms


class LoadSession:
    """One session's delivery state, changing as a live one's would; a `Saving` source."""

    def __init__(self, session_id: str, store: RelayStateStore | None) -> None:
        self.session_id = session_id
        self._store = store
        self.client_seq = 0
        self.acked = 0
        self.kept: list[bytes] = []
        self.saved_upto = 0
        self.sent = 0
        self.full = False
        self.marked_at: float | None = None
        self.latencies: list[float] = []

    @property
    def endpoint_names(self) -> Sequence[str]:
        return ("browser",)

    def step(self, payload: bytes) -> None:
        self.sent += 1
        self.kept.append(payload)
        if self.sent % ACCEPT_EVERY == 0:
            self.client_seq += 1
        if self.sent % ACK_EVERY == 0:
            del self.kept[: self.sent - self.acked]
            self.acked = self.sent
        if self._store is not None:
            if self.marked_at is None:
                self.marked_at = time.perf_counter()
            self._store.mark(self)

    def delta(self) -> SessionDelta:
        start = self.acked if self.full else max(self.acked, self.saved_upto)
        entries = self.kept[start - self.acked :]
        self.saved_upto = self.acked + len(self.kept)
        self.full = False
        return SessionDelta(
            [EndpointDelta("browser", self.client_seq, self.acked, start + 1, entries)]
        )

    def lost(self) -> None:
        pass

    def saved(self, delta: SessionDelta, outcome: Saved) -> None:
        if outcome is Saved.RESYNC:
            self.full = True
        if self.marked_at is not None:
            self.latencies.append(time.perf_counter() - self.marked_at)
            self.marked_at = None


async def drive(sessions: list[LoadSession], seconds: float) -> None:
    """Every session steps every INTERVAL (staggered), for `seconds`."""
    payload = bytes(range(256)) * (MESSAGE_BYTES // 256)
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def run(index: int, session: LoadSession) -> None:
        await asyncio.sleep(INTERVAL * index / len(sessions))
        tick = loop.time()
        while tick < end:
            session.step(payload)
            tick += INTERVAL
            await asyncio.sleep(max(0.0, tick - loop.time()))

    await asyncio.gather(*(run(i, s) for i, s in enumerate(sessions)))


async def redis_cpu(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load_run(
    url: str, count: int, seconds: float, durable: bool, interval: float = 0.0
) -> dict[str, Any]:
    client = aioredis.Redis.from_url(url)
    store = RelayStateStore(
        client,
        prefix=f"bench-{count}-{durable}-{interval}:",
        flush_interval=interval,
        keep_durations=True,
    )
    await store.start()
    sessions = [LoadSession(f"rs_bench_{n}", store if durable else None) for n in range(count)]
    for session in sessions:
        await store.claim(session.session_id)
    redis_before = await redis_cpu(client)
    cpu_before = time.process_time()
    wall_before = time.perf_counter()
    await drive(sessions, seconds)
    await store.settled(within=30)
    cpu = time.process_time() - cpu_before
    wall = time.perf_counter() - wall_before
    redis_used = await redis_cpu(client) - redis_before
    messages = sum(s.sent for s in sessions)
    latencies = [x for s in sessions for x in s.latencies]
    stats = store.stats
    memory = (await client.info("memory"))["used_memory"]
    for session in sessions:
        await store.forget(session.session_id)
    await store.aclose()
    await client.aclose()
    result: dict[str, Any] = {
        "sessions": count,
        "flush_interval_ms": interval * 1e3,
        "messages": messages,
        "wall_seconds": round(wall, 2),
        "process_cpu_seconds": round(cpu, 3),
        "process_cpu_us_per_message": round(cpu / messages * 1e6, 2),
    }
    if durable:
        durations = stats.durations
        result.update(
            {
                "redis_cpu_seconds": round(redis_used, 3),
                "redis_cpu_us_per_message": round(redis_used / messages * 1e6, 2),
                "pipelines": stats.pipelines,
                "saves_per_pipeline": round(stats.saves / max(1, stats.pipelines), 1),
                "messages_saved": stats.messages,
                "messages_per_pipeline": round(stats.messages / max(1, stats.pipelines), 1),
                "save_failures": stats.failures,
                "pipeline_ms": {
                    "p50": round(pct(durations, 0.5) * 1e3, 3),
                    "p99": round(pct(durations, 0.99) * 1e3, 3),
                },
                "save_latency_ms": {
                    "p50": round(pct(latencies, 0.5) * 1e3, 3),
                    "p99": round(pct(latencies, 0.99) * 1e3, 3),
                    "max": round(max(latencies, default=0.0) * 1e3, 3),
                },
                "redis_used_memory_mib_during_run": round(memory / 2**20, 1),
            }
        )
    return result


async def takeover(url: str, kept: int, trials: int) -> dict[str, Any]:
    client = aioredis.Redis.from_url(url)
    times: list[float] = []
    payload = b"\x5a" * MESSAGE_BYTES
    for trial in range(trials):
        owner = RelayStateStore(client, prefix="bench-takeover:")
        heir = RelayStateStore(client, prefix="bench-takeover:")
        await owner.start()
        await heir.start()
        session = LoadSession(f"rs_takeover_{kept}_{trial}", owner)
        await owner.claim(session.session_id)
        session.kept = [payload] * kept
        session.sent = session.acked = 0
        owner.mark(session)
        await owner.settled(within=30)
        await owner.aclose()  # gone: its heartbeat withdrawn
        started = time.perf_counter()
        claim = await heir.claim(session.session_id)
        saved = await heir.load(session.session_id)
        times.append(time.perf_counter() - started)
        assert claim.claimed
        assert saved is not None
        assert len(saved.endpoints["browser"].messages) == kept
        await heir.forget(session.session_id)
        await heir.aclose()
    await client.aclose()
    return {
        "kept_messages": kept,
        "trials": trials,
        "claim_and_load_ms": {
            "p50": round(statistics.median(times) * 1e3, 3),
            "p99": round(pct(times, 0.99) * 1e3, 3),
        },
    }


async def main(counts: list[int], intervals: list[float], seconds: float) -> dict[str, Any]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found (scripts/ensure-system-deps installs it)")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", workdir]
        with process(args, port, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
            url = f"redis://127.0.0.1:{port}/0"
            steps = []
            for count in counts:
                without = await load_run(url, count, seconds, durable=False)
                for interval in intervals:
                    with_store = await load_run(url, count, seconds, True, interval)
                    added = (
                        with_store["process_cpu_seconds"] - without["process_cpu_seconds"]
                    ) / with_store["messages"]
                    steps.append(
                        {
                            "sessions": count,
                            "flush_interval_ms": interval * 1e3,
                            "added_process_cpu_us_per_message": round(added * 1e6, 2),
                            "without_store": without,
                            "with_store": with_store,
                        }
                    )
            takeovers = [await takeover(url, kept, 30) for kept in (0, 100, 1000)]
    return {
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "setup": {
            "load": f"1 KiB message every {INTERVAL * 1e3:.0f} ms per session, ack every "
            f"{ACK_EVERY}, a client chunk accepted every {INTERVAL * ACCEPT_EVERY * 1e3:.0f} ms,"
            f" {seconds:g} s",
            "redis": "redis-server on loopback, its own process, no persistence",
            "added_cpu": "this process's CPU with the store minus the same load without it,"
            " per message",
            "save_latency": "first mark of a session -> its pipeline back",
            "takeover": "second instance: claim (owner's heartbeat withdrawn) + load",
        },
        "steps": steps,
        "takeover": takeovers,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--flush-ms", type=float, nargs="+", default=[0, 20, 50])
    parser.add_argument("--seconds", type=float, default=10.0)
    options = parser.parse_args()
    intervals = [ms / 1e3 for ms in options.flush_ms]
    results = asyncio.run(main(options.sessions, intervals, options.seconds))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
