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


# --- staging: tables under row-level security ----------------------------------------------
#
# PostgreSQL refuses COPY FROM into a table whose row-level security applies to the role
# (batchd.stream.access finds out, before the first chunk). Such a table's chunks are COPYed
# into a temporary staging table of the same columns (the session's own, dropped at commit) and
# moved into the table by INSERT ... SELECT, which applies the policies (and triggers,
# defaults) row by row as the role: the same decoding, acks, ledger and bad-row isolation as
# COPY (a row a policy refuses is found by halving, as any row refused without a line number;
# a policy's WITH CHECK refusing a row is that row's fault, ``about_a_row``).

STAGE = "batchd_stage"  # the staging table, in the session's pg_temp schema


def create_stage_sql(target: Target) -> str:
    """The staging table of a staged target, for the rest of the transaction."""
    columns = ", ".join(f"{c.sql} {c.type_sql}" for c in target.columns)
    return f"CREATE TEMPORARY TABLE {STAGE} ({columns}) ON COMMIT DROP;"


def move_sql(target: Target) -> str:
    """The staged rows into the table, as the role: its policies, triggers and defaults."""
    names = ", ".join(c.sql for c in target.columns)
    return f"INSERT INTO {target.table.sql} ({names}) SELECT {names} FROM pg_temp.{STAGE}"


def destination(target: Target) -> tuple[str, str]:
    """Where COPY writes a target's rows: (table, schema). Its table, or for a staged one
    (row-level security, batchd.stream.access) its staging table, then ``moved``."""
    if target.staged:
        return STAGE, "pg_temp"
    return target.table.name, target.table.schema


async def moved(conn: asyncpg.Connection, target: Target, copied: int) -> int:
    """After a COPY of ``copied`` rows to ``destination``: the rows written into the table.
    A staged target's rows are moved from the staging table (its policies apply then)."""
    if not target.staged:
        return copied
    status = await conn.execute(move_sql(target))
    await conn.execute(f"TRUNCATE pg_temp.{STAGE}")
    return _count(status)


def _count(status: str) -> int:
    return int(str(status).rsplit(" ", 1)[-1])


def records_copier(conn: asyncpg.Connection, target: Target) -> Copy:
    name, schema = destination(target)

    async def copy(records: Sequence[Any]) -> int:
        await conn.copy_records_to_table(name, schema_name=schema, columns=target.names,
                                         records=records)
        return await moved(conn, target, len(records))
    return copy


async def copy_binary(conn: asyncpg.Connection, target: Target, data: bytes) -> int:
    """COPY binary data (header, tuples, trailer) into the target; returns the rows written."""
    async def source() -> AsyncIterator[bytes]:
        yield data
    name, schema = destination(target)
    status = await conn.copy_to_table(name, schema_name=schema, columns=target.names,
                                      source=source(), format="binary")
    return await moved(conn, target, _count(status))


def csv_copier(conn: asyncpg.Connection, target: Target) -> Copy:
    options = target.csv
    name, schema = destination(target)

    async def copy(units: Sequence[Any]) -> int:
        data = b"".join(units)

        async def source() -> AsyncIterator[bytes]:
            yield data
        status = await conn.copy_to_table(
            name, schema_name=schema, columns=target.names,
            source=source(), format="csv", delimiter=options.delimiter or None,
            null=options.null or None, quote=options.quote or None)
        return await moved(conn, target, _count(status))
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
        from batchd.stream.encodings import arrow
        return await arrow.write(conn, decoded, target)
    if decoded.retry is not None:  # the fast path: its COPY whole, else value by value
        from batchd.stream.encodings import arrow
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
    """COPY ``units`` under savepoints, leaving out the ones PostgreSQL (or the encoder)
    refuses: returns (rows written, rejected rows by chunk index). Also ENCODING_ARROW's.

    Units are tried in windows from the first not yet written: all of them, at first. A window
    refused at a line PostgreSQL names is followed by the units before that line (they were
    fine), then the refused one alone, which is rejected; a window refused without a line, by
    its first half, down to one unit, which is rejected. After a rejection the next window is
    ``wide``, which every refusal halves and every success doubles: a few bad rows among good
    ones cost a few COPYs each, and a chunk of bad rows one short COPY per row, never one of
    every row left after it, nor a recursion as deep as the chunk."""
    written, refused = 0, []
    position, wide = 0, max(1, len(units))
    window, prefix = wide, False  # prefix: the window is the good units before a refused line
    while position < len(units):
        part = units[position:position + window]
        try:
            async with conn.transaction():  # a savepoint: a refused COPY leaves the rest intact
                written += await copy(part)
            position += len(part)
            if prefix:  # the refused one comes next, alone
                window, prefix = 1, False
            else:
                wide = window = min(max(1, len(units) - position), wide * 2)
            continue
        except asyncpg.PostgresError as exc:
            error: BatchdError = from_database(exc) or BatchdError(str(exc))
            if not about_a_row(exc):
                raise ChunkRefused(error) from exc
            line = _line_of(exc)
        except (ArithmeticError, ValueError, TypeError) as exc:  # the driver could not encode
            error = InvalidArgument(f"value cannot be encoded for its column: {exc}")
            line = None
        wide = max(1, wide // 2)
        if len(part) == 1:
            refused.append((indexes[position], error))
            position += 1
            window = wide
        elif line is not None and 1 <= line <= len(part) and _one_line_each(part):
            window, prefix = (line - 1, True) if line > 1 else (1, False)
        else:
            window = len(part) // 2
    return written, refused


class ChunkRefused(Exception):
    """PostgreSQL refused a chunk for a reason that is no row's fault: the chunk is not
    written, and the stream ends with ``error`` (the caller's transaction rolls back, its
    ledger row with it, so that the chunk re-sent later is written)."""

    def __init__(self, error: BatchdError) -> None:
        super().__init__(error.message)
        self.error = error


# SQLSTATE classes of refusals that are no row's fault (every row would get the same one):
# connection, feature not supported (0A), invalid transaction state, authorization, catalog
# and schema names, transaction rollback (serialization, deadlock: the stream is retried),
# access rules (42: privileges, a column or table gone), insufficient resources, object not in
# prerequisite state (lock_timeout), operator intervention (statement_timeout, shutdown),
# system and internal errors. The rest (data exceptions, constraints, a trigger's RAISE, a
# row too big, ...) are a row's own.
_NOT_A_ROW = frozenset({"08", "0A", "0L", "0P", "25", "28", "2D", "3B", "3D", "3F", "40", "42",
                        "53", "55", "57", "58", "F0", "HV", "XX"})


def about_a_row(exc: asyncpg.PostgresError) -> bool:
    """Whether PostgreSQL refused a row of the COPY, rather than the whole of it. Privileges
    are the whole's, except a row-level-security policy refusing a row (SQLSTATE 42501 too):
    told apart by PostgreSQL's message, so that a server whose messages are in another
    language refuses such a chunk whole (honestly, if less finely), never writes it as empty."""
    state = exc.sqlstate or ""
    if state == "42501":
        return "row-level security" in (exc.message or "")
    return state[:2] not in _NOT_A_ROW


def _line_of(exc: asyncpg.PostgresError) -> int | None:
    m = _COPY_LINE.search(getattr(exc, "context", None) or "")
    return int(m.group(1)) if m else None


def _one_line_each(units: Sequence[Any]) -> bool:
    """Binary COPY counts records as lines; CSV counts physical lines, so only records
    without embedded newlines map line numbers to records."""
    return not units or not isinstance(units[0], bytes) or \
        all(u.count(b"\n") <= 1 for u in units)
