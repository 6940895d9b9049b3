"""The exposed tables and functions, by name: the only source of identifiers in SQL.

Client strings are never pasted into SQL. A table or column name from a request is looked up
here by exact match, and the SQL uses the catalog's own name, quoted. Names longer than 63
bytes or containing NUL are rejected before the lookup: PostgreSQL would silently truncate a
long name, possibly onto another, existing table.

What is exposed is read from PostgreSQL's catalog by batchd.introspection (``load_catalog``),
at start and on every reload.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from batchd.errors import InvalidArgument
from batchd.pgtext import quote_ident

MAX_IDENTIFIER_BYTES = 63
_T = TypeVar("_T")


def qualified(name: str, default_schema: str) -> str:
    """A table's or function's name as the catalog resolves it: "t" is in the default schema,
    "s.t" is taken as written. (What scopes are matched against.)"""
    return name if "." in name else f"{default_schema}.{name}"


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
    # The value family its values are coerced and rendered as (batchd.values,
    # batchd.rendering): int8, numeric, text, json... (of its elements, for an array).
    family: str
    is_array: bool
    nullable: bool
    has_default: bool
    generated: bool  # GENERATED ALWAYS AS (...) STORED: never written by clients
    # The type its values are encoded by, as results announce it (ResultColumn.type): a
    # domain's base type (format_type() with the domain's modifier; "[]" for an array of
    # domains); empty: ``type_sql`` itself.
    value_type: str = ""

    @property
    def result_type(self) -> str:
        return self.value_type or self.type_sql


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
    oid: int = 0  # pg_class's (batchd.grants asks PostgreSQL about it by oid)
    # Nothing runs on a write but the write itself: an ordinary table without triggers of its
    # own (foreign keys' are PostgreSQL's), row-level security or rules. Its inserts may share
    # one statement with others' (batchd.batch.chain): nothing could observe that they did.
    plain: bool = False
    # Its foreign keys: the table each points at (oid), and its own columns that point.
    foreign_keys: tuple[tuple[int, tuple[str, ...]], ...] = ()
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


@dataclass(frozen=True, slots=True)
class Function:
    """An exposed SQL function; each overload of a name is a Function of its own."""

    schema: str
    name: str
    # Its input arguments (IN and INOUT), in order; ``has_default``: the call may omit it.
    arguments: tuple[Column, ...]
    # format_type() of the return type, with "SETOF " for a set-returning one.
    returns: str
    returns_set: bool
    # The columns of ``SELECT * FROM fn(...)``: its OUT / INOUT / TABLE arguments, the columns
    # of the composite type it returns, or one column named after the function for a scalar.
    # Empty: it returns void.
    result_columns: tuple[Column, ...]
    oid: int = 0  # pg_proc's: tells overloads apart (batchd.grants)

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def sql(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    @property
    def signature(self) -> str:
        """``add_points(a integer, b integer)``: how errors name one overload."""
        return f"{self.name}({', '.join(f'{a.name} {a.type_sql}' for a in self.arguments)})"

    def accepts(self, names: Iterable[str]) -> bool:
        """Whether a call naming exactly ``names`` fits: each is an argument, and every
        argument without a default is among them."""
        given = set(names)
        known = {a.name for a in self.arguments}
        return given <= known and all(a.has_default or a.name in given
                                      for a in self.arguments)




class Catalog:
    """Exposed tables and functions by name; ``table()`` and ``functions_named()`` are the only
    ways a request reaches one."""

    def __init__(self, tables: Mapping[str, Table], default_schema: str,
                 suggest: bool = True,
                 functions: Mapping[str, tuple[Function, ...]] | None = None) -> None:
        self.tables = dict(tables)
        # By qualified name; several for an overloaded name.
        self.functions = dict(functions or {})
        self.default_schema = default_schema
        # Name close tables and functions in errors: only when authentication is off, since a
        # caller's scopes may not cover the one it would be told about.
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
        table = self._lookup("table", self.tables, name, field_path)
        self._resolved[name] = table
        return table

    def functions_named(self, name: str, field_path: str) -> tuple[Function, ...]:
        """The exposed functions (overloads) called "name" (in the default schema) or
        "schema.name", exactly; at least one, else INVALID_ARGUMENT."""
        return self._lookup("function", self.functions, name, field_path)

    def _lookup(self, what: str, known: Mapping[str, _T], name: str, field_path: str) -> _T:
        check_identifier(name, field_path)
        if "." in name:
            schema, _, bare = name.partition(".")
            if not schema or not bare:  # ".x", "../x", "x.": say so, not "must not be empty"
                empty = "before" if not schema else "after"
                raise InvalidArgument.field(
                    field_path, f'"{name}" is not a {what} name: the part {empty} its first "." '
                                f'is empty; write "name" (in schema "{self.default_schema}") '
                                'or "schema.name"')
            check_identifier(schema, field_path)
            check_identifier(bare, field_path)
            found = known.get(name)
        else:
            found = known.get(f"{self.default_schema}.{name}")
        if found is None:
            hint = ""
            if self.suggest:
                short = {q.removeprefix(f"{self.default_schema}."): q for q in known}
                hint = did_you_mean(name, short)
            error = InvalidArgument.field(field_path, f'unknown or not exposed {what} "{name}"')
            error.message += hint
            raise error
        return found


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """'; did you mean "customers"?' for the closest known name, or nothing. (Added to the
    error's message; its field violation keeps the bare description.)"""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f'; did you mean "{close[0]}"?' if close else ""
