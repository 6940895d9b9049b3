"""One BatchStream: header, chunks, acks, summary. The promises of each mode are kept here.

ATOMIC: one transaction for the whole stream on one connection, committed only when the
client sends StreamCommit. Everything else rolls back: the request iterator ending without a
commit (grpc.aio ends it the same way for a clean half-close and for a client that cancelled
or vanished, so ending is never taken as consent), an error, the deadline, server shutdown
(both cancel this task; the rollback runs in ``finally``).

INDEPENDENT: each chunk is its own transaction with its ledger row (see batchd.stream.ledger); the
ack is sent only after COMMIT returned, so every acked chunk is durable.

A reader task (batchd.stream.readahead) decodes up to ``stream_read_ahead`` chunks ahead of
the writer, so decoding overlaps the COPY of the previous chunk; the writer here takes them
from its queue in order. Before a table's first chunk is written, the stream's role is checked
against the table (batchd.stream.access). A stream whose header has ``on_conflict`` merges its
rows (batchd.stream.upsert): its key is checked before StreamOpened, and its acks and summary
count rows inserted, updated and left unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from batchd.batch.executor import Executor
from batchd.batch.plan import plan_request
from batchd.config import Settings
from batchd.db.pool import begin, connection, role_sql, transaction
from batchd.errors import (
    BatchdError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    code_of,
)
from batchd.kinds.base import PlanContext
from batchd.principals import Principal, authorize_ingest
from batchd.stream import access, ledger, upsert
from batchd.stream.encodings.base import Outcome
from batchd.stream.encodings.registry import Ingest, known_at_header, resolve
from batchd.stream.isolating import ChunkRefused
from batchd.stream.joined import write_joined
from batchd.stream.readahead import Chunk, ChunkQueue, Commit, End, Item, read_ahead
from batchd.stream.tally import Tally
from batchd.stream.target import Written
from batchd.v1 import batch_pb2

log = logging.getLogger(__name__)
STREAM_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


class _Undo(Exception):
    """Roll back a chunk's rows but keep its ledger row (BAD_ROWS_REJECT_CHUNK)."""


class Gate(Protocol):
    """Whether new work may start now: the server's admission (batchd.rpc.admission), which
    knows its limits and whether it drains. ``admit("stream")`` holds a slot for as long as
    its block runs, or refuses the stream with a retryable error (RESOURCE_EXHAUSTED when
    every slot is taken, UNAVAILABLE while the server drains)."""

    def admit(self, lane: str) -> AbstractContextManager[None]: ...


@dataclass(frozen=True, slots=True)
class StreamServices:
    """What every stream session uses, made once by the app."""

    pool: asyncpg.Pool
    executor: Executor
    plan_ctx: PlanContext
    settings: Settings
    admission: Gate


class StreamSession:
    """One BatchStream, from its header to its summary: ``run`` yields the responses."""

    def __init__(self, services: StreamServices, request_id: str,
                 principal: Principal | None) -> None:
        self.pool = services.pool
        # The catalog as the stream starts: it keeps it to its end, whatever reloads meanwhile.
        self.catalog = services.plan_ctx.catalog
        self.executor = services.executor
        self.plan_ctx = services.plan_ctx
        self.settings = services.settings
        self.admission = services.admission
        self.request_id = request_id
        self.principal = principal  # whose scopes bound an operations feed (None: auth off)
        self.role = principal.role if principal is not None else None
        self._entered: Ingest | None = None  # the target checked by ``_enter``
        self._opened_with = batch_pb2.StreamHeader()  # the stream's header, once read

    async def run(self, requests: AsyncIterator[batch_pb2.BatchStreamRequest],
                  admitted: Callable[[], Awaitable[None]],
                  ) -> AsyncIterator[batch_pb2.BatchStreamResponse]:
        """The stream's responses. It takes an admission slot (and then a connection) only
        once a valid header has arrived, and calls ``admitted`` then (the servicer sends its
        response headers: a stream refused before is refused before any header)."""
        header = await self._header(requests)
        with self.admission.admit("stream"):
            await admitted()
            async for response in self._run(header, requests):
                yield response

    async def _header(self, requests: AsyncIterator[batch_pb2.BatchStreamRequest],
                      ) -> batch_pb2.StreamHeader:
        """The header, within ``stream_header_seconds``, checked against the caller's scopes
        before anything else (a denied caller learns nothing of the table)."""
        try:
            async with asyncio.timeout(self.settings.stream_header_seconds):
                first = await anext(requests, None)
        except TimeoutError:
            raise DeadlineExceeded(f"no stream header within stream_header_seconds "
                                   f"({self.settings.stream_header_seconds:g} s)",
                                   reason="STREAM_IDLE") from None
        if first is None or first.WhichOneof("kind") != "header":
            raise InvalidArgument.field("header", "the first message of a stream must be a "
                                                  "header")
        header = first.header
        if self.principal is not None and header.table:
            denied = authorize_ingest(self.principal, header.table,
                                      self.catalog.default_schema)
            if denied is not None:
                raise denied
        return header

    async def _run(self, header: batch_pb2.StreamHeader,
                   requests: AsyncIterator[batch_pb2.BatchStreamRequest],
                   ) -> AsyncIterator[batch_pb2.BatchStreamResponse]:
        if header.mode not in (batch_pb2.MODE_UNSPECIFIED, batch_pb2.MODE_ATOMIC,
                               batch_pb2.MODE_INDEPENDENT):
            raise InvalidArgument.field("header.mode", f"unknown mode {header.mode}")
        atomic = header.mode != batch_pb2.MODE_INDEPENDENT
        self._opened_with = header
        stream_id = header.stream_id or uuid.uuid4().hex
        if not STREAM_ID.fullmatch(stream_id):
            raise InvalidArgument.field("header.stream_id",
                                        "must be 1-128 characters of A-Z a-z 0-9 _ . : -")
        ingest = None
        if header.table and known_at_header(header):
            ingest = resolve(header, self.catalog, None)

        queue = ChunkQueue(asyncio.Queue(maxsize=max(1, self.settings.stream_read_ahead)),
                           self.settings.max_stream_seconds)
        reader = asyncio.create_task(read_ahead(requests, header, ingest, queue, self.catalog,
                                                self.settings.stream_idle_seconds,
                                                self.request_id))
        tally = Tally(merging=header.on_conflict.action in upsert.MERGING)
        try:
            async with connection(self.pool) as conn:
                if header.table and tally.merging:  # before StreamOpened: ON CONFLICT
                    await upsert.check_unique_key(  # needs a unique key
                        conn, self.catalog.table(header.table, "header.table"),
                        header.on_conflict)
                if atomic:
                    async for response in self._atomic(conn, stream_id, queue, tally):
                        yield response
                else:
                    async for response in self._independent(conn, header, stream_id, queue,
                                                            tally):
                        yield response
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    # --- reading ahead ------------------------------------------------------------------------

    # --- ATOMIC -------------------------------------------------------------------------------

    async def _atomic(self, conn: asyncpg.Connection, stream_id: str, queue: ChunkQueue,
                      tally: Tally) -> AsyncIterator[batch_pb2.BatchStreamResponse]:
        yield batch_pb2.BatchStreamResponse(opened=batch_pb2.StreamOpened(stream_id=stream_id))
        tx = begin(conn, self.settings, role=self.role)  # every chunk runs as the role
        await tx.start()
        committed = False
        try:
            pending: Item | None = None  # taken from the queue, and could not join a COPY
            while True:
                item, pending = (pending, None) if pending is not None else \
                    (await queue.get(), None)
                if isinstance(item, Commit):
                    await self._delete_missing(conn, tally)
                    await tx.commit()
                    committed = True
                    yield tally.summary(committed=True)
                    return
                if isinstance(item, End):
                    raise FailedPrecondition("the stream ended without a commit message; "
                                             "nothing of it was committed")
                if isinstance(item, BatchdError):
                    raise item
                chunk, ingest = item, item.ingest
                ledger.check_sequence(chunk.message.sequence, tally.last_sequence + 1)
                if ingest is not None and ingest is not self._entered:
                    await self._enter(conn, ingest)
                    await ingest.sink.prepare(conn)  # for the rest of the stream's transaction
                chunks, pending = await self._joined(chunk, ingest, queue)
                if len(chunks) > 1:
                    assert ingest is not None
                    written = await write_joined(conn, [c.decoded for c in chunks
                                                        if c.decoded is not None], ingest)
                    if written is not None:
                        for joined, each in zip(chunks, written, strict=True):
                            ack = batch_pb2.ChunkAck(sequence=joined.message.sequence)
                            tally.count(ack, joined, Outcome(each.taken, each, []))
                            tally.last_sequence = ack.sequence
                            yield batch_pb2.BatchStreamResponse(ack=ack)
                        continue
                for chunk in chunks:  # one COPY each: a refused row is found, and named
                    # No savepoint of its own: a chunk that fails fails the stream, and
                    # ``write`` isolates bad rows under savepoints of its own.
                    ack = await self._apply(conn, chunk, ingest, tally, atomic=True)
                    if ack.rejected:
                        first = ack.rejected[0]
                        raise BatchdError(f"row {first.index} (chunk {ack.sequence}, row "
                                          f"{first.chunk_index}): {first.status.message}; "
                                          "nothing of the stream was committed",
                                          code=code_of(first.status.code), reason="BAD_ROW",
                                          metadata={"row_index": str(first.index),
                                                    "sequence": str(ack.sequence)})
                    tally.last_sequence = ack.sequence
                    yield batch_pb2.BatchStreamResponse(ack=ack)
        finally:
            if not committed and not conn.is_closed():
                try:
                    await tx.rollback()
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    pass  # the connection is gone, and its transaction with it

    async def _delete_missing(self, conn: asyncpg.Connection, tally: Tally) -> None:
        """A delete_missing stream, at its commit: the rows it did not bring, deleted."""
        ingest = self._entered
        if ingest is None:
            if self._opened_with.delete_missing:
                raise FailedPrecondition("a delete_missing stream brought no chunk: nothing of "
                                         "the table was deleted (an empty snapshot is refused)")
            return
        upsert = ingest.target.upsert
        if upsert is not None and upsert.delete_missing:
            tally.deleted = await ingest.sink.delete_missing(conn)

    async def _joined(self, first: Chunk, ingest: Ingest | None, queue: ChunkQueue,
                      ) -> tuple[list[Chunk], Item | None]:
        """``first`` and the chunks after it already decoded and waiting that can go into the
        same COPY (``joined.joinable``; at most ``stream_read_ahead`` more): fewer, longer COPYs
        keep PostgreSQL busy when the writer is behind. Also the item taken that cannot join
        (None: none)."""
        chunks = [first]
        if ingest is None or not self._joinable(first, ingest):
            return chunks, None
        while len(chunks) <= self.settings.stream_read_ahead:
            item = queue.ready()
            if item is None:
                await asyncio.sleep(0)  # a decoded chunk the reader is about to put
                item = queue.ready()
                if item is None:
                    break
            if not (isinstance(item, Chunk) and item.ingest is ingest
                    and item.message.sequence == chunks[-1].message.sequence + 1
                    and self._joinable(item, ingest)):
                return chunks, item
            chunks.append(item)
        return chunks, None

    @staticmethod
    def _joinable(chunk: Chunk, ingest: Ingest) -> bool:
        return chunk.error is None and chunk.decoded is not None and \
            ingest.encoding.joinable(chunk.decoded)

    # --- INDEPENDENT --------------------------------------------------------------------------

    async def _independent(self, conn: asyncpg.Connection, header: batch_pb2.StreamHeader,
                           stream_id: str, queue: ChunkQueue, tally: Tally,
                           ) -> AsyncIterator[batch_pb2.BatchStreamResponse]:
        position = await ledger.open_stream(conn, stream_id, header.table or "(operations)",
                                            self.principal.name if self.principal else None)
        tally.last_sequence, tally.next_row = position.last_sequence, position.next_row
        yield batch_pb2.BatchStreamResponse(opened=batch_pb2.StreamOpened(
            stream_id=stream_id, last_committed_sequence=position.last_sequence,
            next_row_index=position.next_row))
        reject_chunk = header.bad_rows == batch_pb2.BAD_ROWS_REJECT_CHUNK
        while True:
            item = await queue.get()
            if isinstance(item, (End, Commit)):
                yield tally.summary(committed=True)
                return
            if isinstance(item, BatchdError):
                raise item
            chunk, ingest = item, item.ingest
            sequence = chunk.message.sequence
            if 0 < sequence <= tally.last_sequence:
                ack = await ledger.committed_ack(conn, stream_id, sequence)
                yield batch_pb2.BatchStreamResponse(ack=ack)
                continue
            ledger.check_sequence(sequence, tally.last_sequence + 1)
            try:
                async with transaction(conn, self.settings, roles_inside=bool(self.role)):
                    if not await ledger.claim_chunk(conn, stream_id, sequence, tally.next_row, 0):
                        raise _Undo  # committed meanwhile (another connection or replica)
                    if self.role:  # the rows as the principal's role; the ledger as batchd
                        await conn.execute(role_sql(self.role))
                    if ingest is not None:
                        if ingest is not self._entered:
                            await self._enter(conn, ingest)
                        await ingest.sink.prepare(conn)  # dropped at this chunk's commit
                    ack = await self._apply(conn, chunk, ingest, tally,
                                            atomic=False, reject_chunk=reject_chunk)
                    if self.role:
                        await conn.execute(role_sql(None))
                    await ledger.record_written(conn, stream_id, sequence, ack,
                                                _row_count(chunk))
            except _Undo:
                ack = await ledger.committed_ack(conn, stream_id, sequence)
            tally.last_sequence = sequence
            yield batch_pb2.BatchStreamResponse(ack=ack)

    async def _enter(self, conn: asyncpg.Connection, ingest: Ingest) -> None:
        """Before the stream's first chunk is written, as its role: whether the role may
        insert (and update) its rows (else the stream is refused, nothing of it written), and
        whether row-level security applies (they go through a staging table):
        batchd.stream.access."""
        ingest.target.rls = (await access.check(conn, ingest.target)).rls
        self._entered = ingest

    # --- one chunk ----------------------------------------------------------------------------

    async def _apply(self, conn: asyncpg.Connection, chunk: Chunk, ingest: Ingest | None,
                     tally: Tally, *, atomic: bool,
                     reject_chunk: bool = False) -> batch_pb2.ChunkAck:
        """Write one chunk inside the transaction the caller opened; returns its ack."""
        message = chunk.message
        ack = batch_pb2.ChunkAck(sequence=message.sequence)
        if chunk.error is not None:
            raise chunk.error
        if chunk.decoded is None:  # an operations feed: the chunk is one atomic batch
            tally.chunks += 1
            try:
                async with conn.transaction():
                    ack.results.extend(await self._operations(conn, message))
            except _FeedFailed as failed:
                if atomic:
                    raise
                ack.results.extend(failed.results)
            return ack
        assert ingest is not None
        if reject_chunk:
            try:  # a savepoint, rolled back if a row is bad: the chunk's ledger row stays
                async with conn.transaction():
                    outcome = await self._write(conn, chunk, ingest, atomic)
                    if outcome.rejected:
                        raise _Undo
            except _Undo:
                outcome.written = Written()
        else:  # ``write`` leaves the transaction usable, whatever it rejects
            outcome = await self._write(conn, chunk, ingest, atomic)
        tally.count(ack, chunk, outcome)
        return ack

    async def _write(self, conn: asyncpg.Connection, chunk: Chunk, ingest: Ingest,
                     atomic: bool) -> Outcome:
        """The encoding's ``write``, with a chunk PostgreSQL refused whole (no row's fault: a
        privilege revoked meanwhile, a timeout, a column dropped) ending the stream with that
        error."""
        assert chunk.decoded is not None
        try:
            return await ingest.encoding.write(conn, chunk.decoded, ingest.sink)
        except ChunkRefused as refused:
            error = refused.error
            sequence = chunk.message.sequence
            error.message = (f"chunk {sequence} was not written: {error.message}; "
                             + ("nothing of the stream was committed" if atomic else
                                "the chunks acknowledged before it are committed"))
            error.metadata.setdefault("table", ingest.target.table.qualified_name)
            error.metadata["sequence"] = str(sequence)
            raise error from None

    async def _operations(self, conn: asyncpg.Connection, message: batch_pb2.StreamChunk,
                          ) -> list[batch_pb2.OperationResult]:
        if not message.operations:
            raise InvalidArgument.field("chunk.operations", "an operations feed's chunks carry "
                                                            "operations")
        plan = await plan_request(batch_pb2.BatchExecuteRequest(operations=message.operations),
                          self.plan_ctx, self.principal)
        try:
            response = await self.executor.run_on(conn, plan, self.request_id)
        except BatchdError as exc:
            outcome = next((d for d in exc.extra_details
                            if isinstance(d, batch_pb2.BatchExecuteResponse)), None)
            if outcome is None:
                raise
            raise _FeedFailed(exc, list(outcome.results)) from None
        return list(response.results)


class _FeedFailed(BatchdError):
    def __init__(self, error: BatchdError, results: list[batch_pb2.OperationResult]) -> None:
        super().__init__(error.message, code=error.code, reason=error.reason,
                         violations=error.violations, metadata=error.metadata)
        self.extra_details = error.extra_details
        self.results = results


def _row_count(chunk: Chunk) -> int:
    return chunk.decoded.row_count if chunk.decoded is not None else 0

