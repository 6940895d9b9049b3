"""The Arrow side of ENCODING_ARROW's type rules: which Arrow types each PostgreSQL column
takes, exactly, and how they are brought to what pgpq encodes (see
``batchd.stream.encodings.arrow``); and a chunk's rows so converted (``Rows``).

Types are checked once per Arrow schema (``plan``): at the header when it carries
``arrow_schema``, else at the first chunk (and again for a chunk whose schema differs). A type
that cannot be stored exactly is refused there with INVALID_ARGUMENT naming the column and
both types, never row by row. Accepted (PostgreSQL column <- Arrow types):

    smallint, integer, bigint   any integer type; values out of the column's range reject
                                their row
    real                        float16, float32 (double would round)
    double precision            float16/32/64; integers within 2^53 (larger reject the row)
    numeric [(p, s)]            decimal32/64/128, decimal256 of precision <= 38, integers;
                                a decimal scale above the column's s is refused (PostgreSQL
                                would round); floats and strings are refused
    boolean                     bool
    text, varchar, char, enums  string, large_string, string_view
    bytea                       binary, large_binary, binary_view, fixed_size_binary
    uuid                        fixed_size_binary(16), the arrow.uuid extension, or strings
                                of the form 8-4-4-4-12 hex digits (another form rejects its row)
    json, jsonb                 strings (also the arrow.json extension), stored as given;
                                PostgreSQL checks them (invalid JSON rejects the row)
    date                        date32; date64 holding whole days (else the row is rejected)
    timestamptz                 timestamp with a time zone, any unit (an instant); a timestamp
                                without a zone is refused (a wall-clock time, not an instant:
                                give it a zone on the client, e.g. UTC)
    timestamp                   timestamp without a zone; one with a zone is refused
    time                        time32, time64
    interval                    duration (as microseconds)
    arrays                      list, large_list or fixed_size_list of the element's types
                                above, for smallint[] integer[] bigint[] real[]
                                double precision[] numeric[] boolean[] text[] bytea[] date[]
                                timestamp[] time[] interval[] jsonb[]; other arrays
                                (timestamptz[], uuid[], varchar[], json[], ...) and nested lists
                                are refused (the binary array header names the element type,
                                and the encoder's is not theirs)

Nanosecond timestamps, times and durations with a sub-microsecond part reject their row
(PostgreSQL keeps microseconds). The null type fits any column (all NULL); dictionary-encoded
columns are decoded first. Any other type, and any other column type (timetz, ranges, ...),
is refused. Rows rejected while decoding are reported like COLUMNAR's, with the column named.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pgpq import ArrowToPostgresBinaryEncoder
from pgpq import encoders as pgpq_encoders
from pgpq import schema as pgpq_schema

from batchd.catalog import Column
from batchd.errors import InvalidArgument
from batchd.stream.arrow_arrays import (
    Convert,
    Converted,
    cast,
    cast_only,
    in_range,
    same,
    uuid_from_text,
    whole,
)

__all__ = ["Plan", "plan"]

_NUMERIC_TYPMOD = re.compile(r"numeric\((\d+),(\d+)\)")
# Arrays whose binary element type pgpq writes as PostgreSQL expects (by format_type).
_ARRAYS = {"smallint[]", "integer[]", "bigint[]", "real[]", "double precision[]", "numeric[]",
           "boolean[]", "text[]", "bytea[]", "date[]", "timestamp without time zone[]",
           "time without time zone[]", "interval[]", "jsonb[]"}
_INT_TYPES = {"int2": (pa.int16(), 2**15), "int4": (pa.int32(), 2**31),
              "int8": (pa.int64(), 2**63)}
_US_PER = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 1}
_MAX_SAFE = 2**53


class Refused(Exception):
    """An Arrow type that cannot be stored exactly in a column (the message says why)."""


@dataclass(slots=True)
class Plan:
    """How the chunks of one Arrow schema become COPY data for the stream's columns."""

    schema: pa.Schema  # the chunks' schema
    sources: list[int]  # field index of each target column
    converts: list[Convert]
    out: pa.Schema  # what pgpq encodes: the columns' names, in the header's order
    builders: dict[str, Any]  # pgpq encoder builder per column

    def encode(self, table: pa.Table) -> bytes:
        """The binary COPY data (header, tuples, trailer) of ``table`` (of schema ``out``)."""
        encoder = ArrowToPostgresBinaryEncoder.new_with_encoders(self.out, self.builders)
        parts = [encoder.write_header()]
        parts.extend(encoder.write_batch(batch) for batch in table.to_batches())
        parts.append(encoder.finish())
        return b"".join(parts)


class Rows(Sequence[Any]):
    """A chunk's rows converted by a plan, as a sequence that slices without copying (for
    batchd.stream.isolating.write_isolating)."""

    def __init__(self, table: pa.Table, chunk_plan: Plan) -> None:
        self.table = table
        self.plan = chunk_plan

    def __len__(self) -> int:
        return int(self.table.num_rows)

    @overload
    def __getitem__(self, index: int) -> Rows: ...
    @overload
    def __getitem__(self, index: slice) -> Rows: ...

    def __getitem__(self, index: int | slice) -> Rows:
        if isinstance(index, slice):
            start, stop, _ = index.indices(len(self))
            return Rows(self.table.slice(start, max(0, stop - start)), self.plan)
        return Rows(self.table.slice(index, 1), self.plan)


def plan(schema: pa.Schema, columns: list[Column], where: str) -> Plan:
    """Check ``schema`` against the stream's columns (INVALID_ARGUMENT naming the first column
    that cannot be stored exactly) and say how to convert each."""
    names = schema.names
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise InvalidArgument.field(where, f"the Arrow schema has fields named twice: {twice}")
    wanted = {c.name for c in columns}
    extra = [n for n in names if n not in wanted]
    if extra:
        raise InvalidArgument.field(where, f"the Arrow schema has fields that are not the "
                                           f"stream's columns: {extra}")
    sources, converts, fields, builders = [], [], [], {}
    for column in columns:
        if column.name not in names:
            raise InvalidArgument.field(where, f'the Arrow schema has no field "{column.name}"')
        index = names.index(column.name)
        arrow_type = schema.field(index).type
        try:
            convert, out_type = _converter(arrow_type, column)
        except Refused as exc:
            raise InvalidArgument.field(
                where, f'column "{column.name}" ({column.type_sql}) cannot take Arrow type '
                       f"{arrow_type} exactly: {exc}") from None
        out_field = pa.field(column.name, out_type)
        sources.append(index)
        converts.append(convert)
        fields.append(out_field)
        builders[column.name] = _builder(out_field, column)
    return Plan(schema, sources, converts, pa.schema(fields), builders)


def _builder(out_field: pa.Field, column: Column) -> Any:
    """pgpq's encoder for a column: its own choice, but jsonb gets jsonb's binary form."""
    if column.family == "json" and column.cast_sql.startswith("jsonb"):
        if column.is_array:
            inner = out_field.type.value_field
            lists = (pgpq_encoders.LargeListEncoderBuilder if pa.types.is_large_list(
                out_field.type) else pgpq_encoders.ListEncoderBuilder)
            return lists.new_with_inner(out_field,
                                        _string_builder(inner)(inner, pgpq_schema.Jsonb()))
        return _string_builder(out_field)(out_field, pgpq_schema.Jsonb())
    return ArrowToPostgresBinaryEncoder.infer_encoder(out_field)


def _string_builder(f: pa.Field) -> Any:
    if pa.types.is_large_string(f.type):
        return pgpq_encoders.LargeStringEncoderBuilder.new_with_output
    if pa.types.is_string_view(f.type):
        return pgpq_encoders.StringViewEncoderBuilder.new_with_output
    return pgpq_encoders.StringEncoderBuilder.new_with_output


# --- the type table --------------------------------------------------------------------------

def _converter(t: pa.DataType, column: Column) -> tuple[Convert, pa.DataType]:
    """How an Arrow type becomes what ``column`` receives, and the type it becomes."""
    if isinstance(t, pa.ExtensionType):
        if t.extension_name not in ("arrow.uuid", "arrow.json"):
            raise Refused(f"extension type {t.extension_name} is not known")
        inner, out = _converter(t.storage_type, column)
        return _then(_storage, inner), out
    if pa.types.is_dictionary(t):
        inner, out = _converter(t.value_type, column)
        return _then(_decode_dictionary, inner), out
    if column.is_array:
        return _array_converter(t, column)
    if pa.types.is_null(t):
        out = _null_type(column)
        return cast(out), out
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        raise Refused("a list is for an array column")
    return _scalar(t, column)


def _then(first: Callable[[pa.Array], pa.Array], convert: Convert) -> Convert:
    def run(array: pa.Array) -> Converted:
        return convert(first(array))
    return run


def _storage(array: pa.Array) -> pa.Array:
    return array.storage


def _decode_dictionary(array: pa.Array) -> pa.Array:
    return array.dictionary_decode()


def _scalar(t: pa.DataType, column: Column) -> tuple[Convert, pa.DataType]:
    family = column.family
    if family in _INT_TYPES:
        return _to_int(t, family)
    if family == "float":
        return _to_float(t, column.cast_sql == "real")
    if family == "numeric":
        return _to_numeric(t, column)
    if family == "bool":
        if pa.types.is_boolean(t):
            return same, t
        raise Refused("send bool")
    if family in ("text", "json"):
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
            return same, t
        raise Refused("send strings" if family == "text" else "send JSON text as strings")
    if family == "bytea":
        if pa.types.is_binary(t) or pa.types.is_large_binary(t) or \
                pa.types.is_fixed_size_binary(t):
            return same, t
        if pa.types.is_binary_view(t):
            return cast(pa.large_binary()), pa.large_binary()
        raise Refused("send binary")
    if family == "uuid":
        if pa.types.is_fixed_size_binary(t) and t.byte_width == 16:
            return same, t
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
            return uuid_from_text, pa.binary(16)
        raise Refused("send fixed_size_binary(16), arrow.uuid or strings")
    if family == "date":
        if pa.types.is_date32(t):
            return same, t
        if pa.types.is_date64(t):
            return whole(pa.date32(), 86_400_000, "a date64 that is not a whole day"), \
                pa.date32()
        raise Refused("send date32")
    if family in ("timestamptz", "timestamp"):
        return _to_timestamp(t, family == "timestamptz")
    if family == "time":
        if pa.types.is_time32(t) or (pa.types.is_time64(t) and t.unit == "us"):
            return same, t
        if pa.types.is_time64(t):
            return whole(pa.time64("us"), 1000, "a time with nanoseconds"), pa.time64("us")
        raise Refused("send time32 or time64")
    if family == "interval":
        if pa.types.is_duration(t):
            return _to_unit(t, pa.duration("us"), "a duration")
        raise Refused("send duration (a month_day_nano interval has no exact binary "
                      "COPY form here)")
    raise Refused(f"{column.type_sql} columns are not supported by the Arrow encoding; use "
                  "ROWS")


def _null_type(column: Column) -> pa.DataType:
    return {"int2": pa.int16(), "int4": pa.int32(), "int8": pa.int64(), "float": pa.float64(),
            "numeric": pa.decimal128(1, 0), "bool": pa.bool_(), "text": pa.string(),
            "json": pa.string(), "bytea": pa.binary(), "uuid": pa.binary(16),
            "date": pa.date32(), "timestamptz": pa.timestamp("us", "UTC"),
            "timestamp": pa.timestamp("us"), "time": pa.time64("us"),
            "interval": pa.duration("us")}.get(column.family) or _refuse(column)


def _refuse(column: Column) -> pa.DataType:
    raise Refused(f"{column.type_sql} columns are not supported by the Arrow encoding")


def _to_int(t: pa.DataType, family: str) -> tuple[Convert, pa.DataType]:
    out, limit = _INT_TYPES[family]
    if not pa.types.is_integer(t):
        raise Refused("send an integer type")
    signed = pa.types.is_signed_integer(t)
    if t.bit_width < out.bit_width or (t.bit_width == out.bit_width and signed):
        return (same if t == out else cast(out)), out
    return in_range(out, -limit, limit - 1, f"out of range for {family}"), out


def _to_float(t: pa.DataType, real: bool) -> tuple[Convert, pa.DataType]:
    out = pa.float32() if real else pa.float64()
    if pa.types.is_floating(t) and (t.bit_width <= out.bit_width):
        return (same if t == out else cast(out)), out
    if real:
        raise Refused("send float32 (a double would be rounded)")
    if pa.types.is_integer(t):
        if t.bit_width <= 32:
            return cast(out), out
        return in_range(out, -_MAX_SAFE, _MAX_SAFE, "beyond 2^53: a double cannot hold it "
                                                     "exactly"), out
    raise Refused("send float64")


def _to_numeric(t: pa.DataType, column: Column) -> tuple[Convert, pa.DataType]:
    typmod = _NUMERIC_TYPMOD.fullmatch(column.type_sql.removesuffix("[]"))
    if pa.types.is_integer(t):
        out = pa.decimal128(20 if t == pa.uint64() else 19, 0)
        return cast(out), out
    if not pa.types.is_decimal(t):
        raise Refused("send decimal128 (a float is not exact; strings have no scale here)")
    if typmod and t.scale > int(typmod.group(2)):
        raise Refused(f"decimal scale {t.scale} is above the column's {typmod.group(2)}: "
                      "PostgreSQL would round")
    if pa.types.is_decimal256(t):
        if t.precision > 38:
            raise Refused("decimal256 beyond precision 38: send decimal128")
        out = pa.decimal128(t.precision, t.scale)
        return cast(out), out
    return same, t


def _to_timestamp(t: pa.DataType, aware: bool) -> tuple[Convert, pa.DataType]:
    if not pa.types.is_timestamp(t):
        raise Refused("send timestamp" + (" with a time zone" if aware else ""))
    if aware and t.tz is None:
        raise Refused("a timestamp without a time zone is a wall-clock time, not an instant: "
                      "give it a zone on the client (e.g. UTC)")
    if not aware and t.tz is not None:
        raise Refused("a timestamp with a time zone is an instant: send it without a zone, "
                      "or use a timestamptz column")
    return _to_unit(t, pa.timestamp("us", t.tz), "a timestamp")


def _to_unit(t: pa.DataType, out: pa.DataType, what: str) -> tuple[Convert, pa.DataType]:
    if t.unit == "us":
        return same, t
    if t.unit == "ns":
        return whole(out, 1000, f"{what} with nanoseconds"), out
    factor = _US_PER[t.unit]
    limit = (2**63 - 1) // factor
    return in_range(out, -limit, limit, f"{what} out of range"), out


def _array_converter(t: pa.DataType, column: Column) -> tuple[Convert, pa.DataType]:
    if column.cast_sql not in _ARRAYS:
        raise Refused(f"{column.type_sql} columns are not supported by the Arrow encoding "
                      "(its binary element type differs from the encoder's); use ROWS")
    if pa.types.is_null(t):
        element = _null_type(column)
        out = pa.list_(element)
        return cast(out), out
    if pa.types.is_fixed_size_list(t) or pa.types.is_list_view(t) or \
            pa.types.is_large_list_view(t):
        widened = pa.list_(t.value_field)
        inner, out = _array_converter(widened, column)
        return _then(cast_only(widened), inner), out
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        raise Refused("send a list")
    value_type = t.value_type
    if pa.types.is_list(value_type) or pa.types.is_large_list(value_type) or \
            pa.types.is_fixed_size_list(value_type):
        raise Refused("nested lists (multidimensional arrays) are not supported")
    scalar = Column(column.name, column.sql, column.type_sql, column.cast_sql, column.family,
                    False, True, False, False)
    element, element_out = _converter(value_type, scalar)
    if element is same:
        return same, t
    large = pa.types.is_large_list(t)
    out = (pa.large_list if large else pa.list_)(pa.field("item", element_out))
    return _elements(element, out, large), out


def _elements(element: Convert, out: pa.DataType, large: bool) -> Convert:
    def convert(array: pa.Array) -> Converted:
        offsets = array.offsets
        start, end = offsets[0].as_py(), offsets[-1].as_py()
        values, bad_values = element(array.values.slice(start, end - start))
        shifted = pc.subtract(offsets, offsets[0]) if start else offsets
        cls = pa.LargeListArray if large else pa.ListArray
        rebuilt = cls.from_arrays(shifted, values, type=out, mask=array.is_null())
        if not bad_values:
            return rebuilt, []
        bounds = shifted.to_numpy()
        bad: dict[int, str] = {}
        for index, why in bad_values:
            row = int(np.searchsorted(bounds, index, side="right")) - 1
            bad.setdefault(row, f"element {index - int(bounds[row])}: {why}")
        return rebuilt, sorted(bad.items())
    return convert
