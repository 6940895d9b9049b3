"""Text that batchd writes for PostgreSQL itself: quoted identifiers, and JSON documents.

Below the database layer (``batchd.db`` quotes role names with ``quote_ident`` and encodes
json/jsonb with ``dumps_json``) and below everything that builds SQL or values, so that both
directions of the value mapping (batchd.coercion, batchd.rendering) and the pool share them
without importing one another.

JSON numbers are exact where a double is not: ``render_any`` writes an integer beyond 2^53 as
a string and a numeric as its decimal text, and ``JsonText`` carries a document checked
elsewhere as the text it came as, every digit kept.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import uuid
from decimal import Decimal
from typing import Any

from batchd.pgtypes import Interval

MAX_SAFE_INTEGER = 2**53 - 1  # beyond it, a double may already be a rounded neighbour


def quote_ident(name: str) -> str:
    """Quote a catalog name for SQL (only ever called on names read from the catalog)."""
    return '"' + name.replace('"', '""') + '"'


def render_any(value: Any) -> Any:
    """Render a value of unknown column type (custom handler results) as JSON-ready Python."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if abs(value) <= MAX_SAFE_INTEGER else str(value)
    if isinstance(value, float):
        return render_float(value)
    if isinstance(value, Decimal):
        return format(value, "f")  # never exponent notation: 0.00000010, not 1.0E-7
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.datetime | dt.date | dt.time | Interval):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return Interval(0, value.days, value.seconds * 1_000_000 + value.microseconds).isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, dict):
        return {str(k): render_any(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render_any(v) for v in value]
    return str(value)


def render_float(value: float) -> Any:
    """A double as JSON has it, or ±infinity and NaN by name (JSON has no such numbers)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


class JsonText(str):
    """A JSON document already as text (checked): written to a json/jsonb column as it is, so
    that numbers beyond a double's precision keep every digit."""


def dumps_json(value: Any) -> str:
    """Encoder of the connections' json/jsonb codec."""
    if isinstance(value, JsonText):
        return str(value)
    return json.dumps(value, default=render_any, ensure_ascii=False, separators=(",", ":"))
