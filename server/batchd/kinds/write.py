"""update and delete: by primary key or by filters, with optimistic locking and soft delete.

By key, a missing row is NOT_FOUND and a version mismatch is ABORTED, told apart by a second
look at the row (only on that failure path). By filters (and / or a ``where`` group), any number
of rows (zero included) is a success; at least one filter is required, so that an empty filter
list never means "every row" (a non-empty ``where`` has one: batchd.kinds.conditions refuses
empty groups). On a table with a version column every write increments it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batchd.catalog import Column, Table
from batchd.errors import InvalidArgument, NotFound, VersionConflict
from batchd.kinds.base import (
    Kind,
    Output,
    PlanContext,
    Planned,
    RunContext,
    columns_list,
    key_columns,
    rendering,
    select_list,
)
from batchd.kinds.conditions import has_where, plan_selection
from batchd.kinds.filters import Selection, plan_key
from batchd.kinds.params import SqlParams, prepare
from batchd.v1 import batch_pb2
from batchd.values import Ref, struct_from_proto


@dataclass(slots=True)
class WriteSpec:
    table: Table
    selection: Selection
    sets: list[tuple[Column, Any]]  # empty for a hard delete
    soft_delete: bool
    expected_version: int | None
    returning: list[Column]


def _selection(table: Table, message: Any, path: str, refs: list[Ref]) -> Selection:
    has_key = message.HasField("key")
    if has_key == bool(message.filters or has_where(message)):
        raise InvalidArgument.field(path, "give exactly one of key and filters (or where)")
    soft = table.columns[table.soft_delete_column] if table.soft_delete_column else None
    if has_key:
        return Selection(plan_key(table, message.key, f"{path}.key", refs), by_key=True,
                         soft_delete=soft)
    return Selection(plan_selection(table, message, path, refs), soft_delete=soft)


def _expected_version(table: Table, message: Any, selection: Selection, path: str) -> int | None:
    if not message.HasField("expected_version"):
        return None
    if table.version_column is None:
        raise InvalidArgument.field(f"{path}.expected_version",
                                    f'table "{table.qualified_name}" has no version column')
    if not selection.by_key:
        raise InvalidArgument.field(f"{path}.expected_version", "needs a key, not filters")
    return int(message.expected_version)


class UpdateKind(Kind):
    name = "update"
    access = "write"

    def plan(self, message: batch_pb2.UpdateOperation, path: str, ctx: PlanContext,
             refs: list[Ref]) -> Planned:
        table = self.table(message, path, ctx)
        selection = _selection(table, message, path, refs)
        values = struct_from_proto(message.set)
        if not values:
            raise InvalidArgument.field(f"{path}.set", "at least one column to set is required")
        sets = []
        for name, value in values.items():
            column = table.column(name, f"{path}.set.{name}")
            if column.generated:
                raise InvalidArgument.field(f"{path}.set.{name}", "is a generated column")
            if name == table.version_column:
                raise InvalidArgument.field(f"{path}.set.{name}", "is the version column; the "
                                            "server increments it (use expected_version)")
            sets.append((column, prepare(value, column, f"{path}.set.{name}", refs)))
        spec = WriteSpec(table, selection, sets, False,
                         _expected_version(table, message, selection, path),
                         columns_list(table, message.returning, f"{path}.returning",
                                      lambda: key_columns(table)))
        return Planned(self.name, spec, frozenset(c.name for c in spec.returning))

    async def run(self, spec: WriteSpec, ctx: RunContext) -> Output:
        return await _write(spec, ctx)


class DeleteKind(Kind):
    name = "delete"
    access = "write"

    def plan(self, message: batch_pb2.DeleteOperation, path: str, ctx: PlanContext,
             refs: list[Ref]) -> Planned:
        table = self.table(message, path, ctx)
        selection = _selection(table, message, path, refs)
        spec = WriteSpec(table, selection, [], table.soft_delete_column is not None,
                         _expected_version(table, message, selection, path),
                         columns_list(table, message.returning, f"{path}.returning",
                                      lambda: key_columns(table)))
        return Planned(self.name, spec, frozenset(c.name for c in spec.returning))

    async def run(self, spec: WriteSpec, ctx: RunContext) -> Output:
        return await _write(spec, ctx)


async def _write(spec: WriteSpec, ctx: RunContext) -> Output:
    table = spec.table
    params = SqlParams()
    assignments = [f"{c.sql} = {params.add(ctx.results.finalize(v), c.cast_sql)}"
                   for c, v in spec.sets]
    if spec.soft_delete:
        assert table.soft_delete_column is not None
        assignments.append(f"{table.columns[table.soft_delete_column].sql} = now()")
    version = table.columns[table.version_column] if table.version_column else None
    if version is not None and assignments:  # an update or a soft delete, not a DELETE
        assignments.append(f"{version.sql} = {version.sql} + 1")
    where = spec.selection.sql(params, ctx.results)
    if spec.expected_version is not None:
        assert version is not None
        where = f"{where} AND {version.sql} = {params.add(spec.expected_version, 'bigint')}"
    returning = select_list(spec.returning)
    if assignments:
        sql = f"UPDATE {table.sql} SET {', '.join(assignments)} WHERE {where} RETURNING {returning}"
    else:
        sql = f"DELETE FROM {table.sql} WHERE {where} RETURNING {returning}"
    records = await ctx.connection.fetch(sql, *params.values)
    if not records and spec.selection.by_key:
        await _explain_missing(spec, ctx, version)
    return Output(records, rendering(spec.returning), rows_affected=len(records))


async def _explain_missing(spec: WriteSpec, ctx: RunContext, version: Column | None) -> None:
    """A keyed write touched nothing: either there is no such row or its version moved on."""
    table = spec.table
    if spec.expected_version is not None and version is not None:
        params = SqlParams()
        where = spec.selection.sql(params, ctx.results)
        current = await ctx.connection.fetchval(
            f"SELECT {version.sql} FROM {table.sql} WHERE {where}", *params.values)
        if current is not None:
            raise VersionConflict(f"version mismatch: expected {spec.expected_version}, the row "
                                  f"is at version {current}",
                                  metadata={"expected_version": str(spec.expected_version),
                                            "actual_version": str(current)})
    raise NotFound(f'no row with that key in table "{table.qualified_name}"')
