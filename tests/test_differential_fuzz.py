"""batchd and the plain reference executor (tests/support/reference_executor.py) on the same
batches: what the differential fuzzer found, kept as plain regression tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.batch_model import Batch, Filter, Insert, Op, Query
from tests.support.differential import Harness, differences, harness


@pytest.fixture(scope="module")
def pair(schema: str) -> Iterator[Harness]:
    with harness(schema) as h:
        yield h


# --- what the fuzzer found (kept as plain regressions) ----------------------------------------

def test_a_multi_row_insert_stores_json_arrays_as_documents(pair: Harness) -> None:
    # Several rows go in one INSERT ... SELECT FROM unnest($1::jsonb[], ...): a document that
    # is a list was taken by the driver for a dimension of that array parameter, and the
    # insert failed with INVALID_ARGUMENT (INVALID_VALUE).
    batch = Batch([
        Op("lists", Insert("doc", [{"id": 4, "title": "a", "body": [1, 2]},
                                   {"id": 5, "title": "b", "body": [3, 4]}],
                           returning=["id", "body"])),
        Op("mixed", Insert("doc", [{"id": 6, "title": "c", "body": {"k": 1}},
                                   {"id": 7, "title": "d", "body": []}])),
        # Coalesced with "mixed": one statement for the three.
        Op("one", Insert("doc", [{"id": 8, "title": "e", "body": [5]}])),
        Op("two", Insert("doc", [{"id": 9, "title": "f", "body": [6, [7]]}])),
    ], run_order=["lists", "mixed", "one", "two"])
    got, expected = pair.run(batch)
    assert got.results[0].rows == [{"id": 4, "body": [1, 2]}, {"id": 5, "body": [3, 4]}]
    assert [row["body"] for row in got.tables["doc"][3:]] == [[1, 2], [3, 4], {"k": 1}, [],
                                                               [5], [6, [7]]]
    assert not differences(got, expected)


def test_an_in_filter_on_a_jsonb_column_compares_whole_documents(pair: Harness) -> None:
    # The same for the list of an IN filter (= ANY($1::jsonb[])).
    batch = Batch([Op("q", Query("doc", [Filter("body", "IN", [[1, 2], {"k": 1}])],
                                 columns=["id"], include_deleted=True))], run_order=["q"])
    got, expected = pair.run(batch)
    assert got.results[0].rows == [{"id": 1}, {"id": 3}]
    assert not differences(got, expected)
