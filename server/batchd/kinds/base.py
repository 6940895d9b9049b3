"""What every operation kind provides, and what it is given.

A kind *plans* an operation (validate it against the catalog, coerce its values, build its
SQL) before anything runs, and *runs* the plan on a connection inside a transaction the
executor owns. Planning is pure and raises ``InvalidArgument``; running raises whatever the
database raises, and the executor translates it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from batchd.catalog import Catalog, Column, Table, qualified
from batchd.config import Settings
from batchd.errors import InvalidArgument
from batchd.kinds.params import Results
from batchd.pgtext import render_any
from batchd.rendering import Renderer, rendered_type, renderer_for, write_value
from batchd.v1 import batch_pb2
from batchd.values import Ref


@dataclass(slots=True)
class Planned:
    """A validated operation, ready to run."""

    kind: str
    spec: Any
    # Columns its result rows will have (for checking references); None: not known in advance.
    output_columns: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class Rendering:
    """How rows of known columns go on the wire: each column's renderer, and the columns with
    their types as a result announces them (``OperationResult.columns``), built once per list
    of columns (``rendering``) and merged into every result that has them."""

    renderers: list[tuple[str, Renderer]]
    # An OperationResult holding only ``columns``: merging it copies them in one call.
    columns: batch_pb2.OperationResult


def _rendering(columns: Sequence[Column]) -> Rendering:
    template = batch_pb2.OperationResult()
    for c in columns:
        template.columns.add(name=c.name, type=c.result_type)
    return Rendering([(c.name, renderer_for(c)) for c in columns], template)


# Renderings by their columns (Column is immutable and compares by value, so a catalog
# reload's equal column finds the same one); bounded, like every cache keyed by requests.
_renderings: dict[tuple[Column, ...], Rendering] = {}


def rendering(columns: Sequence[Column]) -> Rendering:
    """The ``Rendering`` of result rows with these columns, made once."""
    key = tuple(columns)
    found = _renderings.get(key)
    if found is None:
        if len(_renderings) >= 4096:
            _renderings.clear()
        found = _renderings[key] = _rendering(columns)
    return found


NO_ROWS = _rendering(())  # an operation that returns no rows (a void function)


@dataclass(slots=True)
class Output:
    """What an operation produced. ``rows`` keep native values, for references."""

    rows: Sequence[Mapping[str, Any]]
    rendering: Rendering | None = None  # None: render by Python type (custom handlers)
    rows_affected: int = 0
    next_page_token: str = ""
    total_count: int | None = None  # a query's count, when asked for

    def write_rows(self, into: batch_pb2.OperationResult) -> None:
        """Add the rows, rendered, and their columns (when known) to ``into``: each Struct
        built in place, where one built apart would be copied in."""
        rows = into.rows
        if self.rendering is None:
            # Rows of Python values (a custom handler's): each column announces the type its
            # values' class renders as, when all of them (NULLs aside) have one.
            types: dict[str, str | None] = {}
            for row in self.rows:
                fields = rows.add().fields
                for k, v in row.items():
                    name = str(k)
                    write_value(fields[name], render_any(v))
                    if v is not None:
                        found = rendered_type(v)
                        if types.setdefault(name, found) != found:
                            types[name] = None
            columns = into.columns
            for name, type_sql in types.items():
                if type_sql is not None:
                    columns.add(name=name, type=type_sql)
            return
        into.MergeFrom(self.rendering.columns)
        renderers = self.rendering.renderers
        for row in self.rows:
            fields = rows.add().fields
            for name, render in renderers:
                write_value(fields[name], render(row[name]))


@dataclass(slots=True)
class PlanContext:
    catalog: Catalog
    settings: Settings


@dataclass(slots=True)
class RunContext:
    """Given to every running operation (custom handlers see it as their context)."""

    connection: asyncpg.Connection
    operation_id: str
    results: Results[Any]
    catalog: Catalog
    settings: Settings


class Kind:
    """An operation kind: one field of the proto's ``Operation.kind`` oneof, and everything
    batchd needs to know of it. Adding a kind is a subclass in a module of its own, listed in
    ``batchd.kinds.registry``, plus its message in the proto; nothing else names kinds.

    ``plan`` validates an operation against the catalog and coerces its values (pure; raises
    ``InvalidArgument``), adding the references it meets to ``refs``; ``run`` runs the plan on
    the connection of a transaction the executor owns.

    Coalescing (optional): consecutive operations of an ATOMIC batch whose ``coalesce_key``
    is equal (and not None) run as one statement through ``run_together``, each keeping its
    own result. If ``run_together`` raises, the executor rolls back to a savepoint and runs
    them one by one, so that an error names the operation it belongs to.
    """

    name: str = ""
    access: str = "admin"  # the scope verb it needs (batchd.principals): read, write or call
    on_table: bool = True  # addressed at a catalog table (field "table"); else a call
    keyless: bool = False  # allowed on a table without a primary key

    def scope_target(self, message: Any, default_schema: str) -> tuple[str, str]:
        """What scopes are matched against (the table as written, qualified with
        ``default_schema``), and how a denial names it."""
        target = qualified(str(message.table), default_schema)
        return target, f'table "{target}"'

    def table(self, message: Any, path: str, ctx: PlanContext) -> Table:
        """The catalog table ``message`` names, if this kind is allowed on it (else
        INVALID_ARGUMENT naming the field)."""
        table = ctx.catalog.table(message.table, f"{path}.table")
        table.require(self.name, path)
        return table

    def plan(self, message: Any, path: str, ctx: PlanContext, refs: list[Ref]) -> Planned:
        raise NotImplementedError

    async def run(self, spec: Any, ctx: RunContext) -> Output:
        raise NotImplementedError

    def coalesce_key(self, spec: Any) -> Hashable | None:
        return None

    async def run_together(self, specs: list[Any], ctx: RunContext) -> list[Output]:
        raise NotImplementedError


def columns_list(table: Table, names: Sequence[str], path: str,
                 default: Callable[[], list[Column]]) -> list[Column]:
    """Resolve a list of column names; ["*"] means all, [] means ``default()``."""
    if not names:
        return default()
    if list(names) == ["*"]:
        return list(table.columns.values())
    seen: set[str] = set()
    columns = []
    for i, name in enumerate(names):
        col = table.column(name, f"{path}[{i}]")
        if name in seen:
            raise InvalidArgument.field(f"{path}[{i}]", f'column "{name}" is listed twice')
        seen.add(name)
        columns.append(col)
    return columns


def key_columns(table: Table) -> list[Column]:
    return [table.columns[name] for name in table.primary_key]


def select_list(columns: Sequence[Column]) -> str:
    return ", ".join(c.sql for c in columns)
