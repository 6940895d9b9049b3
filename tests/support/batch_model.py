"""The abstract batch of the differential fuzzer (tests/integration/test_differential_fuzz.py):
plain dataclasses that say what each operation does, the tables they work on, and the one
rendering of a batch into batchd's request (``to_request``). The reference executor
(tests/support/reference_executor.py) renders the same description into its own SQL; neither
side derives anything from the other.

The tables live twice, in schema ``fuzz`` (served by batchd) and ``fuzz_ref`` (the reference
executor's), made from the same DDL, so that constraint names are the same in both.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from google.protobuf import json_format

from batchd.v1 import batch_pb2

BATCHD_SCHEMA = "fuzz"
REFERENCE_SCHEMA = "fuzz_ref"

DDL = """
CREATE SCHEMA {s};
CREATE TABLE {s}.parent (
    id serial PRIMARY KEY,
    code text NOT NULL UNIQUE,
    qty integer NOT NULL DEFAULT 0 CHECK (qty >= 0),
    price numeric(10,2),
    note text
);
CREATE TABLE {s}.child (
    id bigserial PRIMARY KEY,
    parent_id integer NOT NULL REFERENCES {s}.parent (id),
    label text NOT NULL,
    amount numeric(10,2) NOT NULL DEFAULT 0,
    at timestamptz,
    UNIQUE (parent_id, label)
);
CREATE TABLE {s}.doc (
    id integer PRIMARY KEY,
    version integer NOT NULL DEFAULT 1,
    title text NOT NULL,
    body jsonb,
    tags text[],
    deleted_at timestamptz
);
CREATE TABLE {s}.link (
    "from" integer NOT NULL,
    "to" text NOT NULL,
    weight numeric(6,3) CHECK (weight <> 0),
    "Note" text,
    PRIMARY KEY ("from", "to")
);
"""

# The rows every example starts from (ids 1-3 of parent, 1-3 of child: the sequences follow).
RESET = """
DELETE FROM {s}.child; DELETE FROM {s}.parent; DELETE FROM {s}.doc; DELETE FROM {s}.link;
SELECT setval('{s}.parent_id_seq', 1, false), setval('{s}.child_id_seq', 1, false);
INSERT INTO {s}.parent (code, qty, price, note) VALUES
    ('a', 1, 1.50, 'x'), ('b', 0, NULL, NULL), ('c', 5, 10.00, 'Xy');
INSERT INTO {s}.child (parent_id, label, amount, at) VALUES
    (1, 'l1', 1.00, '2024-01-01T00:00:00Z'), (1, 'l2', 2.50, NULL),
    (3, 'l1', 0, '2024-06-01T12:00:00+02:00');
INSERT INTO {s}.doc (id, version, title, body, tags, deleted_at) VALUES
    (1, 1, 't1', '{{"k": 1}}', '{{a,b}}', NULL), (2, 3, 't2', NULL, NULL, NULL),
    (3, 1, 't3', '[1, 2]', '{{}}', '2024-01-01T00:00:00Z');
INSERT INTO {s}.link ("from", "to", weight, "Note") VALUES
    (1, 'x', 1.5, NULL), (1, 'y', NULL, 'n'), (2, 'x', -0.125, 'N');
"""

# Each table's columns in table order, with their type as format_type() prints it (what
# OperationResult.columns must say).
TABLES: dict[str, dict[str, str]] = {
    "parent": {"id": "integer", "code": "text", "qty": "integer", "price": "numeric(10,2)",
               "note": "text"},
    "child": {"id": "bigint", "parent_id": "integer", "label": "text",
              "amount": "numeric(10,2)", "at": "timestamp with time zone"},
    "doc": {"id": "integer", "version": "integer", "title": "text", "body": "jsonb",
            "tags": "text[]", "deleted_at": "timestamp with time zone"},
    # A composite key, names to quote (reserved words, capitals).
    "link": {"from": "integer", "to": "text", "weight": "numeric(6,3)", "Note": "text"},
}
PRIMARY_KEY = {"parent": ["id"], "child": ["id"], "doc": ["id"], "link": ["from", "to"]}
# The cast of a bound parameter of each type (the reference executor's SQL).
CASTS = {"integer": "integer", "bigint": "bigint", "text": "text", "numeric(10,2)": "numeric",
         "numeric(6,3)": "numeric",
         "timestamp with time zone": "timestamptz", "jsonb": "jsonb", "text[]": "text[]"}
VERSION_COLUMN = {"doc": "version"}
SOFT_DELETE_COLUMN = {"doc": "deleted_at"}
# Tables one statement may touch together (a foreign key).
FAMILY = {"parent": "pc", "child": "pc", "doc": "d", "link": "l"}


def column_type(table: str, column: str) -> str:
    return TABLES[table][column]


# --- values --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ref:
    """``{"$ref": "op.column"}`` (row None) or ``{"$ref": "op.N.column"}``."""

    op: str
    column: str
    row: int | None = None

    @property
    def index(self) -> int:
        return 0 if self.row is None else self.row

    def wire(self) -> dict[str, str]:
        if self.row is None:
            return {"$ref": f"{self.op}.{self.column}"}
        return {"$ref": f"{self.op}.{self.row}.{self.column}"}


@dataclass(frozen=True)
class Literal:
    """``{"$literal": value}``: a JSON value taken as data, whatever "$ref" it holds."""

    value: Any


# A value: None, bool, int, str (text; RFC 3339 for timestamptz), Decimal (numeric), list
# (an IN list, a text[]), dict (a jsonb object), Ref, Literal; references may sit inside
# lists and jsonb objects.


def wire_value(value: Any, type_: str) -> Any:
    """The JSON a client sends for ``value`` in a column of ``type_``: bigint and numeric
    as strings (the exact forms), everything else as itself."""
    if isinstance(value, Ref):
        return value.wire()
    if isinstance(value, Literal):
        return {"$literal": value.value}
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return str(value) if type_ == "bigint" else value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list):
        inner = "text" if type_ == "text[]" else type_
        return [wire_value(v, inner) for v in value]
    if isinstance(value, dict):
        return {k: wire_value(v, "jsonb") for k, v in value.items()}
    return value


def refs_in(value: Any) -> list[Ref]:
    if isinstance(value, Ref):
        return [value]
    if isinstance(value, list):
        return [r for v in value for r in refs_in(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in refs_in(v)]
    return []


# --- conditions ----------------------------------------------------------------------------

@dataclass
class Filter:
    column: str
    op: str  # EQ NE LT LE GT GE IN IS_NULL LIKE ILIKE
    value: Any  # IS_NULL: a bool; IN: a list


@dataclass
class Where:
    logic: str  # AND OR NOT
    filters: list[Filter] = field(default_factory=list)
    groups: list[Where] = field(default_factory=list)


# --- operations ----------------------------------------------------------------------------

@dataclass
class OnConflict:
    action: str  # ERROR NOTHING UPDATE
    conflict_columns: list[str] = field(default_factory=list)  # empty: the primary key
    update_columns: list[str] = field(default_factory=list)  # empty: inserted, not target


@dataclass
class Insert:
    table: str
    rows: list[dict[str, Any]]
    on_conflict: OnConflict | None = None
    returning: list[str] = field(default_factory=list)  # empty: the key; ["*"]: all


@dataclass
class Get:
    table: str
    key: dict[str, Any]
    columns: list[str] = field(default_factory=list)  # empty: all
    include_deleted: bool = False


@dataclass
class Query:
    table: str
    filters: list[Filter] = field(default_factory=list)
    where: Where | None = None
    order_by: list[tuple[str, bool]] = field(default_factory=list)  # (column, descending)
    limit: int = 0  # 0: 100
    columns: list[str] = field(default_factory=list)
    include_deleted: bool = False
    count: bool = False
    page_token: str = ""  # batchd's, from the page before (the reference reads all at once)


@dataclass
class Update:
    table: str
    set: dict[str, Any]
    key: dict[str, Any] | None = None
    filters: list[Filter] = field(default_factory=list)
    where: Where | None = None
    expected_version: int | None = None
    returning: list[str] = field(default_factory=list)


@dataclass
class Delete:
    table: str
    key: dict[str, Any] | None = None
    filters: list[Filter] = field(default_factory=list)
    where: Where | None = None
    expected_version: int | None = None
    returning: list[str] = field(default_factory=list)


Kind = Insert | Get | Query | Update | Delete


@dataclass
class Op:
    id: str
    kind: Kind
    depends_on: list[str] = field(default_factory=list)
    group: str = ""

    @property
    def writes(self) -> bool:
        return isinstance(self.kind, Insert | Update | Delete)

    def refs(self) -> list[Ref]:
        k = self.kind
        values: list[Any] = []
        if isinstance(k, Insert):
            values = [v for row in k.rows for v in row.values()]
        if isinstance(k, Get | Update | Delete) and k.key:
            values += list(k.key.values())
        if isinstance(k, Update):
            values += list(k.set.values())
        if isinstance(k, Query | Update | Delete):
            values += [f.value for f in all_filters(k.filters, k.where)]
        return [r for v in values for r in refs_in(v)]

    @property
    def ordered_rows(self) -> bool:
        """Whether its rows come in an order the request defines: not so for an update or
        delete by filters (the order of RETURNING is the order PostgreSQL found the rows in,
        which is where they happen to lie)."""
        return not isinstance(self.kind, Update | Delete) or self.kind.key is not None

    def output_columns(self) -> list[str]:
        """The columns of its result rows, in order."""
        k = self.kind
        names = k.columns if isinstance(k, Get | Query) else k.returning
        if (isinstance(k, Get | Query) and not names) or names == ["*"]:
            return list(TABLES[k.table])
        return names or PRIMARY_KEY[k.table]


def all_filters(filters: list[Filter], where: Where | None) -> list[Filter]:
    found = list(filters)
    stack = [where] if where is not None else []
    while stack:
        group = stack.pop()
        found += group.filters
        stack += group.groups
    return found


@dataclass
class Batch:
    """What a BatchExecute request says. ``ops`` are in request order; ``run_order`` is the
    order the generator made them in (each after what it depends on: a valid order for an
    INDEPENDENT batch's units, the request order for an ATOMIC one)."""

    ops: list[Op]
    atomic: bool = True
    validate_only: bool = False
    read_only: bool = False
    isolation: str = ""  # "" read_committed repeatable_read serializable
    run_order: list[str] = field(default_factory=list)
    # Sent with a request id (a fresh one each time it runs): the answer is the same, and the
    # same request again gets it replayed without running twice.
    idempotent: bool = False


# --- batchd's request ----------------------------------------------------------------------

def _filter_wire(table: str, f: Filter) -> dict[str, Any]:
    return {"column": f.column, "op": f"OPERATOR_{f.op}",
            "value": wire_value(f.value, column_type(table, f.column))}


def _where_wire(table: str, w: Where) -> dict[str, Any]:
    out: dict[str, Any] = {"logic": f"LOGIC_{w.logic}"}
    if w.filters:
        out["filters"] = [_filter_wire(table, f) for f in w.filters]
    if w.groups:
        out["groups"] = [_where_wire(table, g) for g in w.groups]
    return out


def _row_wire(table: str, row: dict[str, Any]) -> dict[str, Any]:
    return {c: wire_value(v, column_type(table, c)) for c, v in row.items()}


def _selection_wire(k: Update | Delete | Query, out: dict[str, Any]) -> None:
    if not isinstance(k, Query) and k.key is not None:
        out["key"] = _row_wire(k.table, k.key)
    if k.filters:
        out["filters"] = [_filter_wire(k.table, f) for f in k.filters]
    if k.where is not None:
        out["where"] = _where_wire(k.table, k.where)


def _kind_wire(k: Kind) -> tuple[str, dict[str, Any]]:
    out: dict[str, Any] = {"table": k.table}
    if isinstance(k, Insert):
        out["rows"] = [_row_wire(k.table, r) for r in k.rows]
        if k.on_conflict is not None:
            out["on_conflict"] = {"action": f"ACTION_{k.on_conflict.action}".replace(
                "ACTION_NOTHING", "ACTION_DO_NOTHING"),
                "conflict_columns": k.on_conflict.conflict_columns,
                "update_columns": k.on_conflict.update_columns}
        out["returning"] = k.returning
        return "insert", out
    if isinstance(k, Get):
        out.update(key=_row_wire(k.table, k.key), columns=k.columns,
                   include_deleted=k.include_deleted)
        return "get", out
    if isinstance(k, Query):
        _selection_wire(k, out)
        out.update(order_by=[{"column": c, "descending": d} for c, d in k.order_by],
                   limit=k.limit, columns=k.columns, include_deleted=k.include_deleted,
                   count=k.count, page_token=k.page_token)
        return "query", out
    _selection_wire(k, out)
    if k.expected_version is not None:
        out["expected_version"] = str(k.expected_version)
    out["returning"] = k.returning
    if isinstance(k, Update):
        out["set"] = _row_wire(k.table, k.set)
        return "update", out
    return "delete", out


def to_request(batch: Batch, request_id: str = "") -> batch_pb2.BatchExecuteRequest:
    """The BatchExecute request a client would send for ``batch``."""
    operations = []
    for op in batch.ops:
        name, body = _kind_wire(op.kind)
        wire: dict[str, Any] = {"id": op.id, name: body}
        if op.depends_on:
            wire["depends_on"] = op.depends_on
        if op.group:
            wire["group"] = op.group
        operations.append(wire)
    request: dict[str, Any] = {
        "operations": operations,
        "mode": "MODE_ATOMIC" if batch.atomic else "MODE_INDEPENDENT",
        "validate_only": batch.validate_only, "read_only": batch.read_only,
        "request_id": request_id}
    if batch.isolation:
        request["isolation"] = f"ISOLATION_LEVEL_{batch.isolation.upper()}"
    return json_format.ParseDict(request, batch_pb2.BatchExecuteRequest())


# --- values compared -------------------------------------------------------------------------

def canonical(table: str, column: str, value: Any) -> Any:
    """A value of ``column`` as both sides are compared: asyncpg's native value (the
    reference) or the decoded wire value (batchd) made one form. The soft-delete column is
    set by now(), which differs between two transactions: only whether it is set counts."""
    if value is None:
        return None
    if column == SOFT_DELETE_COLUMN.get(table):
        return "<set>"
    type_ = TABLES[table][column]
    if type_ in ("integer", "bigint"):
        return int(value)
    if type_.startswith("numeric"):
        return str(Decimal(value))
    if type_ == "timestamp with time zone":
        stamp = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
        return stamp.astimezone(dt.UTC).isoformat()
    if type_ == "jsonb":
        return plain_json(value)  # the document itself (the reference parses asyncpg's text)
    if type_ == "text[]":
        return list(value)
    return value


def plain_json(value: Any) -> Any:
    """JSON with integral numbers as ints (the wire carries every number as a double)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_json(v) for v in value]
    return value
