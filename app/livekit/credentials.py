"""The LiveKit server and the key pair this server signs its tokens with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from pydantic import SecretStr

from app.settings import Settings


@dataclass(frozen=True, slots=True)
class LiveKitCredentials:
    url: str
    api_key: str
    api_secret: SecretStr

    @classmethod
    def from_settings(cls, settings: Settings) -> Self | None:
        """The configured LiveKit, or None when RTC mode is not configured."""
        if not settings.rtc_configured:
            return None
        url, key, secret = (
            settings.livekit_url,
            settings.livekit_api_key,
            settings.livekit_api_secret,
        )
        assert url is not None
        assert key is not None
        assert secret is not None
        return cls(url, key, secret)

    def __repr__(self) -> str:
        return f"LiveKitCredentials(url={self.url!r}, api_key={self.api_key!r})"
