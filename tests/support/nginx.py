"""nginx for tests: `deploy/nginx.conf` as committed, with only addresses, ports and writable
paths changed, run for real (scripts/ensure-system-deps installs nginx)."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent.parent.parent / "deploy"


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )


def local_config(tmp: Path, port: int, instances: list[str]) -> Path:
    conf = (DEPLOY / "nginx.conf").read_text()
    servers = "".join(f"server {address};\n        " for address in instances)
    conf, count = re.subn(r"server app:8080;\n\s*", servers, conf)
    assert count == 2  # both upstreams
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{port};")
    conf = conf.replace("pid /tmp/avatar-relay-nginx.pid;", f"pid {tmp}/nginx.pid;")
    writable = "".join(
        f"    {name}_temp_path {tmp}/{name};\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = conf.replace("http {\n", "http {\n" + writable, 1)
    path = tmp / "nginx.conf"
    path.write_text(conf)
    return path


@contextlib.contextmanager
def running_nginx(nginx: str, conf: Path, port: int) -> Iterator[str]:
    proc = subprocess.Popen(
        [
            nginx,
            "-c",
            str(conf),
            "-p",
            str(conf.parent),
            "-e",
            str(conf.parent / "error.log"),
            "-g",
            "daemon off;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"nginx did not start: {proc.stderr.read() if proc.stderr else ''}"
                )
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
