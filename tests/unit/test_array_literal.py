"""PostgreSQL's array literal read without a database (the expected values are PostgreSQL's own
answers; tests/integration/test_columnar_array_literals.py asks PostgreSQL itself)."""

from __future__ import annotations

from typing import Any

import pytest

from batchd.stream.array_literal import ArrayLiteralError, element_texts, is_literal, parse


@pytest.mark.parametrize(("text", "expected"), [
    ("{}", []), ("{{},{}}", []), (" {a} ", ["a"]), ("{a b , c}", ["a b", "c"]),
    ('{NULL,"NULL",null,NU\\LL}', [None, "NULL", None, "NULL"]), ('{"",""}', ["", ""]),
    ('{"a,b","\\\\","\\""}', ["a,b", "\\", '"']), ("{a\\ }", ["a "]),
    ("{{a,b},{c,NULL}}", [["a", "b"], ["c", None]]), ("[1:2]={a,b}", ["a", "b"]),
    ("{é,ß}", ["é", "ß"]),
])
def test_a_literal_is_read_as_postgresql_reads_it(text: str, expected: list[Any]) -> None:
    assert is_literal(text)
    assert parse(text) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("{a,,b}", 'unexpected ","'), ("{a,}", 'unexpected "}"'), ('{a"b"}', "incorrectly quoted"),
    ('{"a" "b"}', "incorrectly quoted"), ("{{a},{b,c}}", "matching dimensions"),
    ("{a,{b}}", "matching dimensions"), ("{a}x", "junk after the closing brace"),
    ('{"a', "end of the literal"), ("[1:3]={a,b}", "the bounds say 3"),
    ("[0:1]={a,b}", "lower bound 0"),
])
def test_a_literal_postgresql_refuses_is_refused_saying_why(text: str, reason: str) -> None:
    with pytest.raises(ArrayLiteralError, match=reason):
        parse(text)


def test_json_arrays_are_not_literals() -> None:
    assert not is_literal('["a"]') and not is_literal("[2]") and not is_literal(" [1, 2]")
    assert is_literal("[2]={a,b}") and is_literal("\n{}")


def test_element_texts_take_postgresqls_forms_of_booleans_bytea_and_documents() -> None:
    assert element_texts([["t", "f"], ["yes", None]], "bool") == [[True, False], [True, None]]
    assert element_texts(["\\x00ff", "a\\\\b\\001"], "bytea") == [b"\x00\xff", b"a\\b\x01"]
    assert element_texts(['{"a": 1.50}'], "json") == ['{"a": 1.50}']
    assert element_texts(["1", "x"], "int8") == ["1", "x"]  # read by the column's coercion


def test_a_literal_deeper_than_postgresqls_six_dimensions_is_refused_not_recursed():
    assert parse("{" * 6 + "1" + "}" * 6) == [[[[[["1"]]]]]]
    for depth in (7, 100_000):
        with pytest.raises(ArrayLiteralError, match="more than 6 dimensions"):
            parse("{" * depth + "1" + "}" * depth)
