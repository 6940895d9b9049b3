"""``ingest``: a BatchStream from the Python client, resumed after a lost connection.

    async with AsyncClient("127.0.0.1:50051") as client:
        result = await client.ingest("events", rows)            # an iterable of dicts
        result = await client.ingest("events", "events.csv")     # CSV, passed to COPY
        result = await client.ingest("events", {"id": ids, "kind": kinds})  # columns
        result = await client.ingest("events", arrow_table)      # or a DataFrame, "x.parquet"
        print(result.rows_written, result.rows_rejected, result.rejected[:3])
        # Upsert: insert new keys, update changed rows (the last row of a key in a chunk wins)
        result = await client.ingest("prices", "snapshot.csv", on_conflict="update")
        print(result.rows_inserted, result.rows_updated, result.rows_unchanged)

The source (``batchd.client.sources``) is cut into chunks of ``chunk_rows`` rows; at most
``max_in_flight`` chunks are sent and not yet acknowledged, so memory stays bounded however
large the source, and a slow ``on_ack`` slows the stream (a chunk's window slot is freed after
its ``on_ack`` returns). Chunks are sent only after the server's StreamOpened.

INDEPENDENT (default): every acknowledged chunk is committed. The stream has a stream id (yours,
or ``ingest-<uuid>``), so when the connection is lost, the server goes away or refuses for
a while (UNAVAILABLE, RESOURCE_EXHAUSTED TOO_MANY_CONCURRENT), the same call reopens the stream
with the same id after a backoff (``RetryPolicy``; ``max_attempts`` counts failures in a row:
an acknowledged chunk starts the count again). Every unacknowledged chunk is sent again, then
the source goes on. Nothing is written twice: the server's ledger knows the sequences it has
committed, and answers a re-sent one with the ack it sent the first time (rows written,
rejected rows), marked ``AckedChunk.duplicate`` — so the totals are exact even when acks were
lost. Calling ``ingest`` again later
with the same ``stream_id``, the same source and ``chunk_rows`` goes on where an earlier call
stopped: the chunks the server has are read from the source and skipped (``skipped_chunks``).

ATOMIC: one transaction, committed by the StreamCommit sent once every chunk is acknowledged
(so ``on_ack`` always runs before the commit); no resume:
a failure after StreamOpened means nothing was committed, and is raised. Refusals before it
(admission, a server restarting) are retried like any call.

``timeout`` (default None: an ingest lasts as long as its source) is a deadline for all of it,
resumes included. Errors raised: ``BatchdRpcError`` (the last attempt's), and whatever the
source raises (ValueError for a bad CSV, TypeError for values that cannot travel); the stream
is then cancelled (ATOMIC: rolled back; INDEPENDENT: the acknowledged chunks stay).
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict, cast

import grpc

from batchd.client import retry
from batchd.client.builder import OnConflictSpec, mode_name, on_conflict_message
from batchd.client.chunks import Opened
from batchd.client.results import rpc_error
from batchd.client.retry import RetryEvent, RetryHook, RetryPolicy
from batchd.client.sources import Source, open_source
from batchd.v1 import batch_pb2, batch_pb2_grpc
from batchd.vocabulary import BatchdRpcError, broken_contract, from_cut_stream, from_rpc_status

__all__ = ["AckHook", "AckedChunk", "IngestOptions", "IngestResult", "RejectedRow", "Source",
           "ingest"]

_BAD_ROWS = {"reject_row": batch_pb2.BAD_ROWS_REJECT_ROW,
             "reject_chunk": batch_pb2.BAD_ROWS_REJECT_CHUNK}
_COMMIT = batch_pb2.BatchStreamRequest(commit=batch_pb2.StreamCommit())


@dataclass(frozen=True)
class RejectedRow:
    """A row the server did not write: its stream-wide ``index`` (0-based: with a CSV header
    line, data row ``index``), its chunk and place in it, and why."""

    index: int
    sequence: int
    chunk_index: int
    code: Any  # grpc.StatusCode
    message: str
    reason: str = ""
    error_info: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, row: batch_pb2.RejectedRow, sequence: int) -> RejectedRow:
        error = from_rpc_status(row.status)
        return cls(row.index, sequence, row.chunk_index, error.code, row.status.message,
                   error.reason, error.error_info)


@dataclass(frozen=True)
class AckedChunk:
    """What ``on_ack`` is told about one acknowledged chunk. ``duplicate``: the server had
    committed it already (an earlier attempt whose ack was lost); nothing was written now."""

    sequence: int
    rows: int
    rows_written: int
    rejected: tuple[RejectedRow, ...]
    duplicate: bool
    # A merging stream (``on_conflict``): rows inserted, updated, left unchanged.
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0


#: Called with each acknowledged chunk; awaited if it returns an awaitable.
AckHook = Callable[[AckedChunk], object]


@dataclass
class IngestResult:
    """How an ingest ended. ``rows_written`` / ``rows_rejected`` / ``rejected`` are exact for
    every chunk this call sent, acknowledgements lost and resent ones included;
    ``skipped_chunks`` were committed by an earlier call with the same stream id."""

    table: str
    mode: str
    stream_id: str = ""
    committed: bool = False
    chunks: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    skipped_chunks: int = 0
    resumes: int = 0
    last_sequence: int = 0
    # A merging stream (``on_conflict``): rows inserted, updated, and left unchanged (a
    # conflict under "do_nothing", an update changing nothing, a row a later one of its key
    # replaced within its chunk); rows_written is inserted + updated.
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    rows_deleted: int = 0  # delete_missing: rows deleted at the commit

    @property
    def ok(self) -> bool:
        """Committed, and no row was rejected."""
        return self.committed and self.rows_rejected == 0


class IngestOptions(TypedDict, total=False):
    """The options of ``ingest`` (and ``AsyncClient.ingest`` / ``Client.ingest``)."""

    columns: Sequence[str] | None
    encoding: str | None
    mode: str
    stream_id: str | None
    chunk_rows: int
    max_in_flight: int
    bad_rows: str
    header: bool | None
    delimiter: str
    quote: str
    null: str | None
    on_ack: AckHook | None
    timeout: float | None
    on_conflict: OnConflictSpec | None
    conflict_columns: Sequence[str]
    delete_missing: bool


@dataclass(slots=True)
class _Sent:
    sequence: int
    request: batch_pb2.BatchStreamRequest
    rows: int


async def ingest(stub: batch_pb2_grpc.BatchServiceStub, table: str, source: Source, *,
                 metadata: Sequence[tuple[str, str]] = (), policy: RetryPolicy = retry.DEFAULT,
                 on_retry: RetryHook | None = None, columns: Sequence[str] | None = None,
                 encoding: str | None = None, mode: str = "independent",
                 stream_id: str | None = None, chunk_rows: int = 10_000, max_in_flight: int = 4,
                 bad_rows: str = "reject_row", header: bool | None = None,
                 delimiter: str = ",", quote: str = '"', null: str | None = None,
                 on_ack: AckHook | None = None,
                 timeout: float | None = None,  # noqa: ASYNC109 (a deadline over resumes)
                 on_conflict: OnConflictSpec | None = None,
                 conflict_columns: Sequence[str] = (),
                 delete_missing: bool = False,
                 ) -> IngestResult:
    """Streams ``source`` into ``table`` (see the module doc).

    ``columns``: the columns the source provides (default: a mapping's keys, the CSV header
    line, the first row's keys, or the Arrow schema's fields). ``encoding``: ``"rows"``,
    ``"columnar"``, ``"csv"`` or ``"arrow"`` (default: by source; rows may be sent
    ``"columnar"``; a pyarrow table, a pandas or polars DataFrame, a Parquet or Arrow file
    always go as ``"arrow"``). ``mode``: ``"independent"``
    (default) or ``"atomic"``. ``bad_rows``: ``"reject_row"`` or ``"reject_chunk"``
    (INDEPENDENT). CSV: ``header`` (default: a header line unless ``columns`` is given; with
    both, the line is skipped), ``delimiter``, ``quote``, ``null`` (the text meaning NULL).
    ``on_conflict``: merge rows instead of appending them, as an insert's: ``"do_nothing"``,
    ``"update"`` (every column sent but the key's), ``("update", [columns])``, or a
    ``batch_pb2.OnConflict``; ``conflict_columns``: the unique key (default: the primary key).
    The same key twice in a chunk: the last row wins. The result then counts
    ``rows_inserted``, ``rows_updated`` and ``rows_unchanged``. ``delete_missing`` (with
    ``on_conflict`` and ``mode="atomic"``): the source is the whole table; at commit the rows
    whose key it did not bring are deleted (``rows_deleted``).
    """
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    if bad_rows not in _BAD_ROWS:
        raise ValueError(f"bad_rows must be one of {', '.join(_BAD_ROWS)}")
    mode_enum = batch_pb2.Mode.Value(mode_name(mode))
    atomic = mode_enum != batch_pb2.MODE_INDEPENDENT
    if not atomic and not stream_id:
        stream_id = f"ingest-{uuid.uuid4().hex}"
    opened = await open_source(source, encoding=encoding, columns=columns,
                               chunk_rows=chunk_rows, header=header, delimiter=delimiter,
                               quote=quote)
    head = batch_pb2.StreamHeader(table=table, columns=opened.columns,
                                  mode=cast(batch_pb2.Mode, mode_enum),
                                  encoding=cast(batch_pb2.Encoding, opened.encoding),
                                  stream_id=stream_id or "",
                                  bad_rows=_BAD_ROWS[bad_rows])
    head.arrow_schema = opened.arrow_schema
    merge = on_conflict_message(on_conflict, conflict_columns)
    if merge is not None:
        head.on_conflict.CopyFrom(merge)
    head.delete_missing = delete_missing
    if opened.encoding == batch_pb2.ENCODING_CSV:
        head.csv.CopyFrom(batch_pb2.CsvOptions(delimiter=delimiter, quote=quote,
                                               null=null or ""))
    result = IngestResult(table=table, mode="atomic" if atomic else "independent",
                          stream_id=stream_id or "")
    run = _Ingest(stub, head, opened, result, metadata=tuple(metadata), policy=policy,
                  on_retry=on_retry, on_ack=on_ack, max_in_flight=max_in_flight)
    return await run.run(timeout)


class _Ingest:
    """One ``ingest`` call: its streams (one, plus one per resume) and what they achieved."""

    def __init__(self, stub: batch_pb2_grpc.BatchServiceStub, head: batch_pb2.StreamHeader,
                 source: Opened, result: IngestResult, *, metadata: tuple[tuple[str, str], ...],
                 policy: RetryPolicy, on_retry: RetryHook | None, on_ack: AckHook | None,
                 max_in_flight: int) -> None:
        self.stub = stub
        self.header = batch_pb2.BatchStreamRequest(header=head)
        self.atomic = head.mode != batch_pb2.MODE_INDEPENDENT
        self.source = source
        self.result = result
        self.metadata = metadata
        self.policy = policy
        self.on_retry = on_retry
        self.on_ack = on_ack
        self.window = max_in_flight
        self.pending: dict[int, _Sent] = {}  # sent, not acknowledged, by sequence (in order)
        self.space = asyncio.Condition()  # notified when ``pending`` shrinks
        self.sequence = 0  # the last sequence given to a chunk of the source
        self.skip_through = 0  # chunks up to this sequence the server had before this call
        self.exhausted = False
        self.ever_opened = False
        self.opened = False  # the current stream got its StreamOpened
        self.progress = 0  # acknowledgements received

    async def run(self, seconds: float | None) -> IngestResult:
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        failures = 1
        try:
            while True:
                seen = self.progress
                remaining = None if deadline is None else deadline - loop.time()
                try:
                    await self._stream(remaining)
                    return self.result
                except grpc.RpcError as exc:
                    error, cause = from_cut_stream(rpc_error(exc)), exc
                if self.progress > seen:
                    failures = 1  # it moved on: a new run of failures starts
                if self.atomic and self.opened:
                    raise error from cause  # rolled back: nothing to resume
                remaining = None if deadline is None else deadline - loop.time()
                delay = self.policy.next_delay(error, failures, replay_safe=True,
                                               remaining=remaining)
                if delay is None:
                    raise error from cause
                await self._retrying(error, failures, delay)
                if deadline is not None and loop.time() >= deadline:
                    raise error from cause
                failures += 1
        finally:
            await _close(self.source)

    async def _retrying(self, error: BatchdRpcError, failures: int, delay: float) -> None:
        if self.ever_opened:
            self.result.resumes += 1
        if self.on_retry is not None:
            outcome = self.on_retry(RetryEvent("BatchStream", failures, error, delay))
            if inspect.isawaitable(outcome):
                await outcome
        await asyncio.sleep(delay)

    async def _stream(self, remaining: float | None) -> None:
        """One stream: header, StreamOpened, then chunks out and acks in, to the summary."""
        self.opened = False
        call = self.stub.BatchStream(metadata=self.metadata or None, timeout=remaining)
        tasks: list[asyncio.Task[None]] = []
        try:
            try:
                await call.write(self.header)
            except asyncio.InvalidStateError:
                pass  # the call has ended already: read() raises its status
            response = await call.read()
            if response is grpc.aio.EOF or response.WhichOneof("kind") != "opened":
                raise broken_contract(f"the server answered the header with {response!r}")
            self.opened = True
            self._resume_at(response.opened)
            reader = asyncio.create_task(self._read(call))
            writer = asyncio.create_task(self._write(call))
            tasks = [reader, writer]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = writer.exception() if writer.done() else None
            if failed is not None:
                raise failed  # the source's: not retried
            await reader
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            call.cancel()  # no-op once finished; else ATOMIC rolls back

    def _resume_at(self, opened: batch_pb2.StreamOpened) -> None:
        """StreamOpened: where the server stands. On the first open, the chunks it has (from
        an earlier call with this stream id) are skipped; on a reopen, every unacknowledged
        chunk is sent again, and those it committed come back with their first ack."""
        self.result.stream_id = opened.stream_id
        if not self.ever_opened:
            self.ever_opened = True
            self.skip_through = opened.last_committed_sequence

    async def _write(self, call: Any) -> None:
        try:
            for again in list(self.pending.values()):  # after a resume: not committed yet
                await call.write(again.request)
            while not self.exhausted:
                async with self.space:
                    await self.space.wait_for(lambda: len(self.pending) < self.window)
                sent = await self._next()
                if sent is None:
                    self.exhausted = True
                    break
                self.pending[sent.sequence] = sent
                await call.write(sent.request)
            if self.atomic:
                # After every ack (and its on_ack): the server commits as soon as it reads
                # this, and acks it has written may still be on their way (it writes chunks
                # waiting together and acks them at once); on_ack is promised the
                # transaction uncommitted. One round trip at the end of the stream.
                async with self.space:
                    await self.space.wait_for(lambda: not self.pending)
                await call.write(_COMMIT)
            await call.done_writing()
        except (grpc.RpcError, asyncio.InvalidStateError):
            return  # the call has ended: the reader has its status

    async def _next(self) -> _Sent | None:
        """The next chunk of the source to send, with its sequence."""
        while True:
            chunk = await anext(self.source.chunks, None)
            if chunk is None:
                return None
            self.sequence += 1
            if self.sequence <= self.skip_through:
                self.result.skipped_chunks += 1
                continue
            chunk.content.sequence = self.sequence
            return _Sent(self.sequence, batch_pb2.BatchStreamRequest(chunk=chunk.content),
                         chunk.rows)

    async def _read(self, call: Any) -> None:
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                raise broken_contract("the stream ended without a summary")
            kind = response.WhichOneof("kind")
            if kind == "ack":
                await self._acked(response.ack)
            elif kind == "summary":
                self.result.committed = response.summary.committed
                self.result.rows_deleted = response.summary.rows_deleted
                return

    async def _acked(self, ack: batch_pb2.ChunkAck) -> None:
        sent = self.pending.get(ack.sequence)
        if sent is None:
            return  # not one of ours in flight (nothing to count)
        rejected = tuple(RejectedRow.from_proto(row, ack.sequence) for row in ack.rejected)
        result = self.result
        result.chunks += 1  # a duplicate's ack repeats its first one: counted like it
        result.rows_written += ack.rows_written
        result.rows_inserted += ack.rows_inserted
        result.rows_updated += ack.rows_updated
        result.rows_unchanged += ack.rows_unchanged
        result.rows_rejected += len(rejected)
        result.rejected.extend(rejected)
        result.last_sequence = max(result.last_sequence, ack.sequence)
        self.progress += 1
        if self.on_ack is not None:
            outcome = self.on_ack(AckedChunk(ack.sequence, sent.rows, ack.rows_written, rejected,
                                             ack.duplicate, ack.rows_inserted,
                                             ack.rows_updated, ack.rows_unchanged))
            if inspect.isawaitable(outcome):
                await outcome
        del self.pending[ack.sequence]
        async with self.space:
            self.space.notify_all()


async def _close(source: Opened) -> None:
    close = getattr(source.chunks, "aclose", None)
    if close is not None:
        await close()

