"""Values to PostgreSQL: each value coerced by the value family of the column it is for
(``Column.family``: int8, numeric, text, json...), to what asyncpg binds for it.

A google.protobuf.Value holds doubles, so exact types travel as strings: a bigint beyond 2^53
or a numeric is never allowed to pass through a float, and an integral number sent as a double
beyond 2^53 is refused (it has lost its exact value already). One coercer per family
(``_COERCERS``); anything the catalog does not know (family "other") passes through as given,
for PostgreSQL to read. A value that does not fit raises ``CoercionError`` saying what was
expected.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import re
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from batchd.catalog import Column
from batchd.pgtext import MAX_SAFE_INTEGER, JsonText, dumps_json
from batchd.pgtypes import INFINITIES, Interval, parse_interval

_INT_RANGES = {"int2": 2**15, "int4": 2**31, "int8": 2**63}
_INT_RE = re.compile(r"[+-]?[0-9]{1,19}")


class CoercionError(ValueError):
    """A value does not fit its column; the message says what was expected."""


def plain_json(value: Any) -> Any:
    """JSON-ready Python: integral doubles become ints (JSON has no int/float split, and
    2 should stay 2 in a jsonb column or a handler's arguments, not 2.0)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
        return int(value)
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_json(v) for v in value]
    return value


def _expect(what: str, value: Any) -> CoercionError:
    """"expected a string, got a number": the JSON type the client sent (a Struct carries every
    number as a double, so "float" would mislead for an integer)."""
    if value is None:
        shown = "null"
    elif isinstance(value, int | float) and not isinstance(value, bool):
        shown = "a number"
    else:
        shown = type(value).__name__
    return CoercionError(f"expected {what}, got {shown}")


def _to_int(family: str) -> Callable[[Any], int]:
    limit = _INT_RANGES[family]

    def coerce(value: Any) -> int:
        if isinstance(value, bool):
            raise _expect("an integer", value)
        if isinstance(value, int):
            result = value
        elif isinstance(value, float):
            if not value.is_integer():
                raise CoercionError(f"expected an integer, got {value!r}")
            if abs(value) > MAX_SAFE_INTEGER:
                raise CoercionError("integer beyond 2^53 sent as a JSON number has lost its "
                                    "exact value; send it as a string")
            result = int(value)
        elif isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
            result = int(value)
        elif isinstance(value, Decimal) and value == value.to_integral_value():
            result = int(value)
        else:
            raise _expect("an integer (number or decimal string)", value)
        if not -limit <= result < limit:
            raise CoercionError(f"{result} is out of range for {family}")
        return result
    return coerce


def _to_numeric(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise _expect("a decimal string or number", value)
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))  # the shortest text that round-trips the double
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            raise CoercionError(f"{value!r} is not a decimal number") from None
    raise _expect("a decimal string or number", value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise _expect("a number", value)
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, str):
        try:
            result = float(value)
        except ValueError:
            raise CoercionError(f"{value!r} is not a number") from None
        if math.isinf(result) and "inf" not in value.lower():
            raise CoercionError(f"{value!r} is out of range for a double")
        return result
    raise _expect("a number", value)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _expect("a boolean", value)


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _expect("a string", value)


def _to_uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise CoercionError(f"{value!r} is not a UUID") from None


def _parse(parser: Callable[[str], Any], what: str) -> Callable[[Any], Any]:
    def coerce(value: Any) -> Any:
        if not isinstance(value, str):
            raise _expect(f"{what} as a string", value)
        try:
            return parser(value)
        except ValueError as exc:
            raise CoercionError(f"{value!r} is not {what}: {exc}") from None
    return coerce


def _date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def _timestamptz(text: str) -> dt.datetime:
    result = dt.datetime.fromisoformat(text)
    if result.tzinfo is None:
        raise ValueError("a timestamp with time zone needs an offset (e.g. Z or +02:00)")
    return result


def _timestamp(text: str) -> dt.datetime:
    result = dt.datetime.fromisoformat(text)
    if result.tzinfo is not None:
        raise ValueError("a timestamp without time zone takes no offset")
    return result


def _to_date(value: Any) -> Any:
    if (isinstance(value, dt.date) and not isinstance(value, dt.datetime)) or value in INFINITIES:
        return value
    return _parse(_date, "a date (YYYY-MM-DD)")(value)


def _to_timestamptz(value: Any) -> Any:
    if (isinstance(value, dt.datetime) and value.tzinfo is not None) or value in INFINITIES:
        return value
    return _parse(_timestamptz, "an RFC 3339 timestamp")(value)


def _to_timestamp(value: Any) -> Any:
    if (isinstance(value, dt.datetime) and value.tzinfo is None) or value in INFINITIES:
        return value
    return _parse(_timestamp, "an ISO 8601 timestamp")(value)


def _to_time(value: Any) -> Any:
    if isinstance(value, dt.time):
        return value
    return _parse(dt.time.fromisoformat, "a time (HH:MM:SS)")(value)


def _to_interval(value: Any) -> Any:
    if isinstance(value, Interval | dt.timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or abs(value) >= 2**63 / 1e6:
            raise CoercionError(f"{value!r} seconds is out of range for interval")
        return Interval(microseconds=round(value * 1_000_000))
    if isinstance(value, str):
        try:
            return parse_interval(value)
        except ValueError as exc:
            raise CoercionError(f"{value!r}: {exc}") from None
    raise _expect("an ISO 8601 duration (e.g. P1Y2M3DT4H) or a number of seconds", value)


def _to_bytea(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise CoercionError("expected base64 text") from None
    raise _expect("base64 text", value)


def _to_json(value: Any) -> Any:
    return plain_json(value)


def _json_element(value: Any) -> Any:
    """An element of a json[] / jsonb[] value: a JSON document, whatever its shape (json
    arrays have one dimension here: [[1, 2], {"a": 1}] is two documents, not a 2-D array). A
    document that is a list travels as its text (JsonText): asyncpg would read a list inside
    an array value as another dimension."""
    document = plain_json(value)
    return JsonText(dumps_json(document)) if isinstance(document, list) else document


def _passthrough(value: Any) -> Any:
    return value


_COERCERS: dict[str, Callable[[Any], Any]] = {
    "int2": _to_int("int2"), "int4": _to_int("int4"), "int8": _to_int("int8"),
    "numeric": _to_numeric, "float": _to_float, "bool": _to_bool, "text": _to_text,
    "uuid": _to_uuid, "date": _to_date, "timestamptz": _to_timestamptz,
    "timestamp": _to_timestamp, "time": _to_time, "timetz": _to_time,
    "interval": _to_interval, "bytea": _to_bytea, "json": _to_json, "other": _passthrough,
}


def coerce(value: Any, column: Column) -> Any:
    """The Python value asyncpg should bind for ``column``; raises CoercionError."""
    if value is None:
        return None
    scalar = _COERCERS[column.family]
    if column.is_array:
        if not isinstance(value, list):
            raise _expect(f"a list (column type {column.type_sql})", value)
        if column.family == "json":
            return [None if v is None else _json_element(v) for v in value]
        return _coerce_array(value, scalar)
    if isinstance(value, _CONTAINERS) and column.family != "json":
        raise _expect(f"a scalar (column type {column.type_sql})", value)
    return scalar(value)


_CONTAINERS = (list, dict)


def coercer(column: Column) -> Callable[[Any], Any]:
    """``coerce`` for ``column``, worked out once: the function to call on each value (for
    the many values of one column of a bulk insert)."""
    if column.is_array or column.family == "json":
        return lambda value: coerce(value, column)
    scalar = _COERCERS[column.family]

    def coerce_scalar(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, _CONTAINERS):
            raise _expect(f"a scalar (column type {column.type_sql})", value)
        return scalar(value)
    return coerce_scalar


def _coerce_array(values: list[Any], scalar: Callable[[Any], Any]) -> list[Any]:
    return [None if v is None else _coerce_array(v, scalar) if isinstance(v, list) else scalar(v)
            for v in values]

