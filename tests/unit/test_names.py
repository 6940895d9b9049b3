"""Enum names from 0.1.0 (before the prefixes of 0.2.0) are recognised and their new names given."""

from __future__ import annotations

from batchd import names
from batchd.v1 import batch_pb2

REQUEST = batch_pb2.BatchExecuteRequest


def test_each_renamed_enum_gives_the_name_it_has_since_0_2_0() -> None:
    assert names.current_name(batch_pb2.Filter.Operator.DESCRIPTOR, "EQ") == "OPERATOR_EQ"
    assert names.current_name(batch_pb2.Filter.Operator.DESCRIPTOR, "is_null") == \
        "OPERATOR_IS_NULL"
    assert names.current_name(batch_pb2.Outcome.DESCRIPTOR, "SUCCEEDED") == "OUTCOME_SUCCEEDED"
    assert names.current_name(batch_pb2.Mode.DESCRIPTOR, "INDEPENDENT") == "MODE_INDEPENDENT"
    assert names.current_name(batch_pb2.OnConflict.Action.DESCRIPTOR, "DO_NOTHING") == \
        "ACTION_DO_NOTHING"
    assert names.current_name(batch_pb2.IsolationLevel.DESCRIPTOR, "SERIALIZABLE") == \
        "ISOLATION_LEVEL_SERIALIZABLE"
    # Current names and names that never were are not "renamed".
    assert names.current_name(batch_pb2.Mode.DESCRIPTOR, "MODE_ATOMIC") is None
    assert names.current_name(batch_pb2.Filter.Operator.DESCRIPTOR, "EQUALS") is None


def test_every_old_name_in_a_request_document_is_found_with_its_path() -> None:
    document = {
        "mode": "INDEPENDENT", "isolation": "ISOLATION_LEVEL_SERIALIZABLE",
        "operations": [
            {"id": "q", "query": {"table": "t", "filters": [
                {"column": "a", "op": "OPERATOR_EQ", "value": 1},
                {"column": "b", "op": "IN", "value": [1]}],
                "where": {"logic": "OR", "groups": [{"logic": "NOT"}]}}},
            {"id": "i", "insert": {"table": "t", "rows": [{"op": "EQ"}],  # a row: not an enum
                                   "onConflict": {"action": "UPDATE"}}},
        ]}
    assert names.renamed_enum_values(document, REQUEST) == [
        ("mode", "INDEPENDENT", "MODE_INDEPENDENT"),
        ("operations[0].query.filters[1].op", "IN", "OPERATOR_IN"),
        ("operations[0].query.where.logic", "OR", "LOGIC_OR"),
        ("operations[0].query.where.groups[0].logic", "NOT", "LOGIC_NOT"),
        ("operations[1].insert.on_conflict.action", "UPDATE", "ACTION_UPDATE"),
    ]
