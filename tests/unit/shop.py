"""A small shop's catalog, made by hand (no database), and requests in grpcurl's JSON shape.

    public.customers    id bigint PK; name, email text; tags text[]; version; deleted_at
    public.orders       id bigint PK; customer_id bigint; status text; total numeric(12,2);
                        total_cents bigint GENERATED; version
    public.order_items  (order_id bigint, line integer) PK; qty integer; note text
    public.events       no primary key (insert only); at timestamptz; payload jsonb
    public.readonly_things   id integer PK; name text; operations get and query only
    public.Odd "Name"   id integer PK; we"ird text (identifiers that need quoting)
    billing.invoices    id bigint PK; amount numeric

Custom handlers are the suite's own (tests/support/handlers.py, which the test server loads too):
``echo`` returns its arguments.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import json_format

from batchd.batch.plan import BatchPlan, Step, plan_batch
from batchd.catalog import Catalog, Column, Table
from batchd.config import Settings
from batchd.kinds.base import PlanContext
from batchd.kinds.registry import TABLE_KINDS
from batchd.pgtext import quote_ident
from batchd.principals import Principal
from batchd.v1 import batch_pb2
from tests.support import handlers  # noqa: F401 - registers the handlers


def col(name: str, family: str, type_sql: str | None = None, *, is_array: bool = False,
        nullable: bool = True, has_default: bool = False, generated: bool = False) -> Column:
    """A column as the catalog reads it; ``type_sql`` as format_type() shows it (the cast is
    the type without its modifiers)."""
    if type_sql is None:
        type_sql = family + ("[]" if is_array else "")
    cast_sql = re.sub(r"\(.*?\)", "", type_sql)
    return Column(name=name, sql=quote_ident(name), type_sql=type_sql, cast_sql=cast_sql,
                  family=family, is_array=is_array, nullable=nullable, has_default=has_default,
                  generated=generated)


def table(qualified: str, columns: list[Column], primary_key: tuple[str, ...] = (),
          operations: frozenset[str] | None = None, **conventions: str) -> Table:
    """A table as ``load_catalog`` makes it: every table kind if it has a primary key, the
    keyless ones otherwise (or ``operations``)."""
    schema, _, name = qualified.partition(".")
    if operations is None:
        operations = frozenset(k for k, keyless in TABLE_KINDS.items() if primary_key or keyless)
    return Table(schema=schema, name=name, columns={c.name: c for c in columns},
                 primary_key=primary_key, operations=operations, **conventions)


def _tables() -> list[Table]:
    return [
        table("public.customers", [
            col("id", "int8", "bigint", nullable=False, has_default=True),
            col("name", "text", nullable=False),
            col("email", "text", nullable=False),
            col("tags", "text", "text[]", is_array=True),
            col("version", "int4", "integer", nullable=False, has_default=True),
            col("deleted_at", "timestamptz", "timestamp with time zone"),
        ], ("id",), version_column="version", soft_delete_column="deleted_at"),
        table("public.orders", [
            col("id", "int8", "bigint", nullable=False, has_default=True),
            col("customer_id", "int8", "bigint"),
            col("status", "text", "character varying(20)"),
            col("total", "numeric", "numeric(12,2)"),
            col("total_cents", "int8", "bigint", has_default=True, generated=True),
            col("version", "int4", "integer", nullable=False, has_default=True),
        ], ("id",), version_column="version"),
        table("public.order_items", [
            col("order_id", "int8", "bigint", nullable=False),
            col("line", "int4", "integer", nullable=False),
            col("qty", "int4", "integer"),
            col("note", "text"),
        ], ("order_id", "line")),
        table("public.events", [
            col("at", "timestamptz", "timestamp with time zone"),
            col("payload", "json", "jsonb"),
        ]),
        table("public.readonly_things", [
            col("id", "int4", "integer", nullable=False),
            col("name", "text"),
        ], ("id",), operations=frozenset({"get", "query"})),
        table('public.Odd "Name"', [
            col("id", "int4", "integer", nullable=False),
            col('we"ird', "text"),
        ], ("id",)),
        table("billing.invoices", [
            col("id", "int8", "bigint", nullable=False),
            col("amount", "numeric"),
        ], ("id",)),
    ]


CATALOG = Catalog({t.qualified_name: t for t in _tables()}, default_schema="public")
SETTINGS = Settings(max_operations=20, max_rows_per_batch=50, max_page_size=500, metrics_port=0)
CTX = PlanContext(CATALOG, SETTINGS)


def shop_table(name: str) -> Table:
    """A table of the catalog by its qualified name (or its name in public)."""
    return CATALOG.tables[name if "." in name else f"public.{name}"]


def request(operations: list[dict[str, Any]], **fields: Any) -> batch_pb2.BatchExecuteRequest:
    """A request from the same JSON a grpcurl user would type."""
    return json_format.ParseDict({"operations": operations, **fields},
                                 batch_pb2.BatchExecuteRequest())


def plan(operations: list[dict[str, Any]], principal: Principal | None = None,
         ctx: PlanContext = CTX, **fields: Any) -> BatchPlan:
    return plan_batch(request(operations, **fields), ctx, principal)


def step(batch_plan: BatchPlan, op_id: str) -> Step:
    [found] = [s for s in batch_plan.steps if s.id == op_id]
    return found


def principal(*scopes: str) -> Principal:
    return Principal("tester", tuple(scopes), "token")


# Operations in grpcurl's JSON, for brevity.

def insert(op_id: str, tbl: str, *rows: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": op_id, "insert": {"table": tbl, "rows": list(rows), **fields}}


def get(op_id: str, tbl: str, key: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": op_id, "get": {"table": tbl, "key": key, **fields}}


def query(op_id: str, tbl: str, **fields: Any) -> dict[str, Any]:
    return {"id": op_id, "query": {"table": tbl, **fields}}


def update(op_id: str, tbl: str, set_: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": op_id, "update": {"table": tbl, "set": set_, **fields}}


def delete(op_id: str, tbl: str, **fields: Any) -> dict[str, Any]:
    return {"id": op_id, "delete": {"table": tbl, **fields}}


def call(op_id: str, name: str = "echo", **args: Any) -> dict[str, Any]:
    return {"id": op_id, "call": {"handler": name, "args": args}}


def ref(target: str) -> dict[str, str]:
    return {"$ref": target}
