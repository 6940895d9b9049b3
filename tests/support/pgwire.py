"""A proxy in front of PostgreSQL that counts what crosses it: the client's protocol messages by
type, and its round trips.

    proxy, dsn = await WireCounter.for_dsn(dsn, workdir)   # connect through ``dsn``
    before = proxy.snapshot()
    ...                                                     # work through the proxy
    spent = proxy.snapshot() - before
    spent.round_trips, spent.messages["Q"], spent.messages["P"], ...

A round trip is a time the client sent something after PostgreSQL had sent it something since
its previous send: one per answer a client waits for. Messages sent together before any answer
(a pipeline: Bind, Execute, ..., Sync) make one round trip, however TCP cuts them up. The start
of each connection (startup packet, authentication, the settings it reads) is left out, so a
pool that opens a connection in the middle of a measurement adds nothing to it. Message types
are the protocol's letters: Q simple query, P parse, B bind, E execute, D describe, S sync,
C close, X terminate, d / c / f COPY data / done / fail. Used by tests that pin how many round
trips a batch costs, and by scripts/bench_execute.py. Only loopback and local sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.proxy import Proxy

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


@dataclass
class Spent:
    """Counts over a stretch of time (``WireCounter.snapshot`` differences)."""

    round_trips: int = 0
    messages: Counter[str] = field(default_factory=Counter)

    def __sub__(self, other: Spent) -> Spent:
        messages = Counter(self.messages)
        messages.subtract(other.messages)
        return Spent(self.round_trips - other.round_trips, +messages)


class _Link:
    """One connection's framing state: both directions are cut into messages."""

    def __init__(self) -> None:
        self.up = b""  # client bytes not yet a whole message
        self.down = b""
        self.started = False  # the startup packet went by
        self.ready = False  # the first ReadyForQuery came back: start-up is over
        self.ssl_answer = False  # an SSLRequest / GSSENCRequest awaits its one-byte answer
        self.opaque = False  # TLS or GSS: nothing more can be read
        self.answered = True  # PostgreSQL sent something since the client last did


class WireCounter(Proxy):
    """``tests.support.proxy.Proxy`` that also counts (see the module's docstring)."""

    def __init__(self, connect: object, listen: object) -> None:
        super().__init__(connect, listen)
        self.counts = Spent()

    def snapshot(self) -> Spent:
        return Spent(self.counts.round_trips, Counter(self.counts.messages))

    @classmethod
    async def for_dsn(cls, dsn: str, workdir: Path) -> tuple[WireCounter, str]:
        proxy, through = await super().for_dsn(dsn, workdir)
        assert isinstance(proxy, WireCounter)
        return proxy, through

    def _from_client(self, link: _Link, data: bytes) -> None:
        if link.opaque:
            return
        link.up += data
        if link.ready and link.answered:
            self.counts.round_trips += 1
            link.answered = False
        while True:
            if not link.started:
                if len(link.up) < 4:
                    return
                (length,) = struct.unpack("!I", link.up[:4])
                if len(link.up) < length:
                    return
                code = struct.unpack("!I", link.up[4:8])[0] if length >= 8 else 0
                link.up = link.up[length:]
                if code in (SSL_REQUEST, GSSENC_REQUEST):
                    link.ssl_answer = True
                else:
                    link.started = True
                continue
            if len(link.up) < 5:
                return
            (length,) = struct.unpack("!I", link.up[1:5])
            if len(link.up) < 1 + length:
                return
            kind = chr(link.up[0])
            link.up = link.up[1 + length:]
            if link.ready:
                self.counts.messages[kind] += 1

    def _from_server(self, link: _Link, data: bytes) -> None:
        if link.opaque:
            return
        link.answered = True
        if link.ssl_answer:
            link.ssl_answer = False
            if data[:1] in (b"S", b"G"):
                link.opaque = True
                return
            data = data[1:]
        link.down += data
        while len(link.down) >= 5:
            (length,) = struct.unpack("!I", link.down[1:5])
            if len(link.down) < 1 + length:
                return
            if link.down[:1] == b"Z":
                link.ready = True
            link.down = link.down[1 + length:]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await self._connect()  # type: ignore[operator]
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        self._clients.add(writer)
        link = _Link()

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       client: bool) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    (self._from_client if client else self._from_server)(link, data)
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))
        self._writers -= {writer, up_writer}
        self._clients.discard(writer)
