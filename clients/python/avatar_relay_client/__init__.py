"""Python clients of avatar-relay: installable and importable without the server.

`RelayClient` speaks the browser protocol (`avatar-relay.v1`) over the reliable link; the codec
(`browser_protocol`) and the error codes (`errors`) are the same ones the server uses.
"""

from avatar_relay_client.browser import (
    Audio,
    ConversationAborted,
    Event,
    Frame,
    Interrupted,
    RelayClient,
)
from avatar_relay_client.errors import ErrorCode, RelayError
from avatar_relay_client.link import Backoff, ClientStats, StateChange

__version__ = "0.1.0"

__all__ = [
    "Audio",
    "Backoff",
    "ClientStats",
    "ConversationAborted",
    "ErrorCode",
    "Event",
    "Frame",
    "Interrupted",
    "RelayClient",
    "RelayError",
    "StateChange",
    "__version__",
]
