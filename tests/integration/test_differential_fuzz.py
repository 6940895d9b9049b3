"""The differential fuzzer: batches drawn by hypothesis run through batchd (a real server,
BatchExecute over gRPC) and through a plain reference executor (tests/support/
reference_executor.py: asyncpg, statement by statement, hand-written SQL, no batchd code), each
on its own copy of four tables (schemas ``fuzz`` and ``fuzz_ref``, reset before every
example); then every operation's outcome, status code, reason (batchd's own errors) or SQLSTATE
and constraint (PostgreSQL's), result columns with their types, rows, rows_affected, whether a
next page exists, total_count, the RPC's code, committed and attempts, and the final contents of
every table must be the same. It pins what batchd promises today, so that a new executor can be
shown to keep it.

What is drawn (tests/support/batch_strategies.py, from the description in
tests/support/batch_model.py): a parent table (serial id, unique code, a check, numeric), a
child table (bigserial id, foreign key to parent, a unique pair, timestamptz), a document
table (client-chosen id, version column, jsonb, text[], soft-delete column) and a link table
(a composite primary key, reserved words and capitals for column names); inserts (1-3 rows;
ON CONFLICT error / do nothing / update, by the key or a unique constraint, with or without
update columns; RETURNING none, some, ``*``; runs of inserts of one shape, which batchd
coalesces), gets, queries (filters of every operator, nested AND / OR / NOT where groups,
order_by, limit, columns, include_deleted, count), updates and deletes by key (with
expected_version) or by filters and where; references ``op.column`` and ``op.N.column`` in
rows, keys, set, filter values, IN lists and inside jsonb documents, ``$literal`` and objects
that only look like references; depends_on; ATOMIC and INDEPENDENT batches, groups,
validate_only, read_only and the isolation levels; a request id on a third of them (a fresh
one each run: the answer must be the same, and the request sent again must get it back with
the tables untouched; but validate_only, which is not stored and runs again). Failures of
every kind are drawn on purpose: unique, foreign-key, check and not-null violations, an upsert
touching one row twice, version conflicts, NOT_FOUND, a reference to a row that is not there,
writes in a read-only transaction; and so every outcome: FAILED, ROLLED_BACK, NOT_RUN,
SKIPPED.

Where batchd's documented semantics are not those of a naive statement-by-statement run, or
where two correct runs may differ, the generator or the comparison says so:

- INDEPENDENT operations without a dependency between them run concurrently, in no promised
  order. The generator keeps the answer independent of the interleaving: two units (groups, or
  single operations) that may run at once touch different table families ({parent, child},
  {doc}, {link}) or both only read; otherwise it adds a depends_on on the earlier unit's last
  operation. The reference runs the units one by one in an order that respects dependencies.
  The request order is shuffled (a group's members keep theirs), so references and depends_on
  point forward too.
- Sequences are not transactional, and batchd may run a batch (or group) twice: when a
  statement shared by coalesced inserts fails, the transaction is rolled back and run again
  with its operations apart, to name the one that failed; the second run draws new ids. A
  batch that guesses the id a sequence will hand out could then differ. So literal ids of the
  serial tables are the seed rows' (1-3) or 99, and ids from a sequence reach other columns
  only by reference, only into columns holding such ids.
- RETURNING of an update or delete by filters comes in the order PostgreSQL found the rows
  (where they happen to lie on disk, which differs between the two copies): those rows are
  compared in key order and never referenced.
- The soft-delete column is set to now(), which differs between two transactions: it is
  compared as set or not, never referenced, ordered or filtered by (but IS_NULL).
- Messages are not compared (their wording is free), nor page tokens (their text is batchd's
  encoding; only whether one is given). ROLLED_BACK and NOT_RUN carry ABORTED.
- Later pages: a token cannot be referenced inside a batch, so keyset pages get a test of
  their own: after a drawn batch, a drawn query (small pages, up to three sort columns in
  either direction, NULLs among them) is read from batchd page by page; the pages, joined,
  must be the reference's whole ordered result, every page but the last full and with a token,
  each with the same total_count.
- Every request is valid: planning errors (INVALID_ARGUMENT before anything runs) are
  tests/integration/test_fuzz.py's subject. A reference carries a value into a column of its own
  family only (integer, text, numeric, timestamptz; in jsonb integer and text), since batchd's
  coercion of other pairs is its own rule, not a database's.
- Values are compared by their meaning: bigint and numeric decoded from their strings
  (numeric keeping its scale, "1.50"), timestamptz as instants, jsonb numbers integral or not.
- Where the docs are silent, the reference pins what batchd does today: updates and deletes
  leave soft-deleted rows alone (by key: NOT_FOUND, also with an expected_version), an upsert
  does not (it updates a soft-deleted row, and its version); a soft delete increments the
  version too.
- Custom handlers and SQL functions are not drawn.

The default suite runs ``DEFAULT_EXAMPLES`` batches per mode and ``PAGED_EXAMPLES`` paged
queries with fixed examples (``derandomize``), in about 50 s on two shared cores; ``-m fuzz``
(scripts/test-fuzz) runs ``FUZZ_EXAMPLES`` per mode and 1,000 paged queries, others than the
default suite's, in about 4 minutes.
``BATCHD_DIFF_EXAMPLES=N`` sets both; ``BATCHD_DIFF_RANDOM=1`` draws fresh examples instead of
the fixed ones. A failure shows the differences and the request as JSON; what the fuzzer found
is kept below as plain regression tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings

from tests.support.batch_model import Batch, Filter, Get, Insert, Op, Query, Ref
from tests.support.batch_strategies import batches, queries
from tests.support.differential import Harness, describe, differences, harness

_OVERRIDE = int(os.environ.get("BATCHD_DIFF_EXAMPLES", "0"))
DEFAULT_EXAMPLES = _OVERRIDE or 1000
FUZZ_EXAMPLES = _OVERRIDE or 5000
DIFFERENTIAL = settings(max_examples=DEFAULT_EXAMPLES, deadline=None,
                        derandomize=not os.environ.get("BATCHD_DIFF_RANDOM"), database=None,
                        print_blob=False,
                        suppress_health_check=[HealthCheck.function_scoped_fixture,
                                               HealthCheck.too_slow,
                                               HealthCheck.data_too_large,
                                               HealthCheck.filter_too_much])
LONGER = settings(DIFFERENTIAL, max_examples=FUZZ_EXAMPLES)
# Queries read page by page (each example a batch, then a call per page).
PAGED_EXAMPLES = _OVERRIDE or 200


@pytest.fixture(scope="module")
def pair(schema: str) -> Iterator[Harness]:
    with harness(schema) as h:
        yield h


def same_answer(pair: Harness, batch: Batch) -> None:
    got, expected = pair.run(batch)
    event(f"batch {expected.code}")  # --hypothesis-show-statistics shows the spread
    for op, result in zip(batch.ops, expected.results, strict=True):
        event(f"{type(op.kind).__name__.lower()} {op.kind.table} {result.outcome} "
              f"{result.code} {result.reason or result.sqlstate}")
    found = differences(got, expected)
    assert not found, "batchd and the reference differ:\n  " + "\n  ".join(found) + \
        f"\nrequest:\n{describe(batch)}"


@DIFFERENTIAL
@given(batch=batches(atomic=True))
def test_atomic_batches_answer_as_the_reference_executor(pair: Harness, batch: Batch) -> None:
    same_answer(pair, batch)


@DIFFERENTIAL
@given(batch=batches(atomic=False))
def test_independent_batches_answer_as_the_reference_executor(pair: Harness,
                                                              batch: Batch) -> None:
    same_answer(pair, batch)


def pages_are_the_reference_order_cut(pair: Harness, batch: Batch, query: Query) -> None:
    pages, whole = pair.pages(batch, query)
    event(f"{len(pages)} page(s)")
    shown = f"query: {query}\npages: {[p.rows for p in pages]}\nreference: {whole.rows}"
    assert [r for p in pages for r in p.rows] == whole.rows, shown
    assert all(len(p.rows) == query.limit and p.more for p in pages[:-1]), shown
    assert len(pages[-1].rows) <= query.limit and not pages[-1].more, shown
    if query.count:
        assert {p.total_count for p in pages} == {whole.total_count}, shown


@settings(DIFFERENTIAL, max_examples=PAGED_EXAMPLES)
@given(batch=batches(atomic=True), query=queries())
def test_a_query_read_page_by_page_is_the_reference_order_cut_in_pages(
        pair: Harness, batch: Batch, query: Query) -> None:
    pages_are_the_reference_order_cut(pair, batch, query)


@pytest.mark.fuzz
@pytest.mark.timeout(3600)
@LONGER
@given(batch=batches(atomic=True))
def test_many_more_atomic_batches_answer_as_the_reference_executor(pair: Harness,
                                                                   batch: Batch) -> None:
    same_answer(pair, batch)


@pytest.mark.fuzz
@pytest.mark.timeout(3600)
@LONGER
@given(batch=batches(atomic=False))
def test_many_more_independent_batches_answer_as_the_reference_executor(pair: Harness,
                                                                        batch: Batch) -> None:
    same_answer(pair, batch)


@pytest.mark.fuzz
@pytest.mark.timeout(3600)
@settings(LONGER, max_examples=_OVERRIDE or 1000)
@given(batch=batches(atomic=True), query=queries())
def test_many_more_queries_read_page_by_page_are_the_reference_order_cut_in_pages(
        pair: Harness, batch: Batch, query: Query) -> None:
    pages_are_the_reference_order_cut(pair, batch, query)


def test_the_harness_sees_a_value_an_outcome_or_a_row_that_differs(pair: Harness) -> None:
    """Guards the harness itself: the same answer passes, and a changed value, outcome or
    table row is reported."""
    batch = Batch([
        Op("p", Insert("parent", [{"code": "z", "qty": 2}], returning=["*"])),
        Op("g", Get("parent", {"id": Ref("p", "id")}, columns=["id", "qty"])),
    ], run_order=["p", "g"])
    got, expected = pair.run(batch)
    assert not differences(got, expected)
    assert got.results[1].rows == [{"id": 4, "qty": 2}]
    assert got.results[1].columns == [("id", "integer"), ("qty", "integer")]
    expected.results[1].rows[0]["qty"] = 3
    expected.results[0].outcome = "ROLLED_BACK"
    expected.tables["parent"].pop()
    found = differences(got, expected)
    assert [f.split(":")[0] for f in found] == ["p.outcome", "g.rows", "table parent"], found


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
