"""insert: one or many rows, with ON CONFLICT (error / do nothing / update) and RETURNING.

Many rows go in one set-based statement, ``INSERT ... SELECT * FROM unnest($1::t[], ...)``,
one array parameter per column: the statement text depends only on the columns, so it is
prepared once and reused whatever the row count. Array columns cannot go through unnest (it
would flatten them), so tables with those use a multi-row VALUES list instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from batchd.catalog import Column, Table
from batchd.errors import InvalidArgument
from batchd.kinds.base import (
    NO_ROWS,
    Kind,
    Output,
    PlanContext,
    Planned,
    Rendering,
    RunContext,
    columns_list,
    key_columns,
    rendering,
    select_list,
)
from batchd.kinds.params import Deferred, prepare
from batchd.pgtext import JsonText, dumps_json
from batchd.v1 import batch_pb2
from batchd.values import (
    CoercionError,
    Ref,
    coercer,
    struct_from_proto,
)

Action = batch_pb2.OnConflict.Action
MAX_PARAMETERS = 32767  # PostgreSQL's limit of bind parameters per statement


@dataclass(frozen=True, slots=True)
class _Shape:
    """Everything about an insert but its values: its table, columns, conflict clause and
    RETURNING, and what follows from them (the coercion of each column, the statements, the
    rendering of the rows it returns, whether it coalesces). The same for every operation of a
    bulk batch and for every batch of one form, so it is worked out once (``InsertKind``
    keeps them by their key)."""

    table: Table
    columns: list[Column]
    conflict_sql: str
    returning: list[Column]
    output_columns: frozenset[str]
    coercion: list[tuple[Column, Callable[[Any], Any]]]  # each column, with its ``coercer``
    rendering: Rendering
    one_row_sql: str  # INSERT ... VALUES of one row
    unnest_sql: str  # INSERT ... SELECT * FROM unnest(...) of any number
    together_sql: str  # unnest WITH ORDINALITY, rows back in input order (coalescing)
    coalesce_key: tuple[Any, ...] | None

    @property
    def returning_sql(self) -> str:
        return f" RETURNING {select_list(self.returning)}" if self.returning else ""

    @classmethod
    def of(cls, table: Table, columns: list[Column], conflict_sql: str,
           returning: list[Column]) -> _Shape:
        returning_sql = f" RETURNING {select_list(returning)}" if returning else ""
        casts = ", ".join(f"${i + 1}::{c.cast_sql}[]" for i, c in enumerate(columns))
        into = f"INSERT INTO {table.sql} ({select_list(columns)})"
        names = ", ".join(f"c{i}" for i in range(len(columns)))
        # Inserts with equal keys can share one statement with the same meaning as several:
        # same table, columns and RETURNING. Only plain inserts (conflict = error): with DO
        # NOTHING, skipped rows vanish from RETURNING and the rows could not be given back to
        # their operations; with DO UPDATE, one statement may not touch a row twice where two
        # statements may. Array columns take the VALUES path, and inserts without columns or
        # RETURNING have nothing to share.
        coalesces = not (conflict_sql or not columns or not returning
                         or any(c.is_array for c in columns))
        return cls(
            table, columns, conflict_sql, returning, frozenset(c.name for c in returning),
            [(c, coercer(c)) for c in columns], rendering(returning),
            _values_sql(table, columns, 1, conflict_sql + returning_sql) if columns else "",
            f"{into} SELECT * FROM unnest({casts}){conflict_sql}{returning_sql}",
            f"{into} SELECT {names} FROM unnest({casts}) WITH ORDINALITY AS u({names}, n) "
            f"ORDER BY n{returning_sql}",
            (id(table), tuple(c.name for c in columns), tuple(c.name for c in returning))
            if coalesces else None)


@dataclass(slots=True)
class InsertSpec:
    shape: _Shape
    rows: list[list[Any]]  # prepared values, in column order
    has_deferred: bool

    @property
    def table(self) -> Table:
        return self.shape.table

    @property
    def columns(self) -> list[Column]:
        return self.shape.columns

    @property
    def conflict_sql(self) -> str:
        return self.shape.conflict_sql

    @property
    def returning(self) -> list[Column]:
        return self.shape.returning

    @property
    def returning_sql(self) -> str:
        return self.shape.returning_sql


# A value that may hold references (then it is prepared with its full path); any other is a
# scalar, coerced at once.
_MAY_REFER = (Ref, list, dict)



class InsertKind(Kind):
    name = "insert"
    access = "write"
    keyless = True

    def __init__(self) -> None:
        # Shapes by (catalog, table, columns, returning, on_conflict). The catalog is fixed for
        # the server's life, so an entry never goes stale; the bound keeps hostile variety cheap.
        self._shapes: dict[tuple[Any, ...], _Shape] = {}

    def _shape(self, message: batch_pb2.InsertOperation, names: tuple[str, ...], path: str,
               ctx: PlanContext) -> _Shape:
        if message.HasField("on_conflict"):
            oc = message.on_conflict
            conflict: tuple[Any, ...] = (oc.action, tuple(oc.conflict_columns),
                                         tuple(oc.update_columns))
        else:
            conflict = ()
        key = (ctx.catalog, message.table, names, tuple(message.returning), conflict)
        shape = self._shapes.get(key)
        if shape is None:
            table = self.table(message, path, ctx)
            columns = [table.column(name, f"{path}.rows[0].{name}") for name in names]
            for column in columns:
                if column.generated:
                    raise InvalidArgument.field(f"{path}.rows[0].{column.name}",
                                                "is a generated column and cannot be written")
            returning = columns_list(table, message.returning, f"{path}.returning",
                                     lambda: key_columns(table))
            shape = _Shape.of(table, columns, _conflict_sql(table, message, columns, path),
                              returning)
            if len(self._shapes) >= 4096:
                self._shapes.clear()
            self._shapes[key] = shape
        return shape

    def plan(self, message: batch_pb2.InsertOperation, path: str, ctx: PlanContext,
             refs: list[Ref]) -> Planned:
        structs = message.rows
        count = len(structs)
        if not count:
            raise InvalidArgument.field(f"{path}.rows", "at least one row is required")
        if count > ctx.settings.max_rows_per_batch:
            raise InvalidArgument.field(
                f"{path}.rows", f"{count} rows exceed the limit of "
                                f"{ctx.settings.max_rows_per_batch}")
        rows_in = iter(structs)  # each element read once: reading one makes its wrapper
        first = struct_from_proto(next(rows_in))
        shape = self._shape(message, tuple(first), path, ctx)
        coercion = shape.coercion
        rows: list[list[Any]] = []
        has_deferred = False
        values, r = first, 0
        while True:
            row = []
            for c, to_column in coercion:
                value = values[c.name]
                if isinstance(value, _MAY_REFER):  # may hold references: the full path
                    value = prepare(value, c, f"{path}.rows[{r}].{c.name}", refs)
                    has_deferred = has_deferred or type(value) is Deferred
                else:  # a scalar: coerce at once, and name the field only if it is wrong
                    try:
                        value = to_column(value)
                    except CoercionError:
                        prepare(value, c, f"{path}.rows[{r}].{c.name}", refs)  # raises: path
                row.append(value)
            rows.append(row)
            struct = next(rows_in, None)
            if struct is None:
                break
            values, r = struct_from_proto(struct), r + 1
            if values.keys() != first.keys():
                raise InvalidArgument.field(
                    f"{path}.rows[{r}]", f"names columns {sorted(values)}, but rows[0] names "
                                         f"{sorted(first)}; all rows of an insert must name the "
                                         "same columns")
        return Planned(self.name, InsertSpec(shape, rows, has_deferred), shape.output_columns)

    async def run(self, spec: InsertSpec, ctx: RunContext) -> Output:
        shape = spec.shape
        rows = ([ctx.results.finalize_all(row) for row in spec.rows] if spec.has_deferred
                else spec.rows)
        conn = ctx.connection
        if not shape.returning:  # a table without a primary key, nothing asked back
            return Output([], NO_ROWS, rows_affected=await self._execute(spec, rows, conn))
        if not shape.columns:
            records = []
            for _ in rows:
                records.extend(await conn.fetch(
                    f"INSERT INTO {shape.table.sql} DEFAULT VALUES{shape.conflict_sql}"
                    f"{shape.returning_sql}"))
            affected = len(records) if shape.returning else len(rows)
        elif len(rows) == 1:
            records = await conn.fetch(shape.one_row_sql, *rows[0])
            affected = len(records)
        elif any(c.is_array for c in shape.columns):
            records = []
            per_statement = max(1, MAX_PARAMETERS // len(shape.columns))
            for start in range(0, len(rows), per_statement):
                chunk = rows[start:start + per_statement]
                records.extend(await conn.fetch(_values_sql(spec.table, spec.columns, len(chunk),
                                                            spec.conflict_sql
                                                            + spec.returning_sql),
                                                *[v for row in chunk for v in row]))
            affected = len(records)
        else:
            records = []
            for part in _statement_parts(spec, rows):
                records.extend(await conn.fetch(shape.unnest_sql,
                                                *column_values(shape.columns, part)))
            affected = len(records)
        return Output(records, shape.rendering, rows_affected=affected)

    async def _execute(self, spec: InsertSpec, rows: list[list[Any]],
                       conn: asyncpg.Connection) -> int:
        """Insert without RETURNING; the count comes from the command tag."""
        if not spec.columns:
            for _ in rows:
                await conn.execute(f"INSERT INTO {spec.table.sql} DEFAULT VALUES"
                                   f"{spec.conflict_sql}")
            return len(rows)  # DO NOTHING cannot apply without a key to conflict on
        if any(c.is_array for c in spec.columns):
            total = 0
            per_statement = max(1, MAX_PARAMETERS // len(spec.columns))
            for start in range(0, len(rows), per_statement):
                chunk = rows[start:start + per_statement]
                total += _count(await conn.execute(
                    _values_sql(spec.table, spec.columns, len(chunk), spec.conflict_sql),
                    *[v for row in chunk for v in row]))
            return total
        casts = ", ".join(f"${i + 1}::{c.cast_sql}[]" for i, c in enumerate(spec.columns))
        sql = (f"INSERT INTO {spec.table.sql} ({select_list(spec.columns)}) "
               f"SELECT * FROM unnest({casts}){spec.conflict_sql}")
        return sum([_count(await conn.execute(sql, *column_values(spec.columns, part)))
                    for part in _statement_parts(spec, rows)])

    # --- coalescing (the Kind hook) --------------------------------------------------------

    def coalesce_key(self, spec: InsertSpec) -> tuple[Any, ...] | None:
        """Inserts with equal keys can share one statement (see ``_Shape.of``)."""
        return spec.shape.coalesce_key

    async def run_together(self, specs: list[InsertSpec], ctx: RunContext) -> list[Output]:
        rows = [[ctx.results.finalize_all(r) for r in spec.rows] if spec.has_deferred
                else spec.rows for spec in specs]
        parts = await _insert_together(ctx.connection, specs[0].shape, rows)
        render = specs[0].shape.rendering
        return [Output(records, render, len(records)) for records in parts]


# Rows per statement of a large insert: asyncpg encodes a statement's parameters on the event
# loop, and 100,000 rows at once would stall every other call for a second or more.
ROWS_PER_STATEMENT = 1000


def _statement_parts(spec: InsertSpec, rows: list[list[Any]]) -> list[list[list[Any]]]:
    """``rows`` cut into statements of ROWS_PER_STATEMENT. Not an upsert's: one statement
    refuses to update a row twice (SQLSTATE 21000) where two would do it, so cutting would
    change what it means."""
    if len(rows) <= ROWS_PER_STATEMENT or "DO UPDATE" in spec.conflict_sql:
        return [rows]
    return [rows[i:i + ROWS_PER_STATEMENT] for i in range(0, len(rows), ROWS_PER_STATEMENT)]


def column_values(columns: list[Column], rows: list[list[Any]]) -> list[list[Any]]:
    """The rows as one array per column, the parameters of ``unnest``. A json document goes
    as its text: asyncpg would take a document that is a list for a dimension of the array."""
    arrays = [list(values) for values in zip(*rows, strict=True)]
    for i, column in enumerate(columns):
        if column.family == "json":
            arrays[i] = [None if v is None else JsonText(dumps_json(v)) for v in arrays[i]]
    return arrays


def _count(tag: str) -> int:
    """Rows of a command tag such as "INSERT 0 42"."""
    return int(tag.rsplit(" ", 1)[-1])


async def _insert_together(conn: asyncpg.Connection, shape: _Shape,
                           rows: list[list[list[Any]]]) -> list[list[Any]]:
    """One INSERT for the rows of several coalescible inserts; the RETURNING rows, split back
    per insert. The source is ordered by its ordinality, so rows come back in input order."""
    flat = [row for part in rows for row in part]
    records = await conn.fetch(shape.together_sql, *column_values(shape.columns, flat))
    if len(records) != len(flat):
        raise RuntimeError(f"coalesced insert returned {len(records)} rows for {len(flat)}")
    out, start = [], 0
    for part in rows:
        out.append(records[start:start + len(part)])
        start += len(part)
    return out


def _values_sql(table: Table, columns: list[Column], count: int, tail: str) -> str:
    """INSERT ... VALUES of ``count`` rows, then ``tail`` (conflict clause, RETURNING)."""
    width = len(columns)
    groups = ", ".join(
        "(" + ", ".join(f"${r * width + i + 1}::{c.cast_sql}" for i, c in enumerate(columns))
        + ")" for r in range(count))
    return f"INSERT INTO {table.sql} ({select_list(columns)}) VALUES {groups}{tail}"


def _conflict_sql(table: Table, message: batch_pb2.InsertOperation, columns: list[Column],
                  path: str) -> str:
    oc = message.on_conflict
    cpath = f"{path}.on_conflict"
    if oc.action in (Action.ACTION_UNSPECIFIED, Action.ACTION_ERROR):
        if oc.conflict_columns or oc.update_columns:
            raise InvalidArgument.field(cpath, "conflict_columns and update_columns need action "
                                               "ACTION_DO_NOTHING or ACTION_UPDATE")
        return ""
    target = columns_list(table, oc.conflict_columns, f"{cpath}.conflict_columns",
                          lambda: key_columns(table))
    target_sql = f" ON CONFLICT ({select_list(target)})"
    if oc.action == Action.ACTION_DO_NOTHING:
        if oc.update_columns:
            raise InvalidArgument.field(f"{cpath}.update_columns", "needs action ACTION_UPDATE")
        return f"{target_sql} DO NOTHING"
    if oc.action != Action.ACTION_UPDATE:
        raise InvalidArgument.field(f"{cpath}.action", "unknown action")
    target_names = {c.name for c in target}
    inserted = {c.name for c in columns}
    updates = columns_list(table, oc.update_columns, f"{cpath}.update_columns",
                           lambda: [c for c in columns if c.name not in target_names])
    for i, c in enumerate(updates):
        if c.name not in inserted:
            raise InvalidArgument.field(f"{cpath}.update_columns[{i}]",
                                        f'"{c.name}" is not among the inserted columns')
    if not updates:
        raise InvalidArgument.field(f"{cpath}.update_columns", "nothing to update")
    sets = [f"{c.sql} = EXCLUDED.{c.sql}" for c in updates]
    if table.version_column and table.version_column not in {c.name for c in updates}:
        v = table.columns[table.version_column].sql
        sets.append(f"{v} = {table.sql}.{v} + 1")
    return f"{target_sql} DO UPDATE SET {', '.join(sets)}"
