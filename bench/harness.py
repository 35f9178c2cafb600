"""What both benchmarks need to run servers in their own processes on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_NGINX = ROOT / "deploy" / "nginx.conf"


def run_on_deployed_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on the event loop the relay is deployed on (app/server.py: uvloop when it is
    installed, as uvicorn[standard] installs it), for the benchmark's own processes (the
    emulator, bench/producers.py's load generator)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


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


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )


def find_nginx() -> str:
    found = nginx_binary()
    if found is None:
        raise SystemExit("nginx not found (scripts/ensure-system-deps installs it)")
    return found


# What a local run changes in deploy/nginx.conf, each a line the shipped file must hold once.
_UPSTREAM_SERVER = re.compile(r"server app:8080([^;]*);\n\s*")
_LOCAL_LINES: Final = (
    ("listen 80;", "listen 127.0.0.1:{port};"),
    ("pid /tmp/avatar-relay-nginx.pid;", "pid {workdir}/nginx.pid;"),
    # Logs to files: a pipe nobody reads would fill up and stall nginx.
    ("access_log /dev/stdout;", "access_log {workdir}/access.log;"),
    ("error_log /dev/stderr warn;", "error_log {workdir}/error.log warn;"),
    ("http {\n", "http {{\n{temp_paths}"),
)
_TEMP_PATHS: Final = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def shipped_nginx_config(
    workdir: Path, port: int, instances: list[str], *, shipped: Path = SHIPPED_NGINX
) -> Path:
    """deploy/nginx.conf as shipped, with only what a local run must change: the instances'
    addresses (each with the parameters the shipped line gives `app:8080`), the listening port,
    the pid file, writable temp paths, and the logs (files in `workdir`).

    The one rewrite of the shipped file, for the benchmarks and the tests alike
    (tests/deploy/test_nginx_config.py); raises RuntimeError when the file no longer has a line
    it rewrites, so the local runs cannot drift from what is deployed."""
    conf = shipped.read_text()

    def servers(match: re.Match[str]) -> str:
        return "".join(f"server {address}{match.group(1)};\n        " for address in instances)

    conf, count = _UPSTREAM_SERVER.subn(servers, conf)
    if count != 2:
        raise RuntimeError(f"{shipped} has {count} `server app:8080` lines, not 2")
    temp_paths = "".join(f"    {name}_temp_path {workdir}/{name};\n" for name in _TEMP_PATHS)
    for shipped_line, local in _LOCAL_LINES:
        if conf.count(shipped_line) != 1:
            raise RuntimeError(f"{shipped} no longer has {shipped_line.strip()!r} once")
        local = local.format(port=port, workdir=workdir, temp_paths=temp_paths)
        conf = conf.replace(shipped_line, local)
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
