"""Producer benchmark (a script, not a test): `uv run --frozen python bench/producers.py`.

Compares, in one run against one relay server, the two ways a session's speech can arrive:

- **browser-fed**: the page sends tests/fixtures/speech_16000.pcm (12.1 s) in real time in 40 ms
  chunks on its own socket, and receives the echo and the frames (as bench/relay.py does);
- **producer-fed**: a server-side producer sends the same audio in the same pacing on the
  producer socket (`avatar-relay.producer.v1`), the page only listens; the producer hears its
  events (started, first frame, completed) and acknowledges them.

Figures, per kind:

- hop latency: the relay's own `avatar_relay_hop_seconds` histogram (upstream message received ->
  written to the browser socket), and the load generator's **audio hop**: a chunk written by its
  sender (the page, or the producer) -> its echo read by the page: one trip through the relay,
  one socket in and one out, on the same clock;
- CPU per relayed message: the server's utime+stime over the playback / the media messages
  (audio up + audio echo down + frames down: the same set for both kinds, so the producer's own
  events and its second socket show up as cost);
- the most producer-fed sessions kept in real time, stepping through `REALTIME_STEPS`: every
  frame within TOLERANCE of the audio that allows it, every session finished (with each
  process's CPU share, to tell the server's limit from the load generator's).

The CPU rounds alternate the kinds at `CPU_SESSIONS` sessions, so both meet about the same
background load on the shared 2-core machine. Processes: emulator (speed 1.0), the relay (started
as `avatar-relay serve` starts it) and the load generator, each its own. Results:
bench/results/producers.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import free_port, logged_process, machine_busy  # noqa: E402
from bench.relaybench import loadclient, roles, stats  # noqa: E402
from bench.relaybench.load import HOP_METRIC, SETUP_CONCURRENCY  # noqa: E402
from bench.relaybench.verdicts import TOLERANCE  # noqa: E402

ME = [sys.executable, str(Path(__file__).resolve())]
RESULTS = ROOT / "bench" / "results" / "producers.json"
CPU_SESSIONS: Final = 50
CPU_ROUNDS: Final = 3
REALTIME_STEPS: Final = (100, 200, 300)
KINDS: Final = ("browser", "producer")


async def scrape_hops(base_url: str) -> stats.Histogram:
    """The relay's hop histogram from its /metrics."""
    import httpx

    async with httpx.AsyncClient(timeout=30) as http:
        text = (await http.get(base_url + "/metrics")).text
    return stats.parse_histogram(text, HOP_METRIC)


def hop_figures(before: stats.Histogram, after: stats.Histogram) -> dict[str, Any]:
    delta = stats.histogram_delta(before, after)
    return {
        "source": "server /metrics histogram (bucket-interpolated)",
        "count": int(delta[1][-1]) if delta[1] else 0,
        "p50_ms": stats.ms(stats.bucket_percentile(delta, 0.50)),
        "p99_ms": stats.ms(stats.bucket_percentile(delta, 0.99)),
    }


PRODUCER_SEQUENCED: Final = frozenset(range(0x92, 0x9A))


class Page:
    """The page of a session: the browser protocol, lean (as bench/relay.py's LeanRelay)."""

    def __init__(self) -> None:
        self.ws: Any = None
        self.seq = 0
        self.last_seq = 0
        self.acked = 0
        self.acker: asyncio.Task[None] | None = None

    async def open(self, url: str) -> None:
        from avatar_relay_client import browser_protocol as p

        self.ws = await _connect(url, p.SUBPROTOCOL)
        await self.ws.send(p.encode_client(p.Hello(0)))
        welcome = p.decode_server(await self.ws.recv())
        if not isinstance(welcome, p.Welcome):
            raise RuntimeError(f"expected WELCOME, got {welcome!r}")
        self.acker = asyncio.create_task(self._ack_timer())

    async def send_audio(self, pcm: bytes, end: bool) -> None:
        self.seq += 1
        await self.ws.send(loadclient.LEAN_HEAD.pack(0x02, 1 if end else 0, self.seq) + pcm)

    async def receive(self) -> tuple[int, bool]:
        ws = self.ws
        while True:
            data = await ws.recv()
            kind = data[0]
            if kind in loadclient.LEAN_SEQUENCED:
                seq = loadclient.LEAN_SEQ.unpack_from(data, 2)[0]
                if seq != self.last_seq + 1:
                    raise RuntimeError(f"page seq {seq} after {self.last_seq}")
                self.last_seq = seq
                if seq - self.acked >= loadclient.LeanRelay.ACK_EVERY:
                    await self._ack()
                return kind, bool(data[1] & 1)
            if kind == 0x87:
                await ws.send(b"\x06\x00" + data[2:6])
            elif kind in (0x89, 0x8A):
                raise RuntimeError(f"page got {data[:80]!r}")

    async def _ack(self) -> None:
        seq = self.last_seq
        await self.ws.send(loadclient.LEAN_HEAD.pack(0x04, 0, seq))
        self.acked = max(self.acked, seq)

    async def _ack_timer(self) -> None:
        while True:
            await asyncio.sleep(loadclient.LeanRelay.ACK_INTERVAL)
            if self.last_seq > self.acked:
                await self._ack()

    async def close(self, bye: bool) -> None:
        if self.acker is not None:
            self.acker.cancel()
        if bye:
            await self.ws.send(b"\x07\x00")
        await self.ws.close()


class LeanProducer:
    """A producer with the producer client's wire behaviour (HELLO, numbered AUDIO, ACK every
    10 events and every 250 ms, PONG, BYE) and none of its bookkeeping."""

    def __init__(self) -> None:
        self.ws: Any = None
        self.seq = 0
        self.last_seq = 0
        self.acked = 0
        self.events = 0
        self.tasks: list[asyncio.Task[None]] = []

    async def open(self, url: str) -> None:
        from avatar_relay_client import producer_protocol as pp

        self.ws = await _connect(url, pp.SUBPROTOCOL)
        await self.ws.send(pp.encode_producer(pp.Hello(0)))
        welcome = pp.decode_server(await self.ws.recv())
        if not isinstance(welcome, pp.Welcome):
            raise RuntimeError(f"expected WELCOME, got {welcome!r}")
        self.tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._ack_timer())]

    async def send_audio(self, pcm: bytes, end: bool) -> None:
        self.seq += 1
        await self.ws.send(loadclient.LEAN_HEAD.pack(0x12, 1 if end else 0, self.seq) + pcm)

    async def _read(self) -> None:
        ws = self.ws
        with contextlib.suppress(Exception):
            while True:
                data = await ws.recv()
                kind = data[0]
                if kind in PRODUCER_SEQUENCED:
                    self.last_seq = loadclient.LEAN_SEQ.unpack_from(data, 2)[0]
                    self.events += 1
                    if self.last_seq - self.acked >= loadclient.LeanRelay.ACK_EVERY:
                        await self._ack()
                elif kind == 0x9B:  # PING
                    await ws.send(b"\x16\x00" + data[2:6])

    async def _ack(self) -> None:
        seq = self.last_seq
        await self.ws.send(loadclient.LEAN_HEAD.pack(0x14, 0, seq))
        self.acked = max(self.acked, seq)

    async def _ack_timer(self) -> None:
        while True:
            await asyncio.sleep(loadclient.LeanRelay.ACK_INTERVAL)
            if self.last_seq > self.acked:
                await self._ack()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await self.ws.send(b"\x17\x00")  # BYE: the session ends for the page too
            await self.ws.close()


async def _connect(url: str, subprotocol: str) -> Any:
    from websockets.asyncio.client import connect
    from websockets.typing import Subprotocol

    return await connect(
        url,
        subprotocols=[Subprotocol(subprotocol)],
        compression=None,
        max_size=2**22,
        ping_interval=None,
    )


class Session:
    """One session of either kind: sends the speech in real time, times the page's receipts."""

    def __init__(self, kind: str, base_url: str, http: Any) -> None:
        self.kind = kind
        self.base_url = base_url
        self.http = http
        self.page = Page()
        self.producer: LeanProducer | None = None
        self.sent_at: list[float] = []
        self.audio_hops: list[float] = []
        self.lateness: list[float] = []
        self.up = 0
        self.down = 0
        self.finished = False
        self.error = ""

    async def open(self) -> None:
        body = {"audioSource": "producer"} if self.kind == "producer" else {}
        response = await self.http.post(self.base_url + "/v1/relay/sessions", json=body)
        answer = response.json()
        await self.page.open(answer["url"])
        if self.kind == "producer":
            self.producer = LeanProducer()
            await self.producer.open(answer["producer"]["url"])

    async def play(self, pcm: list[bytes], start: float, budget: float) -> None:
        receiver = asyncio.create_task(self._receive(start, len(pcm)))
        try:
            async with asyncio.timeout(budget):
                await self._send(pcm, start)
                await receiver
        except TimeoutError:
            self.error = self.error or "timeout"
        except Exception as exc:
            self.error = self.error or repr(exc)
        finally:
            receiver.cancel()
            with contextlib.suppress(BaseException):
                await receiver

    async def _send(self, pcm: list[bytes], start: float) -> None:
        last = len(pcm) - 1
        sender = self.producer if self.producer is not None else self.page
        for index, chunk in enumerate(pcm):
            delay = start + index * loadclient.CHUNK_SECONDS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.sent_at.append(time.perf_counter())
            await sender.send_audio(chunk, index == last)
            self.up += 1

    async def _receive(self, start: float, count: int) -> None:
        last = count - 1
        echoes = frames = 0
        while True:
            kind, end = await self.page.receive()
            now = time.perf_counter()
            self.down += 1
            if kind == 0x82:  # the echo of chunk `echoes`
                if echoes < len(self.sent_at):
                    self.audio_hops.append(now - self.sent_at[echoes])
                echoes += 1
            elif kind == loadclient.LEAN_FRAME_TYPE:
                due = start + min(frames + 1, last) * loadclient.CHUNK_SECONDS
                self.lateness.append(time.monotonic() - due)
                frames += 1
                if end:
                    self.finished = True
                    return

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                if self.producer is not None:
                    await self.producer.close()
                await self.page.close(bye=self.producer is None)

    @property
    def ok(self) -> bool:
        late = max(self.lateness, default=1e9)
        return self.finished and not self.error and late <= TOLERANCE


async def load(
    kind: str, base_url: str, sessions: int, server_pid: int, emulator_pid: int
) -> dict[str, Any]:
    import httpx

    pcm = loadclient.chunks()
    playback = len(pcm) * loadclient.CHUNK_SECONDS
    limits = httpx.Limits(max_connections=SETUP_CONCURRENCY)
    http = httpx.AsyncClient(timeout=30, limits=limits)
    everyone = [Session(kind, base_url, http) for _ in range(sessions)]
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def open_one(session: Session) -> None:
        async with gate:
            try:
                async with asyncio.timeout(30):
                    await session.open()
            except Exception as exc:
                session.error = f"open: {exc!r}"

    await asyncio.gather(*(open_one(s) for s in everyone))
    live = [s for s in everyone if not s.error]
    before = await scrape_hops(base_url)
    cpu0, emu0, me0 = (
        stats.cpu_seconds(server_pid),
        stats.cpu_seconds(emulator_pid),
        time.process_time(),
    )
    busy0, total0 = machine_busy()
    start = time.monotonic() + 0.5
    print("playing", file=sys.stderr, flush=True)  # `profile` samples from here on
    await asyncio.gather(
        *(
            s.play(pcm, start + (i / max(1, len(live))) * loadclient.CHUNK_SECONDS, playback + 30)
            for i, s in enumerate(live)
        )
    )
    wall = time.monotonic() - start
    cpu1, emu1, me1 = (
        stats.cpu_seconds(server_pid),
        stats.cpu_seconds(emulator_pid),
        time.process_time(),
    )
    busy1, total1 = machine_busy()
    cores = os.cpu_count() or 1
    machine_share = (busy1 - busy0) / (total1 - total0) * cores if total1 > total0 else 0.0
    after = await scrape_hops(base_url)
    rss = stats.rss_mib(server_pid)
    await asyncio.gather(*(s.close() for s in everyone))
    await http.aclose()
    messages = sum(s.up + s.down for s in live)
    server_share = (cpu1 - cpu0) / wall
    emulator_share = (emu1 - emu0) / wall
    loadgen_share = (me1 - me0) / wall
    hops = [h for s in live for h in s.audio_hops]
    lateness = [x for s in live for x in s.lateness]
    behind = [s for s in everyone if not s.ok]
    return {
        "kind": kind,
        "sessions": sessions,
        "sessions_ok": sessions - len(behind),
        "sustained": not behind,
        "playback_wall_seconds": round(wall, 2),
        "media_messages": messages,
        "producer_events": sum(s.producer.events for s in live if s.producer is not None),
        "server_cpu_seconds": round(cpu1 - cpu0, 2),
        "server_cpu_share": round(server_share, 3),
        "server_cpu_us_per_message": round((cpu1 - cpu0) / messages * 1e6, 2) if messages else None,
        "server_rss_mib": rss,
        "emulator_cpu_share": round(emulator_share, 3),
        "loadgen_cpu_share": round(loadgen_share, 3),
        "machine_cpu_share": round(machine_share, 3),
        # Everything else on the machine meanwhile (other people's work, the kernel): the whole
        # machine's busy cores less the three processes of the benchmark.
        "other_cpu_share": round(
            max(0.0, machine_share - server_share - emulator_share - loadgen_share), 3
        ),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "relay_hop": hop_figures(before, after),
        "audio_hop_ms": {
            "count": len(hops),
            "p50": stats.ms(stats.percentile(hops, 0.50)),
            "p99": stats.ms(stats.percentile(hops, 0.99)),
        },
        "frame_lateness_ms": {
            "p50": stats.ms(stats.percentile(lateness, 0.50)),
            "p99": stats.ms(stats.percentile(lateness, 0.99)),
            "max": stats.ms(max(lateness, default=0.0)),
        },
        "errors": sorted({s.error for s in everyone if s.error})[:5],
    }


def child(args: list[str], timeout: float) -> dict[str, Any]:
    return _child(ME, args, timeout)


def _child(me: list[str], args: list[str], timeout: float) -> dict[str, Any]:
    import subprocess

    out = subprocess.run(
        [*me, *args], capture_output=True, timeout=timeout, check=False, cwd=ROOT, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _median(runs: list[dict[str, Any]], *path: str) -> float | None:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        if value is not None:
            values.append(value)
    return statistics.median(values) if values else None


def orchestrate(cpu_sessions: int, rounds: int, realtime_steps: tuple[int, ...]) -> None:
    logs = Path(tempfile.mkdtemp(prefix="producers-bench-"))
    print(f"server logs: {logs}", file=sys.stderr)
    emulator_port, server_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    emulator_args = [*roles.ME, "emulator", str(emulator_port)]
    spec = {
        "kind": "relay",
        "emulator_url": emulator_url,
        "port": server_port,
        "pool": 0,
        "compression": False,
        "redis_url": None,
    }
    server_args = [*roles.ME, "server", json.dumps(spec)]
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    realtime: list[dict[str, Any]] = []
    with (
        logged_process(emulator_args, emulator_port, logs / "emulator.log") as emulator,
        logged_process(server_args, server_port, logs / "relay.log") as server,
    ):
        url = f"http://127.0.0.1:{server_port}"
        for round_ in range(rounds):
            for kind in KINDS if round_ % 2 == 0 else tuple(reversed(KINDS)):
                background = roles.wait_quiet()
                args = ["load", kind, url, str(cpu_sessions), str(server.pid), str(emulator.pid)]
                run = child(args, 300)
                run["background_cpu_before"] = background
                print(f"{kind} round {round_}: {json.dumps(run)}", file=sys.stderr)
                runs[kind].append(run)
                time.sleep(2.0)
        for n in realtime_steps:
            for attempt in (1, 2):  # other work on the shared machine can starve one run
                background = roles.wait_quiet()
                args = ["load", "producer", url, str(n), str(server.pid), str(emulator.pid)]
                step = child(args, 600)
                step["attempt"] = attempt
                step["background_cpu_before"] = background
                print(f"producer N={n}: {json.dumps(step)}", file=sys.stderr)
                time.sleep(2.0)
                if step["sustained"]:
                    break
            realtime.append(step)
            if not step["sustained"]:
                break
    summary: dict[str, Any] = {"cpu_sessions": cpu_sessions, "rounds": rounds}
    for kind in KINDS:
        summary[kind] = {
            "server_cpu_us_per_message_median": _median(runs[kind], "server_cpu_us_per_message"),
            "audio_hop_p50_ms_median": _median(runs[kind], "audio_hop_ms", "p50"),
            "audio_hop_p99_ms_median": _median(runs[kind], "audio_hop_ms", "p99"),
            "relay_hop_p99_ms_median": _median(runs[kind], "relay_hop", "p99_ms"),
            "all_sustained": all(run["sustained"] for run in runs[kind]),
        }
    mine = summary["producer"]["server_cpu_us_per_message_median"]
    theirs = summary["browser"]["server_cpu_us_per_message_median"]
    summary["cpu_per_message_ratio_producer_vs_browser"] = (
        round(mine / theirs, 2) if mine and theirs else None
    )
    summary["max_realtime_producer_sessions"] = max(
        (step["sessions"] for step in realtime if step["sustained"]), default=0
    )
    summary["realtime_steps"] = [
        {
            key: step[key]
            for key in (
                "sessions",
                "sustained",
                "sessions_ok",
                "server_cpu_share",
                "loadgen_cpu_share",
                "emulator_cpu_share",
                "machine_cpu_share",
                "other_cpu_share",
                "background_cpu_before",
            )
        }
        | {"frame_lateness_p99_ms": step["frame_lateness_ms"]["p99"]}
        for step in realtime
    ]
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_start": list(os.getloadavg()),
        },
        "setup": {
            "audio": "tests/fixtures/speech_16000.pcm, 12.1 s, 16 kHz, 40 ms chunks in real time",
            "emulator": "speed 1.0 (frames paced in real time), own process",
            "server": "one relay process, started as `avatar-relay serve` starts it (uvloop)",
            "load_generator": "one process; lean clients with the Python clients' wire behaviour"
            " (ACK every 10 messages and every 250 ms, PONG, BYE)",
            "browser_kind": "the page sends the audio and receives echo + frames",
            "producer_kind": "a producer sends the audio on the producer socket, the page"
            " receives echo + frames, the producer its events",
            "audio_hop": "chunk written by its sender -> its echo read by the page (loadgen clock)",
            "relay_hop": "upstream message received -> written to the browser socket (/metrics)",
            "cpu_per_message": "server utime+stime over the playback / (audio up + echo down +"
            " frames down), the same set for both kinds",
            "sustained_rule": f"every frame within {TOLERANCE * 1000:.0f} ms of the audio"
            " that allows it, every session finished",
            "cores_shared": "emulator, server and load generator share the machine's cores",
        },
        "runs": runs,
        "realtime": realtime,
        "summary": summary,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def profile(sessions: int, seconds: int, out_dir: Path) -> dict[str, Any]:
    """py-spy on the emulator and the load generator at `sessions` producer-fed sessions."""
    from bench.relaybench import spy

    logs = Path(tempfile.mkdtemp(prefix="producers-profile-"))
    emulator_port, server_port = free_port(), free_port()
    spec = {
        "kind": "relay",
        "emulator_url": f"http://127.0.0.1:{emulator_port}",
        "port": server_port,
        "pool": 0,
        "compression": False,
        "redis_url": None,
    }
    with (
        logged_process(
            [*roles.ME, "emulator", str(emulator_port)], emulator_port, logs / "emulator.log"
        ) as emulator,
        logged_process(
            [*roles.ME, "server", json.dumps(spec)], server_port, logs / "relay.log"
        ) as server,
    ):
        url = f"http://127.0.0.1:{server_port}"
        load_args = [
            *ME,
            "load",
            "producer",
            url,
            str(sessions),
            str(server.pid),
            str(emulator.pid),
        ]
        return spy.profile_run(load_args, emulator.pid, sessions, seconds, out_dir)


def compare(baseline: Path, sessions: int, rounds: int) -> dict[str, Any]:
    """Before/after in one run: the emulator and the load generator of `baseline` (a copy of an
    earlier tree: `git archive REV | tar -x -C DIR`) against this tree's, each pair behind its
    own relay (this tree's), rounds alternating. Figures: CPU per session-second of each process
    (ms of CPU per second of one session's playback)."""
    logs = Path(tempfile.mkdtemp(prefix="producers-compare-"))
    trees = {"baseline": baseline, "current": ROOT}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    with contextlib.ExitStack() as stack:
        up: dict[str, tuple[list[str], str, int, int]] = {}
        for name, tree in trees.items():
            relay_py = [sys.executable, str(tree / "bench" / "relay.py")]
            emulator_port, server_port = free_port(), free_port()
            emulator = stack.enter_context(
                logged_process(
                    [*relay_py, "emulator", str(emulator_port)],
                    emulator_port,
                    logs / f"emulator-{name}.log",
                )
            )
            spec = {
                "kind": "relay",
                "emulator_url": f"http://127.0.0.1:{emulator_port}",
                "port": server_port,
                "pool": 0,
                "compression": False,
                "redis_url": None,
            }
            server = stack.enter_context(
                logged_process(
                    [*roles.ME, "server", json.dumps(spec)], server_port, logs / f"relay-{name}.log"
                )
            )
            me = [sys.executable, str(tree / "bench" / "producers.py")]
            up[name] = (me, f"http://127.0.0.1:{server_port}", server.pid, emulator.pid)
        for round_ in range(rounds):
            for name in trees if round_ % 2 == 0 else tuple(reversed(trees)):
                me, url, server_pid, emulator_pid = up[name]
                background = roles.wait_quiet()
                args = ["load", "producer", url, str(sessions), str(server_pid), str(emulator_pid)]
                run = _child(me, args, 600)
                run["background_cpu_before"] = background
                per = {
                    f"{process}_cpu_ms_per_session_second": round(
                        run[f"{process}_cpu_share"] / sessions * 1000, 3
                    )
                    for process in ("emulator", "loadgen", "server")
                }
                run.update(per)
                print(f"{name} round {round_}: {json.dumps(per)}", file=sys.stderr)
                results[name].append(run)
                time.sleep(2.0)
    summary: dict[str, Any] = {"sessions": sessions, "rounds": rounds}
    for process in ("emulator", "loadgen", "server"):
        key = f"{process}_cpu_ms_per_session_second"
        before, after = _median(results["baseline"], key), _median(results["current"], key)
        summary[process] = {
            "baseline_median": before,
            "current_median": after,
            "ratio": round(after / before, 3) if before and after else None,
        }
    summary["sustained"] = {name: [r["sustained"] for r in runs] for name, runs in results.items()}
    summary["other_cpu_share"] = {
        name: [r["other_cpu_share"] for r in runs] for name, runs in results.items()
    }
    return {"summary": summary, "runs": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", nargs="?", default="all")
    parser.add_argument("args", nargs="*")
    parser.add_argument("--cpu-sessions", type=int, default=CPU_SESSIONS)
    parser.add_argument("--rounds", type=int, default=CPU_ROUNDS)
    parser.add_argument("--realtime-steps", default=",".join(map(str, REALTIME_STEPS)))
    parser.add_argument("--sessions", type=int, default=150, help="profile: sessions")
    parser.add_argument("--seconds", type=int, default=9, help="profile: seconds sampled")
    parser.add_argument("--baseline", default="", help="compare: a copy of an earlier tree")
    parser.add_argument("--out", default="/tmp/producers-compare.json", help="compare: output")
    parser.add_argument("--out-dir", default="/tmp/producers-profile", help="profile: output")
    ns = parser.parse_args()
    args: list[str] = ns.args
    if ns.role == "compare":
        report = compare(Path(ns.baseline), ns.sessions, ns.rounds)
        Path(ns.out).write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report["summary"], indent=2))
    elif ns.role == "profile":
        print(json.dumps(profile(ns.sessions, ns.seconds, Path(ns.out_dir)), indent=2))
    elif ns.role == "load":
        out = asyncio.run(load(args[0], args[1], int(args[2]), int(args[3]), int(args[4])))
        print(json.dumps(out))
    else:
        steps = tuple(int(n) for n in ns.realtime_steps.split(",") if n)
        orchestrate(ns.cpu_sessions, ns.rounds, steps)


if __name__ == "__main__":
    main()
