"""The Python client returns Python values: every column decoded by the type the result
announces (OperationResult.columns) into exactly what asyncpg returns for it, value and type.

Rows go in through the client and come back through it (an insert's RETURNING, a get, a
query); the same row fetched with asyncpg on its own connection is the reference. asyncpg
returns json / jsonb as text unless a codec is set: the reference decodes it with json.loads,
as the usual codec does.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from batchd.client import AsyncClient, Batch
from batchd.client.values import decoder_for

JSON_COLUMNS = {"doc", "docb"}

# Every column of all_types (tests/support/schema.sql), as a Python program would write them.
TYPICAL = {
    "id": 1, "i2": -32768, "i4": 2**31 - 1, "i8": 2**62 + 1,
    "num": Decimal("12345678901234567890.123456789012345678"), "money": Decimal("49.90"),
    "f8": 0.1, "flag": True, "label": "zoë 🐘", "code": "KB-01",
    "uid": uuid.UUID("6f1e4b1c-9a3b-4c8e-8f2e-0d9b1a7c5e33"), "day": dt.date(2024, 2, 29),
    "at": dt.datetime(2024, 2, 29, 23, 59, 59, 123456,
                      tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    "local_at": dt.datetime(2024, 1, 2, 3, 4, 5, 6),
    "doc": {"a": [1, 2.5, None, "x"], "b": {"c": True}}, "docb": [1, {"k": "v"}, -3],
    "blob": bytes(range(256)), "ids": [2**53 + 1, -1], "tags": ["a", "", "b c"],
    "grid": [[1, 2], [3, None]],
    "span": dt.timedelta(days=1, seconds=3661, microseconds=500000),
}
# The edges: strings where PostgreSQL has more than Python (months in an interval, infinities).
EDGES = {
    "id": 2, "i2": 0, "i4": -1, "i8": -(2**63), "num": "NaN", "money": Decimal("-0.01"),
    "f8": "-Infinity", "flag": False, "label": "", "code": "", "uid": uuid.UUID(int=0),
    "day": "infinity", "at": "-infinity", "local_at": "infinity", "doc": "text",
    "docb": {}, "blob": b"", "ids": [], "tags": [None], "grid": [],
    "span": "P-1Y2M-3DT4H-5M6.000001S",
}
NULLS = {"id": 3, **{name: None for name in TYPICAL if name != "id"}}


@pytest.fixture
async def client(app: Any) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(f"127.0.0.1:{app.port}", timeout=30) as c:
        yield c


def assert_same(got: Any, expected: Any, where: str) -> None:
    """Equal, and of the same type, all the way down (NaN equals NaN; asyncpg's UUID is a
    uuid.UUID subclass)."""
    if isinstance(expected, uuid.UUID):
        assert isinstance(got, uuid.UUID) and got == expected, where
        return
    assert type(got) is type(expected), f"{where}: {got!r} is not a {type(expected).__name__}"
    if isinstance(expected, list):
        assert len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_same(g, e, f"{where}[{i}]")
    elif isinstance(expected, dict):
        assert got.keys() == expected.keys(), where
        for k in expected:
            assert_same(got[k], expected[k], f"{where}.{k}")
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got), where
    elif isinstance(expected, Decimal) and expected.is_nan():
        assert got.is_nan(), where
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"
        if isinstance(expected, dt.datetime | dt.time):
            assert got.utcoffset() == expected.utcoffset(), where


async def as_asyncpg_gives(db: Any, row_id: int) -> dict[str, Any]:
    record = await db.fetchrow("SELECT * FROM all_types WHERE id = $1", row_id)
    return {k: json.loads(v) if k in JSON_COLUMNS and v is not None else v
            for k, v in record.items()}


@pytest.mark.parametrize("row", [TYPICAL, EDGES, NULLS], ids=["typical", "edges", "nulls"])
async def test_every_all_types_column_comes_back_as_asyncpg_gives_it(client, db, row):
    b = Batch()
    inserted = b.insert("all_types", row, returning=["*"])
    got = b.get("all_types", {"id": row["id"]})
    found = b.query("all_types", [("id", "eq", row["id"])])
    result = await client.execute(b)
    expected = await as_asyncpg_gives(db, row["id"])
    assert set(expected) == set(TYPICAL)
    for outcome in (result[inserted], result[got], result[found]):
        assert outcome.rows and len(outcome.rows) == 1
        assert_same(outcome.row, expected, outcome.id)


# Column types all_types lacks, in the tables of tests/integration/test_stream_arrow.py (not emptied
# between tests: the row is deleted before and after).
MORE_TYPES = [
    ("arrow_extra", {"id": 9001, "docs": [{"a": 1}, None, {"b": [2.5, 3]}],
                     "moments": [dt.datetime(2024, 1, 2, 3, 4, 5, 6), None],
                     "at_time": dt.time(23, 59, 59, 999999), "ratio": 0.1,
                     "amounts": [Decimal("1.50"), Decimal("-999.99")], "flags": [True, None],
                     "mood": "sad"}),
    ("arrow_refused", {"id": 9001, "tstz": [dt.datetime(2024, 1, 1, tzinfo=dt.UTC)],
                       "uids": [uuid.UUID(int=7), None], "names": ["x", ""],
                       "tt": dt.time(10, 30, tzinfo=dt.timezone(dt.timedelta(hours=-3)))}),
]


@pytest.mark.parametrize(("table", "row"), MORE_TYPES, ids=[t for t, _ in MORE_TYPES])
async def test_more_column_types_come_back_as_asyncpg_gives_them(client, db, table, row):
    await db.execute(f"DELETE FROM {table} WHERE id = 9001")
    try:
        b = Batch()
        inserted = b.insert(table, row, returning=list(row))
        result = await client.execute(b)
        record = await db.fetchrow(f"SELECT {', '.join(row)} FROM {table} WHERE id = 9001")
    finally:
        await db.execute(f"DELETE FROM {table} WHERE id = 9001")
    expected = dict(record.items())
    if table == "arrow_extra":  # jsonb[]: asyncpg gives each document as text
        expected["docs"] = [None if d is None else json.loads(d) for d in expected["docs"]]
    assert_same(result[inserted].row, expected, table)


async def test_results_name_their_columns_with_postgresql_types(client):
    b = Batch()
    inserted = b.insert("all_types", {"id": 1}, returning=["id", "money", "at", "grid"])
    result = await client.execute(b)
    assert result[inserted].columns == {"id": "bigint", "money": "numeric(12,2)",
                                        "at": "timestamp with time zone", "grid": "integer[]"}
    wire = result.to_dict()["results"][0]
    assert wire["columns"][0] == {"name": "id", "type": "bigint"}
    assert wire["rows"] == [{"id": "1", "money": None, "at": None, "grid": None}]


async def test_a_query_without_rows_still_names_its_columns(client):
    b = Batch()
    none = b.query("all_types", [("id", "eq", 404)], columns=["id", "span"])
    result = await client.execute(b)
    assert result[none].rows == [] and result[none].columns == {"id": "bigint",
                                                                "span": "interval"}


async def test_sql_function_results_are_decoded_by_their_result_columns(client):
    b = Batch()
    exact = b.function("fn_exact", {"amount": Decimal("0.1"), "big": 2**62,
                                    "doc": {"n": 1, "f": 1.5}})
    result = await client.execute(b)
    assert result[exact].columns == {"doubled": "numeric", "next_big": "bigint",
                                     "doc_back": "jsonb", "amount_type": "text"}
    assert_same(result[exact].row, {"doubled": Decimal("0.2"), "next_big": 2**62 + 1,
                                    "doc_back": {"n": 1, "f": 1.5}, "amount_type": "numeric"},
                "fn_exact")


async def test_custom_handler_values_come_back_as_the_python_values_it_returned(client):
    b = Batch()
    # A handler without a model gets the arguments as JSON has them (a bigint as a string).
    echoed = b.call("echo", {"n": 7, "big": 2**62, "x": 1.5, "when": "2024-01-01",
                             "doc": {"k": [1, 2]}})
    timed = b.call("sleep", {"seconds": 0})  # returns clock_timestamp() twice: datetimes
    result = await client.execute(b)
    assert result[echoed].columns == {"n": "bigint", "big": "text", "x": "double precision",
                                      "when": "text", "doc": "jsonb"}
    assert_same(result[echoed].row, {"n": 7, "big": str(2**62), "x": 1.5, "when": "2024-01-01",
                                     "doc": {"k": [1, 2]}}, "echo")
    assert result[timed].columns == {"started": "timestamp with time zone",
                                     "ended": "timestamp with time zone"}
    row = result[timed].row
    assert isinstance(row["started"], dt.datetime) and row["started"].tzinfo == dt.UTC
    assert row["started"] <= row["ended"]


@pytest.mark.parametrize(("type_sql", "wire", "expected"), [
    ("time without time zone", "10:00:01.5", dt.time(10, 0, 1, 500000)),
    ("time with time zone", "10:00:00+02:00",
     dt.time(10, tzinfo=dt.timezone(dt.timedelta(hours=2)))),
    ("real", 1.5, 1.5),
    ("timestamp(3) with time zone", "2024-01-01T00:00:00+00:00",
     dt.datetime(2024, 1, 1, tzinfo=dt.UTC)),
    ("uuid[]", [str(uuid.UUID(int=1))], [uuid.UUID(int=1)]),
    ("inet", "10.0.0.1/24", __import__("ipaddress").ip_interface("10.0.0.1/24")),
    ("inet", "10.0.0.1", __import__("ipaddress").ip_address("10.0.0.1")),
    ("cidr", "10.0.0.0/24", __import__("ipaddress").ip_network("10.0.0.0/24")),
    ("oid", 100.0, 100),
])
def test_types_outside_all_types_decode_as_asyncpg_gives_them(type_sql: str, wire: Any,
                                                              expected: Any) -> None:
    decode = decoder_for(type_sql)
    assert decode is not None
    assert_same(decode(wire), expected, type_sql)


@pytest.mark.parametrize("type_sql", ["mood_kind", "money", "int4range", "text", "xml",
                                      "character varying(20)[]"])
def test_types_without_a_decoder_are_left_as_they_are(type_sql: str) -> None:
    assert decoder_for(type_sql) is None
