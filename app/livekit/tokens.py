"""LiveKit access tokens, minted with the official `AccessToken`.

Two kinds, both for one room:

- the **browser's**: join, publish the microphone (nothing else), subscribe; no data messages.
  A joined participant gets refreshed tokens from LiveKit itself, so this one only has to be
  valid when the page connects: a short TTL.
- the **avatar publisher's**, made as the official SpatialReal LiveKit plugin
  (`livekit-plugins-spatialreal` 1.8) makes it: participant kind `agent`, the publisher id as
  identity, the `lk.publish_on_behalf` attribute naming the agent it speaks for (LiveKit's
  front-end components group the avatar's tracks with that agent), publish camera and microphone
  sources and data (the motion data travels as data), no subscribe. SpatialReal's egress rejoins
  the room with it whenever it reconnects, so it must outlive the session: a long TTL.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Final

from livekit.api import AccessToken, VideoGrants

from app.livekit.credentials import LiveKitCredentials

# The attribute LiveKit Agents sets on an avatar worker (ATTRIBUTE_PUBLISH_ON_BEHALF).
PUBLISH_ON_BEHALF: Final = "lk.publish_on_behalf"
BROWSER_SOURCES: Final[tuple[str, ...]] = ("microphone",)
PUBLISHER_SOURCES: Final[tuple[str, ...]] = ("camera", "microphone")


def _token(credentials: LiveKitCredentials) -> AccessToken:
    return AccessToken(credentials.api_key, credentials.api_secret.get_secret_value())


def browser_token(
    credentials: LiveKitCredentials,
    *,
    room: str,
    identity: str,
    ttl_seconds: int,
    name: str = "",
) -> str:
    grants = VideoGrants(
        room_join=True,
        room=room,
        can_publish=True,
        can_publish_sources=list(BROWSER_SOURCES),
        can_subscribe=True,
        can_publish_data=False,
    )
    token = _token(credentials).with_identity(identity).with_grants(grants)
    if name:
        token = token.with_name(name)
    return token.with_ttl(timedelta(seconds=ttl_seconds)).to_jwt()


def publisher_attributes(on_behalf_of: str) -> dict[str, str]:
    """The avatar participant's attributes: in its token and in the egress configuration."""
    return {PUBLISH_ON_BEHALF: on_behalf_of}


def publisher_token(
    credentials: LiveKitCredentials,
    *,
    room: str,
    publisher_id: str,
    on_behalf_of: str,
    ttl_seconds: int,
    name: str = "",
    attributes: Mapping[str, str] | None = None,
) -> str:
    grants = VideoGrants(
        room_join=True,
        room=room,
        can_subscribe=False,
        can_publish_data=True,
        can_publish_sources=list(PUBLISHER_SOURCES),
    )
    return (
        _token(credentials)
        .with_kind("agent")
        .with_identity(publisher_id)
        .with_name(name or publisher_id)
        .with_ttl(timedelta(seconds=ttl_seconds))
        .with_attributes(dict(attributes or publisher_attributes(on_behalf_of)))
        .with_grants(grants)
        .to_jwt()
    )
