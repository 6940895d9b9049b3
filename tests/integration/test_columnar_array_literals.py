"""COLUMNAR array columns take PostgreSQL's array literal (``{a,b}``, as a PostgreSQL export
writes it) beside JSON text, and store exactly what PostgreSQL itself reads from the same text
(``SELECT $1::text::text[]``): quoting, NULL against "NULL", escapes, whitespace, nesting. A
literal PostgreSQL refuses rejects its row, naming the column."""

from __future__ import annotations

import random
from typing import Any

import asyncpg
import pytest

from batchd.catalog import Column
from batchd.stream import array_literal
from batchd.stream.columnar import read_array
from batchd.v1 import batch_pb2
from batchd.values import coerce
from tests.support.streams import Req, header, open_stream, send

# Each read by PostgreSQL and sent through COLUMNAR into all_types.tags (text[]).
TEXT_LITERALS = [
    "{}", "{{}}", "{ }", "{{},{}}", "{a,b}", " {a} ", "{a b}", "{ a b }", "{a  ,  b}",
    "{a\\ }", "{\\ a}", "{ \\ }", '{NULL,"NULL",null,nULL}', "{ NULL }", "{\\NULL}",
    "{NU\\LL}", "{NULLx}", "{NULL x}", '{"",""}', '{""}', '{"  "}', '{"\\\\a\\"b"}',
    "{a\\,b}", '{"a,b"}', "{abc\\\\}", "{a\tb}", "{\ta\n}", "{a\x0b}", '{"\n"}', "{a\\\n}",
    '{\\"}', '{"{}"}', "{\\{\\}}", "{é,ß}", "{{a,b},{c,d}}", "{ {a} , {b} }",
    "{{{a,b},{c,d}},{{e,f},{g,h}}}", "{{NULL,NULL},{NULL,NULL}}", '{{"a"},{NULL}}',
    "[1:2]={a,b}", "[2]={a,b}", "[1:2][1:1]={{a},{b}}", "[1:2] = {a,b}", "{[1,2]}",
    # refused by PostgreSQL
    '{a"b"c}', '{"a"b}', '{"a" "b"}', "{a,,b}", "{,}", "{a,}", "{{a},{b,c}}", "{{a},b}",
    "{a,{b}}", "{{},{a}}", "{a}x", "{}x", "{a}}", "{{a}", '{"a', "{a\\", '{"NULL"x}',
    "{a}{b}", "[1:3]={a,b}",
]


def columnar(sequence: int, ids: list[int], texts: list[str]) -> Req:
    return Req(chunk=batch_pb2.StreamChunk(sequence=sequence, columnar=batch_pb2.ColumnarRows(
        columns=[batch_pb2.ColumnValues(int64s=batch_pb2.Int64Array(values=ids)),
                 batch_pb2.ColumnValues(strings=batch_pb2.StringArray(values=texts))])))


async def postgresql_reads(db: asyncpg.Connection, text: str, cast: str) -> Any:
    """What PostgreSQL makes of ``text`` as ``cast`` (with its dimensions), or None if it
    refuses it."""
    try:
        return tuple(await db.fetchrow(f"SELECT $1::text::{cast}, array_dims($1::text::{cast})",
                                       text))
    except asyncpg.PostgresError:
        return None


async def test_text_array_literals_are_stored_as_postgresql_reads_them(stub, db):
    call, _ = await open_stream(stub, header(table="all_types", columns=["id", "tags"],
                                             encoding="ENCODING_COLUMNAR",
                                             mode="MODE_INDEPENDENT"))
    ids = list(range(len(TEXT_LITERALS)))
    ack = (await send(call, columnar(1, ids, TEXT_LITERALS))).ack
    await call.done_writing()
    assert (await call.read()).summary.committed
    rejected = {r.index: r.status.message for r in ack.rejected}
    stored = {r["id"]: (r["tags"], r["dims"]) for r in await db.fetch(
        "SELECT id, tags, array_dims(tags) AS dims FROM all_types")}
    refused_by_postgresql = 0
    for i, text in enumerate(TEXT_LITERALS):
        expected = await postgresql_reads(db, text, "text[]")
        if expected is None:
            refused_by_postgresql += 1
            assert i in rejected, (text, stored.get(i))
            assert rejected[i].startswith("rows[") and "tags: not an array literal" in \
                rejected[i], rejected[i]
        else:
            assert stored.get(i) == expected, (text, rejected.get(i))
    assert refused_by_postgresql == 19


async def test_a_lower_bound_other_than_1_is_refused_not_shifted(stub, db):
    call, _ = await open_stream(stub, header(table="all_types", columns=["id", "tags"],
                                             encoding="ENCODING_COLUMNAR",
                                             mode="MODE_INDEPENDENT"))
    ack = (await send(call, columnar(1, [1], ["[0:1]={a,b}"]))).ack
    await call.done_writing()
    await call.read()
    assert [r.status.message for r in ack.rejected] == [
        "rows[0].tags: not an array literal: lower bound 0: batchd writes arrays that start "
        "at 1; send the elements without bounds"]
    # PostgreSQL would keep the bound: storing the elements from 1 would change the value.
    assert await db.fetchval("SELECT array_lower('[0:1]={a,b}'::text[], 1)") == 0


async def test_random_literals_are_read_as_postgresql_reads_them(db):
    """Seeded random texts over the literal's own characters: read the same as PostgreSQL
    reads them, or refused where it refuses them (a lower bound other than 1 aside)."""
    rng = random.Random(16)
    alphabet = ['{', '}', '"', ',', '\\', ' ', 'a', 'N', 'U', 'L', 'NULL', 'null', '\t', 'é',
                '{}', '[1:1]=']
    checked = 0
    for _ in range(600):
        text = "{" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) + \
            rng.choice(["}", "}", "", "} "])
        expected = await postgresql_reads(db, text, "text[]")
        try:
            ours = array_literal.parse(text)
        except array_literal.ArrayLiteralError:
            assert expected is None, (text, expected)
            continue
        assert expected is not None, (text, ours)
        assert ours == expected[0], (text, ours, expected)
        checked += 1
    assert checked > 100  # the random texts are not all refused


# Element value families (batchd.catalog's Column.family) of the array types below.
FAMILIES = {"bigint[]": "int8", "integer[]": "int4", "numeric[]": "numeric",
         "double precision[]": "float", "boolean[]": "bool", "bytea[]": "bytea",
         "date[]": "date", "timestamptz[]": "timestamptz", "jsonb[]": "json", "uuid[]": "uuid"}


@pytest.mark.parametrize(("cast", "texts"), [
    ("bigint[]", ["{1,NULL,-9223372036854775808,9223372036854775807}", "{ 7 }", '{"8"}']),
    ("integer[]", ["{{1,2},{3,4}}", "{{NULL,2},{3,NULL}}"]),
    ("numeric[]", ["{1.50,-0.0001,NaN,12345678901234567890.123456789}"]),
    ("double precision[]", ["{0.1,Infinity,-Infinity,1e+300,-0}"]),
    ("boolean[]", ["{t,f,NULL}", "{true,FALSE,yes,no,on,off,1,0,y,n,tr,fa}", "{ t , f }"]),
    ("bytea[]", ['{"\\\\x00ff10",NULL}', '{"\\\\x"}',
                 '{abc,"a\\\\\\\\b","\\\\001\\\\377"}', '{"\\\\x0A 0b"}']),
    ("date[]", ["{2024-02-29,1999-12-31,NULL}"]),
    ("timestamptz[]", ['{"2024-01-01 10:00:00+00","2024-06-01 12:30:00.5+05:30"}']),
    ("jsonb[]", ['{"{\\"a\\": [1, 2.50]}",NULL,"null","\\"s\\""}']),
    ("uuid[]", ["{8c7e1d1e-1a6b-4f0e-9a57-3d3a0f8b9c11}"]),
])
async def test_element_texts_are_the_values_postgresql_reads(db, cast, texts):
    """Each element type's text, as PostgreSQL writes it in an export, becomes the value
    PostgreSQL reads from it: a boolean's t, bytea's \\x00ff, a jsonb element's document."""
    column = Column(name="v", sql='"v"', type_sql=cast, cast_sql=cast, family=FAMILIES[cast],
                    is_array=True, nullable=True, has_default=False, generated=False)
    for text in texts:
        ours = coerce(read_array(text, column.family), column)
        same = await db.fetchval(f"SELECT $1::{cast} IS NOT DISTINCT FROM $2::text::{cast}",
                                 ours, text)
        assert same, (text, ours, await db.fetchval(f"SELECT $1::text::{cast}", text))


def test_json_text_that_looks_like_bounds_is_json():
    assert read_array("[2]", "int8") == ["2"]
    assert read_array(" [1] ", "text") == ["1"]
    assert read_array("[2]={a,b}", "text") == ["a", "b"]
    with pytest.raises(ValueError, match="Expecting"):
        read_array("[1:2]", "text")  # neither: not JSON, and bounds need "="


def test_a_boolean_or_bytea_element_postgresql_would_refuse_is_refused():
    for text, kind in [("{o}", "bool"), ("{maybe}", "bool"), ('{"\\\\xZZ"}', "bytea"),
                       ('{"a\\\\9"}', "bytea"), ("{nope}", "json")]:
        with pytest.raises(array_literal.ArrayLiteralError):
            read_array(text, kind)
