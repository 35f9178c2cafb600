"""The image's install and start commands, replayed from the Dockerfile in a fresh environment.

No container engine runs here. Instead this test copies exactly what the builder stage COPYs into
an empty directory, runs the builder's `uv sync` commands there (into a new virtual environment
instead of /opt/venv), then starts the runtime stage's CMD from that environment, in an empty
working directory with a clean environment (no credentials: emulator mode), as the container
would. Then it talks to the server over HTTP and stops it with SIGTERM like `docker stop`.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import SERIES
from tests.deploy.files import ROOT, Stage, dockerfile_stages, exec_form, healthcheck_command
from tests.support.servers import free_port

START_TIMEOUT = 90.0


@dataclass
class Installed:
    venv: Path
    workdir: Path


def builder_stage() -> Stage:
    return next(stage for stage in dockerfile_stages() if stage.name == "builder")


def build_context(stage: Stage, into: Path) -> None:
    """Perform the stage's COPY instructions (from the build context, i.e. the repository)."""
    for copy in stage.all("COPY"):
        if copy.startswith("--from"):
            continue
        *sources, dest = copy.split()
        target = into / dest
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(
                    origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".env")
                )
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)


def install_commands(stage: Stage) -> list[str]:
    # BuildKit's --mount options only choose where the cache lives; drop them.
    return [re.sub(r"--mount=\S+\s*", "", run).strip() for run in stage.all("RUN") if "uv " in run]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    stage = builder_stage()
    base = tmp_path_factory.mktemp("image")
    src, venv, workdir = base / "src", base / "venv", base / "srv"
    src.mkdir()
    workdir.mkdir()
    build_context(stage, src)
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "UV_PROJECT"}}
    env |= stage.env()
    env |= {
        "UV_PROJECT_ENVIRONMENT": str(venv),
        # Same interpreter as the tests; byte-compiling is only a start-up optimisation.
        "UV_PYTHON": sys.executable,
        "UV_COMPILE_BYTECODE": "0",
    }
    commands = install_commands(stage)
    assert len(commands) == 2, commands
    for command in commands:
        result = subprocess.run(
            command, shell=True, cwd=src, env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{command}\n{result.stderr}"
    return Installed(venv=venv, workdir=workdir)


def test_the_install_is_a_real_copy_of_the_package_without_dev_tools(installed: Installed) -> None:
    site = next(installed.venv.glob("lib/python3*/site-packages"))
    # Not an editable install pointing back at the build directory.
    assert (site / "app" / "__init__.py").is_file()
    assert not list(site.glob("*.pth")) or all(
        "src" not in pth.read_text() for pth in site.glob("*.pth")
    )
    # Every non-Python file of the package (web assets, typings) made it into the install.
    for path in (ROOT / "app").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            assert (site / path.relative_to(ROOT)).is_file(), path
    # So did the client distribution the server imports its codec from, also as a real copy.
    client = ROOT / "clients" / "python"
    for path in (client / "avatar_relay_client").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            assert (site / path.relative_to(client)).is_file(), path
    for dev_only in ("pytest", "mypy", "ruff", "avatarkit", "grpc_tools", "hypothesis"):
        assert not (site / dev_only).exists(), dev_only
    assert (installed.venv / "bin" / "avatar-relay").is_file()


class Server:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.base = f"http://127.0.0.1:{port}"
        self.port = port
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for_log(self, needle: str, timeout: float = START_TIMEOUT) -> dict[str, object]:
        """The first JSON log line whose msg contains `needle` (every line must be JSON)."""
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"server exited before logging {needle!r}: {self.seen}")
            self.seen.append(line)
            record = json.loads(line)
            assert isinstance(record, dict)
            if needle in str(record.get("msg", "")):
                return record


@pytest.fixture(scope="module")
def server(installed: Installed) -> Iterator[Server]:
    runtime = dockerfile_stages()[-1]
    image_env = runtime.env()
    port = free_port()
    env = {
        # A container's environment: the image's ENV, nothing from this machine but basics.
        "PATH": image_env["PATH"]
        .replace("/opt/venv", str(installed.venv))
        .replace("$PATH", os.environ["PATH"]),
        "HOME": str(installed.workdir),
        "LANG": "C.UTF-8",
        **{k: v for k, v in image_env.items() if k != "PATH"},
        # Loopback only for the test (the image binds 0.0.0.0).
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    command = exec_form(runtime.all("CMD")[0])
    executable = shutil.which(command[0], path=env["PATH"])
    assert executable == str(installed.venv / "bin" / command[0])
    proc = subprocess.Popen(
        [executable, *command[1:]],
        cwd=installed.workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    running = Server(proc, port)
    try:
        # The in-process emulator logs its own "Uvicorn running on" first: wait for ours.
        running.wait_for_log(f"Uvicorn running on http://127.0.0.1:{port}")
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_starts_in_emulator_mode_and_is_healthy_and_ready(server: Server) -> None:
    health = httpx.get(f"{server.base}/healthz", timeout=10)
    assert health.status_code == 200
    assert health.json()["upstream"] == "emulator"
    ready = httpx.get(f"{server.base}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"


def test_the_image_healthcheck_command_passes(server: Server, installed: Installed) -> None:
    command = healthcheck_command(dockerfile_stages()[-1])
    assert command[0] == "python"
    result = subprocess.run(
        [str(installed.venv / "bin" / "python"), *command[1:]],
        env={"PORT": str(server.port), "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_metrics_show_a_real_token_mint(server: Server) -> None:
    minted = httpx.post(f"{server.base}/v1/session-tokens", json={}, timeout=10)
    assert minted.status_code == 201, minted.text
    token = minted.json()["sessionToken"]
    response = httpx.get(f"{server.base}/metrics", timeout=10)
    assert response.status_code == 200
    for name in SERIES:
        assert f"# TYPE {name} " in response.text, name
    success = 0.0
    posts = 0.0
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "avatar_relay_tokens_minted_total" and labels["outcome"] == "success":
                success += sample.value
            if sample.name == "avatar_relay_http_requests_total" and labels == {
                "method": "POST",
                "route": "/v1/session-tokens",
                "status": "201",
            }:
                posts += sample.value
    assert success == 1
    assert posts == 1
    # The minted token is in the answer only, never in the logs.
    server.wait_for_log("/metrics")
    assert not any(token in line for line in server.seen)


def test_sigterm_drains_and_stops_the_server_cleanly(server: Server) -> None:
    server.proc.send_signal(signal.SIGTERM)
    # uvicorn finishes its graceful shutdown, then re-raises the signal it caught (exit 143 in a
    # container, which `docker stop` expects).
    assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    server.wait_for_log("draining: readiness off")
    server.wait_for_log("Application shutdown complete")
    assert server.proc.stderr is not None
    stderr = server.proc.stderr.read()
    assert "EMULATOR MODE" in stderr
    assert "Traceback" not in stderr
