"""ENCODING_ROWS: each row a Struct of column name to value (convenient, not fast).

The chunk takes the fast path when it can (batchd.stream.arrow_rows: one Arrow array per
column), else each value is read by its column's reader (the common case in a few bytecodes,
the rest and every error message through ``batchd.values.coerce``). A ROWS stream whose header
names no columns takes the first row's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from google.protobuf import struct_pb2

from batchd.catalog import Column
from batchd.errors import BatchdError, InvalidArgument
from batchd.pgtext import MAX_SAFE_INTEGER
from batchd.stream import arrow_rows
from batchd.stream.arrow_types import Rows
from batchd.stream.encodings.records import RecordsDecoded, RecordsEncoding
from batchd.stream.target import Target
from batchd.v1 import batch_pb2
from batchd.values import CoercionError, coerce, from_proto


class RowsEncoding(RecordsEncoding):
    value = batch_pb2.ENCODING_ROWS
    name = "ROWS"

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self.readers = [(c.name, _reader(c)) for c in target.columns]

    @classmethod
    def columns(cls, header: batch_pb2.StreamHeader, first: batch_pb2.StreamChunk | None,
                ) -> list[str]:
        if header.columns:
            return list(header.columns)
        if first is None or not first.rows:
            raise InvalidArgument.field("header.columns", "give the columns, or send rows")
        return list(first.rows[0].fields.keys())

    def check(self, chunk: batch_pb2.StreamChunk) -> None:
        if chunk.HasField("columnar") or chunk.csv:
            raise InvalidArgument.field("chunk", "a ROWS stream's chunks carry rows")

    def arrow_rows(self, chunk: batch_pb2.StreamChunk) -> tuple[Rows, bytes] | None:
        return arrow_rows.rows(chunk, self.plans) if chunk.rows else None

    def per_value(self, chunk: batch_pb2.StreamChunk) -> RecordsDecoded:
        return _decode_rows(chunk, self.target, self.readers)


Reader = Callable[[Any], Any]  # a struct_pb2.Value (None: the column is missing)


def _reader(column: Column) -> Reader:
    """A Value -> Python converter for one column: the common case in a few bytecodes, the
    rest (and every error message) through ``coerce``."""

    def slow(value: struct_pb2.Value) -> Any:
        return coerce(from_proto(value), column)

    family = column.family
    if column.is_array:
        return slow
    if family in ("text", "numeric"):
        def read_string(value: struct_pb2.Value) -> Any:
            if value.WhichOneof("kind") == "string_value":
                return value.string_value
            return slow(value)
        return read_string
    if family in ("int2", "int4", "int8"):
        limit = min(MAX_SAFE_INTEGER, {"int2": 2**15 - 1, "int4": 2**31 - 1}.get(family, 2**63))

        def read_int(value: struct_pb2.Value) -> Any:
            if value.WhichOneof("kind") == "number_value":
                number = value.number_value
                integer = int(number) if -limit <= number <= limit else None
                if integer is not None and integer == number:
                    return integer
            return slow(value)
        return read_int
    if family in ("timestamptz", "timestamp"):
        aware = family == "timestamptz"

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
    if family == "float":
        def read_float(value: struct_pb2.Value) -> Any:
            if value.WhichOneof("kind") == "number_value":
                return value.number_value
            return slow(value)
        return read_float
    return slow


def _decode_rows(chunk: batch_pb2.StreamChunk, target: Target,
                 readers: list[tuple[str, Reader]]) -> RecordsDecoded:
    out = RecordsDecoded(chunk.sequence, len(chunk.rows))
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


