"""Where a stream's COPY data goes: into its table, or through a staging table.

A stream's chunks are COPYed into the table itself, except into a table whose row-level
security applies to the role: PostgreSQL refuses COPY FROM into it (batchd.stream.access finds
out, before the first chunk). Such a table's chunks are COPYed into a temporary staging table
of the same columns (the session's own, dropped at commit) and moved into the table by
``INSERT ... SELECT``, which applies the policies (and triggers, defaults) row by row as the
role: the same decoding, acks, ledger and bad-row isolation as COPY (a row a policy refuses is
found by halving, as any row refused without a line number; a policy's WITH CHECK refusing a
row is that row's fault, ``batchd.stream.isolating.about_a_row``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from batchd.stream.target import Target, Written

STAGE = "batchd_stage"  # the staging table, in the session's pg_temp schema

Piece = bytes | memoryview


class Miscounted(Exception):
    """A COPY gave other rows than its chunks count (CSV that PostgreSQL read otherwise than
    one record a newline): raised inside the COPY's savepoint, so that it is undone."""


def _count(status: str) -> int:
    return int(str(status).rsplit(" ", 1)[-1])


class Sink:
    """A target's COPYs: each returns what it wrote (``Written``), chunk by chunk."""

    def __init__(self, target: Target) -> None:
        self.target = target

    async def prepare(self, conn: asyncpg.Connection) -> None:
        """In a transaction about to write: the staging table, for the rest of it, if the
        target is staged."""
        if self.target.staged:
            columns = ", ".join(f"{c.sql} {c.type_sql}" for c in self.target.columns)
            await conn.execute(f"CREATE TEMPORARY TABLE {STAGE} ({columns}) ON COMMIT DROP;")

    def _destination(self) -> tuple[str, str]:
        target = self.target
        if target.staged:
            return STAGE, "pg_temp"
        return target.table.name, target.table.schema

    async def records(self, conn: asyncpg.Connection, records: Sequence[Any]) -> Written:
        """COPY Python records (asyncpg's binary encoding)."""
        name, schema = self._destination()
        await conn.copy_records_to_table(name, schema_name=schema, columns=self.target.names,
                                         records=records)
        return (await self._moved(conn, [len(records)]))[0]

    async def data(self, conn: asyncpg.Connection, pieces: Sequence[Piece], form: str,
                   counts: Sequence[int] | None = None) -> list[Written]:
        """COPY data in ``form`` ("binary", "csv"), in pieces: one chunk's, or (``counts``:
        the rows of each) several chunks' joined, each one's Written in order. Miscounted if
        the COPY's rows are not ``counts``."""
        async def source() -> AsyncIterator[Piece]:
            for piece in pieces:
                yield piece
        name, schema = self._destination()
        options = self.target.csv
        status = await conn.copy_to_table(
            name, schema_name=schema, columns=self.target.names, source=source(), format=form,
            **({"delimiter": options.delimiter or None, "null": options.null or None,
                "quote": options.quote or None} if form == "csv" else {}))
        copied = _count(status)
        if counts is None:
            counts = [copied]
        elif copied != sum(counts):
            raise Miscounted
        return await self._moved(conn, counts)

    async def _moved(self, conn: asyncpg.Connection, counts: Sequence[int]) -> list[Written]:
        """After a COPY of chunks of ``counts`` rows: what each wrote into the table. A staged
        target's rows are moved from the staging table now, as the role."""
        target = self.target
        if not target.staged:
            return [Written(inserted=count) for count in counts]
        names = ", ".join(c.sql for c in target.columns)
        moved = _count(await conn.execute(
            f"INSERT INTO {target.table.sql} ({names}) SELECT {names} FROM pg_temp.{STAGE}"))
        await conn.execute(f"TRUNCATE pg_temp.{STAGE}")
        if len(counts) > 1 and moved != sum(counts):
            raise Miscounted  # a trigger skipped rows: which chunk's is unknown
        return [Written(inserted=count) for count in counts] if len(counts) > 1 else \
            [Written(inserted=moved)]
