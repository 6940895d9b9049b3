"""Values from protobuf: a request's google.protobuf.Value as plain Python, with references.

``from_proto`` recognises references ({"$ref": "op.column"}), which stay ``Ref`` objects
until the executor resolves them from an earlier operation's result, and literals
({"$literal": ...}), which are data even when they look like a reference.

The way on to PostgreSQL is batchd.coercion (every value coerced by its column's value family:
a bigint beyond 2^53 or a numeric never passes through a float); the way back is
batchd.rendering. The tables of accepted and returned forms are in batch.proto, in the comments
of Operation and ResultColumn. ``coerce``, ``coercer``, ``CoercionError`` and ``plain_json``
are batchd.coercion's, named here too: most callers take a value from protobuf and coerce it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2

from batchd.coercion import CoercionError, coerce, coercer, plain_json

__all__ = ["CoercionError", "Ref", "coerce", "coercer", "from_proto", "parse_ref", "plain_json",
           "struct_from_proto"]

_REF_RE = re.compile(r"([A-Za-z0-9_-]+)\.(?:([0-9]{1,9})\.)?([^.]+)")


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to a column of a row of an earlier operation's result."""

    operation: str
    row: int
    column: str

    def __str__(self) -> str:
        return f"{self.operation}.{self.row}.{self.column}"


def parse_ref(text: str) -> Ref:
    """``op.column`` or ``op.N.column``; raises CoercionError when malformed."""
    ref = _refs.get(text)
    if ref is not None:
        return ref
    m = _REF_RE.fullmatch(text)
    if m:
        if len(_refs) >= 4096:
            _refs.clear()
        ref = _refs[text] = Ref(m.group(1), int(m.group(2) or 0), m.group(3))
        return ref
    raise CoercionError(f'reference "{text}" must be "operation.column" or '
                        '"operation.row.column"')


# References parsed before, by their text (a Ref is immutable, so one can be shared): the
# same few ("order.id") come back in every batch of one form.
_refs: dict[str, Ref] = {}


def from_proto(value: struct_pb2.Value) -> Any:
    """A protobuf Value as plain Python, with {"$ref": ...} objects turned into ``Ref``."""
    which = value.WhichOneof("kind")
    if which == "string_value":
        return value.string_value
    if which == "number_value":
        return value.number_value
    if which == "bool_value":
        return value.bool_value
    if which == "struct_value":
        fields = value.struct_value.fields
        if len(fields) == 1:
            if "$ref" in fields and fields["$ref"].WhichOneof("kind") == "string_value":
                return parse_ref(fields["$ref"].string_value)
            if "$literal" in fields:
                return _plain(fields["$literal"])
        return {k: from_proto(v) for k, v in fields.items()}
    if which == "list_value":
        return [from_proto(v) for v in value.list_value.values]
    return None


def _plain(value: struct_pb2.Value) -> Any:
    """Like from_proto, but a "$ref" object is data, not a reference."""
    which = value.WhichOneof("kind")
    if which == "struct_value":
        return {k: _plain(v) for k, v in value.struct_value.fields.items()}
    if which == "list_value":
        return [_plain(v) for v in value.list_value.values]
    return from_proto(value)


def struct_from_proto(struct: struct_pb2.Struct) -> dict[str, Any]:
    """``from_proto`` of each value of a Struct (a row, a key), scalars inline: it runs for
    every row of every insert."""
    fields = struct.fields
    out: dict[str, Any] = {}
    for k in fields:  # by key: the map's items() is a pure-Python view, slower
        value = fields[k]
        which = value.WhichOneof("kind")
        if which == "string_value":
            out[k] = value.string_value
        elif which == "number_value":
            out[k] = value.number_value
        elif which == "bool_value":
            out[k] = value.bool_value
        else:
            out[k] = from_proto(value)
    return out
