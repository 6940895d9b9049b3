"""GetSchema's answer: the catalog as one caller may see it.

Beside the catalog (batchd.catalog reads what PostgreSQL has; this says what of it a caller is
shown): only the tables, operation kinds, handlers and SQL functions the caller's scopes cover
(batchd.principals), and for a principal that runs as a database role, only what that role may
use (batchd.grants): its columns, its operations, the functions it may execute. A table with
no operation left to the caller is not listed at all.
"""

from __future__ import annotations

from batchd.catalog import Catalog
from batchd.grants import RoleGrants
from batchd.kinds.call import registered
from batchd.principals import Principal
from batchd.v1 import batch_pb2


def describe(catalog: Catalog, principal: Principal | None = None,
             grants: RoleGrants | None = None) -> batch_pb2.GetSchemaResponse:
    """The schema, limited to the tables, operation kinds, handlers and functions
    ``principal``'s scopes cover (None: authentication is off, everything), and, for a
    principal mapped to a database role, to what ``grants`` say the role may use (its
    columns, its operations, the functions it may execute: batchd.grants)."""

    def allowed(kind: str, target: str) -> bool:
        return principal is None or principal.may(kind, target)

    tables = []
    for t in sorted(catalog.tables.values(), key=lambda t: t.qualified_name):
        columns, operations = list(t.columns.values()), t.operations
        if grants is not None:
            use = grants.tables.get(t.qualified_name)
            if use is None:
                continue
            columns = [c for c in columns if c.name in use.columns]
            operations = use.operations
        allowed_operations = sorted(k for k in operations if allowed(k, t.qualified_name))
        if not allowed_operations:
            continue
        shown = {c.name for c in columns}
        tables.append(batch_pb2.TableInfo(
            name=t.qualified_name,
            columns=[batch_pb2.ColumnInfo(name=c.name, type=c.type_sql, nullable=c.nullable,
                                          has_default=c.has_default)
                     for c in columns],
            primary_key=list(t.primary_key) if shown.issuperset(t.primary_key) else [],
            version_column=t.version_column if t.version_column in shown else "",
            soft_delete_column=t.soft_delete_column if t.soft_delete_column in shown else "",
            operations=allowed_operations))
    functions = [
        batch_pb2.FunctionInfo(
            name=f.qualified_name,
            arguments=[batch_pb2.FunctionArgument(name=a.name, type=a.type_sql,
                                                  has_default=a.has_default)
                       for a in f.arguments],
            returns=f.returns, returns_set=f.returns_set,
            result_columns=[batch_pb2.ColumnInfo(name=c.name, type=c.type_sql, nullable=True)
                            for c in f.result_columns])
        for name, overloads in sorted(catalog.functions.items()) if allowed("call", name)
        for f in overloads if grants is None or f.oid in grants.functions]
    return batch_pb2.GetSchemaResponse(
        tables=tables, handlers=sorted(h for h in registered() if allowed("call", h)),
        functions=functions)
