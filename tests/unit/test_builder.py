"""batchd.client.builder: Python values as protobuf values, and the ``Batch`` builder's
requests and refusals (no server: what it builds is checked as a message)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from google.protobuf import json_format

from batchd.client import Batch
from batchd.client.builder import to_value
from batchd.v1 import batch_pb2


def value_json(value):
    return json_format.MessageToDict(to_value(value))


def test_values_map_to_protobuf_exactly():
    assert value_json(None) is None
    assert value_json(True) is True
    assert value_json(2**53 - 1) == 2**53 - 1 and value_json(-(2**53 - 1)) == -(2**53 - 1)
    assert value_json(2**53) == "9007199254740992"
    assert value_json(-(2**63)) == "-9223372036854775808"
    assert value_json(1.5) == 1.5
    assert [value_json(float(x)) for x in ("nan", "inf", "-inf")] == \
        ["NaN", "Infinity", "-Infinity"]
    assert value_json(Decimal("1E+3")) == "1000" and value_json(Decimal("0.10")) == "0.10"
    assert value_json(dt.date(2024, 2, 29)) == "2024-02-29"
    assert value_json(dt.datetime(2024, 1, 1, tzinfo=dt.UTC)) == "2024-01-01T00:00:00+00:00"
    assert value_json(dt.timedelta(days=-1, seconds=5)) == "-P0DT86395S"
    assert value_json(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert value_json(b"\x00\xff") == "AP8="
    assert value_json({"a": [1, (2, "x"), {"b": None}]}) == {"a": [1, [2, "x"], {"b": None}]}
    with pytest.raises(TypeError):
        to_value(object())


def test_references_name_the_operation_column_and_row():
    b = Batch()
    first = b.insert("customers", {"name": "a", "email": "a@x"})
    assert first.ref("id") == {"$ref": "op1.id"}
    assert first.ref("id", row=3) == {"$ref": "op1.3.id"}
    request = b.to_request()
    assert request.mode == batch_pb2.MODE_ATOMIC


def test_generated_ids_skip_ids_already_given_and_duplicates_are_refused():
    b = Batch()
    assert b.call("echo", id="op2").id == "op2"
    assert [b.call("echo").id, b.call("echo").id] == ["op3", "op4"]
    with pytest.raises(ValueError, match="already used"):
        b.call("echo", id="op3")


def test_builder_refuses_ambiguous_operations():
    b = Batch()
    with pytest.raises(ValueError, match="exactly one of key= and filters="):
        b.update("orders", key={"id": 1}, filters=[("id", "eq", 1)], set={"status": "x"})
    with pytest.raises(ValueError, match="exactly one"):
        b.delete("orders")
    with pytest.raises(ValueError, match="unknown filter operator"):
        b.query("orders", [("id", "between", 1)])
    with pytest.raises(ValueError, match="on_conflict"):
        b.insert("orders", {"id": 1}, on_conflict="ignore")
    with pytest.raises(ValueError, match="atomic, independent"):
        b.to_request(mode="sometimes")
    assert len(b) == 0


def test_builder_request_matches_the_grpcurl_json():
    b = Batch()
    c = b.insert("customers", {"name": "a", "email": "a@x"}, on_conflict="do_nothing",
                 conflict_columns=["email"])
    b.query("orders", {"customer_id": c.ref("id")}, order_by=["-total", "id"], limit=5,
            depends_on=[c], id="q")
    request = json_format.MessageToDict(b.to_request(mode="independent", isolation="serializable",
                                                     read_only=True))
    assert request == {
        "operations": [
            {"id": "op1", "insert": {"table": "customers", "rows": [{"name": "a", "email": "a@x"}],
                                     "onConflict": {"action": "ACTION_DO_NOTHING",
                                                    "conflictColumns": ["email"]}}},
            {"id": "q", "dependsOn": ["op1"], "query": {
                "table": "orders",
                "filters": [{"column": "customer_id", "op": "EQ", "value": {"$ref": "op1.id"}}],
                "orderBy": [{"column": "total", "descending": True}, {"column": "id"}],
                "limit": 5}},
        ],
        "mode": "MODE_INDEPENDENT", "isolation": "ISOLATION_LEVEL_SERIALIZABLE", "readOnly": True,
    }
