"""Where a stream's COPY data goes: into its table, or through a staging table.

An appending stream's chunks are COPYed into the table itself. Two kinds of target go through
a temporary staging table of the stream's columns instead (the session's own, dropped at
commit), moved into the table by one statement per chunk:

- a table whose row-level security applies to the role: PostgreSQL refuses COPY FROM into it
  (batchd.stream.access finds out, before the first chunk); ``INSERT ... SELECT`` applies the
  policies (and triggers, defaults) row by row as the role. A row a policy refuses is found by
  halving, as any row refused without a line number; a policy's WITH CHECK refusing a row is
  that row's fault (``batchd.stream.isolating.about_a_row``);
- a merging stream (``header.on_conflict``: batchd.stream.upsert): ``INSERT ... SELECT ... ON
  CONFLICT``, the last staged row of each key winning.

Either way the decoding, acks, ledger and bad-row isolation are those of COPY. The staging
table numbers its rows in COPY order (``ORDINAL``, restarted before each COPY): a joined COPY
of several chunks (batchd.stream.joined) is merged chunk by chunk, in order, each chunk's rows
by their numbers, so that each chunk's counts are what it would have had alone. A whole
snapshot's stream (``delete_missing``) also keeps the keys it merged (``SEEN``), for the
deletion at its commit (``delete_missing``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from batchd.stream.target import Target, Written
from batchd.stream.upsert import counting_for, delete_missing_sql, merge_sql

STAGE = "batchd_stage"  # the staging table, in the session's pg_temp schema
ORDINAL = "batchd_ordinal"  # its rows' numbers, in COPY order
SEEN = "batchd_seen"  # a delete_missing stream's keys so far, in pg_temp

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
        self._merge = ""  # the merging statement, made by the first ``prepare``
        self._seen = ""  # a delete_missing stream's keys, kept as they are merged
        if target.upsert is not None and target.upsert.delete_missing:
            keys = ", ".join(c.sql for c in target.upsert.key)
            self._seen = (f"INSERT INTO pg_temp.{SEEN} ({keys}) SELECT {keys} FROM "
                          f"pg_temp.{STAGE} WHERE {ORDINAL} BETWEEN $1 AND $2")

    async def prepare(self, conn: asyncpg.Connection) -> None:
        """In a transaction about to write: the staging table, for the rest of it, if the
        target is staged; the first time, a merging stream's statement (how it counts
        depends on the table and the server: batchd.stream.upsert.COUNTING)."""
        upsert = self.target.upsert
        if upsert is not None and not self._merge:
            partitioned, version = await conn.fetchrow(
                "SELECT relkind = 'p', current_setting('server_version_num')::int "
                "FROM pg_class WHERE oid = $1::regclass", self.target.table.sql)
            self._merge = merge_sql(upsert, self.target.table, self.target.columns,
                                    f"pg_temp.{STAGE}", ORDINAL,
                                    counting_for(partitioned, version))
        if self.target.staged:
            columns = ", ".join(f"{c.sql} {c.type_sql}" for c in self.target.columns)
            await conn.execute(f"CREATE TEMPORARY TABLE {STAGE} ({columns}, {ORDINAL} bigint "
                               "GENERATED ALWAYS AS IDENTITY) ON COMMIT DROP;")
        if upsert is not None and upsert.delete_missing:
            keys = ", ".join(f"{c.sql} {c.type_sql}" for c in upsert.key)
            await conn.execute(f"CREATE TEMPORARY TABLE {SEEN} ({keys}) ON COMMIT DROP;")

    def _destination(self) -> tuple[str, str]:
        target = self.target
        if target.staged:
            return STAGE, "pg_temp"
        return target.table.name, target.table.schema

    async def _emptied(self, conn: asyncpg.Connection) -> None:
        """Before a COPY into the staging table: empty, its numbers from 1 again (inside the
        COPY's savepoint, so that a refused COPY leaves it as it was)."""
        if self.target.staged:
            await conn.execute(f"TRUNCATE pg_temp.{STAGE} RESTART IDENTITY")

    async def records(self, conn: asyncpg.Connection, records: Sequence[Any]) -> Written:
        """COPY Python records (asyncpg's binary encoding)."""
        await self._emptied(conn)
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
        await self._emptied(conn)
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
        target's rows are moved (merged) from the staging table now."""
        target = self.target
        if not target.staged:
            return [Written(inserted=count) for count in counts]
        if not self._merge:  # row-level security: moved at once, as the role
            names = ", ".join(c.sql for c in target.columns)
            moved = _count(await conn.execute(
                f"INSERT INTO {target.table.sql} ({names}) SELECT {names} "
                f"FROM pg_temp.{STAGE}"))
            if len(counts) > 1 and moved != sum(counts):
                raise Miscounted  # a trigger skipped rows: which chunk's is unknown
            return [Written(inserted=count) for count in counts] if len(counts) > 1 else \
                [Written(inserted=moved)]
        out = []
        first = 1
        for count in counts:  # in order: a later chunk's row of a key wins
            row = await conn.fetchrow(self._merge, first, first + count - 1)
            if self._seen:
                await conn.execute(self._seen, first, first + count - 1)
            inserted, updated = int(row["inserted"]), int(row["updated"])
            out.append(Written(inserted, updated, count - inserted - updated))
            first += count
        return out

    async def delete_missing(self, conn: asyncpg.Connection) -> int:
        """At the commit of a delete_missing stream: the rows of the table's slice whose key
        it did not bring, deleted (as the role); how many."""
        upsert = self.target.upsert
        assert upsert is not None and upsert.delete_missing
        await conn.execute(f"ANALYZE pg_temp.{SEEN}")  # a hash anti-join, not a guess
        statement, params = delete_missing_sql(upsert, self.target.table, f"pg_temp.{SEEN}")
        return _count(await conn.execute(statement, *params))
