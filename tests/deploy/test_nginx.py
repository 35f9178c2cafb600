"""deploy/nginx.conf run for real in front of two instances (scripts/test installs nginx).

The structural checks in test_deploy_files.py always run; these start nginx with the committed
configuration (only addresses, ports and writable paths changed) in front of two small stand-in
instances that say who they are, and check the routing an operator relies on.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets
from fastapi import FastAPI, WebSocket
from websockets import Subprotocol

from app.api.app import create_app
from app.emulator import Emulator
from avatar_relay_client import ConversationCompleted, Producer, create_rtc_session
from avatar_relay_client.browser_protocol import (
    SUBPROTOCOL,
    Hello,
    Welcome,
    decode_server,
    encode_client,
)
from bench.harness import nginx_binary, shipped_nginx_config
from tests.rtc_api.conftest import AUTH, PCM, rtc_settings
from tests.support.nginx import check_config, running_nginx
from tests.support.relay import relay_test_settings
from tests.support.servers import free_port, running_app

CALLER = "nginx-caller-key-0123456789abcdef"


def instance(name: str) -> FastAPI:
    """Answers every request with its name (and the headers nginx passed on)."""
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def anything(path: str) -> dict[str, str]:
        return {"instance": name, "path": path}

    @app.websocket("/v1/relay")
    async def relay(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text(name)
        await socket.close()

    return app


@contextlib.asynccontextmanager
async def nginx_over(tmp_path: Path, first: FastAPI, second: FastAPI) -> AsyncIterator[str]:
    nginx = nginx_binary()
    # scripts/ensure-system-deps installs nginx; a missing binary is a broken setup, not a pass.
    assert nginx is not None, "nginx not found: run the tests through scripts/test"
    async with running_app(first) as a, running_app(second) as b:
        port = free_port()
        conf = shipped_nginx_config(
            tmp_path, port, [a.removeprefix("http://"), b.removeprefix("http://")]
        )
        check_config(nginx, conf)
        with running_nginx(nginx, conf, port) as address:
            yield address


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[str]:
    async with nginx_over(tmp_path, instance("a"), instance("b")) as address:
        yield address


async def test_sessions_stick_to_one_instance_and_sockets_upgrade(proxy: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{proxy}", timeout=10) as client:
        owners: dict[str, str] = {}
        for n in range(24):
            session = f"s-{n}"
            answers = {
                (
                    await client.get("/v1/relay", params={"session": session, "ticket": f"t{k}"})
                ).json()["instance"]
                for k in range(3)
            }
            assert len(answers) == 1, (session, answers)
            owners[session] = answers.pop()
            # Asking for a new ticket goes to the same instance as the socket.
            tickets = await client.post(f"/v1/relay/sessions/{session}/tickets")
            assert tickets.json()["instance"] == owners[session]
        # The hash spreads sessions over both instances.
        assert set(owners.values()) == {"a", "b"}
        assert (await client.get("/metrics")).status_code == 403
        assert (await client.get("/healthz")).json()["path"] == "healthz"
    session = "s-0"
    async with websockets.connect(f"ws://{proxy}/v1/relay?session={session}&ticket=x") as ws:
        assert await ws.recv() == owners[session]


async def test_socket_urls_keep_the_port_the_browser_used(tmp_path: Path) -> None:
    # The real app behind nginx on a port other than 80, no PUBLIC_URL: the socket URL it hands
    # out must point back at the proxy, port included, and work there.
    nginx = nginx_binary()
    assert nginx is not None, "nginx not found: run the tests through scripts/test"
    async with (
        Emulator() as emulator,
        running_app(create_app(relay_test_settings(emulator, [CALLER]))) as app_url,
    ):
        port = free_port()
        conf = shipped_nginx_config(tmp_path, port, [app_url.removeprefix("http://")] * 2)
        with running_nginx(nginx, conf, port) as address:
            async with httpx.AsyncClient(base_url=f"http://{address}", timeout=10) as client:
                created = await client.post(
                    "/v1/relay/sessions", json={}, headers={"Authorization": f"Bearer {CALLER}"}
                )
            assert created.status_code == 201, created.text
            url = created.json()["url"]
            assert url.startswith(f"ws://{address}/v1/relay?"), url
            async with websockets.connect(url, subprotocols=[Subprotocol(SUBPROTOCOL)]) as ws:
                await ws.send(encode_client(Hello(last_seq=0)))
                welcome = decode_server(bytes(await ws.recv()))  # type: ignore[arg-type]
            assert isinstance(welcome, Welcome)
            assert welcome.session_id == created.json()["sessionId"]


async def test_an_rtc_producer_speaks_through_nginx(tmp_path: Path) -> None:
    # The real app (RTC mode, the emulator as LiveKit) behind nginx: the producer credential
    # points back at the proxy, and the producer socket upgrades through it.
    nginx = nginx_binary()
    assert nginx is not None, "nginx not found: run the tests through scripts/test"
    async with (
        Emulator(speed=50, record=True) as emulator,
        running_app(create_app(rtc_settings(emulator))) as app_url,
    ):
        port = free_port()
        conf = shipped_nginx_config(tmp_path, port, [app_url.removeprefix("http://")] * 2)
        with running_nginx(nginx, conf, port) as address:
            base = f"http://{address}"
            session = await create_rtc_session(base, headers=AUTH)
            assert session.producer_url.startswith(f"ws://{address}/v1/rtc/producer?")
            async with Producer(base, session, headers=AUTH) as producer:
                utterance = await producer.say([PCM[:6400]])
                outcome = await utterance.outcome()
                room = emulator.livekit.rooms[session.room_name]
                assert room.published_audio() == {utterance.conversation_id: PCM[:6400]}
            assert isinstance(outcome, ConversationCompleted)
