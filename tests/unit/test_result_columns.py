"""OperationResult.columns: what a result announces of its columns' types, built once per
list of columns, or for a handler from its Python values (pure: no database)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from batchd.introspection import _Types
from batchd.kinds.base import Output, rendering
from batchd.v1 import batch_pb2
from tests.unit.shop import col

# pg_type rows as _TYPES_SQL reads them: integer, numeric, a domain "price" over
# numeric(12,2), a domain "positive_price" over price, arrays of numeric and of price, an enum.
_ROWS: list[dict[str, Any]] = [
    {"oid": 23, "typname": "int4", "typtype": "b", "typbasetype": 0, "typelem": 0,
     "typcategory": "N", "typrelid": 0, "base_sql": None},
    {"oid": 1700, "typname": "numeric", "typtype": "b", "typbasetype": 0, "typelem": 0,
     "typcategory": "N", "typrelid": 0, "base_sql": None},
    {"oid": 9001, "typname": "price", "typtype": "d", "typbasetype": 1700, "typelem": 0,
     "typcategory": "N", "typrelid": 0, "base_sql": "numeric(12,2)"},
    {"oid": 9002, "typname": "positive_price", "typtype": "d", "typbasetype": 9001,
     "typelem": 0, "typcategory": "N", "typrelid": 0, "base_sql": "price"},
    {"oid": 1231, "typname": "_numeric", "typtype": "b", "typbasetype": 0, "typelem": 1700,
     "typcategory": "A", "typrelid": 0, "base_sql": None},
    {"oid": 9003, "typname": "_price", "typtype": "b", "typbasetype": 0, "typelem": 9001,
     "typcategory": "A", "typrelid": 0, "base_sql": None},
    {"oid": 9004, "typname": "mood", "typtype": "e", "typbasetype": 0, "typelem": 0,
     "typcategory": "E", "typrelid": 0, "base_sql": None},
]


def test_a_domain_column_announces_its_base_type_which_its_values_are_encoded_by() -> None:
    types = _Types(_ROWS)  # type: ignore[arg-type]
    assert types.column("p", 9001, "price").result_type == "numeric(12,2)"
    assert types.column("p", 9002, "positive_price").result_type == "numeric(12,2)"
    assert types.column("ps", 9003, "price[]").result_type == "numeric(12,2)[]"


def test_other_columns_announce_their_type_as_format_type_prints_it() -> None:
    types = _Types(_ROWS)  # type: ignore[arg-type]
    assert types.column("n", 23, "integer").result_type == "integer"
    assert types.column("ns", 1231, "numeric[]").result_type == "numeric[]"
    assert types.column("m", 9004, "mood").result_type == "mood"


def test_a_rendering_is_built_once_per_list_of_columns() -> None:
    columns = [col("id", "int8", "bigint"), col("total", "numeric", "numeric(12,2)")]
    first = rendering(columns)
    assert rendering([col("id", "int8", "bigint"),
                      col("total", "numeric", "numeric(12,2)")]) is first
    assert [(c.name, c.type) for c in first.columns.columns] == [
        ("id", "bigint"), ("total", "numeric(12,2)")]


def test_rows_of_known_columns_carry_them_even_without_rows() -> None:
    response = batch_pb2.BatchExecuteResponse()
    known = response.results.add(id="known")
    Output([{"id": 1}], rendering([col("id", "int8", "bigint")])).write_rows(known)
    assert [(c.name, c.type) for c in known.columns] == [("id", "bigint")]
    assert known.rows[0].fields["id"].string_value == "1"
    empty = response.results.add(id="empty")
    Output([], rendering([col("id", "int8", "bigint")])).write_rows(empty)
    assert len(empty.columns) == 1 and not empty.rows


def test_a_handlers_columns_are_the_types_its_python_values_render_as() -> None:
    result = batch_pb2.OperationResult()
    rows = [{"n": 1, "price": Decimal("9.90"), "at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
             "mixed": 1, "gone": None, "uid": uuid.UUID(int=1), "span": dt.timedelta(1)},
            {"n": None, "price": Decimal("1"), "at": None, "mixed": "one", "gone": None,
             "uid": uuid.UUID(int=2), "span": dt.timedelta(2)}]
    Output(rows, None).write_rows(result)
    assert [(c.name, c.type) for c in result.columns] == [
        ("n", "bigint"), ("price", "numeric"), ("at", "timestamp with time zone"),
        ("uid", "uuid"), ("span", "interval")]  # "mixed": two classes; "gone": all NULL
    assert result.rows[1].fields["mixed"].string_value == "one"
