"""Real servers on loopback for tests: our FastAPI app under uvicorn, and a Redis server."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI


@contextlib.asynccontextmanager
async def running_app(app: FastAPI, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a free port in this event loop; yield its base URL."""
    config = uvicorn.Config(app, host=host, port=0, log_level="warning", lifespan="on")
    async with running_config(config) as url:
        yield url


@contextlib.asynccontextmanager
async def running_served(app: FastAPI) -> AsyncIterator[str]:
    """`app` under uvicorn configured as `avatar-relay serve` configures it (its WebSocket
    protocol and limits included), on a free loopback port; yield its base URL."""
    from app.server import uvicorn_config

    settings = app.state.settings.model_copy(
        update={"host": "127.0.0.1", "port": 0, "log_level": "warning"}
    )
    config = uvicorn_config(settings, app)
    async with running_config(config) as url:
        yield url


@contextlib.asynccontextmanager
async def running_config(config: uvicorn.Config) -> AsyncIterator[str]:
    """Serve a uvicorn config in this event loop; yield its base URL."""
    host = config.host
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Start a throwaway redis-server on a free loopback port; yield its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: run the tests through scripts/test")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), timeout=0.2),
                ):
                    break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
