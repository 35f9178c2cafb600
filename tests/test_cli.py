"""The `avatar-relay` command, run as users run it: in a subprocess, over real sockets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.settings import Settings
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in {n.upper() for n in Settings.model_fields}
    }
    env.update(HOME=str(tmp_path), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **extra)
    return env


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=tmp_path,
        env=_clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("command", "phrase"),
    [("serve", "emulator"), ("emulator", "console + ingress"), ("token", "session token")],
)
def test_help_explains_each_command(command: str, phrase: str, tmp_path: Path) -> None:
    result = _run([command, "--help"], tmp_path)
    assert result.returncode == 0
    assert phrase in " ".join(result.stdout.split())


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = _run(["--help"], tmp_path)
    assert result.returncode == 0
    for command in ("serve", "emulator", "token"):
        assert command in result.stdout


def _wait_for(url: str, proc: subprocess.Popen[str]) -> httpx.Response:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"server exited early: {proc.stderr.read() if proc.stderr else ''}"
            )
        try:
            return httpx.get(url, timeout=1)
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


@pytest.fixture
def zero_config_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=_clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_with_zero_configuration_runs_against_the_emulator(
    zero_config_server: tuple[str, subprocess.Popen[str]],
) -> None:
    base, proc = zero_config_server
    health = _wait_for(f"{base}/healthz", proc)
    assert health.status_code == 200
    assert health.json()["upstream"] == "emulator"

    minted = httpx.post(f"{base}/v1/session-tokens", json={}, timeout=10)
    assert minted.status_code == 201, minted.text
    body = minted.json()
    assert body["sessionToken"]
    assert body["appId"] == "emulator-app"
    assert body["expireAt"] > time.time()

    proc.terminate()
    _, stderr = proc.communicate(timeout=30)
    banner = [line for line in stderr.splitlines() if "EMULATOR MODE" in line]
    assert len(banner) == 1, stderr


def test_serve_prints_where_the_demo_page_is(
    zero_config_server: tuple[str, subprocess.Popen[str]],
) -> None:
    base, proc = zero_config_server
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    line = ""
    while "demo page" not in line:
        assert time.monotonic() < deadline, "no banner"
        line = proc.stderr.readline()
        assert line or proc.poll() is None, "server exited without a banner"
    assert f"demo page {base}/ " in line
    assert f"API docs {base}/docs" in line
    # The printed address really is the demo page.
    page = httpx.get(f"{base}/", timeout=5)
    assert page.status_code == 200
    assert "Host Mode demo" in page.text


@pytest.mark.parametrize(
    ("host", "public_url", "shown"),
    [
        ("127.0.0.1", None, "http://127.0.0.1:8080"),
        ("0.0.0.0", None, "http://127.0.0.1:8080"),
        ("::", None, "http://[::1]:8080"),
        ("0.0.0.0", "https://avatars.example.com/", "https://avatars.example.com"),
    ],
)
def test_the_banner_names_a_browsable_address(
    host: str, public_url: str | None, shown: str
) -> None:
    from app.server import banner

    settings = Settings(_env_file=None, public_url=public_url)  # type: ignore[call-arg]
    assert banner(settings, host, 8080) == (
        f"avatar-relay is serving: demo page {shown}/  ·  API docs {shown}/docs"
    )


def test_emulator_command_prints_its_urls_and_token_command_mints(tmp_path: Path) -> None:
    port = free_port()
    emulator = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "emulator", "--port", str(port)],
        cwd=tmp_path,
        env=_clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert emulator.stdout is not None
        first = emulator.stdout.readline().strip()
        second = emulator.stdout.readline().strip()
        assert first == f"console URL: http://127.0.0.1:{port}/v1/console"
        assert second == f"ingress URL: http://127.0.0.1:{port}/v2/driveningress"
        rest = [emulator.stdout.readline().strip() for _ in range(4)]
        assert rest[-1] == (
            f"LiveKit stand-in: LIVEKIT_URL=ws://127.0.0.1:{port}"
            " LIVEKIT_API_KEY=emulator-livekit-key"
            " LIVEKIT_API_SECRET=emulator-livekit-secret-0123456789abcdef"
        )

        env = _clean_env(
            tmp_path,
            SPATIALREAL_CONSOLE_URL=f"http://127.0.0.1:{port}/v1/console",
            SPATIALREAL_FALLBACK_REGIONS="",
        )
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "token", "--ttl", "120"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        token = json.loads(result.stdout)
        assert token["sessionToken"]
        assert token["region"] == "us-west"
        assert abs(token["expireAt"] - (time.time() + 120)) < 30
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    from app import __version__

    result = _run(["--version"], tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"avatar-relay {__version__}"


def test_token_with_zero_configuration_mints_through_a_built_in_emulator(tmp_path: Path) -> None:
    result = _run(["token"], tmp_path)
    assert result.returncode == 0, result.stderr
    token = json.loads(result.stdout)
    assert token["sessionToken"]
    assert token["appId"] == "emulator-app"
    # The server's default TTL (TOKEN_TTL_DEFAULT_SECONDS), as `serve` would mint.
    assert abs(token["expireAt"] - (time.time() + 3600)) < 30
    assert "EMULATOR MODE" in result.stderr


@pytest.mark.parametrize("ttl", ["5", "59", "86341"])
def test_token_refuses_a_ttl_the_server_would_refuse(ttl: str, tmp_path: Path) -> None:
    result = _run(["token", "--ttl", ttl], tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert json.loads(result.stderr) == {
        "error": {"code": "invalidRequest", "message": "--ttl must be between 60 and 86340"}
    }


def test_token_errors_have_the_rest_shape_with_camel_case_keys(tmp_path: Path) -> None:
    # A console nobody listens on: the failure is reported, in the REST API's error shape.
    env = _clean_env(
        tmp_path,
        SPATIALREAL_CONSOLE_URL=f"http://127.0.0.1:{free_port()}/v1/console",
        SPATIALREAL_FALLBACK_REGIONS="",
    )
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "token"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("{")]
    error = json.loads(line)["error"]
    assert error["code"] == "connectionFailed"
    assert error["message"]
    assert error["phase"] == "session_token"
    assert all("_" not in key for key in error)
