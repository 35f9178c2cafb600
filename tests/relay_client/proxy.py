"""A loopback TCP proxy that can freeze connections: bytes stop flowing both ways, yet no FIN or
RST is sent, as on a dead network path (a NAT that forgot the flow, a phone in a tunnel)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Link:
    first: bytes = b""
    frozen: bool = False
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


class FreezingProxy:
    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._links: list[_Link] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def freeze(self, which: Callable[[bytes], bool]) -> int:
        """Freeze every open connection whose first bytes match; the number frozen."""
        count = 0
        for link in self._links:
            if not link.frozen and which(link.first):
                link.frozen = True
                count += 1
        return count

    async def _pipe(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if upstream and not link.first:
                    link.first = data[:64]
                if link.frozen:
                    continue  # swallowed: the peer sees silence, not a close
                writer.write(data)
                await writer.drain()
        if not link.frozen:
            with contextlib.suppress(OSError):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        link = _Link(writers=[writer, up_writer])
        self._links.append(link)
        await asyncio.gather(
            self._pipe(link, reader, up_writer, upstream=True),
            self._pipe(link, up_reader, writer, upstream=False),
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FreezingProxy]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._server.close()
            for link in self._links:
                for writer in link.writers:
                    writer.transport.abort()
