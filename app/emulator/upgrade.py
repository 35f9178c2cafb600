"""Ingress v2 upgrade checks: which WebSocket upgrades are refused, with what status and text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.emulator import wire
from app.emulator.asgi import Scope, header, query
from app.emulator.faults import Faults
from app.emulator.state import TokenCheck

if TYPE_CHECKING:
    from app.emulator.emulator import Emulator


@dataclass(frozen=True, slots=True)
class Rejection:
    status: int
    detail: str
    code: str | None = None


def check_upgrade(emu: Emulator, scope: Scope, faults: Faults) -> Rejection | None:
    """Why this upgrade must be refused, or None to accept it (the token is not consumed here)."""
    if faults.upgrade_status is not None:
        return Rejection(
            faults.upgrade_status,
            wire.INGRESS_REJECTIONS.get(faults.upgrade_status, ("", "upgrade rejected"))[1],
        )
    params = query(scope)
    # Headers (server and mobile style) win over query parameters (web style).
    app_id = header(scope, "x-app-id") or params.get("appId", "")
    token = header(scope, "x-session-key") or params.get("sessionKey", "")
    if not token:
        return Rejection(400, "empty token", "SESSION_TOKEN_INVALID")
    if app_id not in emu.known_app_ids:
        return Rejection(404, "app id unrecognized", "APP_ID_UNRECOGNIZED")
    verdict = emu.tokens.check(token, app_id)
    if verdict is TokenCheck.UNKNOWN:
        return Rejection(400, "invalid session token", "SESSION_TOKEN_INVALID")
    if verdict is TokenCheck.EXPIRED:
        return Rejection(401, "token is expired", "SESSION_TOKEN_EXPIRED")
    if verdict is TokenCheck.APP_MISMATCH:
        return Rejection(400, "app id mismatch", "APP_ID_MISMATCH")
    if params.get("id", "") not in emu.avatars:
        return Rejection(404, "avatar not found", "AVATAR_NOT_FOUND")
    return None


def session_token(scope: Scope) -> str:
    return header(scope, "x-session-key") or query(scope).get("sessionKey", "")
