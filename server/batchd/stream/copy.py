"""Ingest chunks: the stream's target, and decoding each encoding into what COPY takes
(``batchd.stream.write`` writes it).

ROWS and COLUMNAR chunks go through Arrow and pgpq when the whole chunk allows it
(``batchd.stream.arrow_rows``: one array per column, no Python per value); else, and whenever
PostgreSQL refuses such a chunk's COPY, they become Python records for asyncpg's binary COPY,
value by value. Values are coerced by column type while decoding, so a bad value rejects its
row with a reason naming the column before anything reaches PostgreSQL (COLUMNAR:
``batchd.stream.columnar``). CSV chunks go to COPY as the bytes they arrived as. ARROW chunks
are read, checked and encoded to binary COPY by ``batchd.stream.arrow``. (Both Arrow modules
are imported on first use: pyarrow is loaded only by servers that see such a chunk.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import struct_pb2

from batchd.catalog import Catalog, Column, Table
from batchd.errors import BatchdError, InvalidArgument
from batchd.pgtext import MAX_SAFE_INTEGER
from batchd.stream import columnar
from batchd.v1 import batch_pb2
from batchd.values import CoercionError, coerce, from_proto


@dataclass(slots=True)
class Target:
    table: Table
    columns: list[Column]
    encoding: int
    csv: batch_pb2.CsvOptions
    readers: list[tuple[str, Reader]] = field(init=False)
    # ENCODING_ARROW: the batchd.stream.arrow.ArrowTarget (the plan of the chunks' schema).
    arrow: Any = field(init=False, default=None)
    # ROWS, COLUMNAR: the batchd.stream.arrow_rows.Fast (the fast path's plans), once used.
    fast: Any = field(init=False, default=None)
    # Positions of numeric columns: their strings go to the driver unparsed (it parses them
    # exactly as coercion would), and are checked one by one only if a COPY's encoding fails.
    lazy: list[int] = field(init=False)
    # Rows go in through a staging table (row-level security: batchd.stream.access).
    staged: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.readers = [(c.name, _reader(c)) for c in self.columns]
        self.lazy = [i for i, c in enumerate(self.columns) if c.family == "numeric"
                     and not c.is_array]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


Reader = Callable[[Any], Any]  # a struct_pb2.Value (None: the column is missing)


def _reader(column: Column) -> Reader:
    """A Value -> Python converter for one column: the common case in a few bytecodes, the
    rest (and every error message) through ``coerce``."""

    def slow(value: struct_pb2.Value) -> Any:
        return coerce(from_proto(value), column)

    kind = column.family
    if column.is_array:
        return slow
    if kind in ("text", "numeric"):
        def read_string(value: struct_pb2.Value) -> Any:
            if value.WhichOneof("kind") == "string_value":
                return value.string_value
            return slow(value)
        return read_string
    if kind in ("int2", "int4", "int8"):
        limit = min(MAX_SAFE_INTEGER, {"int2": 2**15 - 1, "int4": 2**31 - 1}.get(kind, 2**63))

        def read_int(value: struct_pb2.Value) -> Any:
            if value.WhichOneof("kind") == "number_value":
                number = value.number_value
                integer = int(number) if -limit <= number <= limit else None
                if integer is not None and integer == number:
                    return integer
            return slow(value)
        return read_int
    if kind in ("timestamptz", "timestamp"):
        aware = kind == "timestamptz"

        def read_timestamp(value: struct_pb2.Value) -> Any:
            if value.WhichOneof("kind") == "string_value":
                try:
                    parsed = dt.datetime.fromisoformat(value.string_value)
                except ValueError:
                    return slow(value)
                if (parsed.tzinfo is not None) == aware:
                    return parsed
            return slow(value)
        return read_timestamp
    if kind == "float":
        def read_float(value: struct_pb2.Value) -> Any:
            if value.WhichOneof("kind") == "number_value":
                return value.number_value
            return slow(value)
        return read_float
    return slow


def known_at_header(header: batch_pb2.StreamHeader) -> bool:
    """Whether the header alone says the stream's columns (else the first chunk does)."""
    if header.encoding == batch_pb2.ENCODING_ARROW:
        return bool(header.columns or header.arrow_schema)
    return bool(header.columns) or header.encoding not in (batch_pb2.ENCODING_UNSPECIFIED,
                                                            batch_pb2.ENCODING_ROWS)


def resolve_target(header: batch_pb2.StreamHeader, catalog: Catalog,
                   first_chunk: batch_pb2.StreamChunk | None) -> Target:
    table = catalog.table(header.table, "header.table")
    table.require("insert", "header.table")
    encoding = header.encoding or batch_pb2.ENCODING_ROWS
    names = list(header.columns)
    schema = None
    if encoding == batch_pb2.ENCODING_ARROW:
        from batchd.stream.encodings import arrow
        if header.arrow_schema:
            schema = arrow.read_schema(header.arrow_schema, "header.arrow_schema")
        if not names:
            if schema is None and first_chunk is not None:
                schema = arrow.read_schema(first_chunk.arrow, "chunk.arrow")
            if schema is None:
                raise InvalidArgument.field("header.columns", "give the columns or "
                                                              "arrow_schema, or send a chunk")
            names = list(schema.names)
    elif not names:
        if encoding != batch_pb2.ENCODING_ROWS:
            raise InvalidArgument.field("header.columns", "required for COLUMNAR and CSV")
        if first_chunk is None or not first_chunk.rows:
            raise InvalidArgument.field("header.columns", "give the columns, or send rows")
        names = list(first_chunk.rows[0].fields.keys())
    if not names:
        raise InvalidArgument.field("chunk.rows[0]", "names no columns; give header.columns")
    _check_csv_options(header.csv)
    columns = []
    for i, name in enumerate(names):
        column = table.column(name, f"header.columns[{i}]")
        if column.generated:
            raise InvalidArgument.field(f"header.columns[{i}]", "is a generated column")
        if column in columns:
            raise InvalidArgument.field(f"header.columns[{i}]", f'"{name}" is listed twice')
        columns.append(column)
    target = Target(table, columns, encoding, header.csv)
    if encoding == batch_pb2.ENCODING_ARROW:
        target.arrow = arrow.ArrowTarget(columns)
        if schema is not None:
            target.arrow.plan_for(schema, "header.arrow_schema" if header.arrow_schema
                                  else "chunk.arrow")
    return target


def _check_csv_options(options: batch_pb2.CsvOptions) -> None:
    """COPY takes single one-byte characters for these; anything else is the caller's error,
    found here rather than by PostgreSQL in the middle of a stream."""
    for name in ("delimiter", "quote"):
        value = getattr(options, name)
        if value and (len(value.encode()) != 1 or value in "\r\n"):
            raise InvalidArgument.field(f"header.csv.{name}",
                                        "must be a single one-byte character")
    if "\n" in options.null or "\r" in options.null:
        raise InvalidArgument.field("header.csv.null", "must not contain a line break")


@dataclass(slots=True)
class Decoded:
    """A chunk ready to write: records (or CSV bytes), and rows rejected while decoding."""

    sequence: int
    row_count: int
    records: list[tuple[Any, ...]] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)  # chunk index of each record
    csv: bytes = b""
    # ENCODING_CSV: its records, if each ends within the chunk so that it can share a COPY
    # with the next chunks (``batchd.stream.joined``); else None.
    csv_records: int | None = None
    rejected: list[tuple[int, BatchdError]] = field(default_factory=list)
    arrow: Any = None  # ENCODING_ARROW, fast path: the rows (batchd.stream.arrow.Rows)
    # ENCODING_ARROW, fast path: their COPY data (ARROW's None: found while writing)
    binary: bytes | None = None
    # ROWS, COLUMNAR on the fast path (batchd.stream.arrow_rows): the chunk, decoded again
    # value by value if PostgreSQL refuses its COPY.
    retry: batch_pb2.StreamChunk | None = None


def decode(chunk: batch_pb2.StreamChunk, target: Target) -> Decoded:
    if target.encoding == batch_pb2.ENCODING_ARROW:
        from batchd.stream.encodings import arrow
        return arrow.decode(chunk, target)
    if chunk.arrow:
        raise InvalidArgument.field("chunk.arrow", "is for ARROW streams")
    if target.encoding == batch_pb2.ENCODING_CSV:
        if chunk.rows or chunk.HasField("columnar"):
            raise InvalidArgument.field("chunk", "a CSV stream's chunks carry csv bytes")
        return Decoded(chunk.sequence, -1, csv=chunk.csv,
                       csv_records=whole_records(chunk.csv, target.csv))
    if target.encoding == batch_pb2.ENCODING_COLUMNAR:
        if chunk.rows or chunk.csv:
            raise InvalidArgument.field("chunk", "a COLUMNAR stream's chunks carry columnar")
    elif chunk.HasField("columnar") or chunk.csv:
        raise InvalidArgument.field("chunk", "a ROWS stream's chunks carry rows")
    return _decode_fast(chunk, target) or decode_per_value(chunk, target)


def _decode_fast(chunk: batch_pb2.StreamChunk, target: Target) -> Decoded | None:
    """A ROWS or COLUMNAR chunk through Arrow and pgpq, if every value allows it (see
    batchd.stream.arrow_rows); None: decode it value by value."""
    from batchd.stream import arrow_rows
    if target.fast is None:
        target.fast = arrow_rows.Fast(target.columns)
    if target.encoding == batch_pb2.ENCODING_COLUMNAR:
        made = arrow_rows.columnar(chunk, target.fast)
    else:
        made = arrow_rows.rows(chunk, target.fast) if chunk.rows else None
    if made is None:
        return None
    rows, data = made
    return Decoded(chunk.sequence, len(rows), arrow=rows, binary=data, retry=chunk)


def decode_per_value(chunk: batch_pb2.StreamChunk, target: Target) -> Decoded:
    """A ROWS or COLUMNAR chunk as records, value by value: each bad row rejected, with why."""
    if target.encoding == batch_pb2.ENCODING_COLUMNAR:
        return _decode_columnar(chunk, target)
    return _decode_rows(chunk, target)


def _decode_rows(chunk: batch_pb2.StreamChunk, target: Target) -> Decoded:
    out = Decoded(chunk.sequence, len(chunk.rows))
    readers = target.readers
    width = len(readers)
    records, indexes = out.records, out.indexes
    for i, row in enumerate(chunk.rows):
        fields = row.fields
        get = fields.get
        try:
            if len(fields) != width:
                raise KeyError
            records.append(tuple([read(get(name)) for name, read in readers]))
            indexes.append(i)
        except (KeyError, CoercionError, AttributeError):  # AttributeError: a missing column
            out.rejected.append((i, _row_error(i, fields, target)))
    return out


def _row_error(i: int, fields: Any, target: Target) -> BatchdError:
    """Why row i was refused, precisely (the slow path, only for bad rows)."""
    names = set(target.names)
    if len(fields) != len(names) or not names.issuperset(fields.keys()):
        return InvalidArgument.field(f"rows[{i}]", f"names columns {sorted(fields.keys())}; the "
                                                   f"stream's columns are {sorted(names)}")
    for c in target.columns:
        try:
            coerce(from_proto(fields[c.name]), c)
        except CoercionError as exc:
            return InvalidArgument.field(f"rows[{i}].{c.name}",
                                         f"{exc} (column type {c.type_sql})")
    return InvalidArgument.field(f"rows[{i}]", "invalid row")


def _decode_columnar(chunk: batch_pb2.StreamChunk, target: Target) -> Decoded:
    lists, bad, count = columnar.columns_of(chunk.columnar, target.columns)
    out = Decoded(chunk.sequence, count)
    out.rejected = sorted(bad.items())
    if bad:
        keep = [i for i in range(count) if i not in bad]
        out.records = [tuple(col[i] for col in lists) for i in keep]
        out.indexes = keep
    else:
        out.records = list(zip(*lists, strict=True))
        out.indexes = list(range(count))
    return out


def whole_records(data: bytes, options: batch_pb2.CsvOptions) -> int | None:
    """The records of a CSV chunk if, in one COPY with the next chunks', it gives exactly the
    rows it gives alone: it ends with a newline and holds no quote character, so that no record
    spans two chunks and each newline ends one. Else None. (What else could make PostgreSQL
    read the joined data otherwise: a carriage return, "\\." on a line of its own: it refuses
    it, or counts other rows than these newlines, and the chunks are written one by one; see
    ``batchd.stream.joined``.)"""
    quote = (options.quote or '"').encode()
    if not data.endswith(b"\n") or quote in data:
        return None
    return data.count(b"\n")
