"""What both benchmarks need to run servers in their own processes on loopback."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Return once something listens on `port`; fail fast if `proc` died first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port}")


@contextlib.contextmanager
def process(args: list[str], port: int, **popen: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A child process serving on `port`, terminated (then killed) when the block ends."""
    proc: subprocess.Popen[bytes] = subprocess.Popen(args, **popen)
    try:
        wait_port(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def logged_process(args: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`process` with stdout and stderr appended to `log`."""
    with log.open("ab") as sink, process(args, port, stdout=sink, stderr=sink) as proc:
        yield proc


def find_nginx() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if found is None:
        raise SystemExit("nginx not found (scripts/ensure-system-deps installs it)")
    return found


def shipped_nginx_config(workdir: Path, port: int, instances: list[str]) -> Path:
    """deploy/nginx.conf as shipped, with only what a local run must change: the instances'
    addresses, the listening port, the pid file, writable temp paths, and the access log (one
    line per request; sent to a file in `workdir` instead of a terminal)."""
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    servers = "".join(f"server {address};\n        " for address in instances)
    conf, count = re.subn(r"server app:8080;\n\s*", servers, conf)
    if count != 2:
        raise RuntimeError("deploy/nginx.conf no longer has its two upstream blocks")
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{port};")
    conf = conf.replace("pid /tmp/avatar-relay-nginx.pid;", f"pid {workdir}/nginx.pid;")
    conf = conf.replace("access_log /dev/stdout;", f"access_log {workdir}/access.log;")
    temp = "".join(
        f"    {name}_temp_path {workdir}/{name};\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = conf.replace("http {\n", "http {\n" + temp, 1)
    path = workdir / "nginx.conf"
    path.write_text(conf)
    return path


def nginx_args(nginx: str, conf: Path) -> list[str]:
    folder = str(conf.parent)
    return [nginx, "-c", str(conf), "-p", folder, "-e", f"{folder}/error.log", "-g", "daemon off;"]


def redis_args(port: int, workdir: Path) -> list[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found (scripts/ensure-system-deps installs it)")
    return [
        binary,
        *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        *("--dir", str(workdir)),
    ]


def machine_busy() -> tuple[float, float]:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return float(sum(fields) - idle), float(sum(fields))


def machine_load(seconds: float) -> float:
    """Cores busy, on average, over the next `seconds` (whatever is running)."""
    busy0, total0 = machine_busy()
    time.sleep(seconds)
    busy1, total1 = machine_busy()
    cores = os.cpu_count() or 1
    return (busy1 - busy0) / max(1.0, total1 - total0) * cores
