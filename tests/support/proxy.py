"""A TCP or unix-socket proxy in the test's own event loop, to cut a connection on purpose.

    proxy = await Proxy.unix(target_socket_path, listen_dir)   # or Proxy.tcp(host, port)
    proxy.cut()        # close every connection and stop listening: connects are refused
    await proxy.restore()
    proxy.blackhole()  # forward nothing, close nothing: a network that silently drops packets
    proxy.end_blackhole()

Only loopback addresses and local sockets: nothing here reaches beyond this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


class Proxy:
    def __init__(self, connect: object, listen: object) -> None:
        self._connect = connect
        self._listen = listen
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._clients: set[asyncio.StreamWriter] = set()  # the accepted side of each link
        self.connections = 0
        self.port = 0
        # While set, what the server sends is dropped (the client's bytes still go through):
        # replies lost on the way, as on a half-broken network.
        self.drop_replies = False
        self._blackholed = False
        self._frozen: set[asyncio.StreamWriter] = set()  # client sides of blackholed links

    @classmethod
    async def unix(cls, target: str, listen_dir: Path) -> Proxy:
        """Forward connections on ``listen_dir``/.s.PGSQL.5432 to the socket ``target``."""
        listen = str(listen_dir / ".s.PGSQL.5432")
        proxy = cls(lambda: asyncio.open_unix_connection(target),
                    lambda handle: asyncio.start_unix_server(handle, listen))
        await proxy.restore()
        return proxy

    @classmethod
    async def tcp(cls, host: str, port: int) -> Proxy:
        """Forward connections on a free port of 127.0.0.1 (``proxy.port``) to host:port."""
        proxy = cls(lambda: asyncio.open_connection(host, port), None)
        proxy._listen = lambda handle: asyncio.start_server(handle, "127.0.0.1", proxy.port)
        server = await asyncio.start_server(proxy._handle, "127.0.0.1", 0)
        proxy.port = server.sockets[0].getsockname()[1]
        proxy._server = server
        return proxy

    @classmethod
    async def for_dsn(cls, dsn: str, workdir: Path) -> tuple[Proxy, str]:
        """A proxy in front of the PostgreSQL of ``dsn`` (unix socket or TCP), and the DSN
        that goes through it."""
        parts = urlsplit(dsn)
        query = dict(parse_qsl(parts.query))
        socket_dir = query.get("host") or (parts.hostname if parts.hostname and
                                           parts.hostname.startswith("/") else None)
        if socket_dir:
            port = parts.port or int(query.get("port", 5432))
            proxy = await cls.unix(f"{socket_dir}/.s.PGSQL.{port}", workdir)
            query["host"], query["port"] = str(workdir), "5432"
            netloc = parts.netloc.rsplit("@", 1)
            userinfo = netloc[0] + "@" if len(netloc) == 2 else ""
            return proxy, urlunsplit((parts.scheme, userinfo, parts.path, urlencode(query), ""))
        proxy = await cls.tcp(parts.hostname or "127.0.0.1", parts.port or 5432)
        userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return proxy, urlunsplit((parts.scheme, f"{userinfo}127.0.0.1:{proxy.port}", parts.path,
                                  parts.query, ""))

    async def restore(self) -> None:
        self._server = await self._listen(self._handle)  # type: ignore[operator]

    def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        self._frozen.clear()

    def blackhole(self) -> None:
        """From now on forward no byte, either way, and close nothing: every open connection,
        and every one accepted while the blackhole lasts, is frozen (what is sent on it is read
        and dropped), as on a network path that silently loses packets. A peer notices only by
        its own timeouts."""
        self._blackholed = True
        self._frozen |= {w for w in self._writers if w in self._clients}

    def end_blackhole(self) -> None:
        """New connections are forwarded again. The frozen ones stay frozen (their packets are
        lost for good, as when a path comes back without its connection state) until ``cut``
        or ``close``."""
        self._blackholed = False

    async def close(self) -> None:
        self.cut()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._blackholed:  # accepted (the kernel did), then never answered nor forwarded
            self._writers.add(writer)
            self._clients.add(writer)
            self._frozen.add(writer)
            with contextlib.suppress(OSError):
                while await reader.read(65536):
                    pass
            writer.transport.abort()
            self._writers.discard(writer)
            self._clients.discard(writer)
            self._frozen.discard(writer)
            return
        try:
            up_reader, up_writer = await self._connect()  # type: ignore[operator]
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        self._clients.add(writer)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       replies: bool) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    if writer in self._frozen or (replies and self.drop_replies):
                        continue
                    dst.write(data)
                    await dst.drain()
            if writer not in self._frozen:  # a frozen link's close is lost too, until cut()
                dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))
        self._writers -= {writer, up_writer}
        self._clients.discard(writer)
        self._frozen.discard(writer)
