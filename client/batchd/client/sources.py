"""What ``ingest`` streams, cut into chunks: rows, columns, or CSV records.

A source is one of

- an iterable or async iterable of mappings (column -> value): ENCODING_ROWS, values mapped
  exactly as in ``Batch`` (``batchd.client.proto_values.to_value``); or ENCODING_COLUMNAR, with the
  rows of each chunk turned into typed arrays;
- a mapping of column name -> sequence of values, all of the same length: ENCODING_COLUMNAR;
- a path (``str`` / ``os.PathLike``), a binary file or ``bytes`` of CSV: ENCODING_CSV, handed
  to PostgreSQL's COPY untouched, cut into chunks of whole records (``csv_records``);
- a ``pyarrow.Table`` / ``RecordBatch`` / ``RecordBatchReader``, a pandas or polars DataFrame,
  or the path of a Parquet or Arrow/Feather file (by suffix): ENCODING_ARROW, see
  ``batchd.client.arrow_source``.

Columnar arrays are typed per chunk and column from the values: all bool -> bools, all int
(within int64) -> int64s, int and float -> doubles, str -> strings, bytes -> bytes, datetimes
with a time zone -> timestamp_micros; anything else (Decimal, date, UUID, naive datetime,
larger ints, a mix) -> strings as ``to_value`` writes them. None is a NULL.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from types import ModuleType
from typing import Any, BinaryIO, cast

from batchd.client.chunks import ARROW_EXTRA, Chunk, Opened, is_arrow_file
from batchd.client.proto_values import to_struct, to_value
from batchd.v1 import batch_pb2

__all__ = ["Chunk", "Source", "csv_records", "open_source"]

Rows = Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]]
Source = Rows | Mapping[str, Sequence[Any]] | str | os.PathLike[str] | bytes | BinaryIO

ENCODINGS = {"rows": batch_pb2.ENCODING_ROWS, "columnar": batch_pb2.ENCODING_COLUMNAR,
             "csv": batch_pb2.ENCODING_CSV, "arrow": batch_pb2.ENCODING_ARROW}
_ARROW_OBJECTS = {("pyarrow", "Table"), ("pyarrow", "RecordBatch"),
                  ("pyarrow", "RecordBatchReader"), ("pandas", "DataFrame"),
                  ("polars", "DataFrame")}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_INT64 = (-(2**63), 2**63 - 1)


def csv_records(f: BinaryIO, quote: bytes = b'"') -> Iterator[bytes]:
    """Whole CSV records, each ending in a newline. A quoted field may span lines: the record
    goes on while an odd number of quote characters has been seen (a doubled quote counts
    twice), so the cut needs no parsing. ValueError if the data ends inside a quoted field."""
    parts: list[bytes] = []
    inside = False
    for line in iter(f.readline, b""):
        parts.append(line)
        if line.count(quote) % 2:
            inside = not inside
        if inside:
            continue
        record = b"".join(parts)
        parts.clear()
        yield record if record.endswith(b"\n") else record + b"\n"
    if parts:
        raise ValueError("the CSV data ends inside a quoted field")


async def open_source(source: Source, *, encoding: str | None,
                      columns: Sequence[str] | None, chunk_rows: int, header: bool | None,
                      delimiter: str, quote: str) -> Opened:
    """Which encoding and columns ``source`` streams with, and its chunks of ``chunk_rows``."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    if encoding is not None and encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
    if is_arrow(source) or is_arrow_file(source):
        _expect(encoding, "arrow", "Arrow data (a table, a DataFrame, a Parquet or Arrow file)")
        if header is not None:
            raise ValueError("header= is for CSV sources")
        # pyarrow (the arrow extra) is imported only for Arrow sources.
        opened: Opened = arrow_source().open_arrow(source, columns, chunk_rows)
        return opened
    if encoding == "arrow":
        raise ValueError("encoding 'arrow' needs a pyarrow table or reader, a pandas or polars "
                         "DataFrame, or a Parquet or Arrow file")
    if isinstance(source, str | os.PathLike | bytes | bytearray) or hasattr(source, "readline"):
        _expect(encoding, "csv", "a path, a binary file or bytes")
        return _csv(source, columns, chunk_rows, header, delimiter, quote)
    if header is not None:
        raise ValueError("header= is for CSV sources")
    if isinstance(source, Mapping):
        _expect(encoding, "columnar", "a mapping of columns")
        return _columns(source, columns, chunk_rows)
    if isinstance(source, Iterable | AsyncIterable):
        wanted = ENCODINGS[encoding or "rows"]
        if wanted == batch_pb2.ENCODING_CSV:
            raise ValueError("encoding 'csv' needs a path, a binary file or bytes")
        return await _rows(cast(Rows, source), list(columns or ()), chunk_rows, wanted)
    raise TypeError(f"cannot ingest a {type(source).__name__}: give rows, a mapping of columns, "
                    "or CSV (a path, a binary file or bytes)")


def is_arrow(source: object) -> bool:
    """A pyarrow table, batch or reader, or a pandas or polars DataFrame (by the names of its
    module and class: pandas and polars are never imported here)."""
    kind = type(source)
    return (kind.__module__.split(".")[0], kind.__name__) in _ARROW_OBJECTS


def _expect(encoding: str | None, wanted: str, what: str) -> None:
    if encoding is not None and encoding != wanted:
        raise ValueError(f"{what} is streamed with encoding {wanted!r}, not {encoding!r}")


# --- CSV -------------------------------------------------------------------------------------

def _csv(source: Any, columns: Sequence[str] | None, chunk_rows: int, header: bool | None,
         delimiter: str, quote: str) -> Opened:
    if isinstance(source, bytes | bytearray):
        f: BinaryIO = io.BytesIO(source)
        owned = False
    elif isinstance(source, str | os.PathLike):
        f, owned = open(source, "rb"), True  # closed by _csv_chunks
    else:
        if isinstance(source, io.TextIOBase):
            raise TypeError("open the CSV file in binary mode ('rb')")
        f, owned = source, False
    records = csv_records(f, quote.encode())
    try:
        if header is None:
            header = columns is None
        if header:
            line = next(records, None)
            if line is None:
                raise ValueError("the CSV data is empty: no header line")
            if columns is None:
                text = line.decode("utf-8-sig")
                names = next(csv.reader([text], delimiter=delimiter, quotechar=quote), [])
                columns = [name.strip() for name in names]
        if not columns:
            raise ValueError("CSV needs columns: give columns= or a header line")
    except BaseException:
        if owned:
            f.close()
        raise
    return Opened(batch_pb2.ENCODING_CSV, list(columns), _csv_chunks(records, f if owned else None,
                                                                     chunk_rows))


def _take(records: Iterator[bytes], n: int) -> list[bytes]:
    out: list[bytes] = []
    for record in records:
        out.append(record)
        if len(out) == n:
            break
    return out


async def _csv_chunks(records: Iterator[bytes], owned: BinaryIO | None,
                      chunk_rows: int) -> AsyncIterator[Chunk]:
    """Chunks of whole records. The file is read on the event loop's thread, one chunk at a
    time, like ``batchd ingest`` does: for a local file that is a millisecond or so per chunk,
    and a read is never left running when the stream ends."""
    try:
        while True:
            batch = _take(records, chunk_rows)
            if not batch:
                return
            yield Chunk(batch_pb2.StreamChunk(csv=b"".join(batch)), len(batch))
    finally:
        if owned is not None:
            owned.close()


# --- rows and columns ------------------------------------------------------------------------

async def _rows(source: Rows, columns: list[str], chunk_rows: int, encoding: int) -> Opened:
    async def rows_in_chunks() -> AsyncIterator[list[Mapping[str, Any]]]:
        batch: list[Mapping[str, Any]] = []
        if isinstance(source, AsyncIterable):
            async for row in source:
                batch.append(row)
                if len(batch) == chunk_rows:
                    yield batch
                    batch = []
        else:
            for row in source:
                batch.append(row)
                if len(batch) == chunk_rows:
                    yield batch
                    batch = []
        if batch:
            yield batch

    async def chunks() -> AsyncGenerator[Chunk, None]:
        async for batch in rows_in_chunks():
            if encoding == batch_pb2.ENCODING_ROWS:
                yield Chunk(batch_pb2.StreamChunk(rows=[to_struct(row) for row in batch]),
                            len(batch))
                continue
            if not columns:
                columns.extend(batch[0].keys())
            try:
                arrays = {name: [row[name] for row in batch] for name in columns}
            except KeyError as exc:
                raise ValueError(f"a row has no value for column {exc}") from None
            yield Chunk(batch_pb2.StreamChunk(columnar=columnar(columns, arrays)), len(batch))

    made = chunks()
    if encoding == batch_pb2.ENCODING_COLUMNAR and not columns:
        # The header needs the columns: the first chunk is made now (filling them in), and
        # goes first.
        first = await anext(made, None)
        if first is not None:
            made = _chain(first, made)
    return Opened(encoding, columns, made)


async def _chain(first: Chunk, rest: AsyncGenerator[Chunk, None],
                 ) -> AsyncGenerator[Chunk, None]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()


def _columns(source: Mapping[str, Sequence[Any]], columns: Sequence[str] | None,
             chunk_rows: int) -> Opened:
    names = list(columns or source.keys())
    missing = [name for name in names if name not in source]
    if missing:
        raise ValueError(f"no values for columns {missing}")
    lengths = {len(source[name]) for name in names}
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths: {sorted(lengths)}")
    total = lengths.pop() if lengths else 0

    async def chunks() -> AsyncIterator[Chunk]:
        for start in range(0, total, chunk_rows):
            end = min(total, start + chunk_rows)
            arrays = {name: list(source[name][start:end]) for name in names}
            yield Chunk(batch_pb2.StreamChunk(columnar=columnar(names, arrays)), end - start)

    return Opened(batch_pb2.ENCODING_COLUMNAR, names, chunks())


def columnar(columns: Sequence[str], arrays: Mapping[str, Sequence[Any]]
             ) -> batch_pb2.ColumnarRows:
    """``ColumnarRows`` of equally long value lists, one typed array per column."""
    return batch_pb2.ColumnarRows(columns=[column_values(arrays[name]) for name in columns])


def column_values(values: Sequence[Any]) -> batch_pb2.ColumnValues:
    """One column's values as the narrowest fitting typed array (see the module doc)."""
    present = [v for v in values if v is not None]
    nulls = [i for i, v in enumerate(values) if v is None]
    out = batch_pb2.ColumnValues(null_indexes=nulls)
    kinds = {_kind(v) for v in present}
    if kinds == {"bool"}:
        out.bools.values.extend(bool(v) if v is not None else False for v in values)
    elif kinds == {"int"}:
        out.int64s.values.extend(0 if v is None else v for v in values)
    elif kinds and kinds <= {"int", "float"}:
        out.doubles.values.extend(0.0 if v is None else float(v) for v in values)
    elif kinds == {"bytes"}:
        out.bytes.values.extend(b"" if v is None else bytes(v) for v in values)
    elif kinds == {"timestamp"}:
        out.timestamp_micros.values.extend(
            0 if v is None else (v - _EPOCH) // dt.timedelta(microseconds=1) for v in values)
    else:
        out.strings.values.extend("" if v is None else _text(v) for v in values)
    return out


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if _INT64[0] <= value <= _INT64[1] else "text"
    if isinstance(value, float):
        return "float"
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytes"
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return "timestamp"
    return "text"


def _text(value: Any) -> str:
    converted = to_value(value)
    if converted.WhichOneof("kind") == "string_value":
        return converted.string_value
    if converted.WhichOneof("kind") in ("number_value", "bool_value"):
        return str(value).lower() if isinstance(value, bool) else str(value)
    raise TypeError(f"{type(value).__name__} values cannot travel in COLUMNAR; use rows")


def arrow_source() -> ModuleType:
    """``batchd.client.arrow_source``, imported now: pyarrow is the ``arrow`` extra of
    batchd-client, so without it this says which install brings it instead of naming a module."""
    try:
        from batchd.client import arrow_source as module
    except ModuleNotFoundError as exc:
        if exc.name != "pyarrow":
            raise
        raise ImportError(f"Arrow and Parquet data need pyarrow: {ARROW_EXTRA}") from exc
    return module
