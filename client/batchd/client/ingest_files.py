"""``batchd ingest``'s files: cut into chunks of whole records (CSV, JSON Lines) or rows
(Parquet, Arrow/Feather), each chunk a BatchStreamRequest.

CSV is cut by quote parity (a quoted field may span lines), without parsing fields: PostgreSQL's
COPY parses them. JSON Lines become rows. Parquet and Arrow are read with pyarrow, a record batch
at a time, so memory stays bounded however large the file.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from google.protobuf import struct_pb2

from batchd.client.chunks import FILE_FORMATS
from batchd.client.sources import arrow_source
from batchd.v1 import batch_pb2


class UsageError(Exception):
    pass


@dataclass
class Chunk:
    sequence: int
    request: batch_pb2.BatchStreamRequest
    end_offset: int
    rows: int
    records: list[bytes]  # the raw records, to write rejected ones to the rejects file
    table: Any = None  # Parquet, Arrow: the chunk's rows (pyarrow.Table), for the same


def csv_chunks(f: BinaryIO, chunk_rows: int, quote: bytes) -> Iterator[tuple[list[bytes], int]]:
    """Whole CSV records in groups of ``chunk_rows``, with the offset after each group."""
    records: list[bytes] = []
    record = b""
    for line in iter(f.readline, b""):
        record += line
        if record.count(quote) % 2:  # inside a quoted field: the record goes on
            continue
        records.append(record if record.endswith(b"\n") else record + b"\n")
        record = b""
        if len(records) == chunk_rows:
            yield records, f.tell()
            records = []
    if record:
        raise UsageError("the file ends inside a quoted field")
    if records:
        yield records, f.tell()


def jsonl_chunks(f: BinaryIO, chunk_rows: int) -> Iterator[tuple[list[bytes], int]]:
    records: list[bytes] = []
    for line in iter(f.readline, b""):
        if line.strip():
            records.append(line)
        if len(records) == chunk_rows:
            yield records, f.tell()
            records = []
    if records:
        yield records, f.tell()


def to_request(records: list[bytes], sequence: int, fmt: str,
               first_row: int) -> batch_pb2.BatchStreamRequest:
    chunk = batch_pb2.StreamChunk(sequence=sequence)
    if fmt == "csv":
        chunk.csv = b"".join(records)
    else:
        for i, line in enumerate(records):
            try:
                value = json.loads(line)
            except ValueError as exc:
                raise UsageError(f"row {first_row + i}: not JSON: {exc}") from None
            if not isinstance(value, dict):
                raise UsageError(f"row {first_row + i}: not a JSON object")
            row = struct_pb2.Struct()
            row.update(value)
            chunk.rows.append(row)
    return batch_pb2.BatchStreamRequest(chunk=chunk)


ARROW_FORMATS = ("parquet", "arrow")


def file_format(path: Path) -> str:
    """The format a file is read as, by its suffix (CSV unless known otherwise)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    return FILE_FORMATS.get(suffix, "csv")


def open_arrow(path: Path, args: argparse.Namespace) -> Any:
    """The Parquet or Arrow file as a batchd.client.arrow_source.ArrowSource."""
    try:
        arrow = arrow_source()
    except ImportError as exc:
        raise UsageError(f"batchd ingest {path}: {exc}") from None
    try:
        source = arrow.arrow_file(path, args.chunk_rows, args.format)
        columns = [c.strip() for c in (args.columns or "").split(",") if c.strip()]
        return arrow.select(source, columns)
    except (ValueError, OSError) as exc:  # pyarrow's errors are both
        raise UsageError(f"{path}: cannot be read as {args.format}: {exc}") from None


def arrow_chunks(source: Any, skip: int, chunk_rows: int) -> Iterator[tuple[Any, int]]:
    """Tables of ``chunk_rows`` rows from row ``skip`` on, with the row offset after each."""
    from batchd.client.arrow_source import fitting, rechunk

    end = skip
    for table, data in fitting(rechunk(source.batches(skip), source.schema, chunk_rows)):
        end += table.num_rows
        yield (table, data), end


def read_columns(path: Path, args: argparse.Namespace) -> tuple[list[str], int]:
    """Columns from --columns or the CSV header; returns them and the data's start offset."""
    if args.columns:
        columns = [c.strip() for c in args.columns.split(",") if c.strip()]
        return columns, 0
    if args.format == "jsonl":
        return [], 0
    with path.open("rb") as f:
        header = f.readline()
        start = f.tell()
    text = header.decode("utf-8-sig")
    columns = next(csv.reader([text], delimiter=args.delimiter))
    if not columns:
        raise UsageError(f"{path}: no header line; give --columns")
    return [c.strip() for c in columns], start
