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

Other roles: `profile` (py-spy on the emulator and the load generator while producer-fed
sessions play) and `compare --baseline DIR` (an earlier tree's emulator and load generator
against this tree's, at the same time); bench/README.md shows both.
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

ROOT: Final = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import free_port, logged_process, run_on_deployed_loop  # noqa: E402
from bench.relaybench import loadclient, roles  # noqa: E402
from bench.relaybench.producerload import load  # noqa: E402
from bench.relaybench.verdicts import TOLERANCE  # noqa: E402

ME = [sys.executable, str(Path(__file__).resolve())]
RESULTS = ROOT / "bench" / "results" / "producers.json"
CPU_SESSIONS: Final = 50
CPU_ROUNDS: Final = 3
REALTIME_STEPS: Final = (100, 200, 300)
KINDS: Final = ("browser", "producer")


def relay_spec(emulator_url: str, port: int) -> dict[str, Any]:
    """The relay server the benchmark starts (the "server" role): in-process store, no token
    pool, compression off, as `avatar-relay serve` runs by default."""
    return {
        "kind": "relay",
        "emulator_url": emulator_url,
        "port": port,
        "pool": 0,
        "compression": False,
        "redis_url": None,
    }


def child(args: list[str], timeout: float) -> dict[str, Any]:
    return _child(ME, args, timeout)


def _child(me: list[str], args: list[str], timeout: float) -> dict[str, Any]:
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


def orchestrate(
    cpu_sessions: int, rounds: int, realtime_steps: tuple[int, ...], results: Path = RESULTS
) -> None:
    logs = Path(tempfile.mkdtemp(prefix="producers-bench-"))
    print(f"server logs: {logs}", file=sys.stderr)
    emulator_port, server_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    emulator_args = [*roles.ME, "emulator", str(emulator_port)]
    spec = relay_spec(emulator_url, server_port)
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
            "load_generator": "one process on uvloop; lean clients with the Python clients' wire"
            f" behaviour (ACK every {loadclient.LeanRelay.ACK_EVERY} messages and every"
            f" {loadclient.LeanRelay.ACK_INTERVAL:g} s, PONG, BYE), no task per session"
            " (sans-I/O sockets, one pacing clock, one ACK timer: relaybench/producerload.py)",
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
    results.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def profile(sessions: int, seconds: int, out_dir: Path) -> dict[str, Any]:
    """py-spy on the emulator and the load generator at `sessions` producer-fed sessions."""
    from bench.relaybench import spy

    logs = Path(tempfile.mkdtemp(prefix="producers-profile-"))
    emulator_port, server_port = free_port(), free_port()
    spec = relay_spec(f"http://127.0.0.1:{emulator_port}", server_port)
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
    own relay (this tree's), `sessions` each, both loads at the same time. Figures: CPU per
    session-second of each process (ms of CPU per second of audio one session plays)."""
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
            spec = relay_spec(f"http://127.0.0.1:{emulator_port}", server_port)
            server = stack.enter_context(
                logged_process(
                    [*roles.ME, "server", json.dumps(spec)], server_port, logs / f"relay-{name}.log"
                )
            )
            me = [sys.executable, str(tree / "bench" / "producers.py")]
            up[name] = (me, f"http://127.0.0.1:{server_port}", server.pid, emulator.pid)
        for round_ in range(rounds):
            # Both at once: whatever else runs on the shared machine meets both alike.
            background = roles.wait_quiet()
            loads = {}
            for name in trees:
                me, url, server_pid, emulator_pid = up[name]
                args = ["load", "producer", url, str(sessions), str(server_pid), str(emulator_pid)]
                loads[name] = subprocess.Popen(
                    [*me, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
                )
            for name, load_process in loads.items():
                out, err = load_process.communicate(timeout=600)
                if load_process.returncode != 0:
                    raise RuntimeError(f"{name} load failed: {err.decode()[-2000:]}")
                run: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
                run["background_cpu_before"] = background
                # Per second of audio played (fixed), not of wall time, which a starved run
                # stretches.
                audio = sessions * len(loadclient.chunks()) * loadclient.CHUNK_SECONDS
                wall = run["playback_wall_seconds"]
                per = {
                    f"{process}_cpu_ms_per_session_second": round(
                        run[f"{process}_cpu_share"] * wall / audio * 1000, 3
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
    parser.add_argument("--results", default=str(RESULTS), help="the run's JSON")
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
        out = run_on_deployed_loop(load(args[0], args[1], int(args[2]), int(args[3]), int(args[4])))
        print(json.dumps(out))
    else:
        steps = tuple(int(n) for n in ns.realtime_steps.split(",") if n)
        orchestrate(ns.cpu_sessions, ns.rounds, steps, Path(ns.results))


if __name__ == "__main__":
    main()
