"""Ingress sessions in LiveKit egress mode: the configuration check, the join, what is published.

With `egress_type = EGRESS_TYPE_LIVEKIT` the avatar's output goes to a LiveKit room instead of
back over the ingress socket. The emulator checks the `livekit_egress` configuration as far as a
real egress worker would find out about it, joins the LiveKit stand-in's room as the token says,
and for every request records the audio it plays out into the room. On the socket it sends what
the October 2026 SDK describes for egress mode (`spatialreal/events.py`): animation messages
without animation data, as playback signals (one when a request starts playing, one per second
of playout, and `end=true` once its playout has drained), the end repeated as a retransmitting
egress path repeats it.

SERVER_ERROR codes are the ones the SDK maps for egress: 3 INVALID_ARGUMENT with egress words
(invalidEgressConfig), 16 UNAUTHENTICATED (invalidEgressConfig), 14 UNAVAILABLE
(egressUnavailable).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from livekit.api import VideoGrants

from app.emulator import wire
from app.emulator.livekit import LiveKitStandIn, Participant, Publication
from app.proto import message_pb2

CODE_INVALID_ARGUMENT = 3
CODE_UNAVAILABLE = 14
CODE_UNAUTHENTICATED = 16

# A progress signal per this many frames of playout (25 frames: one second).
PROGRESS_FRAMES = 25
# The sources a publisher needs: the avatar's video and audio tracks.
PUBLISH_SOURCES = ("camera", "microphone")

Refusal = tuple[int, str]


@dataclass(frozen=True, slots=True)
class EgressBinding:
    room: str
    publisher_id: str
    participant: Participant
    idle_timeout: float | None  # the configuration's own silence timeout; None: the server's


def _own_url(url: str, netlocs: frozenset[str]) -> bool:
    parts = urlsplit(url)
    return parts.scheme.lower() in ("ws", "wss", "http", "https") and parts.netloc in netlocs


def _grant_problem(participant: Participant, room: str, publisher_id: str) -> str | None:
    grants = participant.grants
    if not grants.room_join or grants.room != room:
        return f"does not grant joining room {room!r}"
    if participant.identity != publisher_id:
        return f"names identity {participant.identity!r}, not publisher_id {publisher_id!r}"
    sources = grants.can_publish_sources
    if sources is not None and sources and not set(PUBLISH_SOURCES) <= set(sources):
        return f"does not allow publishing {' and '.join(PUBLISH_SOURCES)}"
    if sources is None and not grants.can_publish:
        return "does not allow publishing"
    if not grants.can_publish_data:
        return "does not allow publishing data"
    return None


def bind_egress(
    standin: LiveKitStandIn,
    config: message_pb2.ClientConfigureSession,
    netlocs: frozenset[str],
    connection_id: str,
) -> EgressBinding | Refusal:
    """The binding of a session configured with LiveKit egress, or the SERVER_ERROR for it."""
    if config.egress_type != message_pb2.EGRESS_TYPE_LIVEKIT or not config.HasField(
        "livekit_egress"
    ):
        return CODE_INVALID_ARGUMENT, "invalid egress config: egress_type and livekit_egress differ"
    egress = config.livekit_egress
    # First what the egress worker meets first: the LiveKit server it is told to join.
    if not _own_url(egress.url, netlocs):
        return CODE_UNAVAILABLE, f"livekit egress unavailable: cannot connect to {egress.url!r}"
    if not egress.room_name or not egress.publisher_id:
        return (
            CODE_INVALID_ARGUMENT,
            "invalid livekit egress config: room_name and publisher_id are required",
        )
    attributes = dict(egress.extra_attributes)
    if egress.api_token:
        try:
            claims = standin.verify(egress.api_token)
        except ValueError as exc:
            return CODE_UNAUTHENTICATED, f"livekit egress token rejected: {exc}"
        if claims.video is None:
            return CODE_UNAUTHENTICATED, "livekit egress token carries no video grants"
        participant = Participant(
            identity=claims.identity,
            name=claims.name or claims.identity,
            kind=claims.kind or "standard",
            attributes={**(claims.attributes or {}), **attributes},
            grants=claims.video,
            connection_id=connection_id,
        )
        problem = _grant_problem(participant, egress.room_name, egress.publisher_id)
        if problem is not None:
            return CODE_UNAUTHENTICATED, f"livekit egress token {problem}"
    elif egress.api_key or egress.api_secret:
        if (egress.api_key, egress.api_secret) != (standin.api_key, standin.api_secret):
            return CODE_UNAUTHENTICATED, "livekit egress api_key / api_secret rejected"
        participant = Participant(
            identity=egress.publisher_id,
            name=egress.publisher_id,
            kind="agent",
            attributes=attributes,
            grants=VideoGrants(room_join=True, room=egress.room_name),
            connection_id=connection_id,
        )
    else:
        return (
            CODE_INVALID_ARGUMENT,
            "invalid livekit egress config: api_token or api_key and api_secret required",
        )
    idle = float(egress.idle_timeout) if egress.idle_timeout > 0 else None
    return EgressBinding(egress.room_name, egress.publisher_id, participant, idle)


class EgressOutput:
    """What one egress-mode connection publishes into its room, and the signals it sends."""

    def __init__(
        self,
        standin: LiveKitStandIn,
        binding: EgressBinding,
        connection_id: str,
        avatar_id: str,
        *,
        bytes_per_frame: int,
        end_repeats: int,
    ) -> None:
        self.standin = standin
        self.binding = binding
        self.connection_id = connection_id
        self.avatar_id = avatar_id
        self.bytes_per_frame = bytes_per_frame  # 0: Ogg Opus, published whole at its end
        self.end_repeats = end_repeats

    def join(self) -> None:
        self.standin.join(self.binding.room, self.binding.participant)

    def leave(self) -> None:
        binding = self.binding
        self.standin.leave(binding.room, binding.publisher_id, self.connection_id)

    def _publication(self, req_id: str) -> Publication:
        binding = self.binding
        return self.standin.publication(
            binding.room, binding.publisher_id, self.connection_id, req_id
        )

    def audio(self, req_id: str, audio: bytes) -> None:
        self._publication(req_id).received += audio

    def frame(self, req_id: str, index: int, end: bool) -> list[bytes]:
        """Play out frame `index` into the room; the signals to send for it (often none)."""
        publication = self._publication(req_id)
        if end:
            publication.played_bytes = len(publication.received)
            publication.ended = True
        elif self.bytes_per_frame:
            played = (index + 1) * self.bytes_per_frame
            publication.played_bytes = min(len(publication.received), played)
        self.standin.changed()
        if end:
            signal = wire.egress_signal_message(self.connection_id, req_id, True, self.avatar_id)
            return [signal] * self.end_repeats
        if index % PROGRESS_FRAMES == 0:
            return [wire.egress_signal_message(self.connection_id, req_id, False, self.avatar_id)]
        return []

    def interrupted(self, req_id: str) -> None:
        self._publication(req_id).interrupted = True
        self.standin.changed()
