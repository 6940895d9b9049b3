"""Streams that merge: the header's ``on_conflict`` (DO NOTHING, UPDATE), checked at the
stream's open, and the statement that merges a chunk's staged rows into the table.

A merging stream's chunks are COPYed into the session's staging table (``batchd.stream.sink``,
the one row-level security already uses), then moved into the table by one
``INSERT ... SELECT ... ON CONFLICT (key) DO NOTHING | DO UPDATE``, in the chunk's transaction
(INDEPENDENT: with its ledger row, so that exactly-once resume holds as for an append).

Why INSERT ... ON CONFLICT rather than MERGE: it inserts or updates each row atomically even
while other sessions insert the same keys (MERGE, under READ COMMITTED, may fail with a unique
violation there); it runs on every PostgreSQL batchd supports (MERGE needs 15, and its
RETURNING of ``merge_action()`` 17); and ``xmax = 0`` in its RETURNING tells an inserted row
from an updated one, which is all the acks need (a partitioned table, which cannot return a
system column, is counted otherwise: ``COUNTING``).

The same key twice in a chunk: PostgreSQL refuses an ON CONFLICT DO UPDATE that touches a row
twice, so the staged rows are narrowed first, the **last row of each key wins** (``DISTINCT ON
(key) ... ORDER BY key, ordinal DESC``; the staging table numbers rows in COPY order); the
earlier ones count as unchanged. Across chunks the later chunk wins as well, since chunks are
merged in order. Rows with a NULL in a nullable key column never conflict, as in PostgreSQL,
and are not narrowed. An update that would change nothing (``IS DISTINCT FROM``) is skipped
and counted unchanged: a daily snapshot mostly equal to the table rewrites only what changed.

A whole snapshot (``header.delete_missing``, ATOMIC only): the keys of each chunk are kept as
it is merged (batchd.stream.sink), and at the commit the rows of the table, or of its slice
(``delete_where``), whose key the stream did not bring are deleted (``delete_missing_sql``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from batchd.catalog import Column, Table
from batchd.errors import InvalidArgument
from batchd.kinds.filters import Condition, Selection, plan_filters
from batchd.kinds.params import Results, SqlParams
from batchd.v1 import batch_pb2
from batchd.values import Ref

Action = batch_pb2.OnConflict.Action
MERGING = frozenset({Action.ACTION_DO_NOTHING, Action.ACTION_UPDATE})  # else: an append
_PATH = "header.on_conflict"

# Whether a table has a unique index (or constraint) on exactly these columns, usable as an ON
# CONFLICT target: not partial, no expressions, valid.
_UNIQUE_KEY_SQL = """
SELECT EXISTS (
  SELECT 1 FROM pg_index i
  WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
    AND i.indexprs IS NULL AND i.indnkeyatts = cardinality($2::text[])
    AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a
         WHERE a.attrelid = i.indrelid
           AND a.attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1]))
        = (SELECT array_agg(n ORDER BY n) FROM unnest($2::text[]) AS n))
"""


@dataclass(frozen=True, slots=True)
class Upsert:
    """A merging stream's conflict handling: its key, and the columns an update sets (none:
    DO NOTHING)."""

    key: tuple[Column, ...]
    updates: tuple[Column, ...]
    # A whole snapshot (header.delete_missing): at commit, the rows of the table within
    # ``slice`` whose key the stream did not bring are deleted.
    delete_missing: bool = False
    slice: tuple[Condition, ...] = ()

    @property
    def action(self) -> str:
        return "UPDATE" if self.updates else "DO NOTHING"


def of(header: batch_pb2.StreamHeader, table: Table, columns: Sequence[Column],
       ) -> Upsert | None:
    """The header's on_conflict against the stream's columns: None (append) for ERROR or
    none, else the Upsert. INVALID_ARGUMENT naming the field for a key or column that is not
    the table's, not sent, or listed twice; whether the key is a unique key of the table is
    asked of PostgreSQL at the stream's open (``check_unique_key``)."""
    on_conflict = header.on_conflict
    if header.delete_where and not header.delete_missing:
        raise InvalidArgument.field("header.delete_where", "goes with delete_missing")
    if header.delete_missing and (on_conflict.action not in MERGING
                                  or header.mode == batch_pb2.MODE_INDEPENDENT):
        raise InvalidArgument.field("header.delete_missing", "needs an ATOMIC stream that "
                                    "merges (on_conflict ACTION_DO_NOTHING or ACTION_UPDATE)")
    if on_conflict.action in (Action.ACTION_UNSPECIFIED, Action.ACTION_ERROR):
        if on_conflict.conflict_columns or on_conflict.update_columns:
            raise InvalidArgument.field(_PATH, "conflict_columns and update_columns need "
                                               "action ACTION_DO_NOTHING or ACTION_UPDATE")
        return None
    if on_conflict.action not in MERGING:
        raise InvalidArgument.field(f"{_PATH}.action", f"unknown action {on_conflict.action}")
    sent = {c.name for c in columns}
    key = _sent(table, on_conflict.conflict_columns, f"{_PATH}.conflict_columns", sent)
    if not key:
        if not table.primary_key:
            raise InvalidArgument.field(f"{_PATH}.conflict_columns", f'table '
                                        f'"{table.qualified_name}" has no primary key: name '
                                        "the columns of a unique key")
        key = [table.columns[name] for name in table.primary_key]
        for c in key:
            if c.name not in sent:
                raise InvalidArgument.field(f"{_PATH}.conflict_columns", f'the primary key '
                                            f'column "{c.name}" is not among the stream\'s '
                                            "columns")
    updates: list[Column] = []
    if on_conflict.action == Action.ACTION_DO_NOTHING:
        if on_conflict.update_columns:
            raise InvalidArgument.field(f"{_PATH}.update_columns", "needs action "
                                                                   "ACTION_UPDATE")
    else:
        updates = _sent(table, on_conflict.update_columns, f"{_PATH}.update_columns", sent)
        if not updates:
            updates = [c for c in columns if c not in key]
        if not updates:
            raise InvalidArgument.field(f"{_PATH}.update_columns", "nothing to update: every "
                                        "column sent is a conflict column (use "
                                        "ACTION_DO_NOTHING)")
    refs: list[Ref] = []
    where = plan_filters(table, header.delete_where, "header.delete_where", refs)
    if refs:
        raise InvalidArgument.field("header.delete_where", "takes values, not references")
    return Upsert(tuple(key), tuple(updates), header.delete_missing, tuple(where))


def _sent(table: Table, names: Sequence[str], path: str, sent: set[str]) -> list[Column]:
    out: list[Column] = []
    for i, name in enumerate(names):
        column = table.column(name, f"{path}[{i}]")
        if column in out:
            raise InvalidArgument.field(f"{path}[{i}]", f'"{name}" is listed twice')
        if name not in sent:
            raise InvalidArgument.field(f"{path}[{i}]", f'"{name}" is not among the stream\'s '
                                                        "columns")
        out.append(column)
    return out


async def check_unique_key(conn: asyncpg.Connection, table: Table,
                           on_conflict: batch_pb2.OnConflict) -> None:
    """At the stream's open: the conflict columns named must be a unique key of the table
    (ON CONFLICT needs one), else INVALID_ARGUMENT naming them. (The primary key, the
    default, is one.)"""
    names = list(on_conflict.conflict_columns)
    if on_conflict.action not in MERGING or not names \
            or sorted(names) == sorted(table.primary_key):
        return
    if not await conn.fetchval(_UNIQUE_KEY_SQL, table.sql, names):
        raise InvalidArgument.field(f"{_PATH}.conflict_columns", f'({", ".join(names)}) is not '
                                    f'a unique key of table "{table.qualified_name}" (a '
                                    "primary key, or a unique constraint or index without "
                                    "expressions or WHERE)")


# How a merge tells its inserted rows from its updated ones (``counting``):
# - "xmax": ``RETURNING xmax = 0`` (a row version no transaction has locked is a new one);
# - "old": ``RETURNING old.key IS NULL`` (PostgreSQL 18: the row before the update, none for an
#   insert), where a system column cannot be returned: partitioned tables;
# - "present": the rows whose key the table held before the statement (its snapshot) are the
#   updates or the unchanged, the others the inserts: partitioned tables before PostgreSQL 18
#   (exact unless another session inserts the same keys meanwhile).
COUNTING = ("xmax", "old", "present")


def counting_for(partitioned: bool, server_version: int) -> str:
    if not partitioned:
        return "xmax"
    return "old" if server_version >= 180000 else "present"


def merge_sql(upsert: Upsert, table: Table, columns: Sequence[Column], stage: str,
              ordinal: str, counting: str = "xmax") -> str:
    """The rows of ``stage`` numbered ($1..$2 by ``ordinal``) into the table, the last of each
    key, merged; answers (inserted, updated). ``counting``: see COUNTING."""
    key, updates = upsert.key, upsert.updates
    names = ", ".join(c.sql for c in columns)
    keys = ", ".join(c.sql for c in key)
    distinct = keys
    nullable = [c for c in key if c.nullable]
    if nullable:  # a NULL key conflicts with nothing, not even another NULL: kept apart
        distinct += (f", CASE WHEN {' OR '.join(f'{c.sql} IS NULL' for c in nullable)} "
                     f"THEN {ordinal} END")
    if updates:
        sets = [f"{c.sql} = EXCLUDED.{c.sql}" for c in updates]
        compared = ", ".join(f"t.{c.sql}" for c in updates)
        excluded = ", ".join(f"EXCLUDED.{c.sql}" for c in updates)
        version = table.version_column
        if version and version not in {c.name for c in updates}:
            v = table.columns[version].sql
            sets.append(f"{v} = t.{v} + 1")
        action = (f"DO UPDATE SET {', '.join(sets)} "
                  f"WHERE (ROW({compared})) IS DISTINCT FROM (ROW({excluded}))")
    else:
        action = "DO NOTHING"
    source = (f"SELECT DISTINCT ON ({distinct}) {names} FROM {stage} "
              f"WHERE {ordinal} BETWEEN $1 AND $2 ORDER BY {distinct}, {ordinal} DESC")
    insert = f"INSERT INTO {table.sql} AS t ({names}) SELECT {names} FROM s ON CONFLICT ({keys}) "
    if counting == "present":
        match = " AND ".join(f"p.{c.sql} = s.{c.sql}" for c in key)
        return (f"WITH s AS MATERIALIZED ({source}), "
                f"present AS (SELECT count(*) AS n FROM s WHERE EXISTS "
                f"(SELECT 1 FROM {table.sql} AS p WHERE {match})), "
                f"moved AS ({insert}{action} RETURNING 1), "
                "fresh AS (SELECT (SELECT count(*) FROM s) - (SELECT n FROM present) AS n) "
                "SELECT (SELECT n FROM fresh) AS inserted, "
                "(SELECT count(*) FROM moved) - (SELECT n FROM fresh) AS updated")
    new = "t.xmax = 0" if counting == "xmax" else f"old.{key[0].sql} IS NULL"
    return (f"WITH s AS ({source}), moved AS ({insert}{action} RETURNING {new} AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted) AS inserted, "
            "count(*) FILTER (WHERE NOT inserted) AS updated FROM moved")


def delete_missing_sql(upsert: Upsert, table: Table, seen: str) -> tuple[str, list[object]]:
    """The rows of the table's slice whose key is not in ``seen`` (the keys the stream
    brought), deleted; and the statement's parameters."""
    params = SqlParams()
    where = Selection(list(upsert.slice)).sql(params, Results())
    match = " AND ".join(f"s.{c.sql} = t.{c.sql}" for c in upsert.key)
    # A row with a NULL in its key has no key to be brought by (it conflicts with nothing):
    # left alone.
    where += "".join(f" AND t.{c.sql} IS NOT NULL" for c in upsert.key if c.nullable)
    return (f"DELETE FROM {table.sql} AS t WHERE {where} AND NOT EXISTS "
            f"(SELECT 1 FROM {seen} AS s WHERE {match})", params.values)
