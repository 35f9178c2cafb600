"""Python clients of avatar-relay: installable and importable without the server.

`RelayClient` speaks the browser protocol (`avatar-relay.v1`) and `Producer` the producer
protocol (`avatar-relay.producer.v1`: a server-side agent speaks through the avatar), both over
the reliable link; the codecs (`browser_protocol`, `producer_protocol`) and the error codes
(`errors`) are the same ones the server uses.
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
from avatar_relay_client.link import Backoff, ClientStats, SessionLost, StateChange
from avatar_relay_client.producer import (
    BargeIn,
    Browser,
    BrowserState,
    ConversationCompleted,
    ConversationInterrupted,
    ConversationStarted,
    FirstFrame,
    Microphone,
    PlaybackState,
    PlaybackStateKind,
    Producer,
    Utterance,
)
from avatar_relay_client.producer_session import ProducerSession, create_session
from avatar_relay_client.rtc import RtcProducerSession, create_rtc_session

__version__ = "0.1.0"

__all__ = [
    "Audio",
    "Backoff",
    "BargeIn",
    "Browser",
    "BrowserState",
    "ClientStats",
    "ConversationAborted",
    "ConversationCompleted",
    "ConversationInterrupted",
    "ConversationStarted",
    "ErrorCode",
    "Event",
    "FirstFrame",
    "Frame",
    "Interrupted",
    "Microphone",
    "PlaybackState",
    "PlaybackStateKind",
    "Producer",
    "ProducerSession",
    "RelayClient",
    "RelayError",
    "RtcProducerSession",
    "SessionLost",
    "StateChange",
    "Utterance",
    "__version__",
    "create_rtc_session",
    "create_session",
]
