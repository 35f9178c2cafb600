"""A LiveKit stand-in: the RoomService routes `livekit-api` calls, and rooms the avatar joins.

No LiveKit server can be installed where this project is tested, so the emulator plays the part
the SpatialReal egress and a business server see of one:

- **RoomService over Twirp**: `POST /twirp/livekit.RoomService/{CreateRoom, ListRooms,
  DeleteRoom, ListParticipants}` with `application/protobuf` bodies. Every call must carry
  `Authorization: Bearer <JWT>` signed with the stand-in's key pair and holding the grant LiveKit
  requires (roomCreate, roomList, roomAdmin for the room); errors are Twirp's JSON
  `{"code", "msg"}` with its HTTP statuses.
- **Rooms the avatar joins**: an ingress session configured with `livekit_egress` joins the room
  as the token it was given says (verified with `livekit-api`'s own TokenVerifier), and what it
  "publishes" is recorded per room and request: the audio played out so far, and how the
  request ended.

Media itself (WebRTC) is not emulated: a browser cannot join these rooms.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from google.protobuf.message import DecodeError, Message
from livekit.api import (
    CreateRoomRequest,
    DeleteRoomRequest,
    DeleteRoomResponse,
    ListParticipantsRequest,
    ListParticipantsResponse,
    ListRoomsRequest,
    ListRoomsResponse,
    ParticipantInfo,
    Room,
    TokenVerifier,
    VideoGrants,
)
from livekit.api.access_token import Claims

from app.emulator.asgi import Receive, Scope, Send, header, read_body, send_http

TWIRP_PREFIX = "/twirp/livekit.RoomService/"
PROTOBUF = "application/protobuf"


class TwirpFailure(Exception):
    def __init__(self, status: int, code: str, msg: str) -> None:
        self.status = status
        self.code = code
        self.msg = msg
        super().__init__(f"{code}: {msg}")

    def body(self) -> bytes:
        return json.dumps({"code": self.code, "msg": self.msg}).encode()


@dataclass
class Publication:
    """One request's audio as the avatar publisher played it into a room."""

    room: str
    publisher_id: str
    connection_id: str
    req_id: str
    received: bytearray = field(default_factory=bytearray)
    played_bytes: int = 0
    ended: bool = False
    interrupted: bool = False

    @property
    def audio(self) -> bytes:
        """The audio published so far (what a listener in the room has heard)."""
        return bytes(self.received[: self.played_bytes])


@dataclass
class Participant:
    identity: str
    name: str
    kind: str
    attributes: dict[str, str]
    grants: VideoGrants
    connection_id: str
    sid: str = field(default_factory=lambda: "PA_" + secrets.token_hex(6))
    joined_at: float = field(default_factory=time.time)


@dataclass
class FakeRoom:
    name: str
    empty_timeout: int = 0
    metadata: str = ""
    created_by_api: bool = True
    sid: str = field(default_factory=lambda: "RM_" + secrets.token_hex(6))
    creation_time: int = field(default_factory=lambda: int(time.time()))
    participants: dict[str, Participant] = field(default_factory=dict)
    publications: list[Publication] = field(default_factory=list)
    # Every participant that ever joined, in order (identity, connection id).
    joins: list[tuple[str, str]] = field(default_factory=list)

    def proto(self) -> Room:
        return Room(
            sid=self.sid,
            name=self.name,
            empty_timeout=self.empty_timeout,
            metadata=self.metadata,
            creation_time=self.creation_time,
            num_participants=len(self.participants),
            num_publishers=len(self.participants),
        )

    def published_audio(self) -> dict[str, bytes]:
        """Audio published into this room, per request id."""
        return {p.req_id: p.audio for p in self.publications}


# What each RoomService method needs of the caller's token (LiveKit's own rules).
_GRANTS: dict[str, Callable[[VideoGrants, Message], bool]] = {
    "CreateRoom": lambda grants, _: bool(grants.room_create),
    "DeleteRoom": lambda grants, _: bool(grants.room_create),
    "ListRooms": lambda grants, _: bool(grants.room_list),
    "ListParticipants": lambda grants, request: (
        bool(grants.room_admin) and grants.room == getattr(request, "room", None)
    ),
}
_REQUESTS: dict[str, type[Message]] = {
    "CreateRoom": CreateRoomRequest,
    "DeleteRoom": DeleteRoomRequest,
    "ListRooms": ListRoomsRequest,
    "ListParticipants": ListParticipantsRequest,
}


class LiveKitStandIn:
    """Rooms, participants and publications; the RoomService routes; token checks."""

    def __init__(self, api_key: str, api_secret: str, notify: Callable[[], None]) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.verifier = TokenVerifier(api_key, api_secret)
        self.rooms: dict[str, FakeRoom] = {}
        self.deleted: list[str] = []
        # (method, HTTP status) of every RoomService call, in order.
        self.calls: list[tuple[str, int]] = []
        # Answer every RoomService call with this HTTP status (a Twirp error), when set.
        self.fail_status: int | None = None
        self._notify = notify

    def changed(self) -> None:
        self._notify()

    # --- tokens ---

    def verify(self, token: str) -> Claims:
        """The token's claims; raises ValueError when it is not ours, expired or malformed."""
        try:
            return self.verifier.verify(token)
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise ValueError(str(exc) or type(exc).__name__) from None

    # --- the avatar in a room ---

    def join(self, room_name: str, participant: Participant) -> FakeRoom:
        """A participant joins (LiveKit creates a missing room on join); a participant with the
        same identity is replaced, as LiveKit replaces a duplicate identity."""
        room = self.rooms.get(room_name)
        if room is None:
            room = FakeRoom(room_name, created_by_api=False)
            self.rooms[room_name] = room
        room.participants[participant.identity] = participant
        room.joins.append((participant.identity, participant.connection_id))
        self._notify()
        return room

    def leave(self, room_name: str, identity: str, connection_id: str) -> None:
        room = self.rooms.get(room_name)
        if room is None:
            return
        current = room.participants.get(identity)
        if current is not None and current.connection_id == connection_id:
            del room.participants[identity]
            self._notify()

    def publication(
        self, room_name: str, publisher_id: str, connection_id: str, req_id: str
    ) -> Publication:
        room = self.rooms[room_name]
        for existing in room.publications:
            if existing.req_id == req_id and existing.connection_id == connection_id:
                return existing
        made = Publication(room_name, publisher_id, connection_id, req_id)
        room.publications.append(made)
        self._notify()
        return made

    # --- RoomService (Twirp) ---

    async def serve(self, scope: Scope, receive: Receive, send: Send, method: str) -> None:
        body = await read_body(receive)
        try:
            answer = self._call(scope, method, body)
        except TwirpFailure as failure:
            self.calls.append((method, failure.status))
            self._notify()
            await send_http(send, failure.status, failure.body())
            return
        self.calls.append((method, 200))
        self._notify()
        await send_http(send, 200, answer.SerializeToString(), PROTOBUF)

    def _call(self, scope: Scope, method: str, body: bytes | None) -> Message:
        if scope["method"] != "POST":
            raise TwirpFailure(404, "bad_route", "Twirp routes take POST")
        request_type = _REQUESTS.get(method)
        if request_type is None:
            raise TwirpFailure(404, "bad_route", f"no handler for RoomService/{method}")
        if self.fail_status is not None:
            status = self.fail_status
            code = "unavailable" if status >= 500 else "invalid_argument"
            raise TwirpFailure(status, code, "injected failure")
        claims = self._authenticate(scope)
        if header(scope, "content-type").split(";")[0].strip() != PROTOBUF:
            raise TwirpFailure(400, "malformed", "the stand-in speaks application/protobuf only")
        if body is None:
            raise TwirpFailure(400, "malformed", "request body too large")
        request = request_type()
        try:
            request.ParseFromString(body)
        except DecodeError:
            raise TwirpFailure(400, "malformed", "the body is not a protobuf message") from None
        if claims.video is None or not _GRANTS[method](claims.video, request):
            raise TwirpFailure(403, "permission_denied", f"the token does not allow {method}")
        handler: Callable[[Any], Message] = getattr(self, f"_{method}")
        return handler(request)

    def _authenticate(self, scope: Scope) -> Claims:
        value = header(scope, "authorization")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise TwirpFailure(401, "unauthenticated", "missing Authorization: Bearer token")
        try:
            return self.verify(token.strip())
        except ValueError as exc:
            raise TwirpFailure(401, "unauthenticated", f"invalid token: {exc}") from None

    def _CreateRoom(self, request: CreateRoomRequest) -> Room:
        if not request.name:
            raise TwirpFailure(400, "invalid_argument", "room name is required")
        room = self.rooms.get(request.name)
        if room is None:
            room = FakeRoom(request.name, request.empty_timeout, request.metadata)
            self.rooms[request.name] = room
        return room.proto()

    def _ListRooms(self, request: ListRoomsRequest) -> ListRoomsResponse:
        names = set(request.names)
        rooms = [r.proto() for r in self.rooms.values() if not names or r.name in names]
        return ListRoomsResponse(rooms=rooms)

    def _DeleteRoom(self, request: DeleteRoomRequest) -> DeleteRoomResponse:
        if self.rooms.pop(request.room, None) is None:
            raise TwirpFailure(404, "not_found", "requested room does not exist")
        self.deleted.append(request.room)
        return DeleteRoomResponse()

    def _ListParticipants(self, request: ListParticipantsRequest) -> ListParticipantsResponse:
        room = self.rooms.get(request.room)
        if room is None:
            raise TwirpFailure(404, "not_found", "requested room does not exist")
        kinds = {"agent": ParticipantInfo.AGENT, "standard": ParticipantInfo.STANDARD}
        return ListParticipantsResponse(
            participants=[
                ParticipantInfo(
                    sid=p.sid,
                    identity=p.identity,
                    name=p.name,
                    state=ParticipantInfo.ACTIVE,
                    kind=kinds.get(p.kind, ParticipantInfo.STANDARD),
                    attributes=p.attributes,
                    joined_at=int(p.joined_at),
                )
                for p in room.participants.values()
            ]
        )
