"""A BatchStream's reading ahead: the client's messages read, checked and decoded up to
``stream_read_ahead`` chunks ahead of the writer (batchd.stream.session), so that decoding
overlaps the COPY of the previous chunk.

Decoding runs on a worker thread (``batchd.offload.run_pipelined``): on the event loop each
chunk's decoding held the writer's next round trip to PostgreSQL (SAVEPOINT, COPY) behind it,
and PostgreSQL waited. The queue's bound is the backpressure: a full queue stops the reading,
gRPC then stops granting the client flow-control credit, and memory stays bounded. Reading also
keeps the stream's limits on time: ``stream_idle_seconds`` without a message, and
``max_stream_seconds`` in all (``ChunkQueue``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from batchd import offload
from batchd.catalog import Catalog
from batchd.errors import BatchdError, DeadlineExceeded, InvalidArgument, translate
from batchd.stream.encodings.base import Decoded
from batchd.stream.encodings.registry import Ingest, resolve
from batchd.v1 import batch_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Commit:
    """The client's StreamCommit."""


@dataclass(frozen=True, slots=True)
class End:
    """The client half-closed (or the transport failed): no more messages."""


END = End()


@dataclass(slots=True)
class Chunk:
    """A chunk as read: decoded (a table's, with what it goes into), or the error its
    decoding met (which fails the stream when the writer reaches it)."""

    message: batch_pb2.StreamChunk
    ingest: Ingest | None = None  # None: an operations feed's chunk (or a failed resolution)
    decoded: Decoded | None = None
    error: BatchdError | None = None


# What the reader hands the writer, in order: chunks, then a commit or the end, or the error
# that ends the stream.
Item = Chunk | Commit | End | BatchdError


class ChunkQueue:
    """The chunk queue, read under the stream's maximum duration: a stream open longer fails
    with DEADLINE_EXCEEDED (ATOMIC: rolled back; INDEPENDENT: acked chunks stay committed)."""

    def __init__(self, queue: asyncio.Queue[Item], seconds: float) -> None:
        self.queue = queue
        self.seconds = seconds
        self.ends = asyncio.get_running_loop().time() + seconds if seconds > 0 else None

    async def put(self, item: Item) -> None:
        await self.queue.put(item)

    def ready(self) -> Item | None:
        """The next item if one is waiting (else None), without waiting."""
        if self.ends is not None and asyncio.get_running_loop().time() >= self.ends:
            return None  # ``get`` says the stream is over
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def get(self) -> Item:
        if self.ends is None:
            return await self.queue.get()
        if not self.queue.empty() and asyncio.get_running_loop().time() < self.ends:
            return self.queue.get_nowait()
        try:
            return await asyncio.wait_for(self.queue.get(),
                                          self.ends - asyncio.get_running_loop().time())
        except TimeoutError:
            raise DeadlineExceeded(f"the stream was open longer than max_stream_seconds "
                                   f"({self.seconds:g} s)", reason="STREAM_TOO_LONG") from None



async def read_ahead(requests: AsyncIterator[batch_pb2.BatchStreamRequest],
                     header: batch_pb2.StreamHeader, ingest: Ingest | None,
                     queue: ChunkQueue, catalog: Catalog, idle: float, request_id: str) -> None:
    """Decode chunks ahead of the writer into ``queue``: ``Chunk``s, then ``Commit`` or
    ``END``, or the error that ends the stream."""
    try:
        while True:
            try:
                async with asyncio.timeout(idle):
                    request = await anext(requests, None)
            except TimeoutError:
                await queue.put(DeadlineExceeded(
                    f"the client sent nothing for stream_idle_seconds ({idle:g} s)",
                    reason="STREAM_IDLE"))
                return
            if request is None:
                break
            kind = request.WhichOneof("kind")
            if kind == "commit":
                await queue.put(Commit())
                return
            if kind != "chunk":
                await queue.put(InvalidArgument.field(kind or "message", "only chunks and "
                                                      "a commit may follow the header"))
                return
            item = Chunk(request.chunk)
            if header.table:
                try:
                    if ingest is None:
                        ingest = resolve(header, catalog, request.chunk)
                    item.ingest = ingest
                    item.decoded = await offload.run_pipelined(ingest.encoding.decode,
                                                               request.chunk)
                except Exception as exc:  # a bug too fails the stream (INTERNAL), not
                    item.error = translate(exc, request_id)  # ends it as if done
            await queue.put(item)
        await queue.put(END)
    except BatchdError as exc:  # a malformed message
        await queue.put(exc)
    except Exception as exc:  # the transport failed under us: end as if cancelled
        log.info("stream reader ended: %r", exc)
        await queue.put(END)
