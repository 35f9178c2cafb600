"""The ingress handshake's first message: CLIENT_CONFIGURE_SESSION, and its audio settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from app.emulator import wire
from app.emulator.ogg import OPUS_GRANULES_PER_FRAME
from app.proto import message_pb2

PCM_SAMPLE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
OPUS_SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)

# SERVER_ERROR codes. The real service does not publish its numbers; these avoid 3, 14, 16, 4001
# and 4002, which the official SDK maps by value, so its text classification applies.
CODE_PROTOCOL = 9
CODE_INVALID_ARGUMENT = 3
CODE_UNAVAILABLE = 14
CODE_IDLE = 4


@dataclass(frozen=True, slots=True)
class AudioSettings:
    opus: bool
    # Audio units per 40 ms frame: PCM bytes, or Ogg Opus granules (48 kHz samples).
    units_per_frame: int
    # PCM bytes per frame (0 for Opus): how much audio one frame plays out.
    bytes_per_frame: int


def configure_message(
    event: dict[str, Any],
) -> message_pb2.ClientConfigureSession | tuple[int, str]:
    """The first message's CLIENT_CONFIGURE_SESSION, or the SERVER_ERROR (code, text) for it."""
    data = event.get("bytes")
    if data is None:
        return CODE_PROTOCOL, "unexpected message type: text frames are not supported"
    message = message_pb2.Message()
    try:
        message.ParseFromString(data)
    except DecodeError:
        return CODE_PROTOCOL, "failed to unmarshal initial message"
    if message.type != message_pb2.MESSAGE_CLIENT_CONFIGURE_SESSION:
        return CODE_PROTOCOL, "expected clientconfiguresession message"
    return message.client_configure_session


def audio_settings(config: message_pb2.ClientConfigureSession) -> AudioSettings | tuple[int, str]:
    """The session's audio, or the SERVER_ERROR (code, text) refusing it."""
    if config.audio_format == message_pb2.AUDIO_FORMAT_OGG_OPUS:
        rates: tuple[int, ...] = OPUS_SAMPLE_RATES
        settings = AudioSettings(True, OPUS_GRANULES_PER_FRAME, 0)
    elif config.audio_format == message_pb2.AUDIO_FORMAT_PCM_S16LE:
        rates = PCM_SAMPLE_RATES
        # s16le mono: two bytes per sample.
        per_frame = round(config.sample_rate * 2 * wire.FRAME_SECONDS)
        settings = AudioSettings(False, per_frame, per_frame)
    else:
        return CODE_PROTOCOL, f"unsupported audio format: {config.audio_format}"
    if config.sample_rate not in rates:
        return CODE_PROTOCOL, f"unsupported sample rate: {config.sample_rate}"
    if config.transport_compression != message_pb2.TRANSPORT_COMPRESSION_NONE:
        return CODE_PROTOCOL, "unsupported transport compression"
    return settings
