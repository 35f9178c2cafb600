"""RTC sessions from the producer's side: create one, and what `Producer` needs to feed it.

An RTC session (`POST /v1/rtc/sessions`, docs/rtc.md) puts the avatar into a LiveKit room; its
audio comes from a producer on the server side, over the same producer protocol as a relay
session's (`avatar-relay.producer.v1`, its revision 2: PAUSE / RESUME, PLAYBACK_STATE). The
answer's LiveKit fields (`url`, `token`, `roomName`, ...) are for the page; `producer` stays on
the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from avatar_relay_client.rest import create, session_request


@dataclass(frozen=True, slots=True)
class RtcProducerSession:
    """What `POST /v1/rtc/sessions` answered, as `Producer` takes it. `answer` is the whole JSON
    answer (the page's `url`, `token`, `roomName`, `sessionToken`, ...)."""

    session_id: str
    sample_rate: int
    avatar_id: str
    room_name: str
    playback_control: bool
    idle_timeout_seconds: float
    producer_ticket: str
    producer_url: str
    answer: dict[str, Any]

    @property
    def ticket_path(self) -> str:
        """Where a reconnecting producer gets its next ticket."""
        return f"/v1/rtc/sessions/{self.session_id}/producer-tickets"

    @property
    def resume_window_seconds(self) -> float:
        # The session waits for its producer as long as it waits for any input.
        return self.idle_timeout_seconds

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> RtcProducerSession:
        producer = answer["producer"]
        return cls(
            session_id=str(answer["sessionId"]),
            sample_rate=int(answer["sampleRate"]),
            avatar_id=str(answer["avatarId"]),
            room_name=str(answer["roomName"]),
            playback_control=bool(answer["playbackControl"]),
            idle_timeout_seconds=float(answer["idleTimeoutSeconds"]),
            producer_ticket=str(producer["ticket"]),
            producer_url=str(producer["url"]),
            answer=dict(answer),
        )


async def create_rtc_session(
    base_url: str,
    *,
    headers: Mapping[str, str] | None = None,
    avatar_id: str | None = None,
    sample_rate: int | None = None,
    room_name: str | None = None,
    with_session_token: bool = False,
    http: httpx.AsyncClient | None = None,
    **fields: Any,
) -> RtcProducerSession:
    """Create an RTC session (a LiveKit room with the avatar in it) to feed with a `Producer`.
    Extra `fields` go into the request body as they are (e.g. `identity=`, `agentIdentity=`).
    A refusal raises RelayError with its code (e.g. `rtcNotConfigured`)."""
    body = session_request(
        dict(fields),
        avatar_id=avatar_id,
        sample_rate=sample_rate,
        with_session_token=with_session_token,
    )
    if room_name is not None:
        body["roomName"] = room_name
    answer = await create("/v1/rtc/sessions", base_url, body, headers=headers, http=http)
    return RtcProducerSession.from_answer(answer)
