"""An emulator of the SpatialReal cloud (console + ingress v2) for tests and offline runs.

It imports only `app.proto` and third-party libraries, never the client code it stands in for, so
a shared bug cannot make both sides agree. See docs/emulator.md.
"""

from app.emulator.defaults import (
    DEFAULT_API_KEY,
    DEFAULT_APP_ID,
    DEFAULT_AVATAR_ID,
    DEFAULT_LIVEKIT_API_KEY,
    DEFAULT_LIVEKIT_API_SECRET,
)
from app.emulator.emulator import Emulator
from app.emulator.faults import Faults
from app.emulator.ingress import OPUS_SAMPLE_RATES, PCM_SAMPLE_RATES
from app.emulator.livekit import FakeRoom, LiveKitStandIn, Participant, Publication
from app.emulator.state import EmulatorStats
from app.emulator.wire import (
    ANIMATION_AVATAR_FIELD,
    ANIMATION_PAYLOAD_FIELD,
    ANIMATION_UNDECLARED_FIELD,
    CLOSE_REASONS,
    FRAME_MS,
    SEND_TIME_FIELD,
    animation_message,
    frame_marker,
    frame_payload,
    send_time_ns,
)

__all__ = [
    "ANIMATION_AVATAR_FIELD",
    "ANIMATION_PAYLOAD_FIELD",
    "ANIMATION_UNDECLARED_FIELD",
    "CLOSE_REASONS",
    "DEFAULT_API_KEY",
    "DEFAULT_APP_ID",
    "DEFAULT_AVATAR_ID",
    "DEFAULT_LIVEKIT_API_KEY",
    "DEFAULT_LIVEKIT_API_SECRET",
    "FRAME_MS",
    "OPUS_SAMPLE_RATES",
    "PCM_SAMPLE_RATES",
    "SEND_TIME_FIELD",
    "Emulator",
    "EmulatorStats",
    "FakeRoom",
    "Faults",
    "LiveKitStandIn",
    "Participant",
    "Publication",
    "animation_message",
    "frame_marker",
    "frame_payload",
    "send_time_ns",
]
