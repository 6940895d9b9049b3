"""The exposed tables, read from PostgreSQL's catalog: the only source of identifiers in SQL.

Client strings are never pasted into SQL. A table or column name from a request is looked up
here by exact match, and the SQL uses the catalog's own name, quoted. Names longer than 63
bytes or containing NUL are rejected before the lookup: PostgreSQL would silently truncate a
long name, possibly onto another, existing table.

Tables without a primary key are exposed for insert (and stream ingest) only: keys address
rows for get/update/delete and make query pages stable.
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import asyncpg

from batchd.config import Settings
from batchd.errors import InvalidArgument

log = logging.getLogger(__name__)

MAX_IDENTIFIER_BYTES = 63
INTERNAL_SCHEMA = "batchd"  # where batchd keeps its own tables; never exposed


def quote_ident(name: str) -> str:
    """Quote a catalog name for SQL (only ever called on names read from the catalog)."""
    return '"' + name.replace('"', '""') + '"'


def check_identifier(name: str, field_path: str) -> None:
    if not name:
        raise InvalidArgument.field(field_path, "must not be empty")
    if "\x00" in name:
        raise InvalidArgument.field(field_path, "must not contain NUL bytes")
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise InvalidArgument.field(
            field_path, f"is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES}-byte identifier limit")


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    sql: str  # quoted identifier
    type_sql: str  # format_type(), e.g. numeric(12,2), text[]: for people
    # The type without modifiers, for casting parameters: an explicit cast to varchar(10)
    # would silently truncate, where assignment to the column raises an error.
    cast_sql: str
    kind: str  # coercion kind of the value (element kind for arrays), see batchd.values
    is_array: bool
    nullable: bool
    has_default: bool
    generated: bool  # GENERATED ALWAYS AS (...) STORED: never written by clients


@dataclass(slots=True)
class Table:
    schema: str
    name: str
    columns: dict[str, Column]
    primary_key: tuple[str, ...]
    version_column: str | None = None
    soft_delete_column: str | None = None
    # The operation kinds allowed on it (batchd.kinds.registry.TABLE_KINDS, maybe narrowed).
    operations: frozenset[str] = frozenset()
    sql: str = field(init=False)

    def __post_init__(self) -> None:
        self.sql = f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str, field_path: str) -> Column:
        check_identifier(name, field_path)
        col = self.columns.get(name)
        if col is None:
            error = InvalidArgument.field(
                field_path, f'table "{self.qualified_name}" has no column "{name}"')
            error.message += did_you_mean(name, self.columns)
            raise error
        return col

    def require(self, kind: str, field_path: str) -> None:
        if kind not in self.operations:
            raise InvalidArgument.field(
                field_path, f'operation "{kind}" is not allowed on table "{self.qualified_name}"')


# Coercion kinds by PostgreSQL type name; anything else is passed through as given.
_KINDS = {
    "int2": "int2", "int4": "int4", "int8": "int8", "numeric": "numeric",
    "float4": "float", "float8": "float", "bool": "bool",
    "text": "text", "varchar": "text", "bpchar": "text", "name": "text", "citext": "text",
    "uuid": "uuid", "date": "date", "timestamptz": "timestamptz", "timestamp": "timestamp",
    "time": "time", "timetz": "timetz", "interval": "interval", "bytea": "bytea",
    "json": "json", "jsonb": "json",
}

_TYPES_SQL = """
SELECT oid, typname, typtype::text, typbasetype, typelem, typcategory::text FROM pg_type
"""
_TABLES_SQL = """
SELECT c.oid, n.nspname AS schema, c.relname AS name
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
_PRIMARY_KEYS_SQL = """
SELECT con.conrelid, array_agg(a.attname ORDER BY k.ord) AS columns
FROM pg_constraint con
CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
WHERE con.contype = 'p' AND con.conrelid = ANY($1::oid[])
GROUP BY con.conrelid
"""


class Catalog:
    """Exposed tables by name; ``table()`` is the only way a request reaches one."""

    def __init__(self, tables: Mapping[str, Table], default_schema: str,
                 suggest: bool = True) -> None:
        self.tables = dict(tables)
        self.default_schema = default_schema
        # Name close tables in errors: only when authentication is off, since a caller's
        # scopes may not cover the table it would be told about.
        self.suggest = suggest
        # Names ``table`` resolved before, as written: every operation names its table, and
        # most name the same few. Only names that resolved (bounded by the tables' count,
        # two spellings each), so an error is always worked out and worded afresh.
        self._resolved: dict[str, Table] = {}

    def table(self, name: str, field_path: str) -> Table:
        """Resolve "table" (in the default schema) or "schema.table", exactly."""
        found = self._resolved.get(name)
        if found is not None:
            return found
        check_identifier(name, field_path)
        if "." in name:
            schema, _, bare = name.partition(".")
            check_identifier(schema, field_path)
            check_identifier(bare, field_path)
            table = self.tables.get(name)
        else:
            table = self.tables.get(f"{self.default_schema}.{name}")
        if table is None:
            hint = ""
            if self.suggest:
                short = {q.removeprefix(f"{self.default_schema}."): q for q in self.tables}
                hint = did_you_mean(name, short)
            error = InvalidArgument.field(field_path, f'unknown or not exposed table "{name}"')
            error.message += hint
            raise error
        self._resolved[name] = table
        return table

    @classmethod
    async def load(cls, conn: asyncpg.Connection, settings: Settings,
                   kinds: Mapping[str, bool]) -> Catalog:
        """The exposed tables. ``kinds``: the operation kinds addressed at tables, each with
        whether it works without a primary key (``batchd.kinds.registry.TABLE_KINDS``)."""
        types = {r["oid"]: r for r in await conn.fetch(_TYPES_SQL)}

        def kind_of(oid: int) -> tuple[str, bool]:
            t = types[oid]
            while t["typtype"] == "d":  # domain: coerce as its base type
                t = types[t["typbasetype"]]
            if t["typcategory"] == "A" and t["typelem"]:
                return kind_of(t["typelem"])[0], True
            if t["typtype"] == "e":
                return "text", False
            return _KINDS.get(t["typname"], "other"), False

        candidates = [r for r in await conn.fetch(_TABLES_SQL, INTERNAL_SCHEMA)
                      if _exposed(f"{r['schema']}.{r['name']}", settings.expose)]
        oids = [r["oid"] for r in candidates]
        columns: dict[int, dict[str, Column]] = {oid: {} for oid in oids}
        for r in await conn.fetch(_COLUMNS_SQL, oids):
            kind, is_array = kind_of(r["atttypid"])
            columns[r["attrelid"]][r["attname"]] = Column(
                name=r["attname"], sql=quote_ident(r["attname"]), type_sql=r["type_sql"],
                cast_sql=r["cast_sql"],
                kind=kind, is_array=is_array, nullable=not r["attnotnull"],
                has_default=r["atthasdef"] or r["identity"] or r["generated"],
                generated=r["generated"])
        keys = {r["conrelid"]: tuple(r["columns"]) for r in await conn.fetch(_PRIMARY_KEYS_SQL,
                                                                              oids)}
        tables: dict[str, Table] = {}
        for r in candidates:
            qualified = f"{r['schema']}.{r['name']}"
            key = keys.get(r["oid"], ())
            table = _configure(Table(schema=r["schema"], name=r["name"],
                                     columns=columns[r["oid"]], primary_key=key,
                                     operations=frozenset(k for k, keyless in kinds.items()
                                                          if key or keyless)),
                               settings, kinds)
            tables[qualified] = table
        log.info("catalog: %d tables exposed", len(tables))
        return cls(tables, settings.default_schema, suggest=not settings.auth_enabled)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """'; did you mean "customers"?' for the closest known name, or nothing. (Added to the
    error's message; its field violation keeps the bare description.)"""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f'; did you mean "{close[0]}"?' if close else ""


def _exposed(qualified: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(qualified, p) for p in patterns)


def _configure(table: Table, settings: Settings, kinds: Mapping[str, bool]) -> Table:
    """Apply the conventions (columns "version" and "deleted_at") and per-table overrides."""
    conf = settings.tables.get(table.qualified_name)
    version = conf.version_column if conf and conf.version_column is not None else "version"
    deleted = (conf.soft_delete_column if conf and conf.soft_delete_column is not None
               else "deleted_at")
    if version and version in table.columns and table.columns[version].kind in ("int2", "int4",
                                                                                 "int8"):
        table.version_column = version
    elif conf and conf.version_column:
        raise ValueError(f"{table.qualified_name}: version column {version!r} is not an integer "
                         "column of the table")
    if deleted and deleted in table.columns and table.columns[deleted].kind in ("timestamptz",
                                                                                "timestamp"):
        table.soft_delete_column = deleted
    elif conf and conf.soft_delete_column:
        raise ValueError(f"{table.qualified_name}: soft-delete column {deleted!r} is not a "
                         "timestamp column of the table")
    if conf and conf.operations is not None:
        unknown = set(conf.operations) - set(kinds)
        if unknown:
            raise ValueError(f"{table.qualified_name}: unknown operation kinds {sorted(unknown)}")
        table.operations &= frozenset(conf.operations)
    return table
