"""The one list of stream encodings, and a stream's resolution from its header.

Each value of the proto's ``Encoding`` is one ``Encoding`` class here
(``batchd.stream.encodings.base``). ``resolve`` checks the header against the catalog (table,
columns, CSV options, on_conflict) and makes the stream's ``Ingest``: its target, its encoding
and its sink. Adding an encoding is its module, a line here, and the proto.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from batchd.catalog import Catalog
from batchd.errors import InvalidArgument
from batchd.stream import upsert
from batchd.stream.encodings.arrow import ArrowEncoding
from batchd.stream.encodings.base import Encoding
from batchd.stream.encodings.columnar import ColumnarEncoding
from batchd.stream.encodings.csv import CsvEncoding
from batchd.stream.encodings.rows import RowsEncoding
from batchd.stream.sink import Sink
from batchd.stream.target import Target
from batchd.v1 import batch_pb2

ENCODINGS: Mapping[int, type[Encoding]] = MappingProxyType({e.value: e for e in (
    RowsEncoding, ColumnarEncoding, CsvEncoding, ArrowEncoding)})


@dataclass(frozen=True, slots=True)
class Ingest:
    """What a table's stream writes into (``target``), how its chunks are decoded and
    written (``encoding``), and where its COPY data goes (``sink``)."""

    target: Target
    encoding: Encoding
    sink: Sink


def encoding_of(header: batch_pb2.StreamHeader) -> type[Encoding]:
    """The header's encoding (default ROWS); INVALID_ARGUMENT for one batchd lacks."""
    found = ENCODINGS.get(header.encoding or batch_pb2.ENCODING_ROWS)
    if found is None:
        raise InvalidArgument.field("header.encoding", f"unknown encoding {header.encoding}")
    return found


def known_at_header(header: batch_pb2.StreamHeader) -> bool:
    """Whether the header alone says the stream's columns (else the first chunk does)."""
    if header.encoding == batch_pb2.ENCODING_ARROW:
        return bool(header.columns or header.arrow_schema)
    return bool(header.columns) or header.encoding not in (batch_pb2.ENCODING_UNSPECIFIED,
                                                            batch_pb2.ENCODING_ROWS)


def resolve(header: batch_pb2.StreamHeader, catalog: Catalog,
            first_chunk: batch_pb2.StreamChunk | None) -> Ingest:
    table = catalog.table(header.table, "header.table")
    table.require("insert", "header.table")
    encoding_type = encoding_of(header)
    names = encoding_type.columns(header, first_chunk)
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
    target = Target(table, columns, header.csv, upsert.of(header, table, columns))
    encoding = encoding_type(target)
    encoding.prepare(header)
    return Ingest(target, encoding, Sink(target))


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
