"""Custom handlers declare their arguments (a pydantic model): arguments that do not fit are
INVALID_ARGUMENT with a field violation each, before the handler runs — never INTERNAL."""

from __future__ import annotations

import grpc

from tests.support.batches import batch, count, fails, rows


def reserve(args: dict) -> dict:
    return {"id": "stock", "call": {"handler": "reserve_stock", "args": args}}


async def test_bad_handler_arguments_are_invalid_argument_before_anything_runs(stub, db):
    failure = await fails(stub, batch([
        {"id": "c", "insert": {"table": "customers", "rows": [{"name": "a", "email": "a@x"}]}},
        reserve({"product_id": "abc", "quantity": -1, "colour": "red"})]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    fields = [field for field, _ in failure.violations]
    assert fields == ["operations[1].call.args.product_id", "operations[1].call.args.quantity",
                      "operations[1].call.args.colour"]
    assert failure.error_info["operation_id"] == "stock"
    assert failure.outcomes() == {"c": 4, "stock": 2}  # NOT_RUN, FAILED: refused before running
    assert await count(db, "customers") == 0
    assert await db.fetchval("SELECT stock FROM products WHERE id = 1") == 100


async def test_handler_arguments_from_a_reference_are_checked_once_resolved(stub, db):
    failure = await fails(stub, batch([
        {"id": "c", "insert": {"table": "customers", "rows": [{"name": "a", "email": "a@x"}],
                               "returning": ["name"]}},
        reserve({"product_id": {"$ref": "c.name"}, "quantity": 1})]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in failure.violations] == ["operations[1].call.args.product_id"]
    assert failure.outcomes() == {"c": 3, "stock": 2}  # ROLLED_BACK, FAILED
    assert await count(db, "customers") == 0


async def test_declared_arguments_reach_the_handler_validated(stub):
    response = await stub.BatchExecute(batch([reserve({"product_id": "1", "quantity": 2})]))
    assert rows(response.results[0])[0]["stock"] == 98
