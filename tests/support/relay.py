"""Settings and upstream records for tests that run the whole relay against the emulator."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pydantic import SecretStr

from app.emulator import Emulator
from app.proto import message_pb2
from app.server import emulator_settings
from app.settings import Settings


def relay_test_settings(
    emulator: Emulator, caller_keys: Sequence[str], **overrides: Any
) -> Settings:
    """A test app pointed at `emulator`: api-key callers, in-process store, no rate limits."""
    values: dict[str, Any] = {
        "app_env": "test",
        "auth_mode": "api-key",
        "auth_api_keys": [SecretStr(key) for key in caller_keys],
        "redis_url": None,
        "rate_limit_principal_per_minute": 0,
        "rate_limit_ip_per_minute": 0,
    }
    values.update(overrides)
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    return emulator_settings(settings, emulator)


def upstream_frames(emulator: Emulator) -> dict[str, list[bytes]]:
    """Every animation message the emulator sent, per request id, in the order it sent them."""
    out: dict[str, list[bytes]] = defaultdict(list)
    for messages in emulator.sent.values():
        for raw in messages:
            message = message_pb2.Message()
            message.ParseFromString(raw)
            if message.type == message_pb2.MESSAGE_SERVER_RESPONSE_ANIMATION:
                out[message.server_response_animation.req_id].append(raw)
    return out
