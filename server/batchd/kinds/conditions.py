"""Nested conditions: a ``FilterGroup`` tree (AND / OR / NOT of filters and groups) as
WHERE-clause text, beside the AND-combined ``filters`` of query, update and delete.

The tree is checked whole before anything runs: every group has a child (NOT exactly one),
groups nest at most ``MAX_DEPTH`` deep, and a ``where`` holds at most ``MAX_NODES`` filters
and groups. Each filter is planned like a plain one (``plan_filter``: catalog identifiers,
values prepared as bound parameters, references collected for the planner), and errors name
the field, e.g. ``operations[0].query.where.groups[1].filters[0].value``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batchd.catalog import Table
from batchd.errors import InvalidArgument
from batchd.kinds.filters import Clause, plan_filter, plan_filters
from batchd.kinds.params import Results, SqlParams
from batchd.v1 import batch_pb2
from batchd.values import Ref

Logic = batch_pb2.FilterGroup.Logic
#: Groups nest at most this deep; ``where`` itself is the first level.
MAX_DEPTH = 8
#: Filters and groups (``where`` itself aside) one ``where`` may hold in all.
MAX_NODES = 100
_JOINERS: dict[int, str] = {Logic.LOGIC_UNSPECIFIED: "AND", Logic.LOGIC_AND: "AND",
                            Logic.LOGIC_OR: "OR"}


@dataclass(frozen=True, slots=True)
class Group:
    """Children combined by AND or OR, or the single child negated (``logic`` "NOT")."""

    logic: str  # "AND" | "OR" | "NOT"
    children: tuple[Clause, ...]

    def sql(self, params: SqlParams, results: Results[Any]) -> str:
        parts = [child.sql(params, results) for child in self.children]
        if self.logic == "NOT":
            return f"(NOT ({parts[0]}))"
        return "(" + f" {self.logic} ".join(parts) + ")"


def plan_selection(table: Table, message: Any, path: str, refs: list[Ref]) -> list[Clause]:
    """The conditions of an operation's ``filters`` and ``where`` (AND-combined): none when
    it has neither (for a query: every row)."""
    clauses: list[Clause] = list(plan_filters(table, message.filters, f"{path}.filters", refs))
    if has_where(message):
        clauses.append(plan_where(table, message.where, f"{path}.where", refs))
    return clauses


def has_where(message: Any) -> bool:
    """Whether ``message.where`` says anything: an empty AND group is the same as none."""
    if not message.HasField("where"):
        return False
    where: batch_pb2.FilterGroup = message.where
    return bool(where.filters or where.groups) or where.logic not in (Logic.LOGIC_UNSPECIFIED,
                                                                      Logic.LOGIC_AND)


def plan_where(table: Table, where: batch_pb2.FilterGroup, path: str,
               refs: list[Ref]) -> Group:
    """The whole tree, its size checked before any filter is planned (so that a huge one
    costs no more than counting to the limit)."""
    _check_shape(where, path, depth=1, budget=[MAX_NODES])
    return _plan_group(table, where, path, refs)


def _check_shape(group: batch_pb2.FilterGroup, path: str, depth: int,
                 budget: list[int]) -> None:
    """Logic, child counts, depth and size, depth first; ``budget`` is what is left of
    MAX_NODES (a list, so that the recursion shares it)."""
    if group.logic not in (*_JOINERS, Logic.LOGIC_NOT):
        raise InvalidArgument.field(f"{path}.logic", f"unknown logic {group.logic} (use "
                                                     "LOGIC_AND, LOGIC_OR or LOGIC_NOT)")
    children = len(group.filters) + len(group.groups)
    name = Logic.Name(group.logic)
    if group.logic == Logic.LOGIC_NOT and children != 1:
        raise InvalidArgument.field(path, f"LOGIC_NOT takes exactly one filter or group, got "
                                          f"{children}")
    if children == 0:
        raise InvalidArgument.field(path, f"{name} needs at least one filter or group")
    budget[0] -= children
    if budget[0] < 0:
        raise InvalidArgument.field(path, f"too many conditions: a where holds at most "
                                          f"{MAX_NODES} filters and groups in all")
    for i, child in enumerate(group.groups):
        child_path = f"{path}.groups[{i}]"
        if depth + 1 > MAX_DEPTH:
            raise InvalidArgument.field(child_path, f"groups nest at most {MAX_DEPTH} deep")
        _check_shape(child, child_path, depth + 1, budget)


def _plan_group(table: Table, group: batch_pb2.FilterGroup, path: str,
                refs: list[Ref]) -> Group:
    children: list[Clause] = [plan_filter(table, f, f"{path}.filters[{i}]", refs)
                              for i, f in enumerate(group.filters)]
    children += [_plan_group(table, g, f"{path}.groups[{i}]", refs)
                 for i, g in enumerate(group.groups)]
    logic = "NOT" if group.logic == Logic.LOGIC_NOT else _JOINERS[group.logic]
    return Group(logic, tuple(children))

