"""A fleet for tests: several real server instances (forked by `tests.support.zygote`) on Redis,
behind `deploy/nginx.conf` run by real nginx, upstream an emulator in the test's own process.

Each instance has a fixed port (nginx lists them all, as a static deployment would); replacing
one (after a SIGKILL or a drain) starts a new process on the same port, as a rolling deploy
replaces a pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.emulator import Emulator
from bench.harness import nginx_binary, shipped_nginx_config
from tests.support.nginx import running_nginx
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
CALLER_KEY = "cluster-caller-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {CALLER_KEY}"}


@dataclass
class Instance:
    index: int
    port: int
    pid: int = 0
    generation: int = 0
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    status: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        """Its instance id (INSTANCE_ID): the index and how many times it was started."""
        return f"inst-{self.index}-{self.generation}"


class Cluster:
    def __init__(
        self, emulator: Emulator, redis_url: str, workdir: Path, size: int = 3, **settings: Any
    ) -> None:
        self.emulator = emulator
        self.redis_url = redis_url
        self.workdir = workdir
        self.instances = [Instance(i, free_port()) for i in range(size)]
        self.overrides = settings
        self.url = ""
        self._zygote: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._spawned: asyncio.Queue[int] = asyncio.Queue()
        self._by_pid: dict[int, Instance] = {}
        # Per process, its exit status once it exits: an Instance's own fields describe only its
        # newest process, which a replacement may have started already.
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._replaced: set[int] = set()
        self._spawn_lock = asyncio.Lock()

    def settings(self, instance: Instance) -> dict[str, Any]:
        emulator = self.emulator
        values: dict[str, Any] = {
            "app_env": "test",
            "host": "127.0.0.1",
            "port": instance.port,
            "log_level": "warning",
            "redis_url": self.redis_url,
            "spatialreal_api_key": emulator.api_keys[0],
            "spatialreal_app_id": emulator.app_id,
            "default_avatar_id": emulator.avatars[0],
            "spatialreal_console_url": emulator.console_url,
            "spatialreal_ingress_url": emulator.ingress_url,
            "spatialreal_fallback_regions": [],
            "auth_mode": "api-key",
            "auth_api_keys": [CALLER_KEY],
            "rate_limit_principal_per_minute": 0,
            "rate_limit_ip_per_minute": 0,
            "upstream_connect_timeout": 2.0,
            "upstream_request_timeout": 2.0,
            "instance_id": instance.name,
        }
        values.update(self.overrides)
        return values

    # --- lifecycle ---

    async def start(self, instance: Instance) -> None:
        """Start (or replace) the instance's process and wait until it is ready."""
        async with self._spawn_lock:
            await self._spawn(instance)
        await self.wait_ready(instance)

    async def _spawn(self, instance: Instance) -> None:
        assert self._zygote is not None
        assert self._zygote.stdin is not None
        instance.generation += 1
        instance.exited = asyncio.Event()
        instance.status = None
        log = self.workdir / f"{instance.name}.log"
        request = {"settings": self.settings(instance), "log": str(log)}
        self._zygote.stdin.write(json.dumps(request).encode() + b"\n")
        await self._zygote.stdin.drain()
        instance.pid = await asyncio.wait_for(self._spawned.get(), 10)
        self._by_pid[instance.pid] = instance

    async def wait_ready(self, instance: Instance, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                if instance.exited.is_set():
                    raise AssertionError(f"{instance.name} exited: {self.log(instance)[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(instance.url + "/readyz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise AssertionError(f"{instance.name} not ready: {self.log(instance)[-3000:]}")
                await asyncio.sleep(0.02)

    def log(self, instance: Instance) -> str:
        path = self.workdir / f"{instance.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def signal(self, instance: Instance, sig: signal.Signals) -> int:
        os.kill(instance.pid, sig)
        return instance.pid

    def kill(self, instance: Instance) -> int:
        """SIGKILL the instance's process; returns its pid."""
        return self.signal(instance, signal.SIGKILL)

    def term(self, instance: Instance) -> int:
        """SIGTERM the instance's process; returns its pid."""
        return self.signal(instance, signal.SIGTERM)

    async def wait_exited(
        self, instance: Instance, timeout: float = 60.0, *, pid: int | None = None
    ) -> int:
        """The exit status of process `pid` (the instance's current one unless given)."""
        pid = instance.pid if pid is None else pid
        exit_status = self._exits[pid]
        try:
            return await asyncio.wait_for(asyncio.shield(exit_status), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{instance.name} (pid {pid}) did not exit within {timeout} s:"
                f" {self.log(instance)[-3000:]}"
            ) from None

    async def replace(self, instance: Instance, pid: int, timeout: float) -> None:
        """Once process `pid` of `instance` has exited, start the instance's next process: once
        per process, however many callers ask (two would start two on the same port)."""
        if pid in self._replaced:
            return
        self._replaced.add(pid)
        await self.wait_exited(instance, timeout, pid=pid)
        await self.start(instance)

    def by_name(self, name: str) -> Instance:
        return next(i for i in self.instances if i.name == name)

    async def _read(self) -> None:
        assert self._zygote is not None
        assert self._zygote.stdout is not None
        while line := await self._zygote.stdout.readline():
            message = json.loads(line)
            if "spawned" in message:
                self._exits[int(message["spawned"])] = asyncio.get_running_loop().create_future()
                self._spawned.put_nowait(int(message["spawned"]))
            elif "exited" in message:
                exit_status = self._exits.get(int(message["exited"]))
                if exit_status is not None and not exit_status.done():
                    exit_status.set_result(int(message["status"]))
                instance = self._by_pid.get(int(message["exited"]))
                if instance is not None and instance.pid == int(message["exited"]):
                    instance.status = int(message["status"])
                    instance.exited.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Cluster]:
        nginx = nginx_binary()
        assert nginx is not None, "nginx not found: run the tests through scripts/test"
        self._zygote = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.zygote",
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        try:
            await asyncio.gather(*(self.start(instance) for instance in self.instances))
            port = free_port()
            addresses = [f"127.0.0.1:{instance.port}" for instance in self.instances]
            conf = shipped_nginx_config(self.workdir, port, addresses)
            with running_nginx(nginx, conf, port) as address:
                self.url = f"http://{address}"
                yield self
        finally:
            assert self._zygote.stdin is not None
            self._zygote.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._zygote.wait(), 10)
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
