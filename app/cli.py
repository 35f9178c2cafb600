"""The `avatar-relay` command: serve, emulator, token."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence

from app import __version__
from app.errors import AppError, ErrorCode
from app.settings import ConfigError, Settings, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    for name in ("host", "port"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return load_settings(**overrides)


def _cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)  # configuration problems are reported before anything starts
    from app.server import run

    run(settings)
    return 0


def _cmd_emulator(args: argparse.Namespace) -> int:
    from app.emulator import Emulator

    async def run() -> None:
        emulator = Emulator(
            host=args.host,
            port=args.port,
            speed=args.speed,
            playback_control=args.playback_control,
            multi_use_tokens=args.multi_use_tokens,
            stamp_frames=args.stamp_frames,
        )
        async with emulator:
            print(f"console URL: {emulator.console_url}", flush=True)
            print(f"ingress URL: {emulator.ingress_url}", flush=True)
            print(f"API key: {emulator.api_keys[0]}   app id: {emulator.app_id}", flush=True)
            print(f"avatars: {', '.join(emulator.avatars)}", flush=True)
            print(f"API root (POST /v1/auth/session-token): {emulator.api_url}", flush=True)
            livekit = emulator.livekit
            print(
                f"LiveKit stand-in: LIVEKIT_URL={emulator.livekit_url}"
                f" LIVEKIT_API_KEY={livekit.api_key} LIVEKIT_API_SECRET={livekit.api_secret}",
                flush=True,
            )
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def _error_json(error: AppError) -> str:
    """The REST error shape (`{"error": {"code", "message", ...}}`, camelCase keys), with the
    upstream details a person debugging from a shell wants."""
    body: dict[str, object] = {"code": error.code.value, "message": error.message}
    for key, value in error.log_fields().items():
        if key != "error_code":
            head, *rest = key.split("_")
            body[head + "".join(part.title() for part in rest)] = value
    return json.dumps({"error": body})


def _cmd_token(args: argparse.Namespace) -> int:
    from app.server import emulator_settings
    from app.spatialreal.console import ConsoleClient
    from app.store.memory import MemoryStore
    from app.tokens import TokenService, resolve_ttl

    settings = _settings(args)
    # No credentials and no console to talk to: like `serve`, use a built-in emulator.
    own_emulator = settings.emulator_mode and not settings.spatialreal_console_url

    async def run() -> dict[str, object]:
        async with contextlib.AsyncExitStack() as stack:
            current = settings
            if own_emulator:
                from app.emulator import Emulator

                emulator = await stack.enter_async_context(Emulator())
                current = emulator_settings(settings, emulator)
                print(
                    "token: EMULATOR MODE (no SPATIALREAL_API_KEY): minted by a built-in emulator;"
                    " set SPATIALREAL_API_KEY and SPATIALREAL_APP_ID for a real token",
                    file=sys.stderr,
                    flush=True,
                )
            console = await stack.enter_async_context(ConsoleClient.from_settings(current))
            # The server's own policy and error mapping: `--ttl` means what `ttlSeconds` means.
            tokens = TokenService(current, MemoryStore(), console)
            issued = (await tokens.issue("cli", args.ttl, request_id="cli")).token
            return {
                "sessionToken": issued.session_token,
                "expireAt": issued.expire_at,
                "appId": issued.app_id,
                "region": issued.region,
            }

    try:
        resolve_ttl(  # refused before anything starts
            settings.token_ttl_min_seconds,
            settings.token_ttl_default_seconds,
            settings.token_ttl_max_seconds,
            args.ttl,
        )
        print(json.dumps(asyncio.run(run())))
    except AppError as error:
        if error.code is ErrorCode.INVALID_REQUEST:
            # The policy speaks of the REST field; here the caller typed `--ttl`.
            error.message = error.message.replace("ttlSeconds", "--ttl")
            print(_error_json(error), file=sys.stderr)
            return 2
        print(_error_json(error), file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avatar-relay",
        description="Session-token broker and Host Mode relay for SpatialReal AvatarKit avatars."
        " Configuration comes from the environment and .env (see .env.example).",
    )
    parser.add_argument("--version", action="version", version=f"avatar-relay {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the API server",
        description="Run the API server. With no SPATIALREAL_API_KEY it starts the built-in"
        " SpatialReal emulator in the same process and talks to it.",
    )
    serve.add_argument("--host", help="address to listen on (HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (PORT, default 8080)")
    serve.set_defaults(func=_cmd_serve)

    emulator = sub.add_parser(
        "emulator",
        help="run the SpatialReal emulator alone",
        description="Run the SpatialReal cloud emulator (console + ingress v2) and print its URLs."
        " Point the official SDKs or this server at them. See docs/emulator.md.",
    )
    emulator.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    emulator.add_argument("--port", type=int, default=8090, help="port (default 8090; 0 = any)")
    emulator.add_argument(
        "--speed", type=float, default=1.0, help="animation pacing factor (2.0 = twice real time)"
    )
    emulator.add_argument(
        "--playback-control",
        action="store_true",
        help="declare the playback_control capability and honour pause/resume",
    )
    emulator.add_argument(
        "--multi-use-tokens",
        action="store_true",
        help="let a session token open many sessions until it expires (spatius prewarm)",
    )
    emulator.add_argument(
        "--stamp-frames",
        action="store_true",
        help="end each animation message with its send time (an undeclared fixed64 field, ns"
        " since the epoch) so a client can measure transit; see docs/emulator.md",
    )
    emulator.set_defaults(func=_cmd_emulator)

    token = sub.add_parser(
        "token",
        help="mint one session token and print it as JSON",
        description="Mint one SpatialReal session token through the configured console"
        " (with regional fallback) and print {sessionToken, expireAt, appId, region}. With no"
        " SPATIALREAL_API_KEY (and no SPATIALREAL_CONSOLE_URL) a built-in emulator mints it, as"
        ' `serve` does. Errors go to stderr as {"error": {"code", "message", ...}}.',
    )
    token.add_argument(
        "--ttl",
        type=int,
        default=None,
        help="seconds until the token expires, within TOKEN_TTL_MIN_SECONDS..TOKEN_TTL_MAX_SECONDS"
        " (default TOKEN_TTL_DEFAULT_SECONDS, 3600)",
    )
    token.set_defaults(func=_cmd_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as error:
        print("avatar-relay: invalid configuration:", file=sys.stderr)
        for line in error.problems:
            print(f"  {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
