"""The browser side, served without a build step: the demo page at `/` and the client library.

- `/` the demo page; `/static/<file>` its script, styles, recording controller and speech sample;
- `/client/<file>` the client library (`app/static/client/`): the entry point `avatar-relay.js`
  (+ `.d.ts`), the ES modules it imports and the AudioWorklet processor the microphone helper
  loads from beside it, for pages that `import` the client straight from this server.

Only the files listed here are served (no directory listing, no path handling to get wrong), each
with an explicit content type: `.d.ts` would otherwise be guessed as an MPEG transport stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.errors import AppError, ErrorCode

STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "static"
CLIENT_DIR: Final = STATIC_DIR / "client"

JS: Final = "text/javascript; charset=utf-8"

# Every module of the client (the entry point imports the others by relative URL).
CLIENT_FILES: Final[dict[str, str]] = {
    "avatar-relay.d.ts": "application/typescript; charset=utf-8",
    **{path.name: JS for path in sorted(CLIENT_DIR.glob("*.js"))},
}
PAGE_FILES: Final[dict[str, str]] = {
    "demo.js": JS,
    "demo-avatar.js": JS,
    "demo-panels.js": JS,
    "demo-say.js": JS,
    "demo-timeline.js": JS,
    "demo.css": "text/css; charset=utf-8",
    "recording-controller.js": JS,
    "web-sdk-stand-in.js": JS,
    "sample_16000.pcm": "application/octet-stream",
    "favicon.svg": "image/svg+xml",
}

# Revalidate every time (cheap: ETag / Last-Modified), so a redeploy is never half-cached.
_CACHE: Final = {"Cache-Control": "no-cache"}

router = APIRouter(tags=["web"], include_in_schema=False)


def _file(directory: Path, name: str, table: dict[str, str]) -> FileResponse:
    media_type = table.get(name)
    if media_type is None:
        raise AppError(ErrorCode.NOT_FOUND, "no such file")
    return FileResponse(directory / name, media_type=media_type, headers=_CACHE)


@router.get("/")
async def demo_page() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_CACHE
    )


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    # Browsers ask for it on their own; an SVG is fine for every current one.
    return _file(STATIC_DIR, "favicon.svg", PAGE_FILES)


@router.get("/client/{name}")
async def client_file(name: str) -> FileResponse:
    return _file(CLIENT_DIR, name, CLIENT_FILES)


@router.get("/static/{name}")
async def page_file(name: str) -> FileResponse:
    return _file(STATIC_DIR, name, PAGE_FILES)
