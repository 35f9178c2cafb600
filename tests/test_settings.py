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
    ConfigError,
    Settings,
    TokenApi,
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
    # Today's service by default: one region, the API root, the auth token route.
    (only,) = settings.endpoints()
    assert only.region == "us-west"
    assert only.console_url == "https://api.spatialreal.cloud"
    assert only.ingress_url == "https://driven.us-west.spatialreal.cloud/v2/driveningress"
    assert only.token_api is TokenApi.AUTH


def test_environment_and_dotenv_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "SPATIALREAL_APP_ID=app-1\nDEFAULT_AVATAR_ID=d\nAVATAR_ALLOWLIST=a, b\n"
    )
    monkeypatch.setenv("SPATIALREAL_API_KEY", "sk-live-123")
    monkeypatch.setenv("SPATIALREAL_PROVIDER", "spatialwalk")
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
        spatialreal_provider="spatialwalk",
        spatialreal_console_url="http://127.0.0.1:1/v1/console/",
        spatialreal_ingress_urls={"us-west": "ws://127.0.0.1:2/v2/driveningress"},
    )
    primary, fallback = settings.endpoints()
    assert primary.console_url == "http://127.0.0.1:1/v1/console"
    assert primary.ingress_url == "wss://api.ap-northeast.spatialwalk.cloud/v2/driveningress"
    assert fallback.console_url == "https://console.us-west.spatialwalk.cloud/v1/console"
    assert fallback.ingress_url == "ws://127.0.0.1:2/v2/driveningress"


PRESETS = {
    # provider: (default regions in order, first console, first ingress, token API)
    "spatialreal": (
        ["us-west"],
        "https://api.spatialreal.cloud",
        "https://driven.us-west.spatialreal.cloud/v2/driveningress",
        TokenApi.AUTH,
    ),
    "spatialwalk": (
        ["ap-northeast", "us-west"],
        "https://console.ap-northeast.spatialwalk.cloud/v1/console",
        "wss://api.ap-northeast.spatialwalk.cloud/v2/driveningress",
        TokenApi.CONSOLE,
    ),
    "spatius": (
        ["us-west", "ap-northeast"],
        "https://console.us-west.spatius.ai/v1/console",
        "wss://api.us-west.spatius.ai/v2/driveningress",
        TokenApi.CONSOLE,
    ),
}


@pytest.mark.parametrize("provider", sorted(PRESETS))
def test_each_provider_has_its_presets(provider: str) -> None:
    regions, console, ingress, token_api = PRESETS[provider]
    settings = load_settings(spatialreal_provider=provider)
    endpoints = settings.endpoints()
    assert [e.region for e in endpoints] == regions
    assert (endpoints[0].console_url, endpoints[0].ingress_url) == (console, ingress)
    assert {e.token_api for e in endpoints} == {token_api}


def test_spatius_china_is_its_own_deployment_on_its_own_domain() -> None:
    (only,) = load_settings(
        spatialreal_provider="spatius", spatialreal_region="cn-beijing"
    ).endpoints()
    assert only.region == "cn-beijing"
    assert only.console_url == "https://console.cn-beijing.spatialwalk.top/v1/console"
    assert only.ingress_url == "wss://api.cn-beijing.spatialwalk.top/v2/driveningress"
    # China is never somebody else's default fallback.
    picked = load_settings(spatialreal_provider="spatius", spatialreal_region="ap-northeast")
    assert [e.region for e in picked.endpoints()] == ["ap-northeast", "us-west"]


def test_a_region_the_provider_lacks_is_refused_unless_its_urls_are_given() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(spatialreal_region="ap-northeast")
    (problem,) = caught.value.problems
    assert problem.startswith("SPATIALREAL_REGION: provider spatialreal has no region ap-northeast")
    with pytest.raises(ConfigError, match="SPATIALREAL_FALLBACK_REGIONS: provider spatialwalk"):
        load_settings(spatialreal_provider="spatialwalk", spatialreal_fallback_regions="cn-beijing")
    settings = load_settings(
        spatialreal_region="ap-northeast",
        spatialreal_console_url="https://console.example/v1/console",
        spatialreal_ingress_url="wss://ingress.example/v2/driveningress",
    )
    primary, fallback = settings.endpoints()
    assert (primary.region, primary.token_api) == ("ap-northeast", TokenApi.AUTH)
    assert primary.console_url == "https://console.example/v1/console"
    assert fallback.console_url == "https://api.spatialreal.cloud"


def test_token_api_and_fallbacks_can_be_set_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPATIALREAL_PROVIDER", "spatialwalk")
    monkeypatch.setenv("SPATIALREAL_TOKEN_API", "auth")
    monkeypatch.setenv("SPATIALREAL_FALLBACK_REGIONS", "")
    settings = load_settings()
    (only,) = settings.endpoints()
    assert (only.region, only.token_api) == ("ap-northeast", TokenApi.AUTH)
    with pytest.raises(ConfigError, match="must not repeat"):
        load_settings(spatialreal_region="us-west", spatialreal_fallback_regions="us-west")


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


def test_livekit_is_optional_and_all_or_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not load_settings().rtc_configured
    monkeypatch.setenv("LIVEKIT_URL", "wss://lk.example.com")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert sorted(line.split(":")[0] for line in caught.value.problems) == [
        "LIVEKIT_API_KEY",
        "LIVEKIT_API_SECRET",
    ]
    monkeypatch.setenv("LIVEKIT_API_KEY", "APIkey")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "a-secret-of-thirty-two-characters!")
    settings = load_settings()
    assert settings.rtc_configured
    assert isinstance(settings.livekit_api_secret, SecretStr)
    assert "thirty-two" not in repr(settings)


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"livekit_url": "lk.example.com"}, "LIVEKIT_URL"),
        ({"rtc_max_session_seconds": 90_000.0}, "RTC_PUBLISHER_TOKEN_TTL_SECONDS"),
    ],
)
def test_livekit_settings_are_checked(overrides: dict[str, object], variable: str) -> None:
    values: dict[str, object] = {
        "livekit_url": "wss://lk.example.com",
        "livekit_api_key": "APIkey",
        "livekit_api_secret": "a-secret-of-thirty-two-characters!",
        **overrides,
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(**values)
    assert [line.split(":")[0] for line in caught.value.problems] == [variable]
