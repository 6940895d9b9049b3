"""COLUMNAR chunks: one typed protobuf array per column, coerced by the column's type.

Arrays whose protobuf type already is the column's (int64 for integers, double for floats,
bool, bytes, text, microseconds for timestamps) are taken whole, without touching each value
in Python; numeric strings go to the driver unparsed (checked lazily, see copy.Target); json
and jsonb columns take strings of JSON text, array columns JSON text or PostgreSQL's array
literal (``{a,b}``, as a PostgreSQL export writes it). A value that cannot be coerced rejects its
row, with a reason naming the column.
"""

from __future__ import annotations

import json
from typing import Any

from batchd.catalog import Column
from batchd.errors import BatchdError, InvalidArgument
from batchd.pgtext import JsonText
from batchd.stream import array_literal
from batchd.v1 import batch_pb2
from batchd.values import CoercionError, coerce

# PostgreSQL's epoch in Unix microseconds; its timestamp range in microseconds from
# 2000-01-01 (4713-11-24 BC .. 294276 AD).
UNIX_TO_PG_EPOCH_US = 946_684_800_000_000
PG_MIN_US, PG_MAX_US = -211_813_488_000_000_000, 9_223_371_331_199_999_999


def columns_of(rows: batch_pb2.ColumnarRows, columns: list[Column],
               ) -> tuple[list[list[Any]], dict[int, BatchdError], int]:
    """Each column's values, coerced; the rejected rows by index; the row count."""
    arrays = rows.columns
    if len(arrays) != len(columns):
        raise InvalidArgument.field("columnar.columns", f"{len(arrays)} arrays for "
                                                        f"{len(columns)} columns")
    lists: list[list[Any]] = []
    bad: dict[int, BatchdError] = {}
    length = None
    for j, (array, column) in enumerate(zip(arrays, columns, strict=True)):
        which = array.WhichOneof("values")
        if which is None:
            raise InvalidArgument.field(f"columnar.columns[{j}]", "no values")
        values = list(getattr(array, which).values)
        if length is None:
            length = len(values)
        elif len(values) != length:
            raise InvalidArgument.field(f"columnar.columns[{j}]",
                                        f"{len(values)} values; column 0 has {length}")
        nulls = set(array.null_indexes)
        for n in nulls:
            if n < len(values):
                values[n] = None
        lists.append(_coerce_column(values, which, column, j, nulls, bad))
    return lists, bad, length or 0


# Protobuf array types taken whole for a column family (no per-value work).
_NATIVE = {
    ("int64s", "int8"), ("doubles", "float"), ("bools", "bool"), ("bytes", "bytea"),
    ("strings", "text"),
}


def _coerce_column(values: list[Any], which: str, column: Column, j: int, nulls: set[int],
                   bad: dict[int, BatchdError]) -> list[Any]:
    if column.is_array or column.family in ("json", "jsonb"):
        # No protobuf array holds lists or documents: their values come as JSON text.
        if which != "strings":
            raise InvalidArgument.field(
                f"columnar.columns[{j}]", f'column "{column.name}" ({column.type_sql}) takes '
                                          "strings of JSON text in COLUMNAR, not " + which)
        return _coerce_each([_json_value(v, i, column, bad) for i, v in enumerate(values)],
                            column, bad)
    if which == "timestamp_micros":
        if column.family not in ("timestamptz", "timestamp"):
            raise InvalidArgument.field(f"columnar.columns[{j}]", "timestamp_micros is for "
                                                                  "timestamp columns")
        shifted = [None if v is None else v - UNIX_TO_PG_EPOCH_US for v in values]
        present = [v for v in shifted if v is not None]
        if present and (min(present) < PG_MIN_US or max(present) > PG_MAX_US):
            for i, v in enumerate(shifted):
                if v is not None and not PG_MIN_US <= v <= PG_MAX_US:
                    bad.setdefault(i, InvalidArgument.field(
                        f"rows[{i}].{column.name}", "timestamp_micros out of PostgreSQL's "
                                                    "range (4713 BC to 294276 AD)"))
                    shifted[i] = None
        return shifted
    if (which, column.family) in _NATIVE or (which == "int64s" and column.family in ("int2", "int4")
                                           and _in_range(values, column.family)) \
            or (which == "strings" and column.family == "numeric"):  # checked lazily, see Target
        return values
    return _coerce_each(values, column, bad)


def _coerce_each(values: list[Any], column: Column, bad: dict[int, BatchdError]) -> list[Any]:
    """Each value coerced by the column's type; a row whose value cannot be is rejected."""
    out: list[Any] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        try:
            out.append(coerce(v, column))
        except CoercionError as exc:
            bad.setdefault(i, InvalidArgument.field(f"rows[{i}].{column.name}",
                                                    f"{exc} (column type {column.type_sql})"))
            out.append(None)
    return out


def _json_value(text: str | None, i: int, column: Column, bad: dict[int, BatchdError]) -> Any:
    """A COLUMNAR string for a json, jsonb or array column: the JSON text of its value, or for
    an array PostgreSQL's array literal (``{a,b}``: batchd.stream.array_literal); a row whose
    text is neither is rejected. A document is kept as the text it came as (JsonText: every
    digit of its numbers); an array's numbers are read as strings, which coercion turns into
    the element type exactly (a double would round 9007199254740993)."""
    if text is None:
        return None
    try:
        if column.is_array:
            return read_array(text, column.family)
        json.loads(text)
        return JsonText(text)
    except array_literal.ArrayLiteralError as exc:
        bad.setdefault(i, InvalidArgument.field(f"rows[{i}].{column.name}",
                                                f"not an array literal: {exc}"))
    except ValueError as exc:
        hint = (' (an array is JSON text, ["a","b"], or PostgreSQL\'s literal, {a,b})'
                if column.is_array else "")
        bad.setdefault(i, InvalidArgument.field(f"rows[{i}].{column.name}",
                                                f"not JSON text: {exc}{hint}"))
    except RecursionError:  # Python's JSON reader recurses per level of nesting
        bad.setdefault(i, InvalidArgument.field(f"rows[{i}].{column.name}",
                                                "JSON text nested too deep to read"))
    return None


_JSON_EXACT = json.JSONDecoder(parse_float=str, parse_int=str)


def read_array(text: str, family: str) -> Any:
    """An array column's COLUMNAR string: PostgreSQL's literal when it starts with ``{`` (or
    bounds), else JSON text (numbers as their text); ValueError if it is neither. The one
    reading of both paths (batchd.stream.arrow_rows takes it for text[] columns)."""
    if array_literal.is_literal(text):
        return array_literal.element_texts(array_literal.parse(text), family)
    return _JSON_EXACT.decode(text)


def _in_range(values: list[Any], family: str) -> bool:
    limit = 2**15 if family == "int2" else 2**31
    present = [v for v in values if v is not None]
    return not present or (min(present) >= -limit and max(present) < limit)
