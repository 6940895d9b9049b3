"""BatchService on the HTTP port, called as HTTP users call it: Connect with JSON and binary
bodies (curl, fetch), gRPC-Web (browsers) and gRPC itself (h2c) — the same answers, errors,
auth, limits and drain as on the gRPC port."""

from __future__ import annotations

import base64
import json

import grpc
import pytest
from google.rpc import error_details_pb2

from batchd import startup
from batchd.app import App
from batchd.v1 import batch_pb2, batch_pb2_grpc
from tests.support.http import (
    JSON,
    PROTO,
    SERVICE,
    bearer,
    error_info,
    grpc_status_of,
    grpc_web_frame,
    grpc_web_parse,
    http_app,
    unpack,
    violations,
)
from tests.support.ports import free_port
from tests.support.servers import make_settings
from tests.support.tokens import CLERK, READER, TOKENS
from tests.support.tracing import span_exporter

ORDER_WITH_CUSTOMER = {"operations": [
    {"id": "customer", "insert": {"table": "customers",
                                  "rows": [{"name": "Ada", "email": "ada@example.com"}]}},
    {"id": "order", "insert": {"table": "orders", "returning": ["id"], "rows": [
        {"customer_id": {"$ref": "customer.id"}, "total": "69.89"}]}},
]}


async def test_a_json_batch_with_a_reference_runs_and_commits(schema, db):
    async with http_app(schema) as (_, client):
        answer = await client.post(f"{SERVICE}/BatchExecute", json=ORDER_WITH_CUSTOMER)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["committed"] is True
    assert [r["outcome"] for r in body["results"]] == ["OUTCOME_SUCCEEDED"] * 2
    assert answer.headers["x-request-id"]
    customer = await db.fetchval("SELECT id FROM customers WHERE email = 'ada@example.com'")
    assert await db.fetchval("SELECT customer_id FROM orders") == customer


async def test_a_binary_batch_gets_a_binary_answer(schema, db):
    request = batch_pb2.BatchExecuteRequest()
    request.operations.add(id="p").get.table = "products"
    request.operations[0].get.key["id"] = 1
    async with http_app(schema) as (_, client):
        answer = await client.post(f"{SERVICE}/BatchExecute", headers=PROTO,
                                   content=request.SerializeToString())
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/proto"
    response = batch_pb2.BatchExecuteResponse.FromString(answer.content)
    assert response.results[0].rows[0]["sku"] == "KB-01"


async def test_json_answers_print_integers_as_integers_and_keep_fractions(schema, db):
    """A row's numbers are doubles on the wire (google.protobuf.Value): Python's protobuf
    would print a column of integers as 1.0, 2.0; the HTTP port prints them as grpcurl does."""
    customer = await db.fetchval("INSERT INTO customers (name, email) VALUES ('Ada', "
                                 "'ada@example.com') RETURNING id")
    order = await db.fetchval("INSERT INTO orders (customer_id, total) VALUES ($1, 4.50) "
                              "RETURNING id", customer)
    await db.execute("INSERT INTO order_items (order_id, product_id, quantity, unit_price) "
                     "VALUES ($1, 1, 3, 1.50)", order)
    batch = {"operations": [{"id": "q", "query": {
        "table": "order_items", "columns": ["quantity", "unit_price"], "limit": 1}}]}
    async with http_app(schema) as (_, client):
        answer = await client.post(f"{SERVICE}/BatchExecute", json=batch)
    assert answer.status_code == 200, answer.text
    assert '"quantity": 3,' in answer.text or '"quantity": 3}' in answer.text, answer.text
    assert "3.0" not in answer.text
    assert answer.json()["results"][0]["rows"] == [{"quantity": 3, "unit_price": "1.50"}]


async def test_an_answer_given_before_the_body_was_read_closes_the_connection(schema):
    """A 404 or 415 is answered without reading the request's body: HTTP/1.1 cannot reuse that
    connection, so the answer says Connection: close (else a keep-alive client sends its next
    request into a connection being closed, and loses it). Answers that read the whole body,
    and requests without one, keep the connection."""
    async with http_app(schema) as (_, client):
        refused = [await client.post(f"{SERVICE}/Nope", content=b"x" * 100,
                                     headers={"Content-Type": "application/proto"}),
                   await client.post(f"{SERVICE}/BatchStream", content=b"{}",
                                     headers={"Content-Type": "application/json"})]
        kept = [await client.post(f"{SERVICE}/GetSchema", json={}),
                await client.get("/healthz"),
                await client.post(f"{SERVICE}/BatchExecute", json={"operations": [
                    {"id": "p", "get": {"table": "products", "key": {"id": 1}}}]})]
        after = await client.post(f"{SERVICE}/GetSchema", json={})
    assert [a.status_code for a in refused] == [404, 415]
    assert [a.headers.get("connection") for a in refused] == ["close", "close"]
    assert [a.status_code for a in kept] == [200, 200, 200]
    assert [a.headers.get("connection") for a in kept] == [None, None, None]
    assert after.status_code == 200


async def test_get_schema_answers_a_post_and_a_get(schema):
    async with http_app(schema) as (_, client):
        posted = await client.post(f"{SERVICE}/GetSchema", json={})
        got = await client.get(f"{SERVICE}/GetSchema",
                               params={"encoding": "json", "message": "{}"})
    assert posted.status_code == got.status_code == 200
    names = {t["name"] for t in posted.json()["tables"]}
    assert {"public.customers", "public.orders"} <= names
    assert got.json() == posted.json()


async def test_a_failed_atomic_batch_carries_the_grpc_details_naming_the_operation(schema, db):
    await db.execute("INSERT INTO customers (name, email) VALUES ('Ada', 'ada@example.com')")
    async with http_app(schema) as (_, client):
        answer = await client.post(f"{SERVICE}/BatchExecute", json=ORDER_WITH_CUSTOMER)
    assert answer.status_code == 409
    error = answer.json()
    assert error["code"] == "already_exists"
    assert 'operation "customer"' in error["message"]
    info = error_info(error)
    assert info.reason == "UNIQUE_VIOLATION"
    assert info.metadata["operation_id"] == "customer"
    assert info.metadata["constraint"] == "customers_email_key"
    assert await db.fetchval("SELECT count(*) FROM orders") == 0


async def test_bad_json_is_invalid_argument_naming_the_request(schema):
    async with http_app(schema) as (_, client):
        answer = await client.post(f"{SERVICE}/BatchExecute", headers=JSON,
                                   content=b'{"operations": [')
    assert answer.status_code == 400
    error = answer.json()
    assert error["code"] == "invalid_argument"
    assert [field for field, _ in violations(error)] == ["request"]
    assert "not a valid batchd.v1.BatchExecuteRequest" in error["message"]


async def test_an_unknown_field_is_refused_by_its_name(schema):
    async with http_app(schema) as (_, client):
        answer = await client.post(f"{SERVICE}/BatchExecute", json={
            "operations": [{"id": "x", "inserts": {"table": "customers"}}]})
    assert answer.status_code == 400
    assert 'no field named "inserts"' in answer.json()["message"]


async def test_a_binary_body_that_is_not_the_message_is_invalid_argument(schema):
    async with http_app(schema) as (_, client):
        answer = await client.post(f"{SERVICE}/BatchExecute", headers=PROTO,
                                   content=b"\xff\xff\xff")
    assert answer.status_code == 400
    assert violations(answer.json())[0][0] == "request"


async def test_a_content_type_that_is_no_codec_is_unsupported(schema):
    async with http_app(schema) as (_, client):
        answer = await client.post(f"{SERVICE}/BatchExecute", content=b"{}",
                                   headers={"Content-Type": "text/plain"})
        unknown = await client.post(f"{SERVICE}/Nope", json={})
    assert answer.status_code == 415
    assert "application/json" in answer.headers["accept-post"]
    assert unknown.status_code == 404


async def test_a_body_over_max_message_bytes_is_refused(schema):
    async with http_app(schema, max_message_bytes=64 * 1024) as (_, client):
        answer = await client.post(f"{SERVICE}/BatchExecute", headers=JSON,
                                   content=b'{"operations": []}' + b" " * (128 * 1024))
    assert answer.status_code == 429
    assert answer.json()["code"] == "resource_exhausted"


async def test_without_a_token_or_with_a_wrong_one_the_call_is_unauthenticated(schema):
    async with http_app(schema, tokens=TOKENS) as (_, client):
        missing = await client.post(f"{SERVICE}/BatchExecute", json=ORDER_WITH_CUSTOMER)
        wrong = await client.post(f"{SERVICE}/BatchExecute", json=ORDER_WITH_CUSTOMER,
                                  headers=bearer("not-a-token"))
    assert missing.status_code == wrong.status_code == 401
    assert error_info(missing.json()).reason == "MISSING_TOKEN"
    assert error_info(wrong.json()).reason == "UNKNOWN_TOKEN"


async def test_a_token_whose_scopes_forbid_the_table_is_denied_naming_it(schema, db):
    async with http_app(schema, tokens=TOKENS) as (_, client):
        denied = await client.post(f"{SERVICE}/BatchExecute", json=ORDER_WITH_CUSTOMER,
                                   headers=bearer(READER))
        schema_of_clerk = await client.post(f"{SERVICE}/GetSchema", json={},
                                            headers=bearer(CLERK))
    assert denied.status_code == 403
    assert "orders" in denied.json()["message"] or "customers" in denied.json()["message"]
    assert await db.fetchval("SELECT count(*) FROM customers") == 0
    assert schema_of_clerk.status_code == 200


async def test_grpc_web_carries_the_answer_and_the_status_in_trailers(schema, db):
    request = batch_pb2.BatchExecuteRequest()
    request.operations.add(id="p").get.table = "products"
    request.operations[0].get.key["id"] = 99
    async with http_app(schema) as (_, client):
        answer = await client.post(f"{SERVICE}/BatchExecute", content=grpc_web_frame(request),
                                   headers={"Content-Type": "application/grpc-web+proto",
                                            "X-Grpc-Web": "1"})
    assert answer.status_code == 200
    messages, trailers = grpc_web_parse(answer.content)
    if not trailers:  # a trailers-only answer: the status is in the headers
        trailers = {k.lower(): v for k, v in answer.headers.items()}
    assert trailers["grpc-status"] == str(grpc.StatusCode.NOT_FOUND.value[0])
    status = grpc_status_of(trailers)
    info = unpack(status.details[0], error_details_pb2.ErrorInfo)
    assert info.metadata["operation_id"] == "p"
    assert messages == []


async def test_grpc_clients_reach_the_same_service_on_the_http_port(schema):
    async with http_app(schema) as (app, _):
        assert app.http is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.http.port}") as channel:
            stub = batch_pb2_grpc.BatchServiceStub(channel)
            schema_answer = await stub.GetSchema(batch_pb2.GetSchemaRequest())
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.BatchExecute(batch_pb2.BatchExecuteRequest(
                    operations=[batch_pb2.Operation(id="x", get=batch_pb2.GetOperation(
                        table="nope"))]))
    assert any(t.name == "public.orders" for t in schema_answer.tables)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND or \
        refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_batch_stream_streams_over_http2_on_the_http_port(schema, db):
    async with http_app(schema) as (app, _):
        assert app.http is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.http.port}") as channel:
            stub = batch_pb2_grpc.BatchServiceStub(channel)
            call = stub.BatchStream()
            await call.write(batch_pb2.BatchStreamRequest(header=batch_pb2.StreamHeader(
                table="events", columns=["id", "kind"], encoding=batch_pb2.ENCODING_CSV)))
            opened = await call.read()
            await call.write(batch_pb2.BatchStreamRequest(chunk=batch_pb2.StreamChunk(
                sequence=1, csv=b"1,a\n2,b\n")))
            ack = await call.read()  # before the commit is sent: both ways at once
            await call.write(batch_pb2.BatchStreamRequest(commit=batch_pb2.StreamCommit()))
            summary = await call.read()
    assert opened.WhichOneof("kind") == "opened"
    assert ack.ack.rows_written == 2
    assert summary.summary.committed
    assert await db.fetchval("SELECT count(*) FROM events") == 2


async def test_a_draining_server_refuses_http_calls_as_unavailable_with_retry_info(schema):
    async with http_app(schema) as (app, client):
        assert app.admission is not None
        app.admission.drain()
        answer = await client.post(f"{SERVICE}/BatchExecute", json=ORDER_WITH_CUSTOMER)
    assert answer.status_code == 503
    assert answer.json()["code"] == "unavailable"
    assert any(d["type"] == "google.rpc.RetryInfo" for d in answer.json()["details"])


async def test_health_and_metrics_count_http_calls(schema):
    async with http_app(schema) as (app, client):
        health = await client.get("/healthz")
        await client.post(f"{SERVICE}/GetSchema", json={})
        counted = app.metrics.rpcs.labels(f"{SERVICE}/GetSchema", "OK")._value.get()
    assert health.json() == {"status": "SERVING"}
    assert counted == 1


async def test_the_console_is_off_with_a_dsn_and_served_with_a_strict_policy_when_on(schema):
    async with http_app(schema) as (_, client):
        off = await client.get("/console/")
    async with http_app(schema, console=True) as (_, client):
        page = await client.get("/console/")
        outside = await client.get("/console/../../etc/passwd")
    assert off.status_code == 404
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    assert outside.status_code == 404


async def test_a_taken_http_port_fails_the_start_in_one_line(schema):
    port = free_port()
    async with http_app(schema) as (app, _):
        assert app.http is not None
        with pytest.raises(startup.StartupError) as failed:
            await App.start(make_settings(schema, http_port=app.http.port))
    message = str(failed.value)
    assert "\n" not in message and f":{app.http.port}" in message and "--http-port" in message
    assert port  # another free port was there to choose


def test_the_settings_default_to_port_8080_and_off_by_zero():
    from batchd.config import Settings

    assert Settings().http_port == 8080
    assert Settings(http_port=0).http_port == 0
    assert Settings().wants_console and not Settings(dsn="postgresql://x/y").wants_console


async def test_error_json_of_the_ingest_and_connect_agree(schema):
    async with http_app(schema, tokens=TOKENS) as (_, client):
        connect = await client.post(f"{SERVICE}/BatchExecute", json={})
        ingest = await client.put("/v1/ingest/customers", content=b"name\nx\n")
    assert connect.json()["code"] == ingest.json()["error"]["code"] == "unauthenticated"
    detail = json.loads(connect.text)["details"][0]
    assert detail["type"] == "google.rpc.ErrorInfo"
    # Details are base64 (unpadded), as Connect's wire says.
    info = error_details_pb2.ErrorInfo.FromString(
        base64.b64decode(detail["value"] + "=" * (-len(detail["value"]) % 4)))
    assert info.reason == ingest.json()["error"]["details"][0]["debug"]["reason"]


async def test_otel_enabled_makes_a_span_per_http_call(schema):
    exporter = span_exporter("opentelemetry.instrumentation.asgi")
    async with http_app(schema, otel_enabled=True) as (_, client):
        answer = await client.post(f"{SERVICE}/GetSchema", json={})
    assert answer.status_code == 200
    assert any("GetSchema" in span.name for span in exporter.get_finished_spans())


async def test_batchd_serve_serves_http_beside_grpc_and_drains_on_sigterm(schema, tmp_path):
    import asyncio
    import os
    import signal

    from tests.support.cli import BATCHD
    from tests.support.ports import ROOT

    grpc_port, http_port = free_port(), free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")},
           "BATCHD_DSN": schema, "BATCHD_METRICS_PORT": "0", "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        str(BATCHD), "serve", "--port", str(grpc_port), "--http-port", str(http_port),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        lines = [(await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
                 for _ in range(2)]
        assert f"HTTP on http://127.0.0.1:{http_port}" in lines[1]
        assert "/console" not in lines[1]  # a DSN: no console unless asked
        import httpx

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
            health = await client.get("/healthz")
            schema_answer = await client.post(f"{SERVICE}/GetSchema", json={})
        assert health.json() == {"status": "SERVING"} and schema_answer.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
