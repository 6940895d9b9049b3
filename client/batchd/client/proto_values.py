"""Python values as ``google.protobuf.Value``, exactly: what ``Batch`` and the ingest sources
send (``to_value``, ``to_struct``).

A Value's numbers are doubles, so exact types travel as strings, as the server expects: an
integer beyond 2**53 - 1 as its decimal digits, a Decimal as its plain text, a timedelta as an
ISO 8601 duration, bytes as base64. (Results come back the other way in
batchd.client.values.)
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from google.protobuf import struct_pb2

__all__ = ["MAX_SAFE_INTEGER", "iso_duration", "to_struct", "to_value"]

#: Integers JSON (a double) carries exactly; beyond this they travel as decimal strings.
MAX_SAFE_INTEGER = 2**53 - 1


def to_value(value: Any) -> struct_pb2.Value:
    """A Python value as a ``google.protobuf.Value``, exactly:

    None → null; bool → bool; int within ±(2**53-1) → number, larger → decimal string;
    float → number (NaN / ±inf → "NaN" / "Infinity" / "-Infinity"); Decimal → plain decimal
    string; str → string; datetime / date / time → isoformat (give timestamptz columns
    timezone-aware datetimes); timedelta → ISO 8601 duration; UUID → str; bytes → base64;
    mappings → struct; lists, tuples, sets → list; an ``OpRef.ref(...)`` is a mapping.
    """
    out = struct_pb2.Value()
    if value is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            out.number_value = value
        else:
            out.string_value = str(value)
    elif isinstance(value, float):
        if math.isfinite(value):
            out.number_value = value
        else:
            out.string_value = "NaN" if math.isnan(value) else \
                ("Infinity" if value > 0 else "-Infinity")
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, Decimal):
        # "f" keeps 1E+3 as "1000": plain text every PostgreSQL numeric parser takes.
        out.string_value = format(value, "f") if value.is_finite() else str(value)
    elif isinstance(value, dt.date | dt.time):
        out.string_value = value.isoformat()
    elif isinstance(value, dt.timedelta):
        out.string_value = iso_duration(value)
    elif isinstance(value, uuid.UUID):
        out.string_value = str(value)
    elif isinstance(value, bytes | bytearray | memoryview):
        out.string_value = base64.b64encode(bytes(value)).decode("ascii")
    elif isinstance(value, Mapping):
        out.struct_value.CopyFrom(to_struct(value))
    elif isinstance(value, list | tuple | set | frozenset):
        out.list_value.values.extend(to_value(v) for v in value)
    elif isinstance(value, struct_pb2.Value):
        out.CopyFrom(value)
    else:
        raise TypeError(f"cannot send a {type(value).__name__} as a batchd value")
    return out


def to_struct(mapping: Mapping[str, Any]) -> struct_pb2.Struct:
    """A mapping of column names to values as a ``google.protobuf.Struct`` (see ``to_value``)."""
    out = struct_pb2.Struct()
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise TypeError(f"keys must be column names (str), got {key!r}")
        out.fields[key].CopyFrom(to_value(value))
    return out


def iso_duration(value: dt.timedelta) -> str:
    """``P1DT3600.5S``: a timedelta as the ISO 8601 duration interval columns take, in days
    and seconds (a timedelta has no months), exact to the microsecond."""
    micros = value // dt.timedelta(microseconds=1)
    sign, micros = ("-" if micros < 0 else ""), abs(micros)
    days, micros = divmod(micros, 86_400_000_000)
    seconds, micros = divmod(micros, 1_000_000)
    frac = f".{micros:06d}".rstrip("0") if micros else ""
    return f"{sign}P{days}DT{seconds}{frac}S"
