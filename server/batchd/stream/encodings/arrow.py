"""ENCODING_ARROW: Arrow IPC chunks into PostgreSQL's binary COPY, exactly, without per-value
Python.

A chunk is one Arrow IPC stream (``StreamChunk.arrow``). pyarrow reads it without copying; each
column is brought to the Arrow type whose binary COPY form the PostgreSQL column receives
(a widening cast, or nothing at all), and pgpq (Rust) writes the COPY data. The work per value
is C++ and Rust; Python only runs per column and per chunk, and per *bad* row.

Types are checked once per Arrow schema (``batchd.stream.arrow_types.plan``, which has the
table of what each column type takes): at the header when it carries ``arrow_schema``, else at
the first chunk (and again for a chunk whose schema differs). A type that cannot be stored
exactly is refused there with INVALID_ARGUMENT naming the column and both types, never row by
row; values that cannot be exact (out of range, nanoseconds, a malformed uuid) reject their
row while decoding, like COLUMNAR's, with the column named.

Writing: the chunk's COPY data is made while decoding (ahead of the writer, like the other
encodings); when PostgreSQL refuses a row, ``batchd.stream.isolating.write_isolating`` splits the
chunk by the line PostgreSQL names, else in halves, re-encoding the slices, so that only the
refused rows are rejected.

Decoding runs on a worker thread, in the stream's reader task, like the other encodings
(``batchd.stream.session``). pgpq holds the GIL while it encodes, so the event loop may wait
for it, but only that long (a 10,000-row chunk of a dozen columns takes a few milliseconds);
on the loop itself, every chunk's decoding delayed the writer's next round trip to PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import pyarrow as pa

from batchd.catalog import Column
from batchd.errors import BatchdError, InvalidArgument
from batchd.stream.arrow_types import Plan, Rows, plan
from batchd.stream.encodings.base import (
    Decoded,
    Encoding,
    Joined,
    Outcome,
    binary_joined,
    copy_whole,
    whole_binary,
)
from batchd.stream.isolating import write_isolating
from batchd.stream.sink import Sink
from batchd.stream.target import Target, Written
from batchd.v1 import batch_pb2


@dataclass(slots=True)
class ArrowTarget:
    """The Arrow side of a stream's Target: the plan of the schema seen last."""

    columns: list[Column]
    plan: Plan | None = None

    def plan_for(self, schema: pa.Schema, where: str) -> Plan:
        if self.plan is None or not self.plan.schema.equals(schema):
            self.plan = plan(schema, self.columns, where)
        return self.plan


def read_schema(data: bytes, where: str) -> pa.Schema:
    """The schema of an IPC schema message (header.arrow_schema) or of an IPC stream."""
    if not data:
        raise InvalidArgument.field(where, "is empty")
    try:
        if where.endswith("arrow_schema"):
            return pa.ipc.read_schema(pa.py_buffer(data))
        return pa.ipc.open_stream(pa.py_buffer(data)).schema
    except (pa.ArrowException, OSError) as exc:
        raise InvalidArgument.field(where, f"not an Arrow IPC {_what(where)}: {exc}") from None


def _what(where: str) -> str:
    return "schema message" if where.endswith("arrow_schema") else "stream"


# --- a chunk ---------------------------------------------------------------------------------

@dataclass(slots=True, kw_only=True)
class ArrowDecoded(Decoded):
    """An ARROW chunk: its rows converted (those kept), each one's chunk index (empty: all
    kept), and their binary COPY data (None: the encoder refused a value; found while
    writing)."""

    rows: Rows
    indexes: list[int]
    binary: bytes | None


class ArrowEncoding(Encoding):
    value = batch_pb2.ENCODING_ARROW
    name = "ARROW"

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self.plans = ArrowTarget(target.columns)

    @classmethod
    def columns(cls, header: batch_pb2.StreamHeader, first: batch_pb2.StreamChunk | None,
                ) -> list[str]:
        if header.columns:
            return list(header.columns)
        if header.arrow_schema:
            return list(read_schema(header.arrow_schema, "header.arrow_schema").names)
        if first is None:
            raise InvalidArgument.field("header.columns", "give the columns or arrow_schema, "
                                                          "or send a chunk")
        return list(read_schema(first.arrow, "chunk.arrow").names)

    def prepare(self, header: batch_pb2.StreamHeader) -> None:
        """The types are checked at the header when it carries the schema."""
        if header.arrow_schema:
            self.plans.plan_for(read_schema(header.arrow_schema, "header.arrow_schema"),
                                "header.arrow_schema")

    def decode(self, chunk: batch_pb2.StreamChunk) -> Decoded:
        return decode(chunk, self.target, self.plans)

    async def write(self, conn: asyncpg.Connection, decoded: Decoded, sink: Sink) -> Outcome:
        assert isinstance(decoded, ArrowDecoded)
        return await write(conn, decoded, sink)

    def joinable(self, decoded: Decoded) -> bool:
        return isinstance(decoded, ArrowDecoded) and not decoded.rejected and \
            whole_binary(decoded.binary)

    def join(self, chunks: Sequence[Decoded]) -> Joined:
        return binary_joined([(c.binary, c.row_count) for c in chunks
                              if isinstance(c, ArrowDecoded) and c.binary is not None])


def decode(chunk: batch_pb2.StreamChunk, target: Target, plans: ArrowTarget) -> ArrowDecoded:
    """Read, check, convert and encode one chunk (rows that cannot be stored are rejected)."""
    if chunk.rows or chunk.csv or chunk.HasField("columnar"):
        raise InvalidArgument.field("chunk", "an ARROW stream's chunks carry arrow")
    if not chunk.arrow:
        raise InvalidArgument.field("chunk.arrow", "is empty")
    try:
        table = pa.ipc.open_stream(pa.py_buffer(chunk.arrow)).read_all()
    except (pa.ArrowException, OSError) as exc:
        raise InvalidArgument.field("chunk.arrow", f"not an Arrow IPC stream: {exc}") from None
    chunk_plan = plans.plan_for(table.schema, "chunk.arrow")
    bad: dict[int, BatchdError] = {}
    columns = []
    for index, convert, column in zip(chunk_plan.sources, chunk_plan.converts,
                                      target.columns, strict=True):
        try:
            converted, refused = convert(table.column(index).combine_chunks())
        except pa.ArrowInvalid as exc:  # data the IPC reader let through (e.g. bad offsets)
            raise InvalidArgument.field("chunk.arrow", f'column "{column.name}": {exc}') \
                from None
        columns.append(converted)
        for row, why in refused:
            bad.setdefault(row, InvalidArgument.field(f"rows[{row}].{column.name}",
                                                      f"{why} (column type {column.type_sql})"))
    converted_table = pa.Table.from_arrays(columns, schema=chunk_plan.out)
    indexes: list[int] = []
    if bad:
        converted_table, indexes = _without(converted_table, sorted(bad))
    binary: bytes | None
    try:
        binary = chunk_plan.encode(converted_table) if converted_table.num_rows else b""
    except Exception:  # a value the encoder refuses: found row by row while writing
        binary = None
    return ArrowDecoded(chunk.sequence, table.num_rows, sorted(bad.items()),
                        rows=Rows(converted_table, chunk_plan), indexes=indexes, binary=binary)


def _without(table: pa.Table, rows: list[int]) -> tuple[pa.Table, list[int]]:
    """``table`` without ``rows`` (sorted), and the chunk index of each row kept. Made of
    slices, not ``filter``: no copy, and every type slices (filter has no kernel for
    string_view, for one)."""
    parts: list[pa.Table] = []
    kept: list[int] = []
    start = 0
    for row in [*rows, table.num_rows]:
        if row > start:
            parts.append(table.slice(start, row - start))
            kept.extend(range(start, row))
        start = row + 1
    if not parts:
        return table.slice(0, 0), []
    return pa.concat_tables(parts), kept


async def write(conn: asyncpg.Connection, decoded: ArrowDecoded, sink: Sink) -> Outcome:
    """COPY a decoded chunk: whole if it can, else isolating the rows PostgreSQL refuses."""
    rejected = list(decoded.rejected)
    rows = decoded.rows
    if not len(rows):
        return Outcome(decoded.row_count, Written(), rejected)

    async def copy(units: Sequence[Any]) -> Written:
        assert isinstance(units, Rows)
        try:
            data = units.plan.encode(units.table)
        except Exception as exc:
            raise ValueError(str(exc)) from None
        return (await sink.data(conn, [data], "binary"))[0]

    if decoded.binary is not None:
        written = await copy_whole(conn, sink, decoded.binary)
        if written is not None:
            return Outcome(decoded.row_count, written, rejected)
    indexes = decoded.indexes or list(range(len(rows)))
    written, refused = await write_isolating(conn, copy, rows, indexes)
    return Outcome(decoded.row_count, written, sorted(rejected + refused, key=lambda r: r[0]))
