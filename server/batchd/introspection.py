"""The catalog, read from PostgreSQL: which tables and functions are exposed
(``expose``, ``expose_functions``), their columns and the value family of each, their keys, and
the table facts batchd.batch.chain relies on (``plain``, ``foreign_keys``).

Tables without a primary key are exposed for insert (and stream ingest) only: keys address
rows for get/update/delete and make query pages stable.

Functions (``expose_functions``, none by default: a function is code, and does whatever it
was written to do) are exposed when a call can be written for them from a request alone:
plain functions (not aggregates, window functions or procedures) whose input arguments all have
names (a request names every argument) and concrete types (an argument is coerced by its type;
``anyelement`` names none), no VARIADIC, and whose result has known columns (no bare
``record``, no pseudo-types but ``void``). Others are skipped, and the debug log says why.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Mapping

import asyncpg

from batchd.catalog import Catalog, Column, Function, Table
from batchd.config import Settings
from batchd.pgtext import quote_ident

log = logging.getLogger(__name__)

INTERNAL_SCHEMA = "batchd"  # where batchd keeps its own tables; never exposed

# Value families by PostgreSQL type name; anything else ("other") is passed through as given.
_FAMILIES = {
    "int2": "int2", "int4": "int4", "int8": "int8", "numeric": "numeric",
    "float4": "float", "float8": "float", "bool": "bool",
    "text": "text", "varchar": "text", "bpchar": "text", "name": "text", "citext": "text",
    "uuid": "uuid", "date": "date", "timestamptz": "timestamptz", "timestamp": "timestamp",
    "time": "time", "timetz": "timetz", "interval": "interval", "bytea": "bytea",
    "json": "json", "jsonb": "json",
}

_TYPES_SQL = """
SELECT oid, typname, typtype::text, typbasetype, typelem, typcategory::text, typrelid,
       CASE WHEN typtype = 'd' THEN format_type(typbasetype, typtypmod) END AS base_sql
FROM pg_type
"""
_TABLES_SQL = """
SELECT c.oid, n.nspname AS schema, c.relname AS name,
       c.relkind = 'r' AND NOT c.relrowsecurity AND NOT c.relhasrules
         AND NOT EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = c.oid
                         AND NOT t.tgisinternal) AS plain
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1)
  AND n.nspname NOT LIKE 'pg\\_%'
"""
_COLUMNS_SQL = """
SELECT a.attrelid, a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod) AS type_sql,
       format_type(a.atttypid, NULL) AS cast_sql,
       a.attnotnull, a.atthasdef, a.attidentity <> '' AS identity, a.attgenerated <> '' AS generated
FROM pg_attribute a
WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""
_KEYS_SQL = """
SELECT con.contype::text, con.conrelid, con.confrelid, array_agg(a.attname ORDER BY k.ord)
       AS columns
FROM pg_constraint con
CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
WHERE con.contype IN ('p', 'f') AND con.conrelid = ANY($1::oid[])
GROUP BY con.oid
ORDER BY con.conname
"""
# Plain functions, with every argument (IN, OUT, INOUT, TABLE, VARIADIC) in order: types
# (proallargtypes when there are OUT arguments, else proargtypes), modes (none: all IN) and
# names ('' for an unnamed one). pronargdefaults counts the input arguments, from the last,
# that have defaults.
_FUNCTIONS_SQL = """
SELECT p.oid, n.nspname AS schema, p.proname AS name, p.proretset AS returns_set,
       p.prorettype, format_type(p.prorettype, NULL) AS returns, p.pronargdefaults,
       ARRAY(SELECT a.t FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]))
             WITH ORDINALITY AS a(t, i) ORDER BY a.i) AS arg_types,
       ARRAY(SELECT format_type(a.t, NULL) FROM unnest(coalesce(p.proallargtypes,
                                                                p.proargtypes::oid[]))
             WITH ORDINALITY AS a(t, i) ORDER BY a.i) AS arg_types_sql,
       coalesce(p.proargmodes::text[], '{}') AS arg_modes,
       coalesce(p.proargnames, '{}') AS arg_names
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.prokind = 'f'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1)
  AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY n.nspname, p.proname, p.oid
"""


async def load_catalog(conn: asyncpg.Connection, settings: Settings,
                       kinds: Mapping[str, bool]) -> Catalog:
    """The exposed tables and functions. ``kinds``: the operation kinds addressed at tables,
    each with whether it works without a primary key (``batchd.kinds.registry.TABLE_KINDS``)."""
    types = _Types(await conn.fetch(_TYPES_SQL))
    candidates = [r for r in await conn.fetch(_TABLES_SQL, INTERNAL_SCHEMA)
                  if _exposed(f"{r['schema']}.{r['name']}", settings.expose)]
    oids = [r["oid"] for r in candidates]
    columns = await _columns_of(conn, oids, types)
    keys: dict[int, tuple[str, ...]] = {}
    foreign: dict[int, list[tuple[int, tuple[str, ...]]]] = {}
    for r in await conn.fetch(_KEYS_SQL, oids):
        if r["contype"] == "p":
            keys[r["conrelid"]] = tuple(r["columns"])
        else:
            foreign.setdefault(r["conrelid"], []).append((r["confrelid"],
                                                          tuple(r["columns"])))
    tables: dict[str, Table] = {}
    for r in candidates:
        qualified = f"{r['schema']}.{r['name']}"
        key = keys.get(r["oid"], ())
        table = _configure(Table(schema=r["schema"], name=r["name"],
                                 columns=columns[r["oid"]], primary_key=key, oid=r["oid"],
                                 plain=r["plain"],
                                 foreign_keys=tuple(foreign.get(r["oid"], ())),
                                 operations=frozenset(k for k, keyless in kinds.items()
                                                      if key or keyless)),
                           settings, kinds)
        tables[qualified] = table
    functions = (await _load_functions(conn, settings.expose_functions, types)
                 if settings.expose_functions else {})
    log.info("catalog: %d tables, %d functions exposed", len(tables),
             sum(len(f) for f in functions.values()))
    return Catalog(tables, settings.default_schema, suggest=not settings.auth_enabled,
                   functions=functions)


class _Types:
    """pg_type by oid, and what batchd makes of each type."""

    def __init__(self, rows: Iterable[asyncpg.Record]) -> None:
        self.rows = {r["oid"]: r for r in rows}

    def family_of(self, oid: int) -> tuple[str, bool]:
        """The value family of the type (see ``Column.family``), and whether it is an array
        (the family is then its elements')."""
        t = self.rows[oid]
        while t["typtype"] == "d":  # domain: coerce as its base type
            t = self.rows[t["typbasetype"]]
        if t["typcategory"] == "A" and t["typelem"]:
            return self.family_of(t["typelem"])[0], True
        if t["typtype"] == "e":
            return "text", False
        return _FAMILIES.get(t["typname"], "other"), False

    def value_type(self, oid: int) -> str:
        """A domain's base type (of an array of domains: its elements' base type, "[]"), as
        format_type() prints it; "" for any other type."""
        t = self.rows[oid]
        if t["typtype"] == "d":
            base = t["base_sql"]
            while self.rows[t["typbasetype"]]["typtype"] == "d":  # a domain over a domain
                t = self.rows[t["typbasetype"]]
                base = t["base_sql"]
            return str(base)
        if t["typcategory"] == "A" and t["typelem"] and \
                self.rows[t["typelem"]]["typtype"] == "d":
            return self.value_type(t["typelem"]) + "[]"
        return ""

    def column(self, name: str, oid: int, type_sql: str, *, has_default: bool = False,
               ) -> Column:
        """A function's argument or result column (no type modifier: PostgreSQL keeps none
        for them, so the type as shown is the cast too)."""
        family, is_array = self.family_of(oid)
        return Column(name=name, sql=quote_ident(name), type_sql=type_sql, cast_sql=type_sql,
                      family=family, is_array=is_array, nullable=True, has_default=has_default,
                      generated=False, value_type=self.value_type(oid))


async def _columns_of(conn: asyncpg.Connection, relations: list[int],
                      types: _Types) -> dict[int, dict[str, Column]]:
    """The columns of tables (or composite types), by relation oid, in order."""
    columns: dict[int, dict[str, Column]] = {oid: {} for oid in relations}
    for r in await conn.fetch(_COLUMNS_SQL, relations):
        family, is_array = types.family_of(r["atttypid"])
        columns[r["attrelid"]][r["attname"]] = Column(
            name=r["attname"], sql=quote_ident(r["attname"]), type_sql=r["type_sql"],
            cast_sql=r["cast_sql"],
            family=family, is_array=is_array, nullable=not r["attnotnull"],
            has_default=r["atthasdef"] or r["identity"] or r["generated"],
            generated=r["generated"], value_type=types.value_type(r["atttypid"]))
    return columns


async def _load_functions(conn: asyncpg.Connection, patterns: list[str],
                          types: _Types) -> dict[str, tuple[Function, ...]]:
    """The functions ``patterns`` expose that a request can call (see the module's
    docstring), by qualified name."""
    rows = [r for r in await conn.fetch(_FUNCTIONS_SQL, INTERNAL_SCHEMA)
            if _exposed(f"{r['schema']}.{r['name']}", patterns)]
    composites = {r["prorettype"]: types.rows[r["prorettype"]]["typrelid"] for r in rows
                  if types.rows[r["prorettype"]]["typtype"] == "c"}
    columns = await _columns_of(conn, list(set(composites.values())), types)
    found: dict[str, list[Function]] = {}
    for r in rows:
        qualified = f"{r['schema']}.{r['name']}"
        try:
            function = _function(r, types, columns.get(composites.get(r["prorettype"], 0)))
        except _Unfit as why:
            log.debug("function %s (oid %d) is not exposed: %s", qualified, r["oid"], why)
            continue
        found.setdefault(qualified, []).append(function)
    return {name: tuple(overloads) for name, overloads in found.items()}


class _Unfit(Exception):
    """Why a function matched by expose_functions cannot be called from a request."""


def _function(r: asyncpg.Record, types: _Types,
              composite: dict[str, Column] | None) -> Function:
    """The ``Function`` of a _FUNCTIONS_SQL row, or ``_Unfit``."""
    count = len(r["arg_types"])
    modes = list(r["arg_modes"]) or ["i"] * count
    names = list(r["arg_names"]) or [""] * count
    inputs: list[tuple[str, int, str]] = []
    outputs: list[Column] = []
    for name, oid, type_sql, mode in zip(names, r["arg_types"], r["arg_types_sql"], modes,
                                         strict=True):
        if mode == "v":
            raise _Unfit(f"VARIADIC argument {name or '(unnamed)'}")
        if not name:
            raise _Unfit("an argument without a name")
        if mode in ("i", "b"):
            if types.rows[oid]["typtype"] == "p":
                raise _Unfit(f"argument {name} has the pseudo-type {type_sql}")
            inputs.append((name, oid, type_sql))
        if mode in ("o", "b", "t"):
            outputs.append(types.column(name, oid, type_sql))
    first_default = len(inputs) - r["pronargdefaults"]
    arguments = tuple(types.column(name, oid, type_sql, has_default=i >= first_default)
                      for i, (name, oid, type_sql) in enumerate(inputs))
    returned = types.rows[r["prorettype"]]
    if outputs:
        result = tuple(outputs)
    elif r["returns"] == "void":
        result = ()
    elif composite is not None:
        result = tuple(composite.values())
    elif returned["typtype"] == "p":
        raise _Unfit(f"it returns {r['returns']}, whose columns are not known")
    else:  # a scalar: SELECT * FROM fn() names its one column after the function
        result = (types.column(r["name"], r["prorettype"], r["returns"]),)
    return Function(schema=r["schema"], name=r["name"], arguments=arguments,
                    returns=("SETOF " if r["returns_set"] else "") + r["returns"],
                    returns_set=r["returns_set"], result_columns=result, oid=r["oid"])


def _exposed(qualified: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(qualified, p) for p in patterns)


def _configure(table: Table, settings: Settings, kinds: Mapping[str, bool]) -> Table:
    """Apply the conventions (columns "version" and "deleted_at") and per-table overrides."""
    conf = settings.tables.get(table.qualified_name)
    version = conf.version_column if conf and conf.version_column is not None else "version"
    deleted = (conf.soft_delete_column if conf and conf.soft_delete_column is not None
               else "deleted_at")
    if version and version in table.columns and table.columns[version].family in ("int2", "int4",
                                                                                   "int8"):
        table.version_column = version
    elif conf and conf.version_column:
        raise ValueError(f"{table.qualified_name}: version column {version!r} is not an integer "
                         "column of the table")
    if deleted and deleted in table.columns and table.columns[deleted].family in ("timestamptz",
                                                                                  "timestamp"):
        table.soft_delete_column = deleted
    elif conf and conf.soft_delete_column:
        raise ValueError(f"{table.qualified_name}: soft-delete column {deleted!r} is not a "
                         "timestamp column of the table")
    if conf and conf.operations is not None:
        unknown = set(conf.operations) - set(kinds)
        if unknown:
            raise ValueError(f"{table.qualified_name}: unknown operation kinds {sorted(unknown)} "
                             f"(known: {', '.join(sorted(kinds))})")
        table.operations &= frozenset(conf.operations)
    return table
