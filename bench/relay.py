"""Relay benchmark (a script, not a test): `uv run --frozen python bench/relay.py`.

Plays tests/fixtures/speech_16000.pcm (12.1 s) in real time, in 40 ms chunks, on N concurrent
sessions against the emulator at speed 1.0, and measures, in one run, our relay and a bare
pass-through forwarder (the floor) side by side; bench/README.md says what each figure means.
The parts are in bench/relaybench/. Every client offers permessage-deflate as Chromium does; the
emulator stamps each frame with its send time, so transit (emulator send -> client receive) is
measured for relay and floor alike.

Run: ttff (cold and warm upstream) -> CPU per message at a fixed 50 sessions (floor, relay,
relay with RELAY_COMPRESSION on; interleaved rounds) -> steps (floor and relay back to back at
each N) -> instances (1 then 2 relays behind the shipped nginx with Redis) -> permessage-deflate
per message. Results: bench/results/relay.json. `bench/relay.py instances [--instance-cpu CORES]`
runs the instances section alone (each relay under a CPU budget: bench/relaybench/cpucap.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import free_port, logged_process, run_on_deployed_loop  # noqa: E402
from bench.relaybench import cpucap, deflate, report, roles, servers  # noqa: E402
from bench.relaybench.load import Target, load, ttff  # noqa: E402
from bench.relaybench.loadclient import LeanRelay  # noqa: E402
from bench.relaybench.scale import run_scale  # noqa: E402
from bench.relaybench.verdicts import GROWTH_LIMIT, TOLERANCE  # noqa: E402

RESULTS: Final = ROOT / "bench" / "results" / "relay.json"
STEPS: Final = (50, 100, 200)
SCALE_STEPS: Final = (100, 150, 200, 300)
INSTANCES: Final = (1, 2)
TTFF_SESSIONS: Final = 10
CPU_SESSIONS: Final = 50  # a load both servers sustain easily: CPU per message is compared here
CPU_ROUNDS: Final = 3
WARM_POOL: Final = 4
# relay-noecho: the relay with `audioEcho: false` sessions (the client yields its own audio).
VARIANTS: Final = ("floor", "relay", "relay+deflate", "relay-noecho")


def _server_kind(variant: str) -> str:
    return variant.split("+")[0].split("@")[0].removesuffix("-noecho")


def run_ttff(kind: str, emulator_url: str, logs: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, pool in (("cold", 0), ("warm", WARM_POOL)):
        port = free_port()
        with roles.server(kind, emulator_url, port, logs / f"{kind}-{label}.log", pool=pool):
            time.sleep(1.0)  # a warm pool fills before the first session
            url = f"http://127.0.0.1:{port}"
            out[label] = roles.child(["ttff", kind, url, str(TTFF_SESSIONS)], 120)
            print(f"{kind} ttff {label}: {out[label]}", file=sys.stderr)
    return out


def _target(
    kind: str, port: int, pid: int, emulator_pid: int, sessions: int, echo: bool = True
) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    return {
        "echo": echo,
        "kind": kind,
        "url": base,
        "sessions": sessions,
        "server_pids": [pid],
        "emulator_pid": emulator_pid,
        "metrics_urls": [base + "/metrics"],
    }


def run_steps(
    emulator_url: str,
    emulator_pid: int,
    steps: tuple[int, ...],
    rounds: int,
    logs: Path,
    baseline: Path | None = None,
    chosen: tuple[str, ...] = VARIANTS,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """All servers stay up; rounds and steps interleave them, so they meet about the same
    background load. A server stops at its first N that is not real time twice."""
    results: dict[str, list[dict[str, Any]]] = {"floor": [], "relay": []}
    variants = (*chosen, "relay@baseline") if baseline else chosen
    cpu_runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with contextlib.ExitStack() as stack:
        up: dict[str, tuple[int, int]] = {}
        for variant in variants:
            port = free_port()
            kind = _server_kind(variant)
            proc = stack.enter_context(
                roles.server(
                    kind,
                    emulator_url,
                    port,
                    logs / f"{variant}.log",
                    compression=variant.endswith("+deflate"),
                    checkout=baseline if variant.endswith("@baseline") else None,
                )
            )
            up[variant] = (port, proc.pid)
        for round_ in range(rounds):
            for variant in variants:
                port, pid = up[variant]
                kind = _server_kind(variant)
                echo = not variant.endswith("-noecho")
                target = _target(kind, port, pid, emulator_pid, CPU_SESSIONS, echo)
                step = roles.load_step(target, until_real_time=False)
                print(f"{variant} cpu round {round_}: {_brief(step)}", file=sys.stderr)
                cpu_runs[variant].append(step)
        live = ["floor", "relay"]
        for n in steps:
            for kind in list(live):
                port, pid = up[kind]
                step = roles.load_step(_target(kind, port, pid, emulator_pid, n))
                print(f"{kind} N={n}: {_brief(step)}", file=sys.stderr)
                results[kind].append(step)
                if not step["verdict"]["real_time"]:
                    live.remove(kind)
            if not live:
                break
    return results, cpu_runs


def _brief(step: dict[str, Any]) -> str:
    return json.dumps(
        {
            "n": step["sessions"],
            "verdict": step["verdict"],
            "cpu_us": step["server_cpu_us_per_message"],
            "transit": step["transit_ms"],
            "lag": step["server_event_loop_lag_ms"]["p99"],
            "loadgen": step["load_generator"]["cpu_share"],
            "attempt": step["attempt"],
            "contended": step["contended"],
            "unaccounted": step["unaccounted_cpu_share"],
        }
    )


def _machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "shared": "the 2 cores are shared with other engineers' work (tests, builds);"
        " each step waits (up to 15 s) for the machine to be nearly idle and records the"
        " background load before it and the CPU nobody here used during it"
        " (unaccounted_cpu_share)",
    }


@contextlib.contextmanager
def _emulator() -> Iterator[tuple[str, int, Path]]:
    """The emulator in its own process for one run: its URL, its pid, the run's log directory."""
    logs = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    print(f"server logs: {logs}", file=sys.stderr)
    port = free_port()
    with logged_process([*roles.ME, "emulator", str(port)], port, logs / "emulator.log") as emu:
        yield f"http://127.0.0.1:{port}", emu.pid, logs


def orchestrate_instances(args: argparse.Namespace) -> None:
    """The instances step alone (`instances`), optionally with a CPU budget per instance."""
    scale_steps = tuple(int(n) for n in args.scale_steps.split(",") if n)
    started = time.time()
    load_at_start = list(os.getloadavg())
    with _emulator() as (url, emulator_pid, logs):
        scaled = run_scale(url, emulator_pid, scale_steps, logs, INSTANCES, args.instance_cpu)
    result = {
        "machine": _machine(),
        "setup": {
            "what": "1, then 2 relay instances behind the shipped deploy/nginx.conf (real nginx)"
            " with the Redis store; sessions created through nginx, sockets routed by it; each"
            " step the speech fixture in real time on N sessions (bench/README.md)",
            "instance_cpu": args.instance_cpu or None,
            "instance_cpu_means": "each relay process under a CFS quota of this many cores"
            f" (period {cpucap.PERIOD_US} us; bench/relaybench/cpucap.py), standing in for"
            " the core each instance would have on a bigger host; the emulator, the load"
            " generator, nginx and Redis are not limited",
            "load_average_at_start": load_at_start,
            "scale_steps": list(scale_steps),
            "wall_seconds": round(time.time() - started),
        },
        "instances": report.scale_summary(scaled),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result["instances"].items() if k != "steps"}, indent=2))


def orchestrate(args: argparse.Namespace) -> None:
    steps = tuple(int(n) for n in args.steps.split(",") if n)
    scale_steps = tuple(int(n) for n in args.scale_steps.split(",") if n)
    started = time.time()
    load_at_start = list(os.getloadavg())
    with _emulator() as (url, emulator_pid, logs):
        ttff_results = (
            {} if args.skip_ttff else {k: run_ttff(k, url, logs) for k in ("floor", "relay")}
        )
        baseline = Path(args.baseline) if args.baseline else None
        chosen = tuple(args.fixed_variants.split(","))
        stepped, cpu_runs = run_steps(
            url, emulator_pid, steps, args.cpu_rounds, logs, baseline, chosen
        )
        scaled = (
            run_scale(url, emulator_pid, scale_steps, logs, INSTANCES, args.instance_cpu)
            if scale_steps
            else {}
        )
    micro = deflate.measure()
    cpu = {v: report.fixed_load(cpu_runs.get(v, []), CPU_SESSIONS) for v in VARIANTS}
    floor = report.kind_result(ttff_results.get("floor", {}), stepped["floor"], cpu["floor"])
    relay = report.kind_result(ttff_results.get("relay", {}), stepped["relay"], cpu["relay"])
    result = {
        "machine": _machine(),
        "setup": {
            "audio": "tests/fixtures/speech_16000.pcm, 12.1 s, 16 kHz, 40 ms chunks in real time",
            "emulator": "speed 1.0 (frames paced in real time), own process, frames stamped"
            " with their send time (transit = client receive - emulator send, same clock)",
            "server": "one process, uvicorn as `avatar-relay serve` configures it (uvloop);"
            " RELAY_COMPRESSION off unless the variant says +deflate",
            "clients": "each offers permessage-deflate as Chromium does"
            " (client_max_window_bits); relay sessions speak the full protocol (LeanRelay:"
            f" HELLO, AUDIO with seqs, ACK every {LeanRelay.ACK_EVERY} messages and"
            f" {LeanRelay.ACK_INTERVAL:g} s, PONG, BYE), floor sessions a one-byte tag",
            "load_generator": "one process (uvloop not used), its CPU and event-loop lag"
            " measured; `bottleneck` says when it, not the server, may have set the pace",
            "cores_shared": "emulator, server(s), nginx, Redis and load generator share the"
            " machine's 2 cores with each other and with other engineers' work",
            "verdicts": f"kept up (loose): every session finished, p99 frame lateness <="
            f" {TOLERANCE * 1000:.0f} ms; real time (strict): every frame <="
            f" {TOLERANCE * 1000:.0f} ms behind the audio that allows it and no session's"
            f" lateness grew over {GROWTH_LIMIT * 1000:.0f} ms (last quarter vs first)",
            "cpu_per_message": "server utime+stime over the playback / media messages"
            " (client audio up + audio echo down + frames down; relay-noecho: a marker per"
            " conversation instead of the echo)",
            "audio_echo": "relay-noecho: the relay with `audioEcho: false` sessions, same"
            " server build and load, interleaved with the other fixed-load rounds",
            "hop": "upstream message in hand -> written to the browser socket (in-process)",
            "event_loop_lag": "how late a timer due every 50 ms fired (server: /metrics"
            " avatar_relay_event_loop_lag_seconds; load generator: the same monitor)",
            "load_average_at_start": load_at_start,
            "steps": list(steps),
            "scale_steps": list(scale_steps),
            "cpu_rounds": args.cpu_rounds,
            "nice": args.nice,
            "wall_seconds": None,
        },
        "floor": floor,
        "relay": relay,
        "summary": report.summary(floor, relay),
        "compression": report.compression_summary(cpu["relay"], cpu["relay+deflate"], micro),
        "audio_echo": report.echo_summary(cpu["relay"], cpu["relay-noecho"], cpu["floor"]),
        "relay_noecho": {"cpu_at_fixed_load": cpu["relay-noecho"]},
        "instances": report.scale_summary(scaled),
    }
    if args.baseline:
        before = report.fixed_load(cpu_runs["relay@baseline"], CPU_SESSIONS)
        result["baseline"] = {
            "checkout": args.baseline,
            "relay_cpu_us_per_message": {
                "baseline": before["server_cpu_us_per_message_median"],
                "now": cpu["relay"]["server_cpu_us_per_message_median"],
                "floor": cpu["floor"]["server_cpu_us_per_message_median"],
            },
            "cpu_at_fixed_load": before,
        }
    result["setup"]["wall_seconds"] = round(time.time() - started)
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    brief = {k: result[k] for k in ("summary",)}
    brief["compression"] = {k: v for k, v in result["compression"].items() if k != "runs_on"}
    brief["audio_echo"] = result["audio_echo"]
    brief["instances"] = {k: v for k, v in result["instances"].items() if k != "steps"}
    if "baseline" in result:
        brief["baseline"] = result["baseline"]["relay_cpu_us_per_message"]
    print(json.dumps(brief, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("role", nargs="?", default="all")
    parser.add_argument("args", nargs="*")
    parser.add_argument("--steps", default=",".join(map(str, STEPS)))
    parser.add_argument("--scale-steps", default=",".join(map(str, SCALE_STEPS)))
    parser.add_argument("--cpu-rounds", type=int, default=CPU_ROUNDS)
    parser.add_argument(
        "--instance-cpu",
        type=float,
        default=0.0,
        help="instances step: each relay instance's CPU budget in cores (0: none)",
    )
    parser.add_argument("--skip-ttff", action="store_true")
    parser.add_argument(
        "--fixed-variants",
        default=",".join(VARIANTS),
        help="servers in the fixed-load rounds (floor and relay at least)",
    )
    parser.add_argument(
        "--baseline",
        default="",
        help="a copy of an earlier tree (git archive REV | tar -x -C DIR): its relay joins the"
        " fixed-load rounds, for a before/after figure in one run",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling priority of the run and every process it starts (negative: ahead of"
        " other work on a shared machine; needs root)",
    )
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--kind", default="relay", help="profile: relay or floor")
    parser.add_argument("--sessions", type=int, default=100, help="profile: sessions")
    parser.add_argument("--native", action="store_true", help="profile: native frames too")
    ns = parser.parse_args()
    args: list[str] = ns.args
    if ns.nice:
        os.setpriority(os.PRIO_PROCESS, 0, ns.nice)  # children inherit it
    if ns.role == "emulator":
        run_on_deployed_loop(servers.run_emulator(int(args[0])))
    elif ns.role == "server":
        spec = json.loads(args[0])
        settings = servers.server_settings(
            spec["emulator_url"],
            spec["port"],
            spec["pool"],
            compression=spec["compression"],
            redis_url=spec["redis_url"],
        )
        servers.run_server(spec["kind"], settings)
    elif ns.role == "load":
        print(json.dumps(asyncio.run(load(Target.from_json(json.loads(args[0]))))))
    elif ns.role == "ttff":
        print(json.dumps(asyncio.run(ttff(args[0], args[1], int(args[2])))))
    elif ns.role == "profile":
        from bench.relaybench.profile import profile

        done = profile(ns.kind, ns.sessions, Path(ns.out), native=ns.native)
        print(json.dumps(done, indent=2))
    elif ns.role == "profile-summary":
        from bench.relaybench.profile import summarize

        # args: collapsed stacks (py-spy raw) per label, as LABEL=PATH; written to --out
        summary = {k: summarize(Path(v)) for k, v in (a.split("=", 1) for a in args)}
        Path(ns.out).write_text(json.dumps(summary, indent=2) + "\n")
    elif ns.role == "instances":
        orchestrate_instances(ns)
    elif ns.role == "deflate":
        print(json.dumps(deflate.measure(), indent=2))
    else:
        orchestrate(ns)


if __name__ == "__main__":
    main()
