"""Writing a decoded chunk (``batchd.stream.copy``) with COPY, isolating bad rows.

``write`` COPYs a chunk under a savepoint. If PostgreSQL refuses a row (constraint, bad CSV
field), the chunk is split to find the refused rows: PostgreSQL's error names the line, so the
rows before it are written, the row is rejected, and the rest is tried again; without a line,
halves are tried. The other rows of the chunk are still written.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from batchd import offload
from batchd.errors import BatchdError, InvalidArgument, from_database
from batchd.stream.copy import Decoded, Target, decode_per_value
from batchd.v1 import batch_pb2
from batchd.values import CoercionError, coerce

_COPY_LINE = re.compile(r"COPY [^,]+, line (\d+)")

Copy = Callable[[Sequence[Any]], Awaitable[int]]


def records_copier(conn: asyncpg.Connection, target: Target) -> Copy:
    async def copy(records: Sequence[Any]) -> int:
        await conn.copy_records_to_table(target.table.name, schema_name=target.table.schema,
                                         columns=target.names, records=records)
        return len(records)
    return copy


async def copy_binary(conn: asyncpg.Connection, target: Target, data: bytes) -> int:
    """COPY binary data (header, tuples, trailer) into the target; returns the rows written."""
    async def source() -> AsyncIterator[bytes]:
        yield data
    table = target.table
    status = await conn.copy_to_table(table.name, schema_name=table.schema,
                                      columns=target.names, source=source(), format="binary")
    return int(str(status).rsplit(" ", 1)[-1])


def csv_copier(conn: asyncpg.Connection, target: Target) -> Copy:
    options = target.csv

    async def copy(units: Sequence[Any]) -> int:
        data = b"".join(units)

        async def source() -> AsyncIterator[bytes]:
            yield data
        status = await conn.copy_to_table(
            target.table.name, schema_name=target.table.schema, columns=target.names,
            source=source(), format="csv", delimiter=options.delimiter or None,
            null=options.null or None, quote=options.quote or None)
        return int(str(status).rsplit(" ", 1)[-1])
    return copy


def _check_lazy(decoded: Decoded, target: Target) -> list[tuple[int, BatchdError]]:
    """Coerce the unchecked values; drop (and return) the rows that do not pass."""
    refused: list[tuple[int, BatchdError]] = []
    records, indexes = [], []
    for record, index in zip(decoded.records, decoded.indexes, strict=True):
        values = list(record)
        try:
            for position in target.lazy:
                column = target.columns[position]
                try:
                    values[position] = coerce(values[position], column)
                except CoercionError as exc:
                    raise InvalidArgument.field(f"rows[{index}].{column.name}",
                                                f"{exc} (column type {column.type_sql})") \
                        from None
        except InvalidArgument as exc:
            refused.append((index, exc))
            continue
        records.append(tuple(values))
        indexes.append(index)
    decoded.records, decoded.indexes = records, indexes
    return refused


def split_csv(data: bytes, options: batch_pb2.CsvOptions) -> list[bytes]:
    """The chunk's records, each as CSV bytes of its own (only on the bad-row path)."""
    # surrogateescape: bytes that are not UTF-8 survive the round trip, so that PostgreSQL
    # refuses exactly the record that holds them.
    text = data.decode("utf-8", "surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=options.delimiter or ",",
                        quotechar=options.quote or '"')
    units = []
    for record in reader:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=options.delimiter or ",", quotechar=options.quote or '"',
                   lineterminator="\n").writerow(record)
        units.append(buffer.getvalue().encode("utf-8", "surrogateescape"))
    return units


async def write(conn: asyncpg.Connection, decoded: Decoded, target: Target,
                ) -> tuple[int, int, list[tuple[int, BatchdError]]]:
    """COPY a decoded chunk; returns (row count, rows written, rejected rows by chunk index)."""
    if target.encoding == batch_pb2.ENCODING_ARROW:
        from batchd.stream import arrow
        return await arrow.write(conn, decoded, target)
    if decoded.retry is not None:  # the fast path: its COPY whole, else value by value
        from batchd.stream import arrow
        written = await arrow.copy_whole(conn, decoded, target)
        if written is not None:
            return decoded.row_count, written, []
        decoded = await offload.run_pipelined(decode_per_value, decoded.retry, target)
    rejected = list(decoded.rejected)
    if target.encoding == batch_pb2.ENCODING_CSV:
        copy = csv_copier(conn, target)
        try:
            async with conn.transaction():
                written = await copy([decoded.csv])
            return written, written, rejected
        except asyncpg.PostgresError:
            units: list[Any] = split_csv(decoded.csv, target.csv)
        indexes = list(range(len(units)))
        row_count = len(units)
    else:
        copy = records_copier(conn, target)
        try:
            async with conn.transaction():
                written = await copy(decoded.records)
            return decoded.row_count, written, rejected
        except asyncpg.PostgresError:
            pass
        except (ArithmeticError, ValueError, TypeError):
            # The driver could not encode a value passed to it unchecked: check them all.
            rejected += _check_lazy(decoded, target)
        units, indexes, row_count = decoded.records, decoded.indexes, decoded.row_count
    written, refused = await write_isolating(conn, copy, units, indexes)
    return row_count, written, sorted(rejected + refused, key=lambda r: r[0])


async def write_isolating(conn: asyncpg.Connection, copy: Copy, units: Sequence[Any],
                          indexes: list[int]) -> tuple[int, list[tuple[int, BatchdError]]]:
    """COPY ``units`` under a savepoint; if PostgreSQL (or the encoder) refuses one, split
    them (at the line PostgreSQL names, else in halves) until only the refused are left:
    returns (rows written, rejected rows by chunk index). Also ENCODING_ARROW's."""
    if not units:
        return 0, []
    try:
        async with conn.transaction():  # a savepoint: a refused COPY leaves the rest intact
            return await copy(units), []
    except asyncpg.PostgresError as exc:
        error: BatchdError = from_database(exc) or BatchdError(str(exc))
        line = _line_of(exc)
    except (ArithmeticError, ValueError, TypeError) as exc:  # the driver could not encode one
        error = InvalidArgument(f"value cannot be encoded for its column: {exc}")
        line = None
    if len(units) == 1:
        return 0, [(indexes[0], error)]
    if line is not None and 1 <= line <= len(units) and _one_line_each(units):
        k = line - 1
        before = await write_isolating(conn, copy, units[:k], indexes[:k])
        after = await write_isolating(conn, copy, units[k + 1:], indexes[k + 1:])
        return before[0] + after[0], [*before[1], (indexes[k], error), *after[1]]
    mid = len(units) // 2
    left = await write_isolating(conn, copy, units[:mid], indexes[:mid])
    right = await write_isolating(conn, copy, units[mid:], indexes[mid:])
    return left[0] + right[0], left[1] + right[1]


def _line_of(exc: asyncpg.PostgresError) -> int | None:
    m = _COPY_LINE.search(getattr(exc, "context", None) or "")
    return int(m.group(1)) if m else None


def _one_line_each(units: Sequence[Any]) -> bool:
    """Binary COPY counts records as lines; CSV counts physical lines, so only records
    without embedded newlines map line numbers to records."""
    return not units or not isinstance(units[0], bytes) or \
        all(u.count(b"\n") <= 1 for u in units)
