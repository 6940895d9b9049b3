"""The curl ingest: ``PUT`` (or ``POST``) ``/v1/ingest/TABLE`` streams the request body into
the table through the same BatchStream machinery as gRPC (batchd.rpc.calls → the stream
session: COPY, bad rows isolated, the exactly-once ledger, upsert), and answers a JSON summary.

    curl -T orders.csv http://localhost:8080/v1/ingest/orders
    curl -T orders.parquet -H 'Content-Type: application/vnd.apache.parquet' \\
         'http://localhost:8080/v1/ingest/orders?mode=independent'

The Content-Type picks the format (batchd.http.bodies: CSV, JSON Lines, Arrow IPC stream,
Parquet); ``curl -T`` sends none (or ``application/octet-stream``), which is read as CSV.
Query parameters: ``mode`` (``atomic``, the default: all or nothing, committed only once the
whole body has arrived; ``independent``: each chunk committed as it is written, resumable),
``columns`` (CSV: the columns, when the file has no header line; ``header=false``),
``delimiter``, ``null``, ``quote`` (CSV, as COPY's), ``chunk_rows``, ``bad_rows``
(``reject_row`` | ``reject_chunk``), ``on_conflict`` (``error`` | ``nothing`` | ``update``)
with ``conflict_columns`` and ``update_columns``: the stream header's fields of the same names.

Resume (INDEPENDENT), as the gRPC stream's: name the upload with a ``Batchd-Stream-Id``
header. If it is cut, send the same file again with the same id: its chunks already committed
are recognised by their sequence and not written again (their rows and rejects are reported as
first written), the rest is written. To send only the rest, add ``Batchd-Offset: N`` (N: the
``committed_rows`` of the answer, or of ``GET /v1/ingest/TABLE?stream_id=ID``) and send the
data rows from row N on (a CSV keeps its header line); an N that is not where the stream
stands is refused (409), naming where it stands. Keep ``chunk_rows`` the same across tries.

Limits: the body at most ``http_max_body_bytes`` (413), ``stream_idle_seconds`` without a byte
(504), ``max_stream_seconds`` in all, ``max_concurrent_streams`` at once (429 with RetryInfo),
``chunk_rows`` at most 100,000. Memory: a few chunks (``chunk_rows`` rows, at most half of
``max_message_bytes``), whatever the body's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, unquote

from batchd.config import Settings
from batchd.errors import (
    BatchdError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    OutOfRange,
    Unauthenticated,
    code_of,
)
from batchd.http import bodies
from batchd.http.edge import (
    HTTP_STATUS,
    REQUEST_ID_HEADER,
    Gatekeeper,
    call_of,
    error_json,
    send_json,
)
from batchd.rpc.calls import Calls
from batchd.v1 import batch_pb2
from batchd.vocabulary import reasons

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
PREFIX = "/v1/ingest/"
STREAM_ID_HEADER = "batchd-stream-id"
OFFSET_HEADER = "batchd-offset"
MAX_CHUNK_ROWS = 100_000
DEFAULT_CHUNK_ROWS = 10_000
MAX_REJECTS_LISTED = 1000
_TABLE = re.compile(r"[A-Za-z0-9_$.\"-]{1,200}")
_ACTIONS = {"error": batch_pb2.OnConflict.ACTION_ERROR,
            "nothing": batch_pb2.OnConflict.ACTION_DO_NOTHING,
            "do_nothing": batch_pb2.OnConflict.ACTION_DO_NOTHING,
            "update": batch_pb2.OnConflict.ACTION_UPDATE}
_PARAMS = {"mode", "columns", "header", "delimiter", "null", "quote", "chunk_rows", "bad_rows",
           "on_conflict", "conflict_columns", "update_columns", "stream_id"}


class BodyTooLarge(OutOfRange):
    pass


class Upload:
    """One request's body, as it arrives: bytes until its end, counted against the limit;
    ``UploadCut`` if the client went away before the end (nothing after the last whole chunk
    counts then: the stream reader takes it as the end of the stream, without a commit)."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.received = 0
        self.complete = False
        self.cut = False

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.cut = True
                raise bodies.UploadCut
            data = message.get("body", b"")
            self.received += len(data)
            if self.limit and self.received > self.limit:
                raise BodyTooLarge(f"the body is larger than http_max_body_bytes "
                                   f"({self.limit}); split the file, or raise the limit")
            if data:
                yield data
            if not message.get("more_body", False):
                self.complete = True
                return


class Summary:
    """What the stream answered, as the JSON the caller gets."""

    def __init__(self, table: str, atomic: bool) -> None:
        self.table = table
        self.atomic = atomic
        self.stream_id = ""
        self.chunks = self.duplicates = self.rows_written = self.rows_rejected = 0
        self.committed_rows = self.last_sequence = 0
        self.committed = False
        self.rejects: list[dict[str, Any]] = []
        self.opened: asyncio.Future[batch_pb2.StreamOpened] = \
            asyncio.get_running_loop().create_future()
        self.final: batch_pb2.StreamSummary | None = None
        self.sent_rows: dict[int, int] = {}  # rows of each chunk sent, by sequence

    def add(self, response: batch_pb2.BatchStreamResponse) -> None:
        kind = response.WhichOneof("kind")
        if kind == "opened":
            opened = response.opened
            self.stream_id = opened.stream_id
            self.committed_rows = opened.next_row_index
            self.last_sequence = opened.last_committed_sequence
            if not self.opened.done():
                self.opened.set_result(opened)
        elif kind == "ack":
            ack = response.ack
            self.chunks += 1
            self.duplicates += ack.duplicate
            self.rows_written += ack.rows_written
            self.rows_rejected += len(ack.rejected)
            for rejected in ack.rejected:
                if len(self.rejects) < MAX_REJECTS_LISTED:
                    status = rejected.status
                    self.rejects.append({
                        "row": rejected.index + 1, "index": rejected.index,
                        "code": error_json_code(status.code), "message": status.message})
            rows = self.sent_rows.pop(ack.sequence, 0)
            if not self.atomic and not ack.duplicate:  # a duplicate: counted in opened's
                self.last_sequence = ack.sequence
                self.committed_rows += rows
        elif kind == "summary":
            self.final = response.summary
            self.committed = response.summary.committed

    def json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "table": self.table, "stream_id": self.stream_id,
            "mode": "atomic" if self.atomic else "independent", "committed": self.committed,
            "chunks": self.chunks, "rows_written": self.rows_written,
            "rows_rejected": self.rows_rejected, "rejects": self.rejects,
            "rejects_listed": len(self.rejects)}
        if self.final is not None and (self.final.rows_inserted or self.final.rows_updated):
            answer["rows_inserted"] = self.final.rows_inserted
            answer["rows_updated"] = self.final.rows_updated
        if not self.atomic:
            answer["duplicate_chunks"] = self.duplicates
            answer["committed_rows"] = self.committed_rows
            answer["last_committed_sequence"] = self.last_sequence
        return answer


def error_json_code(code: int) -> str:
    """A google.rpc code number as Connect's name of it."""
    return str(code_of(code).name).lower().replace("cancelled", "canceled")


def _one(params: dict[str, list[str]], name: str, default: str = "") -> str:
    values = params.get(name)
    if not values:
        return default
    if len(values) > 1:
        raise InvalidArgument.field(name, "given more than once")
    return values[0]


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _header(table: str, params: dict[str, list[str]], fmt: str,
            stream_id: str) -> tuple[batch_pb2.StreamHeader, int, bool]:
    """The stream header the query asks for, its chunk_rows, and whether CSV has a header
    line."""
    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise InvalidArgument.field(unknown[0], "unknown query parameter; known: "
                                    + ", ".join(sorted(_PARAMS)))
    header = batch_pb2.StreamHeader(table=table, encoding=bodies.ENCODINGS[fmt])
    mode = _one(params, "mode", "atomic").lower()
    if mode not in ("atomic", "independent"):
        raise InvalidArgument.field("mode", f"{mode!r}: expected atomic or independent")
    header.mode = batch_pb2.MODE_ATOMIC if mode == "atomic" else batch_pb2.MODE_INDEPENDENT
    header.stream_id = stream_id or _one(params, "stream_id")
    header.columns.extend(_names(_one(params, "columns")))
    has_header = _one(params, "header", "false" if header.columns else "true").lower()
    if has_header not in ("true", "false"):
        raise InvalidArgument.field("header", "expected true or false")
    try:
        chunk_rows = int(_one(params, "chunk_rows", str(DEFAULT_CHUNK_ROWS)))
    except ValueError:
        raise InvalidArgument.field("chunk_rows", "not a whole number") from None
    if not 1 <= chunk_rows <= MAX_CHUNK_ROWS:
        raise InvalidArgument.field("chunk_rows", f"must be 1 to {MAX_CHUNK_ROWS}")
    bad_rows = _one(params, "bad_rows", "reject_row").lower()
    if bad_rows not in ("reject_row", "reject_chunk"):
        raise InvalidArgument.field("bad_rows", "expected reject_row or reject_chunk")
    if bad_rows == "reject_chunk":
        header.bad_rows = batch_pb2.BAD_ROWS_REJECT_CHUNK
    for name in ("delimiter", "null", "quote"):
        value = _one(params, name)
        if value:
            if fmt != bodies.CSV:
                raise InvalidArgument.field(name, "a CSV option; the body is not CSV")
            if name != "null" and len(value.encode()) != 1:  # the header line is read here
                raise InvalidArgument.field(name, "must be one single-byte character, as "
                                                  "COPY's")
            setattr(header.csv, name, value)
    action = _one(params, "on_conflict").lower()
    if action:
        if action not in _ACTIONS:
            raise InvalidArgument.field("on_conflict", "expected error, nothing or update")
        header.on_conflict.action = _ACTIONS[action]
        header.on_conflict.conflict_columns.extend(_names(_one(params, "conflict_columns")))
        header.on_conflict.update_columns.extend(_names(_one(params, "update_columns")))
    return header, chunk_rows, has_header == "true"


class IngestApp:
    """The ASGI application of ``/v1/ingest/TABLE``."""

    def __init__(self, settings: Settings, calls: Calls, gatekeeper: Gatekeeper) -> None:
        self.settings = settings
        self.calls = calls
        self.gatekeeper = gatekeeper
        self.chunk_bytes = max(1 << 16, settings.max_message_bytes // 2)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1"))
                   for k, v in scope.get("headers", ())]
        call = call_of(headers, None)
        answer_headers = [(REQUEST_ID_HEADER.encode(), call.request_id.encode())]
        summary: Summary | None = None
        try:
            call.principal = self.gatekeeper.principal(headers, dict(scope))
            table = unquote(scope["path"][len(PREFIX):])
            if not _TABLE.fullmatch(table):
                raise InvalidArgument.field("table", f"{table!r} is not a table name: "
                                                     f"{PREFIX}TABLE or {PREFIX}SCHEMA.TABLE")
            params = parse_qs(scope.get("query_string", b"").decode("latin-1"),
                              keep_blank_values=True)
            if scope["method"] == "GET":
                await self._position(send, table, params, call, answer_headers)
                return
            if scope["method"] not in ("PUT", "POST"):
                await send_json(send, 405, {"code": "unimplemented", "message": (
                    "PUT (curl -T FILE) or POST the rows; GET ?stream_id=ID tells where an "
                    "INDEPENDENT upload stands")}, [*answer_headers, (b"allow", b"PUT, POST, GET")])
                return
            fmt = _format(dict(headers).get("content-type", ""))
            stream_id = dict(headers).get(STREAM_ID_HEADER, "")
            header, chunk_rows, has_header = _header(table, params, fmt, stream_id)
            offset = _offset(dict(headers).get(OFFSET_HEADER))
            if offset is not None and header.mode != batch_pb2.MODE_INDEPENDENT:
                raise InvalidArgument.field(OFFSET_HEADER, "resume needs mode=independent")
            upload = Upload(receive, self.settings.http_max_body_bytes)
            summary = Summary(table, header.mode != batch_pb2.MODE_INDEPENDENT)
            spooled = None
            if fmt == bodies.PARQUET:  # the whole file first: the stream then holds nothing
                try:                   # while a slow upload goes on
                    spooled = await bodies.spool(upload.chunks())
                except bodies.UploadCut:
                    return  # nobody to answer; nothing was written
            try:
                requests = self._requests(header, fmt, upload, chunk_rows, has_header,
                                          offset, summary, spooled)
                async for response in self.calls.batch_stream(requests, call):
                    summary.add(response)
            finally:
                if spooled is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(spooled)
        except BatchdError as error:
            body = {"error": error_json(error)}
            if summary is not None:
                body.update(summary.json())
            status = 413 if isinstance(error, BodyTooLarge) else \
                415 if isinstance(error, UnsupportedMediaType) else \
                HTTP_STATUS.get(body["error"]["code"], 500)
            if isinstance(error, Unauthenticated):
                answer_headers.append((b"www-authenticate", b"Bearer"))
            await send_json(send, status, body, answer_headers)
            return
        assert summary is not None
        answer_headers.append((b"batchd-stream-id", summary.stream_id.encode()))
        await send_json(send, 200, summary.json(), answer_headers)

    async def _requests(self, header: batch_pb2.StreamHeader, fmt: str, upload: Upload,
                        chunk_rows: int, has_header: bool, offset: int | None,
                        summary: Summary, spooled: str | None,
                        ) -> AsyncIterator[batch_pb2.BatchStreamRequest]:
        """The stream's messages: the header, the body's chunks, and (ATOMIC) the commit —
        only when the whole body has arrived: a cut upload commits nothing (ATOMIC), or
        only its chunks written before the cut (INDEPENDENT)."""
        body = upload.chunks()
        pieces: AsyncIterator[bodies.Piece]
        if fmt == bodies.CSV:
            quote = (header.csv.quote or '"').encode()
            cutter = bodies.CsvCutter(quote, chunk_rows, self.chunk_bytes, has_header)
            early: list[tuple[bytes, int]] = []
            if has_header:  # the columns: the header line's, read before the stream opens
                try:
                    async for data in body:  # only as far as the header line
                        early += cutter.feed(data)
                        if cutter.header is not None:
                            break
                except bodies.UploadCut:
                    raise InvalidArgument.field("body", "the client went away before the "
                                                        "CSV header line") from None
                if cutter.header is None:  # the body ended first
                    early += cutter.end()
                if cutter.header is None:
                    raise InvalidArgument.field("body", "no CSV header line (send "
                                                "?columns=a,b,c&header=false without one)")
                if not header.columns:
                    header.columns.extend(bodies.csv_columns(
                        cutter.header, header.csv.delimiter or ",", quote.decode()))
            pieces = bodies.csv_pieces(body, cutter, early)
        elif fmt == bodies.JSONL:
            pieces = bodies.jsonl_pieces(body, chunk_rows, self.chunk_bytes)
        elif fmt == bodies.ARROW:
            pieces = bodies.arrow_pieces(body, chunk_rows, self.chunk_bytes)
        else:
            assert spooled is not None
            pieces = bodies.parquet_pieces(spooled, chunk_rows, self.chunk_bytes)
        yield batch_pb2.BatchStreamRequest(header=header)
        sequence = 1
        if offset is not None:  # where the stream stands, once it is opened
            opened = await summary.opened
            if offset != opened.next_row_index:
                raise FailedPrecondition(
                    f'stream "{opened.stream_id}" stands at row {opened.next_row_index} '
                    f"(committed_rows), not at {OFFSET_HEADER}: {offset}; send the rows from "
                    f"row {opened.next_row_index} on with {OFFSET_HEADER}: "
                    f"{opened.next_row_index}", reason=reasons.SEQUENCE_OUT_OF_ORDER,
                    metadata={"committed_rows": str(opened.next_row_index)})
            sequence = opened.last_committed_sequence + 1
        async for piece in pieces:
            piece.chunk.sequence = sequence
            summary.sent_rows[sequence] = piece.rows
            sequence += 1
            yield batch_pb2.BatchStreamRequest(chunk=piece.chunk)
        if upload.complete and header.mode != batch_pb2.MODE_INDEPENDENT:
            yield batch_pb2.BatchStreamRequest(commit=batch_pb2.StreamCommit())

    async def _position(self, send: Send, table: str, params: dict[str, list[str]], call: Any,
                        answer_headers: list[tuple[bytes, bytes]]) -> None:
        """``GET /v1/ingest/TABLE?stream_id=ID``: where an INDEPENDENT upload stands (the
        stream opened and closed at once, writing nothing)."""
        stream_id = _one(params, "stream_id")
        if not stream_id:
            raise InvalidArgument.field("stream_id", "GET tells where an upload stands: "
                                                     "?stream_id=ID")
        header = batch_pb2.StreamHeader(table=table, mode=batch_pb2.MODE_INDEPENDENT,
                                        stream_id=stream_id, encoding=batch_pb2.ENCODING_ROWS)

        async def only_header() -> AsyncIterator[batch_pb2.BatchStreamRequest]:
            yield batch_pb2.BatchStreamRequest(header=header)

        summary = Summary(table, atomic=False)
        async for response in self.calls.batch_stream(only_header(), call):
            summary.add(response)
        await send_json(send, 200, {"table": table, "stream_id": summary.stream_id,
                                "committed_rows": summary.committed_rows,
                                "last_committed_sequence": summary.last_sequence},
                    answer_headers)


def _format(content_type: str) -> str:
    media = content_type.split(";")[0].strip().lower()
    if media in ("", "application/octet-stream"):  # curl -T sends none: CSV
        return bodies.CSV
    found = bodies.CONTENT_TYPES.get(media)
    if found is None:
        raise UnsupportedMediaType(media)
    return found


def _offset(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.strip().isdigit():
        raise InvalidArgument.field(OFFSET_HEADER, "a row number (the committed_rows of the "
                                                   "last answer)")
    return int(value)


class UnsupportedMediaType(InvalidArgument):
    """A Content-Type that is no ingest format (HTTP 415)."""

    def __init__(self, media: str) -> None:
        known = ", ".join(sorted(bodies.CONTENT_TYPES))
        super().__init__(f"Content-Type: {media!r} is not an ingest format; send one of "
                         f"{known}", violations=[FieldViolation("Content-Type", known)])
