"""What every operation kind provides, and what it is given.

A kind *plans* an operation (validate it against the catalog, coerce its values, build its
SQL) before anything runs, and *runs* the plan on a connection inside a transaction the
executor owns. Planning is pure and raises ``InvalidArgument``; running raises whatever the
database raises, and the executor translates it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from google.protobuf import struct_pb2

from batchd.catalog import Catalog, Column, Table
from batchd.config import Settings
from batchd.errors import InvalidArgument
from batchd.kinds.params import Results
from batchd.values import Renderer, render_any, renderer_for


@dataclass(slots=True)
class Planned:
    """A validated operation, ready to run."""

    kind: str
    spec: Any
    # Columns its result rows will have (for checking references); None: not known in advance.
    output_columns: frozenset[str] | None


@dataclass(slots=True)
class Output:
    """What an operation produced. ``rows`` keep native values, for references."""

    rows: Sequence[Mapping[str, Any]]
    renderers: list[tuple[str, Renderer]] | None = None  # None: render by Python type
    rows_affected: int = 0
    next_page_token: str = ""

    def rendered(self) -> list[struct_pb2.Struct]:
        out = []
        for row in self.rows:
            s = struct_pb2.Struct()
            if self.renderers is None:
                s.update({str(k): render_any(v) for k, v in row.items()})
            else:
                s.update({name: render(row[name]) for name, render in self.renderers})
            out.append(s)
        return out


@dataclass(slots=True)
class PlanContext:
    catalog: Catalog
    settings: Settings
    handler_names: frozenset[str] = field(default_factory=frozenset)


@dataclass(slots=True)
class RunContext:
    """Given to every running operation (custom handlers see it as their context)."""

    connection: asyncpg.Connection
    operation_id: str
    results: Results
    catalog: Catalog
    settings: Settings


class Kind(Protocol):
    name: str

    def plan(self, message: Any, path: str, ctx: PlanContext) -> Planned: ...

    async def run(self, spec: Any, ctx: RunContext) -> Output: ...


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


def renderers(columns: Sequence[Column]) -> list[tuple[str, Renderer]]:
    return [(c.name, renderer_for(c)) for c in columns]


def select_list(columns: Sequence[Column]) -> str:
    return ", ".join(c.sql for c in columns)
