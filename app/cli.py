"""The `avatar-relay` command: serve, emulator, token."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence

from app.errors import AppError
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
        )
        async with emulator:
            print(f"console URL: {emulator.console_url}", flush=True)
            print(f"ingress URL: {emulator.ingress_url}", flush=True)
            print(f"API key: {emulator.api_keys[0]}   app id: {emulator.app_id}", flush=True)
            print(f"avatars: {', '.join(emulator.avatars)}", flush=True)
            print(f"API root (POST /v1/auth/session-token): {emulator.api_url}", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    from app.spatialreal.console import ConsoleClient

    settings = _settings(args)
    if settings.emulator_mode and not settings.spatialreal_console_url:
        print(
            "token: no SPATIALREAL_API_KEY and no SPATIALREAL_CONSOLE_URL; start"
            " `avatar-relay emulator` and set SPATIALREAL_CONSOLE_URL to its console URL",
            file=sys.stderr,
        )
        return 2

    async def run() -> dict[str, object]:
        async with ConsoleClient.from_settings(settings) as console:
            minted = await console.mint(int(time.time()) + args.ttl)
        return {
            "sessionToken": minted.session_token,
            "expireAt": minted.expire_at,
            "appId": settings.app_id,
            "region": minted.region,
        }

    try:
        print(json.dumps(asyncio.run(run())))
    except AppError as error:
        print(
            json.dumps({"error": error.log_fields() | {"message": error.message}}), file=sys.stderr
        )
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avatar-relay",
        description="Session-token broker and Host Mode relay for SpatialReal AvatarKit avatars."
        " Configuration comes from the environment and .env (see .env.example).",
    )
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
    emulator.set_defaults(func=_cmd_emulator)

    token = sub.add_parser(
        "token",
        help="mint one session token and print it as JSON",
        description="Mint one SpatialReal session token through the configured console"
        " (with regional fallback) and print {sessionToken, expireAt, appId, region}.",
    )
    token.add_argument(
        "--ttl", type=int, default=3600, help="seconds until the token expires (default 3600)"
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
