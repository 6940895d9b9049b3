"""Result values as Python values: each decoded by its column's PostgreSQL type into what
asyncpg returns for such a column.

A result's rows travel as google.protobuf.Struct, whose numbers are doubles, so exact types
come as strings (the table is ResultColumn's comment in batch.proto); ``OperationResult.columns``
names each column's type, as ``format_type()`` prints it. ``decoder_for(type)`` turns that
into the function that decodes one value:

    smallint, integer, oid         100.0                   -> 100
    bigint                         "9007199254740993"      -> 9007199254740993
    numeric(12,2)                  "49.90"                 -> Decimal("49.90")
    real, double precision         1.5, "NaN"              -> 1.5, nan
    uuid                           "0b3f..."               -> UUID("0b3f...")
    date                           "2026-12-06"            -> date(2026, 12, 6)
    timestamp with time zone       "2026-12-06T02:36:12+00:00" -> aware datetime (UTC)
    timestamp without time zone    "2026-12-06T02:36:12"   -> naive datetime
    time [with time zone]          "10:00:00+02:00"        -> time (with its offset)
    interval                       "P1Y2M3DT4H"            -> timedelta(days=428, hours=4)
    bytea                          "aGk="                  -> b"hi"
    json, jsonb                    {"n": 2.0}              -> {"n": 2}
    inet, cidr                     "10.0.0.1/24"           -> IPv4Interface / IPv4Network
    T[]                            [...]                   -> list, each element as T

Where asyncpg gives up exactness, so does this, to return the same value: an interval counts
a year as 365 days and a month as 30; ``infinity`` dates and timestamps are asyncpg's
stand-ins (``date.max``, ``datetime.max``, ...). JSON numbers crossed the wire as doubles: the
integral ones come back as ints. Types not listed (text, enums, money, ranges, ...) and
values this cannot read (a timestamp beyond year 9999) are left as they are; so are values of
columns a result does not list (a custom handler's column of mixed Python types).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from google.protobuf import json_format, struct_pb2

Decoder = Callable[[Any], Any]

_MAX_SAFE_INTEGER = 2**53 - 1
_MODIFIER = re.compile(r"\(\d+(?:,\d+)?\)")  # numeric(12,2), varchar(10), timestamp(3) ...
_UTC = dt.UTC
# asyncpg's stand-ins for PostgreSQL's infinities (asyncpg.pgproto's datetime codecs).
_INFINITIES: dict[str, tuple[Any, Any]] = {
    "date": (dt.date.max, dt.date.min),
    "timestamp without time zone": (dt.datetime.max, dt.datetime.min),
    "timestamp with time zone": (dt.datetime.max.replace(tzinfo=_UTC), dt.datetime.min),
}


def _int(value: Any) -> int:
    return int(value)  # a double that is integral, or a string of digits (bigint)


def _decimal(value: Any) -> Decimal:
    return Decimal(value) if isinstance(value, str) else Decimal(repr(value))


def _float(value: Any) -> float:
    return float(value)  # a number, or "NaN" / "Infinity" / "-Infinity"


def _bytes(value: Any) -> bytes:
    return base64.b64decode(value)


def _uuid(value: Any) -> uuid.UUID:
    return uuid.UUID(value)


def _json(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= _MAX_SAFE_INTEGER:
        return int(value)
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value


def _inet(value: Any) -> Any:
    if "/" in value:
        return ipaddress.ip_interface(value)
    return ipaddress.ip_address(value)


def _cidr(value: Any) -> Any:
    return ipaddress.ip_network(value)


_DURATION = re.compile(r"P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)D)?"
                       r"(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?\d+(?:\.\d+)?)S)?)?")


def _interval(value: Any) -> Any:
    """The server's ISO 8601 duration (each part signed) as asyncpg's timedelta: whole years
    of the months are 365 days, the rest 30 days each."""
    m = _DURATION.fullmatch(value)
    if m is None:
        return value
    years, months, days, hours, minutes = (int(g) if g else 0 for g in m.groups()[:5])
    seconds = Decimal(m.group(6) or 0)
    micros = (hours * 3600 + minutes * 60) * 1_000_000 + int(seconds * 1_000_000)
    return dt.timedelta(days=years * 365 + months * 30 + days, microseconds=micros)


def _temporal(parse: Callable[[str], Any], kind: str) -> Decoder:
    positive, negative = _INFINITIES[kind]

    def decode(value: Any) -> Any:
        if value == "infinity":
            return positive
        if value == "-infinity":
            return negative
        try:
            return parse(value)
        except ValueError:  # beyond what Python's datetime holds: the server's exact text
            return value
    return decode


_SCALARS: dict[str, Decoder] = {
    "smallint": _int, "integer": _int, "bigint": _int, "oid": _int,
    "numeric": _decimal,
    "real": _float, "double precision": _float,
    "uuid": _uuid,
    "date": _temporal(dt.date.fromisoformat, "date"),
    "timestamp with time zone": _temporal(dt.datetime.fromisoformat,
                                          "timestamp with time zone"),
    "timestamp without time zone": _temporal(dt.datetime.fromisoformat,
                                             "timestamp without time zone"),
    "time without time zone": dt.time.fromisoformat,
    "time with time zone": dt.time.fromisoformat,
    "interval": _interval,
    "bytea": _bytes,
    "json": _json, "jsonb": _json,
    "inet": _inet, "cidr": _cidr,
}


def _array(element: Decoder) -> Decoder:
    def decode(value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [None if v is None else decode(v) if isinstance(v, list) else element(v)
                for v in value]
    return decode


_decoders: dict[str, Decoder | None] = {}


def decoder_for(type_sql: str) -> Decoder | None:
    """The decoder of values of a column of this type (``ResultColumn.type``), or None: leave
    them as they are."""
    try:
        return _decoders[type_sql]
    except KeyError:
        pass
    base = _MODIFIER.sub("", type_sql)
    is_array = base.endswith("[]")
    scalar = _SCALARS.get(base.removesuffix("[]"))
    decoder = None if scalar is None else _array(scalar) if is_array else scalar
    if len(_decoders) < 1024:
        _decoders[type_sql] = decoder
    return decoder


def decode_rows(rows: Sequence[struct_pb2.Struct],
                columns: Mapping[str, str]) -> list[dict[str, Any]]:
    """Rows of a result as dicts of Python values, each decoded by its column's type
    (``columns``: name -> type); without columns, the values as the wire has them."""
    plain = [json_format.MessageToDict(row) for row in rows]
    decoders = [(name, decoder) for name, type_sql in columns.items()
                if (decoder := decoder_for(type_sql)) is not None]
    if decoders:
        for row in plain:
            for name, decode in decoders:
                value = row.get(name)
                if value is not None:
                    try:
                        row[name] = decode(value)
                    except ValueError:  # not a form this knows: as the server sent it
                        pass
    return plain
