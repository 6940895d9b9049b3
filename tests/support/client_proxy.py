"""An in-process TCP proxy between a client and batchd, for the client tests of lost links.

``pause()`` holds back what the server sends (the client hears nothing; what it sends still
arrives), ``cut()`` resets every connection open now (later ones work normally), ``refuse``
resets the next connections as soon as they are accepted. Everything happens when the test
says so: no timing is involved.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


class Proxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.host = host
        self.port = 0
        self.accepted = 0
        self.refuse = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._transports: set[asyncio.BaseTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def pause(self) -> None:
        """Hold back server-to-client bytes until ``cut`` (or ``resume``)."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def cut(self) -> None:
        """Reset every open connection (both sides); new connections flow normally."""
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()
        self._flowing.set()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> Proxy:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _accept(self, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refuse > 0:
            self.refuse -= 1
            client_writer.transport.abort()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.transport.abort()
            return
        transports = {client_writer.transport, server_writer.transport}
        self._transports |= transports
        pumps = [asyncio.create_task(self._pump(client_reader, server_writer, pausable=False)),
                 asyncio.create_task(self._pump(server_reader, client_writer, pausable=True))]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            for transport in transports:
                transport.abort()
            self._transports -= transports

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                    pausable: bool) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if pausable:
                    await self._flowing.wait()
                if writer.transport.is_closing():
                    return
                writer.write(data)
                await writer.drain()
