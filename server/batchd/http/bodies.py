"""A request body as BatchStream chunks, read as it arrives (never held whole): the curl
ingest's half that knows the formats (batchd.http.ingest is the other half).

- CSV (``text/csv``): cut into chunks of whole records by quote parity (a quoted field may span
  lines), without parsing fields: PostgreSQL's COPY parses them (ENCODING_CSV). The first
  record names the columns unless told otherwise.
- JSON Lines (``application/x-ndjson``, ``application/jsonl``): one JSON object per line, as
  rows (ENCODING_ROWS).
- Arrow IPC stream (``application/vnd.apache.arrow.stream``): read by pyarrow on a worker
  thread as the bytes arrive, record batch by record batch (ENCODING_ARROW).
- Parquet (``application/vnd.apache.parquet``): its footer is at its end, so the body is first
  spooled to a temporary file (disk, not memory), then read a row group at a time.

Chunks hold at most ``chunk_rows`` rows and ``chunk_bytes`` bytes. The cuts depend only on the
bytes and these two numbers, so the same file sent again makes the same chunks: a resumed
upload's chunks that were committed before are recognised by their sequence (the ledger).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import queue
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2

from batchd.errors import InvalidArgument
from batchd.v1 import batch_pb2

CSV, JSONL, ARROW, PARQUET = "csv", "jsonl", "arrow", "parquet"
CONTENT_TYPES = {
    "text/csv": CSV, "application/csv": CSV,
    "application/x-ndjson": JSONL, "application/jsonl": JSONL, "application/json-lines": JSONL,
    "application/vnd.apache.arrow.stream": ARROW,
    "application/vnd.apache.parquet": PARQUET, "application/x-parquet": PARQUET,
}
ENCODINGS = {CSV: batch_pb2.ENCODING_CSV, JSONL: batch_pb2.ENCODING_ROWS,
             ARROW: batch_pb2.ENCODING_ARROW, PARQUET: batch_pb2.ENCODING_ARROW}


@dataclass(slots=True)
class Piece:
    """One chunk's rows, ready for a StreamChunk (its sequence is set by the caller)."""

    chunk: batch_pb2.StreamChunk
    rows: int


# --- CSV ----------------------------------------------------------------------------------------


class CsvCutter:
    """Whole CSV records in chunks; the header record (if any) is kept apart."""

    def __init__(self, quote: bytes, chunk_rows: int, chunk_bytes: int, header: bool) -> None:
        self.quote = quote
        self.chunk_rows = chunk_rows
        self.chunk_bytes = chunk_bytes
        self.want_header = header
        self.header: bytes | None = None
        self._buffer = bytearray()
        self._scanned = 0  # where the next record starts in _buffer
        self._records = 0  # whole records before _scanned
        self._cuts: list[bytes] = []

    def feed(self, data: bytes) -> list[bytes]:
        """The chunks ``data`` completes (each bytes of whole records)."""
        buffer = self._buffer
        buffer += data
        quote, start = self.quote, self._scanned
        out: list[bytes] = []
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            # Inside a quoted field while the record so far holds an odd number of quotes.
            while buffer.count(quote, start, end) % 2:
                end = buffer.find(b"\n", end + 1)
                if end < 0:
                    self._scanned = start
                    self._check_size()
                    return out
            start = end + 1
            if self.want_header and self.header is None:
                self.header = bytes(buffer[:start])
                del buffer[:start]
                start = 0
                continue
            self._records += 1
            if self._records == self.chunk_rows or start >= self.chunk_bytes:
                out.append(bytes(buffer[:start]))
                del buffer[:start]
                start, self._records = 0, 0
        self._scanned = start
        self._check_size()
        return out

    def _check_size(self) -> None:
        if len(self._buffer) - self._scanned > self.chunk_bytes:
            raise InvalidArgument.field(
                "body", f"a CSV record longer than {self.chunk_bytes} bytes (or a quote "
                        "that never closes)")

    def end(self) -> list[bytes]:
        """The last chunk, at the end of the body."""
        rest = bytes(self._buffer)
        if rest.strip():
            if rest.count(self.quote) % 2:
                raise InvalidArgument.field("body", "the CSV ends inside a quoted field")
            if self.want_header and self.header is None:
                self.header = rest
                return []
            return [rest if rest.endswith(b"\n") else rest + b"\n"]
        return []


def csv_columns(header: bytes, delimiter: str, quote: str) -> list[str]:
    text = header.decode("utf-8-sig", errors="replace")
    row = next(csv.reader([text], delimiter=delimiter, quotechar=quote), [])
    return [name.strip() for name in row]


async def csv_pieces(body: AsyncIterator[bytes], cutter: CsvCutter) -> AsyncIterator[Piece]:
    async for data in body:
        for cut in cutter.feed(data):
            yield Piece(batch_pb2.StreamChunk(csv=cut), _records(cut, cutter.quote))
    for cut in cutter.end():
        yield Piece(batch_pb2.StreamChunk(csv=cut), _records(cut, cutter.quote))


def _records(cut: bytes, quote: bytes) -> int:
    if quote not in cut:
        return cut.count(b"\n")
    count, record_start = 0, 0
    start = 0
    while (end := cut.find(b"\n", start)) >= 0:
        start = end + 1
        if not cut.count(quote, record_start, end) % 2:
            count += 1
            record_start = start
    return count


# --- JSON Lines ---------------------------------------------------------------------------------


async def jsonl_pieces(body: AsyncIterator[bytes], chunk_rows: int, chunk_bytes: int,
                       first_line: int = 1) -> AsyncIterator[Piece]:
    """Rows of one JSON object per line (blank lines skipped)."""
    pending = bytearray()
    chunk = batch_pb2.StreamChunk()
    size, line_number = 0, first_line - 1

    def add(line: bytes) -> None:
        nonlocal size, line_number
        line_number += 1
        if not line.strip():
            return
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise InvalidArgument.field("body", f"line {line_number}: not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise InvalidArgument.field("body", f"line {line_number}: not a JSON object")
        row = struct_pb2.Struct()
        row.update(value)
        chunk.rows.append(row)
        size += len(line)

    async for data in body:
        pending += data
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            add(bytes(pending[start:end]))
            start = end + 1
            if len(chunk.rows) == chunk_rows or size >= chunk_bytes:
                yield Piece(chunk, len(chunk.rows))
                chunk, size = batch_pb2.StreamChunk(), 0
        del pending[:start]
        if len(pending) > chunk_bytes:
            raise InvalidArgument.field("body", f"line {line_number + 1}: longer than "
                                                f"{chunk_bytes} bytes")
    if pending.strip():
        add(bytes(pending))
    if chunk.rows:
        yield Piece(chunk, len(chunk.rows))


# --- Arrow IPC stream and Parquet, read by pyarrow on a worker thread -------------------------


class _Inbox(io.RawIOBase):
    """The body's bytes as a blocking file for pyarrow on the worker thread."""

    def __init__(self, pieces: queue.Queue[bytes | None], taken: Callable[[], None]) -> None:
        self.pieces = pieces
        self.taken = taken
        self.left = b""
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self.left and not self.done:
            piece = self.pieces.get()
            self.taken()
            if piece is None:
                self.done = True
            else:
                self.left = piece
        n = min(len(b), len(self.left))
        b[:n] = self.left[:n]
        self.left = self.left[n:]
        return n


_DONE = object()


async def _threaded(produce: Callable[[], Iterator[Piece]],
                    stop: threading.Event) -> AsyncIterator[Piece]:
    """``produce``'s pieces, run on a thread of its own, at most two ahead."""
    loop = asyncio.get_running_loop()
    outbox: asyncio.Queue[Any] = asyncio.Queue(maxsize=2)

    def run() -> None:
        try:
            for piece in produce():
                if stop.is_set():
                    return
                asyncio.run_coroutine_threadsafe(outbox.put(piece), loop).result()
            item: Any = _DONE
        except BaseException as exc:
            item = exc
        if not stop.is_set():
            asyncio.run_coroutine_threadsafe(outbox.put(item), loop).result()

    thread = threading.Thread(target=run, name="batchd-http-ingest", daemon=True)
    thread.start()
    try:
        while (item := await outbox.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while not outbox.empty():  # a producer blocked on a full outbox goes on, and sees stop
            outbox.get_nowait()


def _arrow_pieces(batches: Iterator[Any], schema: Any, chunk_rows: int,
                  chunk_bytes: int) -> Iterator[Piece]:
    from batchd.client.arrow_source import fitting, rechunk

    for table, data in fitting(rechunk(batches, schema, chunk_rows), chunk_bytes):
        yield Piece(batch_pb2.StreamChunk(arrow=data), table.num_rows)


def _arrow_error(exc: Exception, what: str) -> InvalidArgument:
    return InvalidArgument.field("body", f"not {what}: {exc}")


async def arrow_pieces(body: AsyncIterator[bytes], chunk_rows: int,
                       chunk_bytes: int) -> AsyncIterator[Piece]:
    """An Arrow IPC stream's rows, read as the body arrives."""
    import pyarrow as pa

    pieces: queue.Queue[bytes | None] = queue.Queue()
    room = asyncio.Semaphore(8)  # body pieces waiting for the thread
    loop = asyncio.get_running_loop()
    stop = threading.Event()

    def produce() -> Iterator[Piece]:
        try:
            def taken() -> None:
                loop.call_soon_threadsafe(room.release)

            reader = pa.ipc.open_stream(io.BufferedReader(_Inbox(pieces, taken), 1 << 20))
            yield from _arrow_pieces(iter(reader), reader.schema, chunk_rows, chunk_bytes)
        except (pa.ArrowInvalid, OSError, ValueError) as exc:
            raise _arrow_error(exc, "an Arrow IPC stream") from None

    async def feed() -> None:
        try:
            async for data in body:
                await room.acquire()
                pieces.put(data)
        finally:
            pieces.put(None)

    feeder = asyncio.create_task(feed())
    try:
        async for piece in _threaded(produce, stop):
            yield piece
        await feeder  # its errors (a body too large) are the upload's
    finally:
        feeder.cancel()
        with contextlib.suppress(BaseException):
            await feeder
        pieces.put(None)  # a thread still reading ends


async def parquet_pieces(body: AsyncIterator[bytes], chunk_rows: int, chunk_bytes: int,
                         spool_dir: str | None = None) -> AsyncIterator[Piece]:
    """A Parquet file's rows: spooled to a temporary file, then read a row group at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fd, path = tempfile.mkstemp(prefix="batchd-ingest-", suffix=".parquet", dir=spool_dir)
    try:
        with os.fdopen(fd, "wb") as spool:
            async for data in body:
                await asyncio.to_thread(spool.write, data)
        stop = threading.Event()

        def produce() -> Iterator[Piece]:
            try:
                parquet = pq.ParquetFile(path)
                batches = parquet.iter_batches(batch_size=chunk_rows)
                yield from _arrow_pieces(batches, parquet.schema_arrow, chunk_rows,
                                         chunk_bytes)
            except (pa.ArrowInvalid, OSError, ValueError) as exc:
                raise _arrow_error(exc, "a Parquet file") from None

        async for piece in _threaded(produce, stop):
            yield piece
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
