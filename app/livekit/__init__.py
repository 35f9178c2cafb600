"""Our LiveKit side: rooms through the server API (`livekit-api`'s RoomService) and access tokens.

    credentials = LiveKitCredentials.from_settings(settings)   # None: RTC mode is off
    rooms = RoomClient(credentials, timeout=10.0)
    await rooms.create("avatar-abc", empty_timeout=300)
    browser_token(credentials, room="avatar-abc", identity="user-1", ttl_seconds=900)
    publisher_token(credentials, room="avatar-abc", publisher_id="spatialreal-avatar", ...)

Tokens are minted with the official `AccessToken`; every failure of the server API is an
`AppError` (rtcUnavailable, rtcCredentialsRejected, invalidRequest).
"""

from app.livekit.credentials import LiveKitCredentials
from app.livekit.rooms import RoomClient, RoomInfo
from app.livekit.tokens import (
    BROWSER_SOURCES,
    PUBLISH_ON_BEHALF,
    PUBLISHER_SOURCES,
    browser_token,
    publisher_token,
)

__all__ = [
    "BROWSER_SOURCES",
    "PUBLISHER_SOURCES",
    "PUBLISH_ON_BEHALF",
    "LiveKitCredentials",
    "RoomClient",
    "RoomInfo",
    "browser_token",
    "publisher_token",
]
