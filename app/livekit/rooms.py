"""LiveKit rooms through the server API: `livekit-api`'s RoomService (Twirp over HTTP).

The official client signs a short-lived admin token per call with our key pair. Its failures
become `AppError`s: the server could not be reached, timed out or failed (5xx) → rtcUnavailable;
it refused our key or secret (401/403) → rtcCredentialsRejected; it refused the request (other
4xx) → invalidRequest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiohttp
from livekit.api import (
    CreateRoomRequest,
    DeleteRoomRequest,
    ListRoomsRequest,
    LiveKitAPI,
    Room,
    TwirpError,
)

from app.errors import AppError, ErrorCode
from app.livekit.credentials import LiveKitCredentials

log = logging.getLogger("avatar_relay.livekit")


@dataclass(frozen=True, slots=True)
class RoomInfo:
    name: str
    sid: str
    num_participants: int = 0

    @classmethod
    def of(cls, room: Room) -> RoomInfo:
        return cls(room.name, room.sid, room.num_participants)


def _failure(exc: BaseException, what: str) -> AppError:
    if isinstance(exc, TwirpError):
        detail = f"LiveKit {what} failed: {exc.code} {exc.message} (HTTP {exc.status})"
        if exc.status in (401, 403):
            code = ErrorCode.RTC_CREDENTIALS_REJECTED
        elif exc.status >= 500:
            code = ErrorCode.RTC_UNAVAILABLE
        else:
            code = ErrorCode.INVALID_REQUEST
        return AppError(code, detail, http_status=exc.status, server_code=exc.code)
    reason = "timed out" if isinstance(exc, TimeoutError) else (str(exc) or type(exc).__name__)
    return AppError(ErrorCode.RTC_UNAVAILABLE, f"LiveKit {what} failed: {reason}")


class RoomClient:
    """Creates, lists and deletes rooms. One HTTP connection pool, made on first use (it needs
    the running event loop); `aclose()` releases it."""

    def __init__(self, credentials: LiveKitCredentials, *, timeout: float = 10.0) -> None:
        self.credentials = credentials
        self._timeout = timeout
        self._api: LiveKitAPI | None = None

    def _client(self) -> LiveKitAPI:
        if self._api is None:
            creds = self.credentials
            self._api = LiveKitAPI(
                creds.url,
                creds.api_key,
                creds.api_secret.get_secret_value(),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
        return self._api

    async def create(self, name: str, *, empty_timeout: int = 0, metadata: str = "") -> RoomInfo:
        """Create the room (LiveKit answers an existing room of that name as it is)."""
        request = CreateRoomRequest(name=name, empty_timeout=empty_timeout, metadata=metadata)
        try:
            room = await self._client().room.create_room(request)
        except (TwirpError, aiohttp.ClientError, TimeoutError) as exc:
            raise _failure(exc, "CreateRoom") from None
        return RoomInfo.of(room)

    async def list(self, names: list[str] | None = None) -> list[RoomInfo]:
        try:
            answer = await self._client().room.list_rooms(ListRoomsRequest(names=names or []))
        except (TwirpError, aiohttp.ClientError, TimeoutError) as exc:
            raise _failure(exc, "ListRooms") from None
        return [RoomInfo.of(room) for room in answer.rooms]

    async def delete(self, name: str) -> bool:
        """Delete the room; False when LiveKit had no such room (already gone)."""
        try:
            await self._client().room.delete_room(DeleteRoomRequest(room=name))
        except TwirpError as exc:
            if exc.status == 404:
                return False
            raise _failure(exc, "DeleteRoom") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _failure(exc, "DeleteRoom") from None
        return True

    async def aclose(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            await api.aclose()
