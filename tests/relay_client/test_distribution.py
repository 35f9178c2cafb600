"""The client distribution as a user gets it: its wheel, installed into a fresh virtual environment.

A voice agent's project installs `avatar-relay-client` without the server, so the wheel must carry
every module it imports and declare every dependency it needs, and none of the server's. The
wheel is built from clients/python, installed with uv (from its cache: no network needed once
the project's environment exists), and imported in that environment from an empty directory, so
neither this checkout nor the project's virtual environment can stand in for it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"

# Run inside the fresh environment: import everything, use the codec, report what got loaded.
PROBE = """
import importlib.util, json, sys
import avatar_relay_client
from avatar_relay_client import browser, browser_protocol as p, errors, link
from avatar_relay_client import producer, producer_protocol as pp

pcm = bytes(range(16))
message = p.decode_client(p.encode_client(p.ClientAudio(7, pcm, True)))
spoken = pp.decode_producer(pp.encode_producer(pp.Audio(3, pcm, False)))
try:
    p.decode_server(b"\\xff\\x00")
    refused = ""
except errors.RelayError as exc:
    refused = exc.code.value
print(json.dumps({
    "file": avatar_relay_client.__file__,
    "version": avatar_relay_client.__version__,
    "round_trip": message == p.ClientAudio(7, pcm, True) and spoken == pp.Audio(3, pcm, False),
    "producer": producer.Producer.__name__,
    "refused": refused,
    "loaded": sorted(name for name in sys.modules if name.split(".")[0] in {"fastapi", "app",
        "starlette", "pydantic", "redis", "uvicorn"}),
    "installed": {name: importlib.util.find_spec(name) is not None
        for name in ("fastapi", "app", "httpx", "websockets")},
}))
"""


def run(*command: str | Path, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def uv() -> str:
    found = shutil.which("uv")
    assert found, "uv is needed to build the client distribution (scripts/bootstrap installs it)"
    return found


def test_the_wheel_installs_and_imports_without_the_server(uv: str, tmp_path: Path) -> None:
    dist, venv, empty = tmp_path / "dist", tmp_path / "venv", tmp_path / "empty"
    empty.mkdir()
    run(uv, "build", "--wheel", "--out-dir", dist, CLIENT, cwd=tmp_path)
    (wheel,) = dist.glob("avatar_relay_client-*.whl")
    version = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]["version"]

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [
            line.split(":", 1)[1].strip()
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    modules = {n for n in names if n.endswith(".py") or n.endswith("py.typed")}
    shipped = {
        str(path.relative_to(CLIENT))
        for path in (CLIENT / "avatar_relay_client").rglob("*")
        if path.suffix == ".py" or path.name == "py.typed"
    }
    assert modules == shipped
    assert not any(n.startswith("app/") for n in names)
    assert sorted(r.split(">")[0].split("=")[0].strip() for r in requires) == [
        "httpx",
        "websockets",
    ]

    run(uv, "venv", "--python", sys.executable, venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(uv, "pip", "install", "--python", python, wheel, cwd=tmp_path)
    listed = json.loads(
        run(uv, "pip", "list", "--format", "json", "--python", python, cwd=tmp_path)
    )
    installed = {item["name"].lower(): item["version"] for item in listed}
    assert installed["avatar-relay-client"] == version
    for server_only in ("avatar-relay", "fastapi", "starlette", "uvicorn", "pydantic", "redis"):
        assert server_only not in installed, server_only

    report = json.loads(run(python, "-c", PROBE, cwd=empty))
    # The installed copy, not this checkout's sources.
    assert Path(report["file"]).is_relative_to(venv), report["file"]
    assert report["version"] == version
    assert report["round_trip"] is True
    assert report["producer"] == "Producer"
    assert report["refused"] == "unknownMessageType"
    assert report["loaded"] == []
    assert report["installed"] == {
        "fastapi": False,
        "app": False,
        "httpx": True,
        "websockets": True,
    }
