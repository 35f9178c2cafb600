"""One virtual environment per official SDK, built by the test run itself and cached.

The SDKs register clashing protobuf packages (`message` in avatarkit and spatius), and each
should get the dependencies it asks for, so each runs in its own venv, in a subprocess. The venvs
live in `.cache/sdk-venvs/` (git-ignored), keyed by the pinned requirements and this Python:
building one takes seconds from uv's cache, and an unchanged one is reused as is.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = Path(__file__).with_name("requirements")
CACHE = ROOT / ".cache" / "sdk-venvs"
SDKS = ("avatarkit", "spatius", "spatialreal")


def _uv() -> str:
    """The uv binary: the one running us (`uv run` sets UV), else the one on PATH."""
    found = os.environ.get("UV") or shutil.which("uv") or str(Path.home() / ".local/bin/uv")
    if not Path(found).exists():
        raise RuntimeError("uv not found: run the tests through scripts/test")
    return found


def _key(sdk: str) -> str:
    digest = hashlib.sha256((REQUIREMENTS / f"{sdk}.txt").read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    # Two test runs in one checkout must not build the same venv at once.
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def sdk_python(sdk: str) -> Path:
    """The interpreter of `sdk`'s venv, building the venv first if needed."""
    if sdk not in SDKS:
        raise ValueError(f"unknown SDK {sdk!r}")
    venv = CACHE / f"{sdk}-{_key(sdk)}"
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return python
    with _locked():
        if (venv / ".complete").exists():
            return python
        for stale in CACHE.glob(f"{sdk}-*"):
            shutil.rmtree(stale)
        uv = _uv()
        subprocess.run(
            [uv, "venv", "--quiet", "--relocatable", "--python", sys.executable, str(venv)],
            check=True,
        )
        subprocess.run(
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--python",
                str(python),
                "--no-deps",
                "--requirement",
                str(REQUIREMENTS / f"{sdk}.txt"),
            ],
            check=True,
        )
        (venv / ".complete").touch()
    return python
