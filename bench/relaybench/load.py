"""One load step (its own process): N simulated browsers play the speech in real time against one
server (or several behind nginx), and everything a step reports is measured around the playback:
frames' transit and lateness, the verdicts, server / emulator / load-generator / other CPU,
event-loop lag on both sides, hops."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from app.loop_lag import LoopLagMonitor
from bench.relaybench import stats
from bench.relaybench.loadclient import CHUNK_SECONDS, Session, chunks
from bench.relaybench.servers import FLOOR_STATS_PATH
from bench.relaybench.verdicts import judge, loadgen_bottleneck

SETUP_CONCURRENCY: Final = 16
HOP_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
LAG_METRIC: Final = "avatar_relay_event_loop_lag_seconds"
HOP_METRIC: Final = "avatar_relay_hop_seconds"


@dataclass
class Target:
    """What one step drives and watches."""

    kind: str  # relay | floor
    url: str  # where sessions are created (an instance, or nginx)
    sessions: int
    server_pids: list[int]
    emulator_pid: int
    metrics_urls: list[str]  # each instance's /metrics, scraped directly
    other_pids: dict[str, list[int]] = field(default_factory=dict)  # nginx, redis
    echo: bool = True  # relay: False creates `audioEcho: false` sessions

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Target:
        return cls(**data)


async def _scrape(http: httpx.AsyncClient, target: Target) -> dict[str, Any]:
    lags: list[stats.Histogram] = []
    hops: list[stats.Histogram] = []
    for url in target.metrics_urls:
        text = (await http.get(url)).text
        lags.append(stats.parse_histogram(text, LAG_METRIC))
        hops.append(stats.parse_histogram(text, HOP_METRIC))
    out: dict[str, Any] = {"lag": stats.histogram_sum(lags), "hop": stats.histogram_sum(hops)}
    if target.kind == "floor":
        base = target.metrics_urls[0].removesuffix("/metrics")
        out["floor_hops"] = (await http.get(base + FLOOR_STATS_PATH)).json()["hops"]
    return out


def _hops(target: Target, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    if target.kind == "relay":
        delta = stats.histogram_delta(before["hop"], after["hop"])
        return {
            "source": "server /metrics histogram (bucket-interpolated)",
            "count": int(delta[1][-1]) if delta[1] else 0,
            "p50_ms": stats.ms(stats.bucket_percentile(delta, 0.50)),
            "p99_ms": stats.ms(stats.bucket_percentile(delta, 0.99)),
        }
    hops: list[float] = after["floor_hops"]
    histogram = stats.histogram_of(hops, HOP_BUCKETS)
    return {
        "source": "floor in-process timings, same span and clock",
        "count": len(hops),
        "p50_ms": stats.ms(stats.bucket_percentile(histogram, 0.50)),
        "p99_ms": stats.ms(stats.bucket_percentile(histogram, 0.99)),
        "exact_p50_ms": stats.ms(stats.percentile(hops, 0.50)),
        "exact_p99_ms": stats.ms(stats.percentile(hops, 0.99)),
    }


async def load(target: Target) -> dict[str, Any]:
    pcm = chunks()
    playback = len(pcm) * CHUNK_SECONDS
    http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=SETUP_CONCURRENCY))
    all_sessions = [
        Session(target.kind, target.url, http, echo=target.echo) for _ in range(target.sessions)
    ]
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def open_one(session: Session) -> None:
        async with gate:
            try:
                async with asyncio.timeout(30):
                    await session.open()
            except Exception as exc:
                session.error = f"open: {exc!r}"

    setup_started = time.monotonic()
    await asyncio.gather(*(open_one(s) for s in all_sessions))
    setup_seconds = time.monotonic() - setup_started
    live = [s for s in all_sessions if not s.error]
    await _scrape(http, target)  # the floor's hop list starts empty for the playback
    before = await _scrape(http, target)
    others = dict(target.other_pids)
    cpu0 = stats.cpu_seconds_of(target.server_pids)
    emu0 = stats.cpu_seconds(target.emulator_pid)
    other0 = {name: stats.cpu_seconds_of(pids) for name, pids in others.items()}
    me0 = time.process_time()
    busy0, total0 = stats.machine_busy()
    my_lags: list[float] = []
    monitor = LoopLagMonitor(my_lags.append)
    monitor.start()
    start = time.monotonic() + 0.5
    # Spread the sessions' chunk boundaries over one 40 ms period, as real users would be.
    await asyncio.gather(
        *(
            s.play(pcm, start + (i / max(1, len(live))) * CHUNK_SECONDS, playback + 30)
            for i, s in enumerate(live)
        )
    )
    monitor.stop()
    wall = time.monotonic() - start
    cpu1 = stats.cpu_seconds_of(target.server_pids)
    emu1 = stats.cpu_seconds(target.emulator_pid)
    other1 = {name: stats.cpu_seconds_of(pids) for name, pids in others.items()}
    me1 = time.process_time()
    busy1, total1 = stats.machine_busy()
    cores = os.cpu_count() or 1
    machine_share = (busy1 - busy0) / (total1 - total0) * cores if total1 > total0 else 0.0
    other_cpu = sum(other1[n] - other0[n] for n in others)
    ours = (cpu1 - cpu0 + emu1 - emu0 + me1 - me0 + other_cpu) / wall
    after = await _scrape(http, target)
    rss = [stats.rss_mib(pid) for pid in target.server_pids]
    await asyncio.gather(*(s.close() for s in all_sessions))
    await http.aclose()

    messages = sum(s.up + s.down for s in live)
    frames = sum(len(s.lateness) for s in live)
    lateness = [x for s in live for x in s.lateness]
    transit = [ns / 1e9 for s in live for ns in s.transit_ns]
    verdict = judge([s.run() for s in all_sessions])
    lag = stats.histogram_delta(before["lag"], after["lag"])
    my_lag_p99 = stats.percentile(my_lags, 0.99)
    loadgen_share = (me1 - me0) / wall
    server_cpu = cpu1 - cpu0
    session_seconds = len(live) * playback
    return {
        "sessions": target.sessions,
        "verdict": verdict.as_json(),
        "setup_seconds": round(setup_seconds, 2),
        "playback_wall_seconds": round(wall, 2),
        "media_messages": messages,
        "frames": frames,
        "negotiated_extensions": sorted({s.negotiated for s in live}),
        "transit_ms": stats.summary_ms(transit),
        "frame_lateness_ms": stats.summary_ms(lateness),
        "lateness_growth_ms_max": stats.ms(
            max((stats.growth(s.lateness) for s in live), default=0.0)
        ),
        "server_event_loop_lag_ms": {
            "source": "server /metrics histogram (bucket-interpolated; sampled every 50 ms)",
            "p50": stats.ms(stats.bucket_percentile(lag, 0.50)),
            "p99": stats.ms(stats.bucket_percentile(lag, 0.99)),
        },
        "hop": _hops(target, before, after),
        "server_cpu_seconds": round(server_cpu, 2),
        "server_cpu_share": round(server_cpu / wall, 3),
        "server_cpu_us_per_message": round(server_cpu / messages * 1e6, 2) if messages else None,
        "server_cpu_ms_per_session_second": round(server_cpu / session_seconds * 1000, 3)
        if session_seconds
        else None,
        "server_rss_mib": rss,
        "emulator_cpu_share": round((emu1 - emu0) / wall, 3),
        "other_measured_cpu_share": {
            name: round((other1[name] - other0[name]) / wall, 3) for name in others
        },
        "load_generator": {
            "cpu_share": round(loadgen_share, 3),
            "event_loop_lag_ms": stats.summary_ms(my_lags),
            "max_send_lag_ms": stats.ms(max((s.send_lag for s in live), default=0.0)),
            "bottleneck": loadgen_bottleneck(loadgen_share, my_lag_p99),
        },
        "machine_cpu_share": round(machine_share, 3),
        "unaccounted_cpu_share": round(max(0.0, machine_share - ours), 3),
        "errors": sorted({s.error for s in all_sessions if s.error})[:5],
    }


async def ttff(kind: str, base_url: str, count: int) -> dict[str, Any]:
    """Sequential sessions, each opened and then given 400 ms of audio at once (as a TTS engine
    that has its first sentence ready would): how soon does the first frame come back?"""
    pcm = chunks()[:10]
    opens: list[float] = []
    totals: list[float] = []
    after_audio: list[float] = []
    for _ in range(count):
        session = Session(kind, base_url)
        async with asyncio.timeout(30):
            await session.open()
            start = time.monotonic()
            await session.play(pcm, start, 20, pace=0.0)
        await session.close()
        if session.error or not session.first_frame_at:
            raise RuntimeError(f"ttff session failed: {session.error}")
        opens.append(session.opened_at - session.created_at)
        totals.append(session.first_frame_at - session.created_at)
        after_audio.append(session.first_frame_at - start)
        await asyncio.sleep(0.3)  # let a warm pool refill, as between real users
    return {
        "sessions": count,
        "open_ms": _p50_max(opens),
        "first_frame_after_first_audio_ms": _p50_max(after_audio),
        "first_frame_after_session_request_ms": _p50_max(totals),
    }


def _p50_max(values: list[float]) -> dict[str, float | None]:
    return {"p50": stats.ms(statistics.median(values)), "max": stats.ms(max(values))}
