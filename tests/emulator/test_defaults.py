"""The emulator duplicates a few constants on purpose (it must not import app.settings)."""

from __future__ import annotations

from app import settings
from app.emulator import (
    DEFAULT_API_KEY,
    DEFAULT_APP_ID,
    DEFAULT_AVATAR_ID,
    PCM_SAMPLE_RATES,
    Emulator,
)


def test_defaults_match_settings() -> None:
    assert settings.EMULATOR_APP_ID == DEFAULT_APP_ID
    assert settings.EMULATOR_AVATAR_ID == DEFAULT_AVATAR_ID
    assert settings.EMULATOR_API_KEY == DEFAULT_API_KEY
    assert settings.PCM_SAMPLE_RATES == PCM_SAMPLE_RATES
    emu = Emulator()
    assert (emu.app_id, emu.avatars, emu.api_keys) == (
        DEFAULT_APP_ID,
        (DEFAULT_AVATAR_ID,),
        (DEFAULT_API_KEY,),
    )


def test_emulator_imports_only_proto_from_app() -> None:
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "app" / "emulator"
    for source in package.glob("*.py"):
        for line in source.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import app", "from app")):
                module = stripped.split()[1]
                assert module.startswith(("app.emulator", "app.proto")), (source.name, line)
