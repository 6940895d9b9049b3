"""Bound parameters: client values prepared for a column, references resolved at run time.

Values are coerced while the batch is validated, so bad input fails before anything runs. A
value that contains a reference cannot be coerced until the operation it refers to has run; it
stays ``Deferred`` and ``finalize`` coerces it then. Every value reaches PostgreSQL as a bound
parameter; SQL text holds only placeholders and identifiers from the catalog.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from batchd.catalog import Column
from batchd.errors import DependencyFailed, InvalidArgument
from batchd.values import CoercionError, Ref, coerce


@dataclass(frozen=True, slots=True)
class Deferred:
    """A value holding references; coerced once they are resolved."""

    raw: Any
    column: Column
    path: str
    what: str = "column"  # what the column stands for, in errors ("argument" of a function)


def find_refs(value: Any) -> list[Ref]:
    if isinstance(value, Ref):
        return [value]
    if isinstance(value, list):
        return [r for v in value for r in find_refs(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in find_refs(v)]
    return []


def prepare(value: Any, column: Column, path: str, refs: list[Ref], what: str = "column",
            ) -> Any:
    """Coerce now, or defer when the value contains references (added to ``refs``: the
    planner orders the operations by them and checks that each points at something).
    ``what`` the column is, in errors: a table's "column", or a function's "argument"."""
    found = find_refs(value)
    if found:
        refs.extend(found)
        return Deferred(value, column, path, what)
    try:
        return coerce(value, column)
    except CoercionError as exc:
        raise InvalidArgument.field(path, f"{exc} ({what} {column.name}, {column.type_sql})") \
            from None


class HasRows(Protocol):
    """What an operation produced, as far as references go (batchd.kinds.base.Output)."""

    rows: Sequence[Mapping[str, Any]]


_O = TypeVar("_O", bound=HasRows)


class Results(Mapping[str, Sequence[Mapping[str, Any]]], Generic[_O]):
    """The one store of what the operations that ran produced: their outputs by operation id
    (``outputs``: what the answer is built from) and, read as a mapping, their rows (what
    references resolve against). ``within``: a store whose operations are visible too, and
    that ``keep`` adds these to once they are kept (an INDEPENDENT unit's own store reads the
    batch's; what a unit ran joins the batch's when its transaction commits)."""

    def __init__(self, within: Results[_O] | None = None) -> None:
        self.outputs: dict[str, _O] = {}
        self._within = within

    def __getitem__(self, key: str) -> Sequence[Mapping[str, Any]]:
        found = self.outputs.get(key)
        if found is not None:
            return found.rows
        if self._within is not None:
            return self._within[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        yield from self.outputs
        if self._within is not None:
            yield from (k for k in self._within if k not in self.outputs)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def record(self, operation_id: str, output: _O) -> None:
        self.outputs[operation_id] = output

    def keep(self) -> None:
        """Add what ran here to the enclosing store (``within``)."""
        assert self._within is not None
        self._within.outputs.update(self.outputs)

    def resolve(self, value: Any, path: str) -> Any:
        if isinstance(value, Ref):
            rows = self.get(value.operation)
            if rows is None:
                raise DependencyFailed(f"{path}: reference {value}: operation "
                                       f'"{value.operation}" has no result')
            if value.row >= len(rows):
                raise DependencyFailed(
                    f'{path}: reference {value}: operation "{value.operation}" returned '
                    f"{len(rows)} row(s)")
            row = rows[value.row]
            try:
                return row[value.column]
            except KeyError:
                raise DependencyFailed(f"{path}: reference {value}: no column "
                                       f'"{value.column}" in the result') from None
        if isinstance(value, list):
            return [self.resolve(v, path) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve(v, path) for k, v in value.items()}
        return value

    def finalize(self, value: Any) -> Any:
        """The value to bind: prepared values as they are, deferred ones resolved and coerced."""
        if type(value) is not Deferred:
            return value
        resolved = self.resolve(value.raw, value.path)
        try:
            return coerce(resolved, value.column)
        except CoercionError as exc:
            raise InvalidArgument.field(
                value.path,
                f"{exc} ({value.what} {value.column.name}, {value.column.type_sql})") \
                from None

    def finalize_all(self, values: list[Any]) -> list[Any]:
        return [self.finalize(v) for v in values]


class SqlParams:
    """Collects parameters for one statement and hands out their placeholders."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any, cast: str | None = None) -> str:
        self.values.append(value)
        placeholder = f"${len(self.values)}"
        return f"{placeholder}::{cast}" if cast else placeholder
