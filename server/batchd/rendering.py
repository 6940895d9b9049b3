"""Values from PostgreSQL to protobuf: a result row's values written into its Struct, exact by
the column's real type (batchd.values has the other direction).

asyncpg gives Python values; a google.protobuf.Value holds doubles. So exact types travel as
strings (``renderer_for``: a bigint, a numeric, a uuid), ±infinity and NaN as their names, and
a custom handler's values of unknown column type by their Python class (``render_any``, which
batchd.pgtext holds for the pool's json codec too, and ``rendered_type``: the type a client
decodes them by). The table of returned forms is in batch.proto, in the comment of
ResultColumn.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from google.protobuf import struct_pb2

from batchd.catalog import Column
from batchd.pgtext import render_any
from batchd.pgtypes import Interval

Renderer = Callable[[Any], Any]


# The PostgreSQL type whose encoding ``render_any`` gives a Python value of this class: what
# a custom handler's result announces for a column of such values (OperationResult.columns).
_RENDERED_AS: dict[type, str] = {
    bool: "boolean", int: "bigint", float: "double precision", Decimal: "numeric",
    str: "text", uuid.UUID: "uuid", dt.date: "date", dt.timedelta: "interval",
    Interval: "interval", bytes: "bytea", bytearray: "bytea", dict: "jsonb", list: "jsonb",
    tuple: "jsonb",
}


def rendered_type(value: Any) -> str | None:
    """The type a client decodes ``render_any(value)`` by, from the value's Python class
    (None: no such type; the client leaves the value as it is)."""
    cls = type(value)
    if cls is dt.datetime:
        return "timestamp without time zone" if value.tzinfo is None else \
            "timestamp with time zone"
    if cls is dt.time:
        return "time without time zone" if value.tzinfo is None else "time with time zone"
    found = _RENDERED_AS.get(cls)
    if found is None and isinstance(value, uuid.UUID):  # asyncpg's UUID is a subclass
        return "uuid"
    return found


def _render_str(value: Any) -> Any:
    return None if value is None else str(value)


def _render_json(value: Any) -> Any:
    return value  # decoded by the connection's json codec; numbers become doubles in Struct


def _render_scalar(family: str) -> Renderer:
    if family in ("int8", "uuid"):
        return _render_str
    if family == "json":
        return _render_json
    return render_any


def renderer_for(column: Column) -> Renderer:
    scalar = _render_scalar(column.family)
    if not column.is_array:
        return scalar

    def render_array(value: Any) -> Any:
        if value is None:
            return None
        return [render_array(v) if isinstance(v, list) else scalar(v) for v in value]
    return render_array


def write_value(slot: struct_pb2.Value, value: Any) -> None:
    """Set ``slot`` to a rendered value: what ``Struct.update`` does for each of its values,
    written straight into the Value a result row holds (no dict, no Struct to copy)."""
    if value is None:
        slot.null_value = struct_pb2.NULL_VALUE
    elif value is True or value is False:
        slot.bool_value = value
    elif isinstance(value, str):
        slot.string_value = value
    elif isinstance(value, int | float):
        slot.number_value = value
    elif isinstance(value, dict):
        slot.struct_value.update(value)
        if not value:  # update() of nothing leaves the oneof unset, which reads as null
            slot.struct_value.SetInParent()
    elif isinstance(value, list | tuple):
        slot.list_value.extend(value)
        if not value:
            slot.list_value.SetInParent()
    else:
        raise ValueError(f"cannot render a {type(value).__name__} into a Struct")


def render_row(record: Any, renderers: list[tuple[str, Renderer]]) -> struct_pb2.Struct:
    row = struct_pb2.Struct()
    row.update({name: render(record[i]) for i, (name, render) in enumerate(renderers)})
    return row
