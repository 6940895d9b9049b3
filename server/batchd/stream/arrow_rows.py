"""ROWS and COLUMNAR chunks on the fast path: one Arrow array per column, binary COPY by pgpq.

Each column's values become one Arrow array, built by pyarrow from the protobuf values and
converted by pyarrow.compute (decimal strings to decimal128 of the column's precision and
scale, date strings to date32, RFC 3339 strings and Unix microseconds to timestamps, JSON text
or PostgreSQL array literals of text[] columns to lists); ``batchd.stream.arrow_types`` then
checks the column types and pgpq writes the binary COPY data, as for ENCODING_ARROW. Python
runs per column and per chunk, not per value (ROWS: one attribute read per value, to get the
values out of the Structs).

The fast path is a shortcut, never a second set of rules: it takes a chunk only when it can
tell, for the whole chunk at once, that every value is one the per-value path
(``batchd.stream.encodings.rows``, ``batchd.stream.columnar``) would accept and would store
the same. Anything else returns None and the chunk is decoded value by value, each bad row
rejected with a reason naming its column: a value of another kind than the column's usual one
(a number for a numeric column, a string for an integer), a string the strict parsers here do
not take (a numeric with more decimals than the column's scale, "infinity", a date before year
1), an unconstrained numeric column (its values keep their own scales, which one Arrow type
cannot), a column type the Arrow encoder does not take. What only PostgreSQL checks
(constraints, JSON syntax) is found by the COPY: ``batchd.stream.encodings.records`` then
decodes the chunk again value by value and writes it as the per-value path does, so the rows
rejected and their reasons are the same whichever path a chunk took.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf import struct_pb2

from batchd.catalog import Column
from batchd.errors import InvalidArgument
from batchd.pgtext import MAX_SAFE_INTEGER, render_any
from batchd.stream import array_literal
from batchd.stream.arrow_types import Plan, Rows, plan
from batchd.stream.columnar import PG_MAX_US, PG_MIN_US, UNIX_TO_PG_EPOCH_US, read_array
from batchd.v1 import batch_pb2
from batchd.values import from_proto, plain_json

__all__ = ["Fast", "columnar", "rows"]

_NUMERIC_TYPMOD = re.compile(r"numeric\((\d+),(\d+)\)")
# The RFC 3339 forms that datetime.fromisoformat (the per-value path) and Arrow's parser read
# alike; any other string sends its chunk to the per-value path.
_TIMESTAMPTZ = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"
_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?$"
# Integers as strings (how a bigint beyond 2^53 travels): what both read alike (Arrow also
# reads hexadecimal, and leading zeros beyond the per-value path's 19 digits).
_INTEGER = r"^-?[0-9]{1,19}$"
# Arrow reads year 0; Python's date and datetime (the per-value path) start at year 1.
_FIRST_DAY = (dt.date(1, 1, 1) - dt.date(1970, 1, 1)).days
_FIRST_US = _FIRST_DAY * 86_400_000_000
_JSON_EXACT = json.JSONDecoder(parse_float=str, parse_int=str)
_INT_LIMITS = {"int2": 2**15 - 1, "int4": 2**31 - 1, "int8": MAX_SAFE_INTEGER}


class Fast:
    """What a stream's fast path keeps from chunk to chunk: the pgpq plan of each Arrow schema
    its chunks made (None: that schema cannot be stored exactly; the per-value path says why)."""

    def __init__(self, columns: list[Column]) -> None:
        self.columns = columns
        self.plans: dict[pa.Schema, Plan | None] = {}

    def plan_for(self, schema: pa.Schema) -> Plan | None:
        if schema not in self.plans:
            try:
                self.plans[schema] = plan(schema, self.columns, "chunk")
            except InvalidArgument:
                self.plans[schema] = None
        return self.plans[schema]


class _Slow(Exception):
    """This chunk takes the per-value path."""


# --- COLUMNAR --------------------------------------------------------------------------------

def columnar(chunk: batch_pb2.StreamChunk, fast: Fast) -> tuple[Rows, bytes] | None:
    """The chunk's rows and their COPY data, or None: decode it value by value."""
    arrays = chunk.columnar.columns
    columns = fast.columns
    if len(arrays) != len(columns):
        return None
    out = []
    count = None
    try:
        for array, column in zip(arrays, columns, strict=True):
            which = array.WhichOneof("values")
            if which is None:
                return None
            values = getattr(array, which).values
            if count is None:
                count = len(values)
            elif len(values) != count:
                return None
            out.append(_columnar_array(values, which, _mask(array.null_indexes, count),
                                       column))
    except _Slow:
        return None
    return _encode(out, fast)


def _mask(null_indexes: Sequence[int], count: int) -> np.ndarray[Any, Any] | None:
    if not null_indexes:
        return None
    indexes = np.array(null_indexes, dtype=np.int64)
    mask = np.zeros(count, dtype=bool)
    mask[indexes[indexes < count]] = True  # the per-value path ignores indexes past the end
    return mask


def _columnar_array(values: Sequence[Any], which: str, mask: np.ndarray[Any, Any] | None,
                    column: Column) -> pa.Array:
    if which == "strings":
        return _from_strings(pa.array(values, pa.string(), mask=mask), values, mask, column)
    if column.is_array or column.family == "json":
        raise _Slow  # the per-value path refuses any other array for them, saying why
    if which == "int64s":
        return pa.array(values, pa.int64(), mask=mask)  # arrow_types checks the range
    if which == "doubles":
        return pa.array(values, pa.float64(), mask=mask)
    if which == "bools":
        return pa.array(values, pa.bool_(), mask=mask)
    if which == "bytes" and column.family == "bytea":
        return pa.array(values, pa.binary(), mask=mask)
    if which == "timestamp_micros" and column.family in ("timestamptz", "timestamp"):
        micros = pa.array(values, pa.int64(), mask=mask)
        low, high = pc.min_max(micros).values()
        if low.is_valid and (low.as_py() - UNIX_TO_PG_EPOCH_US < PG_MIN_US
                             or high.as_py() - UNIX_TO_PG_EPOCH_US > PG_MAX_US):
            raise _Slow
        return micros.view(pa.timestamp("us", "UTC" if column.family == "timestamptz" else None))
    raise _Slow


def _from_strings(array: pa.Array, values: Sequence[Any], mask: np.ndarray[Any, Any] | None,
                  column: Column) -> pa.Array:
    """Strings in a column: converted as the per-value path would, or _Slow."""
    family = column.family
    if column.is_array:
        if family != "text" or column.cast_sql != "text[]":
            raise _Slow
        # The per-value path's reading of the text (columnar.read_array: JSON text, or
        # PostgreSQL's array literal when it starts with "{").
        try:
            json_text, literal = _JSON_EXACT.decode, read_array
            is_literal = array_literal.is_literal
            lists = [None if mask is not None and mask[i] else
                     literal(text, family) if is_literal(text) else json_text(text)
                     for i, text in enumerate(values)]
        except (ValueError, RecursionError):  # neither, or nested past Python's reader:
            raise _Slow from None  # said per value
        return _lists_of_strings(lists)
    if family in ("text", "json", "uuid"):  # uuid: arrow_types reads the text, strictly
        return array
    try:
        if family in _INT_LIMITS:
            if not pc.all(pc.match_substring_regex(array, _INTEGER)).as_py():
                raise _Slow
            return array.cast(pa.int64())  # arrow_types checks the column's range
        if family == "numeric":
            typmod = _NUMERIC_TYPMOD.fullmatch(column.type_sql)
            if typmod is None or int(typmod.group(1)) > 38:
                raise _Slow
            # Exact or refused: a value with more decimals than the scale, or more digits
            # than the precision, fails the cast (PostgreSQL would round, or refuse it).
            return array.cast(pa.decimal128(int(typmod.group(1)), int(typmod.group(2))))
        if family == "date":
            days = array.cast(pa.date32())
            _check_from(days.view(pa.int32()), _FIRST_DAY)
            return days
        if family in ("timestamptz", "timestamp"):
            aware = family == "timestamptz"
            if not pc.all(pc.match_substring_regex(array, _TIMESTAMPTZ if aware
                                                   else _TIMESTAMP)).as_py():
                raise _Slow
            instants = array.cast(pa.timestamp("us", "UTC" if aware else None))
            _check_from(instants.view(pa.int64()), _FIRST_US)
            return instants
    except pa.ArrowException:
        raise _Slow from None
    raise _Slow


def _check_from(numbers: pa.Array, first: int) -> None:
    low = pc.min(numbers)
    if low.is_valid and low.as_py() < first:
        raise _Slow


# --- ROWS ------------------------------------------------------------------------------------

# The Value field each column family is read from on the fast path; the per-value path takes
# other kinds too (a numeric as a number, an integer as a string) and says why it refuses.
_READ = {"text": "string_value", "numeric": "string_value", "uuid": "string_value",
         "date": "string_value", "timestamptz": "string_value", "timestamp": "string_value",
         "int2": "number_value", "int4": "number_value", "int8": "number_value",
         "float": "number_value", "bool": "bool_value"}


def rows(chunk: batch_pb2.StreamChunk, fast: Fast) -> tuple[Rows, bytes] | None:
    """The chunk's rows and their COPY data, or None: decode it value by value."""
    width = len(fast.columns)
    structs = [row.fields for row in chunk.rows]
    for fields in structs:
        if len(fields) != width:
            return None
    try:
        out = [_rows_array(structs, column) for column in fast.columns]
    except (_Slow, AttributeError, ValueError):  # AttributeError: a row without this column;
        return None  # ValueError: a malformed {"$ref": ...} (the per-value path says so)
    return _encode(out, fast)


def _rows_array(structs: list[Any], column: Column) -> pa.Array:
    """One column of the rows (``structs``: their ``fields`` maps)."""
    name = column.name
    if column.is_array:
        if column.family != "text" or column.cast_sql != "text[]":
            raise _Slow
        return pa.array([_strings(fields.get(name)) for fields in structs],
                        pa.list_(pa.string()))
    if column.family == "json":  # the text the connection's json codec would send
        documents = [_document(fields.get(name)) for fields in structs]
        return pa.array([None if document is None else _json_text(document)
                         for document in documents], pa.string())
    attribute = _READ.get(column.family)
    if attribute is None:
        raise _Slow
    if attribute == "number_value" and column.family != "float" and structs and \
            structs[0].get(name).WhichOneof("kind") == "string_value":
        attribute = "string_value"  # integers as strings (exact beyond 2^53)
    # Read straight from each row's Value (keeping the Values costs more than reading twice).
    if attribute == "string_value":
        read: list[Any] = [fields.get(name).string_value for fields in structs]
    elif attribute == "number_value":
        read = [fields.get(name).number_value for fields in structs]
    else:
        read = [fields.get(name).bool_value for fields in structs]
    nulls: list[int] = []
    for i, v in enumerate(read):
        if not v:  # "", 0.0, False: also what every other kind of Value reads as
            kind = structs[i][name].WhichOneof("kind")
            if kind == "null_value":
                nulls.append(i)
            elif kind != attribute:
                raise _Slow
    mask = None
    if nulls:
        mask = np.zeros(len(read), dtype=bool)
        mask[nulls] = True
    if attribute == "string_value":
        return _from_strings(pa.array(read, pa.string(), mask=mask), read, mask, column)
    if attribute == "bool_value":
        return pa.array(read, pa.bool_(), mask=mask)
    numbers = np.array(read, dtype=np.float64)
    if column.family == "float":
        return pa.array(numbers, pa.float64(), mask=mask)
    # An integer column: integral numbers within what a double holds exactly and the type
    # takes (the per-value path's read_int; anything else it reads and judges one by one).
    limit = _INT_LIMITS[column.family]
    if not (np.all(np.abs(numbers) <= limit) and np.all(numbers == np.trunc(numbers))):
        raise _Slow
    return pa.array(numbers.astype(np.int64), pa.int64(), mask=mask)


def _strings(value: struct_pb2.Value) -> list[str | None] | None:
    """A text[] value: a list of strings and NULLs (else _Slow), or NULL."""
    kind = value.WhichOneof("kind")
    if kind == "null_value":
        return None
    if kind != "list_value":
        raise _Slow
    out: list[str | None] = []
    for element in value.list_value.values:
        kind = element.WhichOneof("kind")
        if kind == "string_value":
            out.append(element.string_value)
        elif kind == "null_value":
            out.append(None)
        else:
            raise _Slow  # a number, a nested list...: said per value
    return out


def _document(value: struct_pb2.Value) -> Any:
    """``plain_json(from_proto(value))`` (what the per-value path stores in a json column) in
    one pass, without the ItemsView of the Struct maps."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) <= MAX_SAFE_INTEGER \
            else number
    if kind == "struct_value":
        fields = value.struct_value.fields
        if len(fields) == 1 and ("$ref" in fields or "$literal" in fields):
            return plain_json(from_proto(value))  # a reference, or a literal: read as usual
        return {key: _document(fields[key]) for key in fields}
    if kind == "list_value":
        return [_document(element) for element in value.list_value.values]
    if kind == "bool_value":
        return value.bool_value
    return None


# pgtext.dumps_json for a document of plain JSON values, without json.dumps making an encoder
# for each value.
_json_text = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                              default=render_any).encode


# --- both ------------------------------------------------------------------------------------

def _lists_of_strings(values: list[Any]) -> pa.Array:
    """A text[] column's values (lists, or None), if each is a flat list of strings and
    NULLs (pyarrow would take a string for a list of its characters)."""
    for value in values:
        if value is not None and type(value) is not list:
            raise _Slow
    try:
        return pa.array(values, pa.list_(pa.string()))
    except (ValueError, TypeError, pa.ArrowException):  # a number, a nested list...
        raise _Slow from None


def _encode(arrays: list[pa.Array], fast: Fast) -> tuple[Rows, bytes] | None:
    table = pa.Table.from_arrays(arrays, names=[c.name for c in fast.columns])
    chunk_plan = fast.plan_for(table.schema)
    if chunk_plan is None:
        return None
    converted = []
    for index, convert in zip(chunk_plan.sources, chunk_plan.converts, strict=True):
        array, refused = convert(table.column(index).combine_chunks())
        if refused:  # out of the column's range, a malformed uuid: said per value
            return None
        converted.append(array)
    out = pa.Table.from_arrays(converted, schema=chunk_plan.out)
    try:
        data = chunk_plan.encode(out)
    except Exception:  # a value the encoder refuses: the per-value path says which
        return None
    return Rows(out, chunk_plan), data
