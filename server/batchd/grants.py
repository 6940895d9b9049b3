"""What a database role may use of the catalog, as PostgreSQL's privileges say: what GetSchema
shows a principal mapped to a role (``tokens[].role``), as PostgREST describes to each role what
it can use.

The catalog is read as batchd's login role, so it holds every exposed table and function; a
tenant role may use a part of it. For a role, per exposed table: the columns it has any of
SELECT, INSERT or UPDATE on (``has_column_privilege``, which a table-wide grant satisfies too),
and the operation kinds it can run:

    insert           INSERT on a column
    get, query       SELECT on every primary key column (rows are addressed and pages
                     ordered by it)
    update           that, and UPDATE on a column
    delete           that, and DELETE (UPDATE on the soft-delete column, where deletes are
                     soft)

and per exposed function, EXECUTE (``has_function_privilege``); nothing in a schema the role
has no USAGE on. A table the role may use no column of is not shown, nor its name.

Privileges are asked of PostgreSQL once per role and catalog, and kept with that catalog
(``RoleGrants``): a reload (NOTIFY batchd, 'reload'; SIGHUP) makes a new catalog, and with it
asks again, which is how a GRANT or REVOKE shows. Roles are the configured ones, so the cache
is as small as the settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from batchd.catalog import Catalog, Table
from batchd.db.pool import connection

_TABLES_SQL = """
SELECT c.oid,
       has_schema_privilege($1::name, c.relnamespace, 'USAGE') AS usage,
       has_table_privilege($1::name, c.oid, 'DELETE') AS deletes,
       ARRAY(SELECT a.attname FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               AND has_column_privilege($1::name, c.oid, a.attnum, 'SELECT')) AS selects,
       ARRAY(SELECT a.attname FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               AND has_column_privilege($1::name, c.oid, a.attnum, 'INSERT')) AS inserts,
       ARRAY(SELECT a.attname FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               AND has_column_privilege($1::name, c.oid, a.attnum, 'UPDATE')) AS updates
FROM pg_class c
WHERE c.oid = ANY($2::oid[])
"""
_FUNCTIONS_SQL = """
SELECT p.oid
FROM pg_proc p
WHERE p.oid = ANY($2::oid[])
  AND has_schema_privilege($1::name, p.pronamespace, 'USAGE')
  AND has_function_privilege($1::name, p.oid, 'EXECUTE')
"""


@dataclass(frozen=True, slots=True)
class TableUse:
    """What a role may use of one table."""

    columns: frozenset[str]
    operations: frozenset[str]


@dataclass(frozen=True, slots=True)
class RoleGrants:
    """What one role may use of one catalog: tables by qualified name (absent: nothing of
    it), and the oids of the functions it may execute."""

    tables: dict[str, TableUse]
    functions: frozenset[int]


def table_use(table: Table, deletes: bool, selects: Iterable[str], inserts: Iterable[str],
              updates: Iterable[str]) -> TableUse | None:
    """The use a role has of ``table`` from its privileges (the module's docstring), or None
    when it may use no column of it."""
    selected, inserted, updated = set(selects), set(inserts), set(updates)
    columns = frozenset((selected | inserted | updated) & set(table.columns))
    if not columns:
        return None
    addressable = bool(table.primary_key) and set(table.primary_key) <= selected
    soft = table.soft_delete_column
    can = {
        "insert": bool(inserted),
        "get": addressable,
        "query": addressable,
        "update": addressable and bool(updated),
        "delete": addressable and (soft in updated if soft else deletes),
    }
    return TableUse(columns, frozenset(k for k in table.operations if can.get(k, False)))


async def read(conn: asyncpg.Connection, catalog: Catalog, role: str) -> RoleGrants:
    """Ask PostgreSQL what ``role`` may use of ``catalog``."""
    by_oid = {t.oid: t for t in catalog.tables.values()}
    tables: dict[str, TableUse] = {}
    for r in await conn.fetch(_TABLES_SQL, role, list(by_oid)):
        table = by_oid[r["oid"]]
        use = table_use(table, r["deletes"], r["selects"], r["inserts"], r["updates"]) \
            if r["usage"] else None
        if use is not None:
            tables[table.qualified_name] = use
    oids = [f.oid for overloads in catalog.functions.values() for f in overloads]
    functions = frozenset(r["oid"] for r in await conn.fetch(_FUNCTIONS_SQL, role, oids))
    return RoleGrants(tables, functions)


class Grants:
    """``RoleGrants`` by role, for the current catalog: asked once per (role, catalog), kept
    until the catalog is replaced (a reload)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._catalog: Catalog | None = None
        self._by_role: dict[str, RoleGrants] = {}

    async def of(self, catalog: Catalog, role: str,
                 deadline: float | None = None) -> RoleGrants:
        """What ``role`` may use of ``catalog`` (two calls asking first both ask PostgreSQL:
        the same answer, kept once)."""
        if catalog is not self._catalog:
            self._catalog, self._by_role = catalog, {}
        found = self._by_role.get(role)
        if found is None:
            async with connection(self.pool, deadline) as conn:
                found = await read(conn, catalog, role)
            if catalog is self._catalog:  # not reloaded meanwhile
                self._by_role[role] = found
        return found
