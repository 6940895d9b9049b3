"""The ROWS fast path reads a json column's Structs in one pass (``arrow_rows._document``): it
must give exactly what the per-value path stores, ``plain_json(from_proto(value))``, and the
same JSON text as the connections' json codec."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2
from hypothesis import given
from hypothesis import strategies as st

from batchd.pgtext import dumps_json
from batchd.stream import arrow_rows
from batchd.values import from_proto, plain_json

numbers = st.one_of(st.integers(-(2**60), 2**60).map(float),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(
                        [0.0, -0.0, 2.0**53, 2.0**53 + 2, -(2.0**53) + 1, 1e300, 0.1]))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8))
keys = st.one_of(st.text(max_size=6), st.sampled_from(["$ref", "$literal"]))
documents = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                     st.dictionaries(keys, inner, max_size=4)), max_leaves=20)


def value_of(document: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    if isinstance(document, dict | list):
        holder = struct_pb2.Struct()
        holder.update({"v": document})
        value.CopyFrom(holder.fields["v"])
    elif document is None:
        value.null_value = struct_pb2.NULL_VALUE
    elif isinstance(document, bool):
        value.bool_value = document
    elif isinstance(document, float):
        value.number_value = document
    else:
        value.string_value = document
    return value


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@given(documents)
def test_a_document_is_read_as_the_per_value_path_reads_it(document):
    value = value_of(document)
    try:
        expected = plain_json(from_proto(value))
    except ValueError:  # a malformed {"$ref": ...}: the fast path leaves the chunk too
        try:
            arrow_rows._document(value)
        except ValueError:
            return
        raise AssertionError("a malformed reference was read") from None
    got = arrow_rows._document(value)
    assert same(got, expected)
    if got is not None:
        assert arrow_rows._json_text(got) == dumps_json(expected)


def test_an_unset_value_is_null_as_in_the_per_value_path():
    assert arrow_rows._document(struct_pb2.Value()) is None
