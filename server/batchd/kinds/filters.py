"""Row selection: primary keys, structured filters, soft-delete visibility, keyset pages.

All of it becomes WHERE-clause text with placeholders plus values prepared for their columns;
``Selection.sql`` builds the text for one statement's parameter list at run time, when
references are resolved.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from google.protobuf import struct_pb2

from batchd.catalog import Column, Table
from batchd.errors import InvalidArgument
from batchd.kinds.params import Results, SqlParams, prepare
from batchd.pgtext import JsonText, dumps_json
from batchd.rendering import renderer_for
from batchd.v1 import batch_pb2
from batchd.values import (
    CoercionError,
    Ref,
    coerce,
    from_proto,
    struct_from_proto,
)

Op = batch_pb2.Filter.Operator
_COMPARISONS: dict[int, str] = {Op.OPERATOR_EQ: "=", Op.OPERATOR_NE: "<>", Op.OPERATOR_LT: "<",
                                Op.OPERATOR_LE: "<=", Op.OPERATOR_GT: ">", Op.OPERATOR_GE: ">="}
_PATTERNS: dict[int, str] = {Op.OPERATOR_LIKE: "LIKE", Op.OPERATOR_ILIKE: "ILIKE"}


class Clause(Protocol):
    """Part of a WHERE clause: a Condition, or a group of them (batchd.kinds.conditions)."""

    def sql(self, params: SqlParams, results: Results[Any]) -> str: ...


@dataclass(frozen=True, slots=True)
class Condition:
    column: Column
    op: int
    value: Any  # prepared (or Deferred); for IS_NULL a plain bool

    def sql(self, params: SqlParams, results: Results[Any]) -> str:
        c = self.column
        if self.op == Op.OPERATOR_IS_NULL:
            return f"{c.sql} IS NULL" if self.value else f"{c.sql} IS NOT NULL"
        value = results.finalize(self.value)
        if self.op == Op.OPERATOR_IN:
            if c.family == "json":  # documents prepared one by one (plan_filter), as text: a
                # list would be a dimension of the array parameter to asyncpg
                value = [None if v is None else JsonText(dumps_json(v))
                         for v in map(results.finalize, value)]
            return f"{c.sql} = ANY({params.add(value, c.cast_sql + '[]')})"
        if self.op in _PATTERNS:
            return f"{c.sql} {_PATTERNS[self.op]} {params.add(value, 'text')}"
        if value is None and self.op in (Op.OPERATOR_EQ, Op.OPERATOR_NE):
            # "= NULL" is never true in SQL; a caller asking for eq null means IS NULL.
            return f"{c.sql} IS {'' if self.op == Op.OPERATOR_EQ else 'NOT '}NULL"
        return f"{c.sql} {_COMPARISONS[self.op]} {params.add(value, c.cast_sql)}"


@dataclass(slots=True)
class Selection:
    """Which rows an operation addresses."""

    conditions: Sequence[Clause] = field(default_factory=list)
    by_key: bool = False
    soft_delete: Column | None = None  # only rows where it is NULL

    def sql(self, params: SqlParams, results: Results[Any]) -> str:
        parts = [c.sql(params, results) for c in self.conditions]
        if self.soft_delete is not None:
            parts.append(f"{self.soft_delete.sql} IS NULL")
        return " AND ".join(parts) if parts else "TRUE"


def plan_key(table: Table, key: struct_pb2.Struct, path: str,
             refs: list[Ref]) -> list[Condition]:
    """Conditions for a full primary key; every key column, nothing else."""
    values = struct_from_proto(key)
    if len(values) != len(table.primary_key) or any(name not in values
                                                    for name in table.primary_key):
        missing = [name for name in table.primary_key if name not in values]
        if missing:
            raise InvalidArgument.field(path, f"missing primary key column(s) {missing} of "
                                              f'table "{table.qualified_name}"')
        extra = sorted(set(values) - set(table.primary_key))
        raise InvalidArgument.field(path, f"{extra} not in the primary key "
                                          f"{list(table.primary_key)}")
    conditions = []
    for name in table.primary_key:
        value = values[name]
        if value is None:
            raise InvalidArgument.field(f"{path}.{name}", "a primary key value cannot be null")
        column = table.columns[name]
        conditions.append(Condition(column, Op.OPERATOR_EQ,
                                    prepare(value, column, f"{path}.{name}", refs)))
    return conditions


def plan_filters(table: Table, filters: Sequence[batch_pb2.Filter], path: str,
                 refs: list[Ref]) -> list[Condition]:
    return [plan_filter(table, f, f"{path}[{i}]", refs) for i, f in enumerate(filters)]


def plan_filter(table: Table, f: batch_pb2.Filter, fpath: str, refs: list[Ref]) -> Condition:
    """One filter, validated against the catalog; ``fpath`` names it in errors."""
    column = table.column(f.column, f"{fpath}.column")
    if f.op not in (*_COMPARISONS, Op.OPERATOR_IN, Op.OPERATOR_IS_NULL, *_PATTERNS):
        # In JSON, a 0.1.0 name ("EQ") is refused by grpcurl and protobuf's parsers, or
        # dropped to 0 by lenient ones: then it arrives here, unset.
        raise InvalidArgument.field(f"{fpath}.op", "an operator is required (OPERATOR_EQ, "
                                                   "_NE, _LT, _LE, _GT, _GE, _IN, _IS_NULL, _LIKE, "
                                                   '_ILIKE); in JSON, 0.1.0\'s "EQ" is '
                                                   '"OPERATOR_EQ" since 0.2.0 (CHANGELOG.md)')
    value = from_proto(f.value) if f.HasField("value") else None
    if f.op == Op.OPERATOR_IS_NULL:
        if value is None:
            value = True
        if not isinstance(value, bool):
            raise InvalidArgument.field(f"{fpath}.value", "OPERATOR_IS_NULL takes true or false")
        return Condition(column, f.op, value)
    if f.op == Op.OPERATOR_IN:
        if column.is_array:
            raise InvalidArgument.field(f"{fpath}.op",
                                        "OPERATOR_IN is not supported on array columns")
        if not isinstance(value, list):
            raise InvalidArgument.field(f"{fpath}.value", "OPERATOR_IN takes a list of values")
        if column.family == "json":  # each element a document, a list too (not a dimension)
            return Condition(column, f.op, [prepare(v, column, f"{fpath}.value[{i}]", refs)
                                            for i, v in enumerate(value)])
        column_for_value = replace(column, is_array=True)
    elif f.op in _PATTERNS:
        name = _PATTERNS[f.op]
        if column.family != "text" or column.is_array:
            raise InvalidArgument.field(f"{fpath}.op", f"{name} works on text columns only")
        if not isinstance(value, str):
            raise InvalidArgument.field(f"{fpath}.value", f"{name} takes a pattern string")
        column_for_value = column
    else:
        if value is None and f.op not in (Op.OPERATOR_EQ, Op.OPERATOR_NE):
            raise InvalidArgument.field(f"{fpath}.value",
                                        "a value is required (use OPERATOR_IS_NULL for nulls)")
        column_for_value = column
    return Condition(column, f.op, prepare(value, column_for_value, f"{fpath}.value", refs))


# --- keyset pagination -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SortKey:
    column: Column
    descending: bool

    @property
    def sql(self) -> str:
        return f"{self.column.sql} {'DESC' if self.descending else 'ASC'}"


def sort_keys(table: Table, order_by: Sequence[batch_pb2.OrderBy], path: str) -> list[SortKey]:
    """The requested order, with the primary key appended so that the order is total."""
    keys: list[SortKey] = []
    seen: set[str] = set()
    for i, o in enumerate(order_by):
        column = table.column(o.column, f"{path}[{i}].column")
        if column.name in seen:
            raise InvalidArgument.field(f"{path}[{i}].column", f'"{column.name}" is listed twice')
        seen.add(column.name)
        keys.append(SortKey(column, o.descending))
    keys.extend(SortKey(table.columns[n], False) for n in table.primary_key if n not in seen)
    return keys


def fingerprint(message: batch_pb2.QueryOperation) -> str:
    """Identifies the query a page token belongs to: table, filters, where, order and
    include_deleted; not limit, the token, columns or count, which select no other rows."""
    shape = batch_pb2.QueryOperation()
    shape.CopyFrom(message)
    shape.ClearField("limit")
    shape.ClearField("page_token")
    shape.ClearField("columns")
    shape.ClearField("count")
    return hashlib.sha256(shape.SerializeToString(deterministic=True)).hexdigest()[:16]


def encode_token(keys: Sequence[SortKey], row: Any, query_fingerprint: str) -> str:
    values = [renderer_for(k.column)(row[k.column.name]) for k in keys]
    raw = json.dumps({"q": query_fingerprint, "v": values}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, keys: Sequence[SortKey], query_fingerprint: str,
                 path: str) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError
        if data.get("q") != query_fingerprint:
            raise InvalidArgument.field(path, "the page token belongs to a different query")
        values = data["v"]
        if not isinstance(values, list) or len(values) != len(keys):
            raise ValueError
        return [None if v is None else coerce(v, k.column) for v, k in zip(values, keys,
                                                                            strict=True)]
    except (ValueError, KeyError, binascii.Error, CoercionError, UnicodeDecodeError,
            RecursionError):  # RecursionError: a hostile, deeply nested token
        raise InvalidArgument.field(path, "malformed page token") from None


def after_sql(keys: Sequence[SortKey], values: Sequence[Any], params: SqlParams) -> str:
    """Rows strictly after ``values`` in the order of ``keys`` (ASC NULLS LAST / DESC NULLS
    FIRST, PostgreSQL's defaults), written without row comparison so that mixed directions
    and NULLs are handled."""
    alternatives = []
    for i, (key, value) in enumerate(zip(keys, values, strict=True)):
        if value is None and not key.descending:
            # NULLS LAST: nothing sorts after NULL but NULL itself (the next keys' turn).
            # Skipped before any parameter is bound: one the text never uses could not be
            # typed by PostgreSQL ("could not determine data type of parameter").
            continue
        equal = [_equal(k.column, v, params) for k, v in zip(keys[:i], values[:i], strict=True)]
        alternatives.append("(" + " AND ".join([*equal, _after(key, value, params)]) + ")")
    return "(" + " OR ".join(alternatives) + ")" if alternatives else "FALSE"


def _equal(column: Column, value: Any, params: SqlParams) -> str:
    if value is None:
        return f"{column.sql} IS NULL"
    return f"{column.sql} = {params.add(value, column.cast_sql)}"


def _after(key: SortKey, value: Any, params: SqlParams) -> str:
    c = key.column
    if key.descending:  # NULLS FIRST: after a value come smaller values; after NULL, values
        if value is None:
            return f"{c.sql} IS NOT NULL"
        return f"{c.sql} < {params.add(value, c.cast_sql)}"
    return f"({c.sql} > {params.add(value, c.cast_sql)} OR {c.sql} IS NULL)"
