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
  spooled to a temporary file (disk, not memory; ``spool``), then read a row group at a time —
  the stream opens (and holds a connection) only once the upload is complete.

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


class UploadCut(Exception):
    """The client went away before the end of the body: what it sent after the last whole
    chunk never counts (and an ATOMIC upload never commits)."""


@dataclass(slots=True)
class Piece:
    """One chunk's rows, ready for a StreamChunk (its sequence is set by the caller)."""

    chunk: batch_pb2.StreamChunk
    rows: int


# --- CSV ----------------------------------------------------------------------------------------


class CsvCutter:
    """Whole CSV records in chunks; the header record (if any) is kept apart.

    Records end at a newline outside quotes: a newline is a record's end when the quotes
    before it (in the record, so in the chunk) are even in number. Both are found with numpy
    over each new piece of the body, once, never per record in Python: the cutting keeps up
    with COPY."""

    def __init__(self, quote: bytes, chunk_rows: int, chunk_bytes: int, header: bool) -> None:
        self.quote = quote[0]
        self.chunk_rows = chunk_rows
        self.chunk_bytes = chunk_bytes
        self.want_header = header
        self.header: bytes | None = None
        self._buffer = bytearray()
        self._scanned = 0  # bytes of _buffer already scanned
        self._records = 0  # whole records in _buffer[:_scanned]
        self._last_end = 0  # where the record after the last whole one starts
        self._odd = False  # an odd number of quotes in _buffer[:_scanned]

    def _ends(self) -> Any:
        """Offsets (in _buffer) of the record ends in the bytes not yet scanned."""
        import numpy as np

        region = np.frombuffer(self._buffer, np.uint8, offset=self._scanned)
        newlines = np.flatnonzero(region == 10)
        quotes = region == self.quote
        if quotes.any():
            before = np.cumsum(quotes, dtype=np.int64)[newlines] + self._odd
            self._odd = bool((int(quotes.sum()) + self._odd) % 2)
            newlines = newlines[before % 2 == 0]
        elif self._odd:  # inside a quoted field all along
            newlines = newlines[:0]
        del region, quotes
        return newlines + self._scanned

    def feed(self, data: bytes) -> list[tuple[bytes, int]]:
        """The chunks ``data`` completes: (bytes of whole records, how many)."""
        import numpy as np

        self._buffer += data
        out: list[tuple[bytes, int]] = []
        while self._scanned < len(self._buffer):
            ends = self._ends()
            if self.want_header and self.header is None:
                if not len(ends):
                    self._scanned = len(self._buffer)
                    self._check_size()
                    return out
                cut = int(ends[0]) + 1
                self.header = bytes(self._buffer[:cut])
                self._restart(cut)
                continue
            at = None
            if len(ends) >= self.chunk_rows - self._records:
                at = self.chunk_rows - self._records - 1
            by_size = int(np.searchsorted(ends, self.chunk_bytes - 1))
            if by_size < len(ends) and (at is None or by_size < at):
                at = by_size
            if at is None:
                self._records += len(ends)
                if len(ends):
                    self._last_end = int(ends[-1]) + 1
                self._scanned = len(self._buffer)
                self._check_size()
                return out
            cut = int(ends[at]) + 1
            out.append((bytes(self._buffer[:cut]), self._records + at + 1))
            self._restart(cut)
        return out

    def _restart(self, cut: int) -> None:
        del self._buffer[:cut]
        self._scanned = self._records = self._last_end = 0
        self._odd = False

    def _check_size(self) -> None:
        if len(self._buffer) - self._last_end > self.chunk_bytes:
            raise InvalidArgument.field(
                "body", f"a CSV record longer than {self.chunk_bytes} bytes (or a quote "
                        "that never closes)")

    def end(self) -> list[tuple[bytes, int]]:
        """The last chunk, at the end of the body (once: the buffer is emptied)."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        if not rest.strip():
            return []
        if self._odd:
            raise InvalidArgument.field("body", "the CSV ends inside a quoted field")
        if self.want_header and self.header is None:
            self.header = rest
            return []
        partial = len(rest) > self._last_end and bool(rest[self._last_end:].strip())
        if not rest.endswith(b"\n"):
            rest += b"\n"
        return [(rest, self._records + int(partial))]


def csv_columns(header: bytes, delimiter: str, quote: str) -> list[str]:
    text = header.decode("utf-8-sig", errors="replace")
    try:
        row = next(csv.reader([text], delimiter=delimiter, quotechar=quote), [])
    except csv.Error as exc:  # a stray carriage return or NUL byte in the header line
        raise InvalidArgument.field("body", f"the CSV header line does not parse: {exc}") \
            from None
    return [name.strip() for name in row]


async def csv_pieces(body: AsyncIterator[bytes], cutter: CsvCutter,
                     early: list[tuple[bytes, int]] | None = None) -> AsyncIterator[Piece]:
    """The chunks ``early`` (cut already), then those of the rest of the body."""
    for cut, rows in early or ():
        yield Piece(batch_pb2.StreamChunk(csv=cut), rows)
    async for data in body:
        for cut, rows in cutter.feed(data):
            yield Piece(batch_pb2.StreamChunk(csv=cut), rows)
    for cut, rows in cutter.end():
        yield Piece(batch_pb2.StreamChunk(csv=cut), rows)


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
            if feeder.done() and not feeder.cancelled() and feeder.exception() is not None:
                break  # the body was cut (or too large): pieces read after it do not count
            yield piece
        await feeder  # its errors (a cut, a body too large) are the upload's
    finally:
        feeder.cancel()
        with contextlib.suppress(BaseException):
            await feeder
        pieces.put(None)  # a thread still reading ends


async def spool(body: AsyncIterator[bytes], spool_dir: str | None = None) -> str:
    """The whole body in a temporary file (its path; the caller deletes it): for Parquet,
    whose footer is at its end."""
    fd, path = tempfile.mkstemp(prefix="batchd-ingest-", suffix=".parquet", dir=spool_dir)
    try:
        with os.fdopen(fd, "wb") as file:
            async for data in body:
                await asyncio.to_thread(file.write, data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return path


async def parquet_pieces(path: str, chunk_rows: int, chunk_bytes: int) -> AsyncIterator[Piece]:
    """A spooled Parquet file's rows, read a row group at a time on a worker thread."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stop = threading.Event()

    def produce() -> Iterator[Piece]:
        try:
            parquet = pq.ParquetFile(path)
            batches = parquet.iter_batches(batch_size=chunk_rows)
            yield from _arrow_pieces(batches, parquet.schema_arrow, chunk_rows, chunk_bytes)
        except (pa.ArrowInvalid, OSError, ValueError) as exc:
            raise _arrow_error(exc, "a Parquet file") from None

    async for piece in _threaded(produce, stop):
        yield piece
