"""Relay sessions from the producer's side: create one (`POST /v1/relay/sessions`), and what
`Producer` needs to feed it. The page's ticket and URL go to the page; the producer's stay on the
server."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from avatar_relay_client.errors import ErrorCode, RelayError
from avatar_relay_client.rest import create, session_request


@dataclass(frozen=True, slots=True)
class ProducerSession:
    """A relay session whose speech a producer sends: what `POST /v1/relay/sessions` answered.

    `browser_ticket` and `browser_url` are for the page (its `avatar-relay.v1` socket);
    `producer_ticket` and `producer_url` stay on the server, for `Producer`. `answer` is the
    whole JSON answer (e.g. `appId`, `sessionToken` for the page's web SDK)."""

    session_id: str
    sample_rate: int
    avatar_id: str
    resume_window_seconds: float
    browser_ticket: str
    browser_url: str
    producer_ticket: str
    producer_url: str
    answer: dict[str, Any]

    @property
    def ticket_path(self) -> str:
        """Where a reconnecting producer gets its next ticket."""
        return f"/v1/relay/sessions/{self.session_id}/producer-tickets"

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> ProducerSession:
        producer = answer.get("producer")
        if not isinstance(producer, Mapping):
            raise RelayError(
                ErrorCode.PRODUCER_NOT_ALLOWED,
                'the session accepts no producer (create it with audioSource "producer" or'
                " allowProducer)",
            )
        return cls(
            session_id=str(answer["sessionId"]),
            sample_rate=int(answer["sampleRate"]),
            avatar_id=str(answer["avatarId"]),
            resume_window_seconds=float(answer["resumeWindowSeconds"]),
            browser_ticket=str(answer["ticket"]),
            browser_url=str(answer["url"]),
            producer_ticket=str(producer["ticket"]),
            producer_url=str(producer["url"]),
            answer=dict(answer),
        )


async def create_session(
    base_url: str,
    *,
    headers: Mapping[str, str] | None = None,
    avatar_id: str | None = None,
    sample_rate: int | None = None,
    forward_microphone: bool = False,
    with_session_token: bool = False,
    http: httpx.AsyncClient | None = None,
    **fields: Any,
) -> ProducerSession:
    """Create a relay session whose avatar speaks what a producer sends (`audioSource:
    "producer"`). `forward_microphone`: the browser's audio reaches the producer as `Microphone`
    events. Extra `fields` go into the request body as they are (e.g. `audioSource="browser",
    allowProducer=True` for a session both the page and a producer speak in)."""
    body = session_request(
        {"audioSource": "producer", **fields},
        avatar_id=avatar_id,
        sample_rate=sample_rate,
        with_session_token=with_session_token,
    )
    if body["audioSource"] == "producer":
        body["forwardMicrophone"] = forward_microphone
    answer = await create("/v1/relay/sessions", base_url, body, headers=headers, http=http)
    return ProducerSession.from_answer(answer)
