"""The demo agent's route: `POST /v1/relay/sessions/{sessionId}/say` (app/agent/demo_agent.py).

Like the session's other routes it is authenticated, rate limited and for the session's owner only
(anyone else: sessionNotFound). The text is spoken by the server's built-in agent through the
session's producer socket; the answer (202) comes once the agent has taken the text, and the
speech reaches the page as a conversation of the session's stream.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from app.agent.speech import MAX_TEXT_CHARS
from app.api.deps import PrincipalDep, ServicesDep, SessionIdPath
from app.api.errors import error_responses
from app.api.relay import public_base, socket_url_at
from app.api.security import SECURITY_REQUIREMENT
from app.errors import ErrorCode

router = APIRouter(prefix="/v1", tags=["relay"])


class SayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        description="What the avatar says (spoken by espeak-ng in American English).",
    )


class SayAccepted(BaseModel):
    sessionId: str
    text: str = Field(description="The text as it is spoken (trimmed).")


@router.post(
    "/relay/sessions/{session_id}/say",
    status_code=202,
    summary="Have the server's demo agent say a text in one of the caller's relay sessions",
    description="The session must accept a producer (`allowProducer`, or `audioSource`"
    ' "producer"): the agent speaks through the producer socket, one text at a time.',
    openapi_extra={"security": SECURITY_REQUIREMENT},
    responses=error_responses(
        ErrorCode.INVALID_REQUEST,
        ErrorCode.UNAUTHORIZED,
        ErrorCode.SESSION_NOT_FOUND,
        ErrorCode.SESSION_CLOSED,
        ErrorCode.PRODUCER_NOT_ALLOWED,
        ErrorCode.AGENT_BUSY,
        ErrorCode.RATE_LIMITED,
        ErrorCode.SPEECH_UNAVAILABLE,
        ErrorCode.GOING_AWAY,
        ErrorCode.STORE_UNAVAILABLE,
    ),
)
async def say(
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    session_id: SessionIdPath,
    body: SayRequest,
) -> SayAccepted:
    base = public_base(request, services)
    spoken = await services.agent.say(
        session_id,
        principal.id,
        body.text,
        base_url=base,
        producer_url=lambda ticket: socket_url_at(base, session_id, ticket, "producer"),
    )
    return SayAccepted(sessionId=session_id, text=spoken)
