"""get (one row by primary key) and query (filters, nested where, order, keyset pages, and
an optional exact count)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batchd.catalog import Column, Table
from batchd.errors import InvalidArgument, NotFound
from batchd.kinds.base import (
    Kind,
    Output,
    PlanContext,
    Planned,
    Rendering,
    RunContext,
    columns_list,
    rendering,
)
from batchd.kinds.conditions import plan_selection
from batchd.kinds.filters import (
    Selection,
    SortKey,
    after_sql,
    decode_token,
    encode_token,
    fingerprint,
    plan_key,
    sort_keys,
)
from batchd.kinds.params import SqlParams
from batchd.pgtext import quote_ident
from batchd.v1 import batch_pb2
from batchd.values import Ref

DEFAULT_PAGE_SIZE = 100


def _visible(table: Table, include_deleted: bool) -> Column | None:
    if include_deleted or table.soft_delete_column is None:
        return None
    return table.columns[table.soft_delete_column]


@dataclass(slots=True)
class GetSpec:
    table: Table
    selection: Selection
    columns: list[Column]
    rendering: Rendering


class GetKind(Kind):
    name = "get"
    access = "read"

    def plan(self, message: batch_pb2.GetOperation, path: str, ctx: PlanContext,
             refs: list[Ref]) -> Planned:
        table = self.table(message, path, ctx)
        selection = Selection(plan_key(table, message.key, f"{path}.key", refs), by_key=True,
                              soft_delete=_visible(table, message.include_deleted))
        columns = columns_list(table, message.columns, f"{path}.columns",
                               lambda: list(table.columns.values()))
        return Planned(self.name, GetSpec(table, selection, columns, rendering(columns)),
                       frozenset(c.name for c in columns))

    async def run(self, spec: GetSpec, ctx: RunContext) -> Output:
        params = SqlParams()
        where = spec.selection.sql(params, ctx.results)
        cols = ", ".join(c.sql for c in spec.columns)
        records = await ctx.connection.fetch(
            f"SELECT {cols} FROM {spec.table.sql} WHERE {where}", *params.values)
        if not records:
            raise NotFound(f'no row with that key in table "{spec.table.qualified_name}"')
        return Output(records, spec.rendering, rows_affected=1)


@dataclass(slots=True)
class QuerySpec:
    table: Table
    selection: Selection
    columns: list[Column]
    keys: list[SortKey]
    limit: int
    after: list[Any] | None
    fingerprint: str
    rendering: Rendering
    count_as: str | None = None  # with count: the count's column name, not one of the table


class QueryKind(Kind):
    name = "query"
    access = "read"

    def plan(self, message: batch_pb2.QueryOperation, path: str, ctx: PlanContext,
             refs: list[Ref]) -> Planned:
        table = self.table(message, path, ctx)
        selection = Selection(plan_selection(table, message, path, refs),
                              soft_delete=_visible(table, message.include_deleted))
        columns = columns_list(table, message.columns, f"{path}.columns",
                               lambda: list(table.columns.values()))
        keys = sort_keys(table, message.order_by, f"{path}.order_by")
        limit = message.limit or DEFAULT_PAGE_SIZE
        if limit > ctx.settings.max_page_size:
            raise InvalidArgument.field(f"{path}.limit", f"{limit} exceeds the maximum page size "
                                                         f"{ctx.settings.max_page_size}")
        shape = fingerprint(message)
        after = (decode_token(message.page_token, keys, shape, f"{path}.page_token")
                 if message.page_token else None)
        count_as = _unused_name(table, "total_count") if message.count else None
        spec = QuerySpec(table, selection, columns, keys, limit, after, shape, rendering(columns),
                         count_as)
        return Planned(self.name, spec, frozenset(c.name for c in columns))

    async def run(self, spec: QuerySpec, ctx: RunContext) -> Output:
        params = SqlParams()
        where = spec.selection.sql(params, ctx.results)
        if spec.after is not None:
            where = f"{where} AND {after_sql(spec.keys, spec.after, params)}"
        # The sort columns are selected too: the page token is made of the last row's values.
        wanted = {c.name for c in spec.columns}
        selected = [*spec.columns, *(k.column for k in spec.keys if k.column.name not in wanted)]
        sql = (f"SELECT {', '.join(c.sql for c in selected)} FROM {spec.table.sql} "
               f"WHERE {where} ORDER BY {', '.join(k.sql for k in spec.keys)} "
               f"LIMIT {spec.limit + 1}")
        total = None
        if spec.count_as is None:
            records = await ctx.connection.fetch(sql, *params.values)
        else:
            records, total = await _fetch_counted(spec, sql, params, ctx)
        token = ""
        if len(records) > spec.limit:
            records = records[:spec.limit]
            token = encode_token(spec.keys, records[-1], spec.fingerprint)
        return Output(records, spec.rendering, rows_affected=len(records),
                      next_page_token=token, total_count=total)


async def _fetch_counted(spec: QuerySpec, page_sql: str, params: SqlParams,
                         ctx: RunContext) -> tuple[list[Any], int]:
    """The page and the count of every matching row, from one statement: two statements
    would each take their own snapshot under READ COMMITTED (the default), and a count
    taken apart could disagree with the page. The one-row count is LEFT JOINed to the page,
    so that an empty page still brings it (as one row of NULLs, told apart by its primary
    key, which no real row has NULL); each page row carries the count in ``count_as``."""
    assert spec.count_as is not None
    counted = spec.selection.sql(params, ctx.results)
    order = ", ".join(f"batchd_page.{k.sql}" for k in spec.keys)
    sql = (f"SELECT batchd_page.*, batchd_count.n AS {quote_ident(spec.count_as)} "
           f"FROM (SELECT count(*) AS n FROM {spec.table.sql} WHERE {counted}) AS batchd_count "
           f"LEFT JOIN LATERAL ({page_sql}) AS batchd_page ON TRUE ORDER BY {order}")
    records = await ctx.connection.fetch(sql, *params.values)
    total = int(records[0][spec.count_as])
    if records[0][spec.table.primary_key[0]] is None:
        return [], total
    return records, total


def _unused_name(table: Table, name: str) -> str:
    """``name``, or with underscores appended: a result column no table column is called."""
    while name in table.columns:
        name += "_"
    return name
