"""nginx for tests, run for real (scripts/ensure-system-deps installs nginx) on `deploy/nginx.conf`
as committed, with only addresses, ports and writable paths changed.

The rewrite of the shipped file lives in `bench/harness.py` (`shipped_nginx_config`), the one
place the benchmarks and the tests both take it from: the benchmarks stay runnable without the
test suite, and the tests already import `bench` to check it.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from bench.harness import nginx_args


def check_config(nginx: str, conf: Path) -> None:
    """`nginx -t` on `conf`: nginx itself accepts it (paths relative to its folder)."""
    folder = conf.parent
    check = subprocess.run(
        [nginx, "-t", "-c", str(conf), "-p", str(folder), "-e", str(folder / "e.log")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


@contextlib.contextmanager
def running_nginx(nginx: str, conf: Path, port: int) -> Iterator[str]:
    proc = subprocess.Popen(
        nginx_args(nginx, conf), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
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
