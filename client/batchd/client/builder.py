"""Building a batch in Python: operations, references between them, and exact values.

    b = Batch()
    customer = b.insert("customers", {"name": "Ada", "email": "ada@example.com"})
    order = b.insert("orders", {"customer_id": customer.ref("id"), "total": Decimal("69.89")},
                     returning=["id", "version"])
    b.insert("order_items", {"order_id": order.ref("id"), "product_id": 1, "quantity": 1,
                             "unit_price": "49.90"})
    b.update("orders", filters=[("status", "eq", "new")], set={"status": "paid"})
    request = b.to_request(mode="atomic")

Every method returns an ``OpRef``: its ``.id`` names the operation in results and errors, and
``.ref("column")`` / ``.ref("column", row=2)`` is the ``{"$ref": ...}`` value that stands for
that column of the operation's returned row (see the comment of ``Operation`` in
``batch.proto``). Ids are ``op1``, ``op2``, ... unless given.

Python values become ``google.protobuf.Value`` by the rules of ``to_value``
(batchd.client.proto_values: exact types travel as strings, as the server expects). Filters are
``(column, op, value)`` tuples with the operator's name (``"eq"``, ``"in"``, ``"is_null"``,
``"like"``, ``"ilike"``, ...) or symbol (``"="``, ``"!="``, ``"<"``, ``"<="``, ``">"``,
``">="``), or a mapping ``{column: value}`` meaning equality on each. ``where=`` takes nested
groups made with ``all_of``, ``any_of`` and ``not_``, whose members are filters or groups:

    b.query("events", where=any_of(("kind", "ilike", "b%"),
                                   all_of(("score", ">=", 5), not_(("kind", "=", "view")))),
            count=True)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from batchd.client.proto_values import to_struct, to_value
from batchd.v1 import batch_pb2

__all__ = ["Batch", "ConditionSpec", "FilterSpec", "OnConflictSpec", "OpRef", "all_of",
           "any_of", "isolation_name", "mode_name", "not_", "to_struct", "to_value"]

#: ``(column, op, value)``; a ``batch_pb2.Filter`` is passed through.
FilterSpec = tuple[str, str, Any] | batch_pb2.Filter
#: A member of a ``where`` group: a filter, or a group (``all_of``, ``any_of``, ``not_``).
ConditionSpec = FilterSpec | batch_pb2.FilterGroup
#: ``"error"`` (default), ``"do_nothing"``, ``"update"`` (every inserted non-conflict column),
#: ``("update", [columns])``, or a ``batch_pb2.OnConflict`` for full control.
OnConflictSpec = str | tuple[str, Sequence[str]] | batch_pb2.OnConflict

_OPERATORS = {
    "eq": "EQ", "=": "EQ", "==": "EQ", "ne": "NE", "!=": "NE", "<>": "NE",
    "lt": "LT", "<": "LT", "le": "LE", "<=": "LE", "gt": "GT", ">": "GT", "ge": "GE", ">=": "GE",
    "in": "IN", "is_null": "IS_NULL", "like": "LIKE", "ilike": "ILIKE",
}


class OpRef:
    """A handle on an operation added to a ``Batch``: its id, and references to its rows."""

    __slots__ = ("id", "kind")

    def __init__(self, op_id: str, kind: str) -> None:
        self.id = op_id
        self.kind = kind

    def ref(self, column: str, row: int = 0) -> dict[str, str]:
        """``{"$ref": "id.column"}`` (row 0) or ``{"$ref": "id.N.column"}``: the value of
        ``column`` in row ``row`` of what this operation returns. Using it makes the referring
        operation depend on this one."""
        if row < 0:
            raise ValueError("row must be >= 0")
        return {"$ref": f"{self.id}.{column}" if row == 0 else f"{self.id}.{row}.{column}"}

    def __repr__(self) -> str:
        return f"OpRef({self.id!r}, {self.kind!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OpRef) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


def _filters(filters: Iterable[FilterSpec] | Mapping[str, Any] | None) -> list[batch_pb2.Filter]:
    if filters is None:
        return []
    if isinstance(filters, Mapping):
        filters = [(column, "eq", value) for column, value in filters.items()]
    out = []
    for spec in filters:
        if isinstance(spec, batch_pb2.Filter):
            out.append(spec)
            continue
        if not (isinstance(spec, tuple) and len(spec) == 3):
            raise TypeError(f"a filter is (column, op, value), got {spec!r}")
        column, op, value = spec
        name = _OPERATORS.get(str(op).lower().removeprefix("operator_"))
        if name is None:
            raise ValueError(f"unknown filter operator {op!r}; use one of "
                             f"{', '.join(sorted(k for k in _OPERATORS if k.isalpha()))} "
                             "or =, !=, <, <=, >, >=")
        out.append(batch_pb2.Filter(column=column, op=f"OPERATOR_{name}",
                                    value=to_value(value)))
    return out


def all_of(*conditions: ConditionSpec) -> batch_pb2.FilterGroup:
    """Every condition holds (SQL AND)."""
    return _group(batch_pb2.FilterGroup.LOGIC_AND, conditions)


def any_of(*conditions: ConditionSpec) -> batch_pb2.FilterGroup:
    """At least one condition holds (SQL OR)."""
    return _group(batch_pb2.FilterGroup.LOGIC_OR, conditions)


def not_(condition: ConditionSpec) -> batch_pb2.FilterGroup:
    """The condition does not hold (SQL NOT: a NULL compared is neither true nor false)."""
    return _group(batch_pb2.FilterGroup.LOGIC_NOT, (condition,))


def _group(logic: batch_pb2.FilterGroup.Logic,
           conditions: Sequence[ConditionSpec]) -> batch_pb2.FilterGroup:
    group = batch_pb2.FilterGroup(logic=logic)
    for condition in conditions:
        if isinstance(condition, batch_pb2.FilterGroup):
            group.groups.append(condition)
        else:
            group.filters.extend(_filters([condition]))
    return group


def _order_by(order_by: Iterable[str | batch_pb2.OrderBy] | None) -> list[batch_pb2.OrderBy]:
    """``"total"`` ascending, ``"-total"`` descending."""
    out = []
    for item in order_by or ():
        if isinstance(item, batch_pb2.OrderBy):
            out.append(item)
        elif item.startswith("-"):
            out.append(batch_pb2.OrderBy(column=item[1:], descending=True))
        else:
            out.append(batch_pb2.OrderBy(column=item))
    return out


def on_conflict_message(spec: OnConflictSpec | None,
                        conflict_columns: Sequence[str]) -> batch_pb2.OnConflict | None:
    """An insert's (or an ingest's) ``on_conflict`` as the proto message; None: none."""
    if isinstance(spec, batch_pb2.OnConflict):
        return spec
    update_columns: Sequence[str] = ()
    if isinstance(spec, tuple):
        spec, update_columns = spec
        if isinstance(update_columns, str):
            raise TypeError('on_conflict=("update", [columns]) takes a list of columns')
    action = {None: "ACTION_UNSPECIFIED", "error": "ACTION_ERROR",
              "do_nothing": "ACTION_DO_NOTHING", "update": "ACTION_UPDATE"}.get(spec)
    if action is None or (update_columns and action != "ACTION_UPDATE"):
        raise ValueError(f"on_conflict must be 'error', 'do_nothing', 'update' or "
                         f"('update', [columns]), got {spec!r}")
    if action in ("ACTION_UNSPECIFIED", "ACTION_ERROR") and not conflict_columns:
        return None
    return batch_pb2.OnConflict(action=action,
                                conflict_columns=conflict_columns,
                                update_columns=update_columns)


def mode_name(mode: str | int) -> str:
    """``"atomic"`` / ``"independent"`` (or the enum's own name or number)."""
    return _enum_name(batch_pb2.Mode, "MODE_", mode)


def isolation_name(isolation: str | int | None) -> str:
    """``"read_committed"`` / ``"repeatable_read"`` / ``"serializable"``; None: the server's."""
    if isolation is None:
        return "ISOLATION_LEVEL_UNSPECIFIED"
    return _enum_name(batch_pb2.IsolationLevel, "ISOLATION_LEVEL_", isolation)


def _enum_name(enum: Any, prefix: str, value: str | int) -> str:
    """The enum value's full name, from a short name in any case, a full name or a number."""
    if isinstance(value, int):
        return str(enum.Name(value))  # ValueError for an unknown number
    name = value.upper().replace(" ", "_").replace("-", "_")
    name = name if name.startswith(prefix) else prefix + name
    if name in enum.keys():
        return name
    choices = [n.removeprefix(prefix).lower() for n in enum.keys()
               if not n.endswith("UNSPECIFIED")]
    raise ValueError(f"{value!r} is not one of {', '.join(choices)}")


class Batch:
    """An ordered list of operations, made into a ``BatchExecuteRequest`` by ``to_request``.

    In ATOMIC mode operations run in the order they were added, so add an operation before
    the ones that reference it. ``depends_on`` (OpRefs or ids) orders operations explicitly
    where no reference does.
    """

    def __init__(self) -> None:
        self._operations: list[batch_pb2.Operation] = []
        self._ids: set[str] = set()
        self._group: str | None = None

    @contextmanager
    def group(self, name: str) -> Iterator[None]:
        """Operations added inside the block form the group ``name``: in an INDEPENDENT batch
        they commit or roll back together, each keeping its own outcome
        (``Operation.group``)::

            for i, order in enumerate(orders):
                with b.group(f"order{i}"):
                    o = b.insert("orders", order, returning=["id"])
                    b.insert("order_items", [{**item, "order_id": o.ref("id")}
                                             for item in order_items[i]])
        """
        if self._group is not None:
            raise ValueError(f"groups do not nest (already in group {self._group!r})")
        self._group = name
        try:
            yield
        finally:
            self._group = None

    def __len__(self) -> int:
        return len(self._operations)

    @property
    def operations(self) -> list[batch_pb2.Operation]:
        return list(self._operations)

    def insert(self, table: str, rows: Mapping[str, Any] | Iterable[Mapping[str, Any]], *,
               returning: Sequence[str] | None = None,
               on_conflict: OnConflictSpec | None = None, conflict_columns: Sequence[str] = (),
               id: str | None = None, depends_on: Iterable[OpRef | str] = ()) -> OpRef:
        """Inserts one row (a mapping) or many (a list of mappings with the same columns).
        ``returning``: columns to return (default: the primary key; ``["*"]``: all).
        ``on_conflict``: ``"do_nothing"``, ``"update"`` or ``("update", [columns])`` on a
        conflict over ``conflict_columns`` (default: the primary key)."""
        row_list = [rows] if isinstance(rows, Mapping) else list(rows)
        op = batch_pb2.InsertOperation(table=table, rows=[to_struct(r) for r in row_list],
                                       returning=returning or ())
        conflict = on_conflict_message(on_conflict, conflict_columns)
        if conflict is not None:
            op.on_conflict.CopyFrom(conflict)
        return self._add("insert", op, id, depends_on)

    def get(self, table: str, key: Mapping[str, Any], columns: Sequence[str] | None = None, *,
            include_deleted: bool = False, id: str | None = None,
            depends_on: Iterable[OpRef | str] = ()) -> OpRef:
        """Reads one row by its full primary key, e.g. ``{"id": 42}`` (NOT_FOUND if none)."""
        op = batch_pb2.GetOperation(table=table, key=to_struct(key), columns=columns or (),
                                    include_deleted=include_deleted)
        return self._add("get", op, id, depends_on)

    def query(self, table: str, filters: Iterable[FilterSpec] | Mapping[str, Any] | None = None,
              *, order_by: Iterable[str | batch_pb2.OrderBy] | None = None,
              limit: int | None = None, page_token: str | None = None,
              columns: Sequence[str] | None = None, include_deleted: bool = False,
              where: batch_pb2.FilterGroup | None = None, count: bool = False,
              id: str | None = None, depends_on: Iterable[OpRef | str] = ()) -> OpRef:
        """Reads one page of rows matching all ``filters`` and ``where`` (``any_of``, ...).
        ``order_by``: column names, ``"-col"`` for descending. ``page_token``: the previous
        page's ``next_page_token``. ``count``: the outcome's ``total_count`` is the number of
        matching rows on all pages."""
        op = batch_pb2.QueryOperation(table=table, filters=_filters(filters),
                                      order_by=_order_by(order_by), limit=limit or 0,
                                      page_token=page_token or "", columns=columns or (),
                                      include_deleted=include_deleted, where=where, count=count)
        return self._add("query", op, id, depends_on)

    def update(self, table: str, *, key: Mapping[str, Any] | None = None,
               filters: Iterable[FilterSpec] | Mapping[str, Any] | None = None,
               set: Mapping[str, Any], expected_version: int | None = None,
               returning: Sequence[str] | None = None,
               where: batch_pb2.FilterGroup | None = None, id: str | None = None,
               depends_on: Iterable[OpRef | str] = ()) -> OpRef:
        """Sets columns on the row with ``key`` or on the rows matching ``filters`` and / or
        ``where`` (a key or conditions, not both). ``expected_version``: optimistic locking
        (ABORTED on mismatch)."""
        op = batch_pb2.UpdateOperation(table=table, filters=_filters(filters), set=to_struct(set),
                                       returning=returning or (), where=where)
        self._select(op, key, filters, where, expected_version)
        return self._add("update", op, id, depends_on)

    def delete(self, table: str, *, key: Mapping[str, Any] | None = None,
               filters: Iterable[FilterSpec] | Mapping[str, Any] | None = None,
               expected_version: int | None = None, returning: Sequence[str] | None = None,
               where: batch_pb2.FilterGroup | None = None,
               id: str | None = None, depends_on: Iterable[OpRef | str] = ()) -> OpRef:
        """Deletes (soft-deletes, where the table has the column) the row with ``key`` or the
        rows matching ``filters`` and / or ``where`` (a key or conditions, not both)."""
        op = batch_pb2.DeleteOperation(table=table, filters=_filters(filters),
                                       returning=returning or (), where=where)
        self._select(op, key, filters, where, expected_version)
        return self._add("delete", op, id, depends_on)

    def call(self, handler: str, args: Mapping[str, Any] | None = None, *,
             id: str | None = None, depends_on: Iterable[OpRef | str] = ()) -> OpRef:
        """Calls the custom handler registered on the server as ``handler``."""
        op = batch_pb2.CallOperation(handler=handler, args=to_struct(args or {}))
        return self._add("call", op, id, depends_on)

    def function(self, name: str, args: Mapping[str, Any] | None = None, *,
                 id: str | None = None, depends_on: Iterable[OpRef | str] = ()) -> OpRef:
        """Calls the SQL function ``name`` ("fn" in the default schema, or "schema.fn") the
        server exposes, with ``args`` by name; the server coerces each by its argument's
        type. Its rows are the function's (a scalar's one column is named after it)."""
        op = batch_pb2.CallOperation(function=name, args=to_struct(args or {}))
        return self._add("call", op, id, depends_on)

    def to_request(self, *, mode: str | int = "atomic", validate_only: bool = False,
                   isolation: str | int | None = None, read_only: bool = False,
                   request_id: str | None = None) -> batch_pb2.BatchExecuteRequest:
        """The request: ``mode`` ``"atomic"`` (one transaction) or ``"independent"``;
        ``isolation`` ``"read_committed"``, ``"repeatable_read"``, ``"serializable"`` or None
        (the server's default); ``request_id`` makes retries safe: the server answers a
        retry with the stored response instead of running it again."""
        return batch_pb2.BatchExecuteRequest(
            operations=self._operations, mode=mode_name(mode), validate_only=validate_only,
            isolation=isolation_name(isolation), read_only=read_only,
            request_id=request_id or "")

    @staticmethod
    def _select(op: batch_pb2.UpdateOperation | batch_pb2.DeleteOperation,
                key: Mapping[str, Any] | None, filters: object,
                where: batch_pb2.FilterGroup | None, expected_version: int | None) -> None:
        if (key is None) == (filters is None and where is None):
            raise ValueError("give exactly one of key= and filters= (and / or where=)")
        if key is not None:
            op.key.CopyFrom(to_struct(key))
        if expected_version is not None:
            op.expected_version = expected_version

    def _add(self, kind: str, op: Any, op_id: str | None,
             depends_on: Iterable[OpRef | str]) -> OpRef:
        if op_id is None:
            n = len(self._operations) + 1
            while f"op{n}" in self._ids:
                n += 1
            op_id = f"op{n}"
        elif op_id in self._ids:
            raise ValueError(f"operation id {op_id!r} is already used in this batch")
        deps = [d.id if isinstance(d, OpRef) else d for d in depends_on]
        operation = batch_pb2.Operation(id=op_id, depends_on=deps, group=self._group or "")
        getattr(operation, kind).CopyFrom(op)
        self._operations.append(operation)
        self._ids.add(op_id)
        return OpRef(op_id, kind)
