"""Arrow sources of ``ingest`` and ``batchd ingest``, streamed with ENCODING_ARROW.

- a ``pyarrow.Table``, ``pyarrow.RecordBatch`` or ``pyarrow.RecordBatchReader``;
- a pandas DataFrame (``pyarrow.Table.from_pandas(df, preserve_index=False)``) or a polars
  DataFrame (``df.to_arrow()``): neither library is a dependency of batchd, they are recognised
  by their module's name and never imported here;
- a Parquet file (``.parquet``, ``.pq``: read ``chunk_rows`` rows at a time, so memory stays
  bounded whatever the file's size) or an Arrow IPC file (``.arrow``, ``.feather`` (v2),
  ``.ipc``; or an IPC stream, ``.arrows``), memory-mapped.

The rows are cut into chunks of ``chunk_rows`` by slicing (no copy), and each chunk travels as
one Arrow IPC stream (``StreamChunk.arrow``; one that would pass ``MAX_CHUNK_BYTES`` is cut in
halves); the header carries the schema (``StreamHeader.arrow_schema``), so the server checks
the column types before the first chunk. What the server accepts for each column type is in
``batchd.stream.arrow_types``: decimals for
numeric, timestamps with a zone for timestamptz, ... (pandas' ``datetime64[ns]`` without a zone
is refused for a timestamptz column: ``df[c].dt.tz_localize("UTC")`` first).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from batchd.client.chunks import FILE_FORMATS, Chunk, Opened, is_arrow_file
from batchd.v1 import batch_pb2

__all__ = ["ArrowSource", "arrow_file", "fitting", "ipc_stream", "open_arrow", "rechunk",
           "select"]

#: A chunk whose IPC stream would be larger is cut in halves (until it fits or is one row):
#: the server's max_message_bytes is 16 MiB by default.
MAX_CHUNK_BYTES = 12 << 20
@dataclass
class ArrowSource:
    """An Arrow source ready to be cut: its schema, its row count when known, and its batches
    from row ``skip`` on (``batches(skip)``)."""

    schema: pa.Schema
    rows: int | None
    _batches: Any  # (skip: int) -> Iterator[pa.RecordBatch]

    def batches(self, skip: int = 0) -> Iterator[pa.RecordBatch]:
        return iter(self._batches(skip))


def from_object(source: Any) -> ArrowSource:
    module = type(source).__module__.split(".")[0]
    if module == "pandas":
        source = pa.Table.from_pandas(source, preserve_index=False)
    elif module == "polars":
        source = source.to_arrow()
    if isinstance(source, pa.RecordBatch):
        source = pa.Table.from_batches([source])
    if isinstance(source, pa.Table):
        table = source.replace_schema_metadata(None)  # pandas' metadata: no use to the server
        return ArrowSource(table.schema, table.num_rows,
                           lambda skip: table.slice(skip).to_batches())
    if isinstance(source, pa.RecordBatchReader):
        reader = source
        return ArrowSource(reader.schema, None, lambda skip: _skip(reader, skip))
    raise TypeError(f"cannot ingest a {type(source).__name__} as Arrow")


def arrow_file(path: str | os.PathLike[str], chunk_rows: int,
               file_format: str | None = None) -> ArrowSource:
    """A Parquet or Arrow IPC file (format by suffix unless given)."""
    name = os.fspath(path)
    file_format = file_format or FILE_FORMATS.get(Path(name).suffix.lower())
    if file_format == "parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(name)

        def parquet_batches(skip: int) -> Iterator[pa.RecordBatch]:
            first, before = 0, 0
            while first < parquet.num_row_groups and \
                    before + parquet.metadata.row_group(first).num_rows <= skip:
                before += parquet.metadata.row_group(first).num_rows
                first += 1
            groups = list(range(first, parquet.num_row_groups))
            if not groups:
                return iter(())
            return _skip(parquet.iter_batches(batch_size=chunk_rows, row_groups=groups),
                         skip - before)
        return ArrowSource(parquet.schema_arrow, parquet.metadata.num_rows, parquet_batches)
    if file_format == "arrow":
        mapped = pa.memory_map(name)
        try:
            reader = pa.ipc.open_file(mapped)
        except pa.ArrowInvalid:  # not the file format: an IPC stream
            mapped.seek(0)
            stream = pa.ipc.open_stream(mapped)
            return ArrowSource(stream.schema, None, lambda skip: _skip(stream, skip))
        count = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
        return ArrowSource(reader.schema, count, lambda skip: _skip(
            (reader.get_batch(i) for i in range(reader.num_record_batches)), skip))
    raise ValueError(f"{name}: not a Parquet or Arrow file (by its suffix)")


def _skip(batches: Iterable[pa.RecordBatch], skip: int) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        if skip >= batch.num_rows:
            skip -= batch.num_rows
            continue
        yield batch.slice(skip) if skip else batch
        skip = 0


def rechunk(batches: Iterable[pa.RecordBatch], schema: pa.Schema,
            chunk_rows: int) -> Iterator[pa.Table]:
    """Tables of exactly ``chunk_rows`` rows (the last may be shorter), by slicing."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for whole in batches:
        batch = whole
        while batch.num_rows:
            take = min(chunk_rows - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == chunk_rows:
                yield pa.Table.from_batches(pending, schema)
                pending, count = [], 0
    if pending:
        yield pa.Table.from_batches(pending, schema)


def fitting(tables: Iterable[pa.Table], max_bytes: int = MAX_CHUNK_BYTES,
            ) -> Iterator[tuple[pa.Table, bytes]]:
    """Each table with its IPC stream, halved until the stream is at most ``max_bytes``
    (rows of very wide values make small chunks, not refused messages). Deterministic: the
    same data gives the same chunks, as a resume by stream id needs."""
    for table in tables:
        data = ipc_stream(table)
        if len(data) <= max_bytes or table.num_rows <= 1:
            yield table, data
            continue
        half = table.num_rows // 2
        yield from fitting([table.slice(0, half), table.slice(half)], max_bytes)


def ipc_stream(table: pa.Table) -> bytes:
    """``table`` as one Arrow IPC stream: what ``StreamChunk.arrow`` carries."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def select(source: ArrowSource, columns: Sequence[str] | None) -> ArrowSource:
    """Only ``columns`` of the source, in that order (KeyError-free: ValueError names one)."""
    if not columns:
        return source
    missing = [c for c in columns if c not in source.schema.names]
    if missing:
        raise ValueError(f"the Arrow data has no columns {missing}")
    names = list(columns)
    schema = pa.schema([source.schema.field(n) for n in names])
    return ArrowSource(schema, source.rows,
                       lambda skip: (b.select(names) for b in source.batches(skip)))


def open_arrow(source: Any, columns: Sequence[str] | None, chunk_rows: int) -> Opened:
    """The ``Opened`` of an Arrow object or file for ``ingest``."""
    arrow = arrow_file(source, chunk_rows) if is_arrow_file(source) else from_object(source)
    arrow = select(arrow, columns)

    async def chunks() -> AsyncIterator[Chunk]:
        for table, data in fitting(rechunk(arrow.batches(), arrow.schema, chunk_rows)):
            yield Chunk(batch_pb2.StreamChunk(arrow=data), table.num_rows)

    opened = Opened(batch_pb2.ENCODING_ARROW, list(arrow.schema.names), chunks())
    opened.arrow_schema = arrow.schema.serialize().to_pybytes()
    return opened
