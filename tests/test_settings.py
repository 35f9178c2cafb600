"""Configuration: defaults that run with nothing set, and one clear line per problem otherwise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.settings import (
    EMULATOR_AVATAR_ID,
    REGION_CONSOLE_URLS,
    ConfigError,
    Region,
    Settings,
    load_settings,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Settings read the process environment and ./.env: isolate both.
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


def test_zero_configuration_is_emulator_mode() -> None:
    settings = load_settings()
    assert settings.emulator_mode
    assert settings.avatar_id == EMULATOR_AVATAR_ID
    assert [e.region for e in settings.endpoints()] == ["ap-northeast", "us-west"]
    assert settings.endpoints()[0].console_url == REGION_CONSOLE_URLS[Region.AP_NORTHEAST]


def test_environment_and_dotenv_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "SPATIALREAL_APP_ID=app-1\nDEFAULT_AVATAR_ID=d\nAVATAR_ALLOWLIST=a, b\n"
    )
    monkeypatch.setenv("SPATIALREAL_API_KEY", "sk-live-123")
    monkeypatch.setenv("SPATIALREAL_REGION", "us-west")
    monkeypatch.setenv("SPATIALREAL_FALLBACK_REGIONS", "ap-northeast")
    settings = load_settings()
    assert not settings.emulator_mode
    assert settings.app_id == "app-1"
    assert settings.avatar_allowlist == ["a", "b"]
    assert [e.region for e in settings.endpoints()] == ["us-west", "ap-northeast"]
    assert settings.avatar_allowed("a")
    assert settings.avatar_allowed("d")
    assert not settings.avatar_allowed("c")


def test_url_overrides_apply_to_the_primary_and_per_region() -> None:
    settings = load_settings(
        spatialreal_console_url="http://127.0.0.1:1/v1/console/",
        spatialreal_ingress_urls={"us-west": "ws://127.0.0.1:2/v2/driveningress"},
    )
    primary, fallback = settings.endpoints()
    assert primary.console_url == "http://127.0.0.1:1/v1/console"
    assert fallback.ingress_url == "ws://127.0.0.1:2/v2/driveningress"


def test_secrets_are_never_printed() -> None:
    settings = load_settings(
        spatialreal_api_key="sk-live-123", spatialreal_app_id="x", default_avatar_id="a"
    )
    assert isinstance(settings.spatialreal_api_key, SecretStr)
    assert "sk-live-123" not in repr(settings)
    assert "sk-live-123" not in str(settings.model_dump())


def test_every_problem_gets_its_own_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            port=70000, cors_origins="*", default_sample_rate=12345, spatialreal_region="eu"
        )
    problems = caught.value.problems
    assert len(problems) == 4
    assert any(p.startswith("PORT:") for p in problems)
    assert any(p.startswith("CORS_ORIGINS:") for p in problems)
    assert any(p.startswith("DEFAULT_SAMPLE_RATE:") for p in problems)
    assert any(p.startswith("SPATIALREAL_REGION:") for p in problems)


def test_production_refuses_to_start_without_real_credentials() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(app_env="production")
    assert caught.value.problems == [
        "SPATIALREAL_API_KEY: required when APP_ENV=production",
        "SPATIALREAL_APP_ID: required when APP_ENV=production",
        "AUTH_MODE: 'none' is refused when APP_ENV=production",
    ]


def test_real_upstream_without_a_default_avatar_refuses_to_start() -> None:
    # Otherwise it would start, and every relay session naming no avatar would answer 403.
    with pytest.raises(ConfigError) as caught:
        load_settings(spatialreal_api_key="sk-live-123", spatialreal_app_id="x")
    (problem,) = caught.value.problems
    assert problem.startswith("DEFAULT_AVATAR_ID: required when SPATIALREAL_API_KEY is set")
    settings = load_settings(
        spatialreal_api_key="sk-live-123", spatialreal_app_id="x", default_avatar_id="av-1"
    )
    assert settings.avatar_id == "av-1"


def test_auth_modes_need_their_credentials() -> None:
    with pytest.raises(ConfigError, match="AUTH_API_KEYS"):
        load_settings(auth_mode="api-key")
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        load_settings(auth_mode="jwt")
    settings = load_settings(auth_mode="api-key", auth_api_keys="k1,k2")
    assert [k.get_secret_value() for k in settings.auth_api_keys] == ["k1", "k2"]


def test_cli_reports_invalid_configuration_one_line_each(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PORT": "notaport",
        "APP_ENV": "production",
        "HOME": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"],
        cwd=tmp_path,
        env=env | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "avatar-relay: invalid configuration:"
    assert re.match(r"\s+PORT: ", lines[1])
    assert "Traceback" not in result.stderr


def test_env_example_documents_every_variable() -> None:
    text = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    expected = {name.upper() for name in Settings.model_fields}
    assert expected - documented == set(), "variables missing from .env.example"
    assert documented - expected == set(), ".env.example names unknown variables"
    missing = {name for name in expected if f"`{name}`" not in readme}
    assert missing == set(), "variables missing from the README"
