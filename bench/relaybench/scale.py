"""Every core: one relay process uses one core, so a machine is used whole by several instances
behind the shipped deploy/nginx.conf with the Redis store (the supported way; no home-made
balancer). This step runs 1, then 2 instances on this host behind a real nginx and a real Redis,
and finds the most sessions each keeps in strict real time.

With `instance_cpu` (cores), each relay process runs under that CPU budget (`cpucap.py`, as a
container's CPU limit would): on a host too small for an instance per core, the step can still
show sessions growing with instances, each instance's budget standing in for its core."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import (
    find_nginx,
    free_port,
    nginx_args,
    process,
    redis_args,
    shipped_nginx_config,
)
from bench.relaybench import roles
from bench.relaybench.cpucap import cpu_budget, throttled
from bench.relaybench.stats import children


def run_scale(
    emulator_url: str,
    emulator_pid: int,
    steps: tuple[int, ...],
    logs: Path,
    counts: tuple[int, ...],
    instance_cpu: float = 0.0,
) -> dict[int, list[dict[str, Any]]]:
    nginx = find_nginx()
    out: dict[int, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="relay-scale-") as tmp:
        workdir = Path(tmp)
        redis_port = free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        redis_log = (logs / "redis.log").open("ab")
        with (
            redis_log,
            process(redis_args(redis_port, workdir), redis_port, stdout=redis_log) as redis,
        ):
            for count in counts:
                out[count] = _instances(
                    count,
                    nginx,
                    emulator_url,
                    emulator_pid,
                    redis_url,
                    redis.pid,
                    steps,
                    logs,
                    workdir,
                    instance_cpu,
                )
    return out


def _instances(
    count: int,
    nginx: str,
    emulator_url: str,
    emulator_pid: int,
    redis_url: str,
    redis_pid: int,
    steps: tuple[int, ...],
    logs: Path,
    workdir: Path,
    instance_cpu: float,
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        ports = [free_port() for _ in range(count)]
        pids = []
        groups = []
        for index, port in enumerate(ports):
            proc = stack.enter_context(
                roles.server(
                    "relay",
                    emulator_url,
                    port,
                    logs / f"scale-{count}-{index}.log",
                    redis_url=redis_url,
                )
            )
            pids.append(proc.pid)
            if instance_cpu:
                groups.append(
                    stack.enter_context(cpu_budget(proc.pid, instance_cpu, f"{count}-{index}"))
                )
        nginx_port = free_port()
        conf = shipped_nginx_config(workdir, nginx_port, [f"127.0.0.1:{port}" for port in ports])
        nginx_log = stack.enter_context((logs / f"nginx-{count}.log").open("ab"))
        proxy = stack.enter_context(
            process(nginx_args(nginx, conf), nginx_port, stdout=nginx_log, stderr=nginx_log)
        )
        nginx_pids = [proxy.pid, *children(proxy.pid)]
        for n in steps:
            before = [throttled(group) for group in groups]
            step = roles.load_step(
                {
                    "kind": "relay",
                    "url": f"http://127.0.0.1:{nginx_port}",
                    "sessions": n,
                    "server_pids": pids,
                    "emulator_pid": emulator_pid,
                    "metrics_urls": [f"http://127.0.0.1:{port}/metrics" for port in ports],
                    "other_pids": {"nginx": nginx_pids, "redis": [redis_pid]},
                }
            )
            step["instances"] = count
            step["instance_cpu"] = instance_cpu or None
            if groups:
                step["throttled"] = [
                    {k: round(after[k] - was[k], 3) for k in after}
                    for was, after in zip(before, (throttled(g) for g in groups), strict=True)
                ]
            print(f"scale {count} instances N={n}: {step['verdict']}", file=sys.stderr)
            results.append(step)
            if not step["verdict"]["real_time"]:
                break
    return results
