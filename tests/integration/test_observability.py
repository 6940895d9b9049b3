"""Observability: Prometheus metrics scraped from the real endpoint, one JSON log line per
call, and (with the otel extra) OpenTelemetry spans.

The metrics tests share one App with its own /metrics port and compare scrapes taken before
and after, so they do not depend on each other's order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from batchd import logs
from batchd.app import App
from batchd.config import Settings, TokenSettings
from batchd.principals import hash_token
from batchd.startup import StartupError
from batchd.v1 import batch_pb2, batch_pb2_grpc
from tests.support.batches import batch, fails
from tests.support.ports import free_port
from tests.support.servers import make_settings
from tests.support.streams import COMMIT, events, header, open_stream, rows_chunk, send
from tests.support.tracing import span_exporter

EXECUTE = "/batchd.v1.BatchService/BatchExecute"
STREAM = "/batchd.v1.BatchService/BatchStream"


class Scrape:
    """One scrape of /metrics: sample values by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[sample.name, frozenset(sample.labels.items())] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(app: App) -> Scrape:
    url = f"http://127.0.0.1:{app.settings.metrics_port}/metrics"

    def get() -> str:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    return Scrape(await asyncio.to_thread(get))  # the loop runs the server: don't block it


async def eventually(app: App, check: Any, patience: float = 5.0) -> Scrape:
    """Scrape until ``check(scrape)`` holds: the server counts a cancelled call when its
    handler has unwound, a moment after the client gave up."""
    deadline = time.monotonic() + patience
    while True:
        now = await scrape(app)
        if check(now) or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def observed(schema: str) -> AsyncIterator[App]:
    app = await App.start(make_settings(schema, metrics_port=free_port()))
    yield app
    await app.stop(grace=1)


@pytest.fixture(scope="module")
async def ostub(observed: App) -> AsyncIterator[batch_pb2_grpc.BatchServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{observed.port}") as channel:
        yield batch_pb2_grpc.BatchServiceStub(channel)


def customer(op_id: str, email: str) -> dict[str, Any]:
    return {"id": op_id, "insert": {"table": "customers",
                                    "rows": [{"name": op_id, "email": email}]}}


# --- metrics ---------------------------------------------------------------------------------

async def test_successful_batch_counts_its_rpc_and_operations_by_kind(observed, ostub, db):
    before = await scrape(observed)
    response = await ostub.BatchExecute(batch([
        customer("c", "c@example.com"),
        {"id": "read", "get": {"table": "products", "key": {"id": 1}}},
        {"id": "q", "query": {"table": "products", "limit": 5}},
    ]))
    assert response.committed
    after = await scrape(observed)

    def delta(name: str, **labels: str) -> float:
        return after(name, **labels) - before(name, **labels)

    assert delta("batchd_rpcs_total", method=EXECUTE, code="OK") == 1
    assert delta("batchd_rpc_duration_seconds_count", method=EXECUTE) == 1
    assert delta("batchd_rpc_duration_seconds_bucket", method=EXECUTE, le="30.0") == 1
    assert delta("batchd_operations_total", kind="insert", outcome="SUCCEEDED") == 1
    assert delta("batchd_operations_total", kind="get", outcome="SUCCEEDED") == 1
    assert delta("batchd_operations_total", kind="query", outcome="SUCCEEDED") == 1
    assert after("batchd_in_flight", rpc="BatchExecute") == 0


async def test_failed_atomic_batch_counts_its_code_and_every_outcome(observed, ostub, db):
    before = await scrape(observed)
    failure = await fails(ostub, batch([
        customer("first", "dup@example.com"),
        customer("second", "dup@example.com"),
        {"id": "never", "get": {"table": "customers", "key": {"id": 1}}},
    ]))
    assert failure.code == grpc.StatusCode.ALREADY_EXISTS
    after = await scrape(observed)

    def delta(name: str, **labels: str) -> float:
        return after(name, **labels) - before(name, **labels)

    assert delta("batchd_rpcs_total", method=EXECUTE, code="ALREADY_EXISTS") == 1
    assert delta("batchd_rpcs_total", method=EXECUTE, code="OK") == 0
    assert delta("batchd_operations_total", kind="insert", outcome="ROLLED_BACK") == 1
    assert delta("batchd_operations_total", kind="insert", outcome="FAILED") == 1
    assert delta("batchd_operations_total", kind="get", outcome="NOT_RUN") == 1
    assert delta("batchd_operations_total", kind="insert", outcome="SUCCEEDED") == 0


async def test_invalid_request_counts_invalid_argument(observed, ostub):
    """An abort_with_status before anything ran: the code the caller got, not UNKNOWN."""
    before = await scrape(observed)
    failure = await fails(ostub, batch([customer("same", "a@x"), customer("same", "b@x")]))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    after = await scrape(observed)
    assert (after("batchd_rpcs_total", method=EXECUTE, code="INVALID_ARGUMENT")
            - before("batchd_rpcs_total", method=EXECUTE, code="INVALID_ARGUMENT")) == 1
    assert (after("batchd_rpcs_total", method=EXECUTE, code="UNKNOWN")
            == before("batchd_rpcs_total", method=EXECUTE, code="UNKNOWN"))
    # Refused whole: its operations did not run.
    assert (after("batchd_operations_total", kind="insert", outcome="NOT_RUN")
            - before("batchd_operations_total", kind="insert", outcome="NOT_RUN")) == 2


async def test_independent_batch_counts_failed_and_skipped_operations(observed, ostub, db):
    before = await scrape(observed)
    response = await ostub.BatchExecute(batch([
        {"id": "ghost", "update": {"table": "customers", "key": {"id": "404"},
                                   "set": {"name": "x"}}},
        {"id": "after", "depends_on": ["ghost"],
         "delete": {"table": "customers", "key": {"id": "404"}}},
        customer("ok", "ok@example.com"),
    ], mode="MODE_INDEPENDENT"))
    assert response.committed
    after = await scrape(observed)

    def delta(name: str, **labels: str) -> float:
        return after(name, **labels) - before(name, **labels)

    assert delta("batchd_rpcs_total", method=EXECUTE, code="OK") == 1
    assert delta("batchd_operations_total", kind="update", outcome="FAILED") == 1
    assert delta("batchd_operations_total", kind="delete", outcome="SKIPPED") == 1
    assert delta("batchd_operations_total", kind="insert", outcome="SUCCEEDED") == 1


async def test_streams_count_committed_rows_by_table_and_their_rpc(observed, ostub, db):
    before = await scrape(observed)
    # INDEPENDENT: every acked chunk is committed.
    call, _ = await open_stream(ostub, header(table="events", mode="MODE_INDEPENDENT"))
    for seq in (1, 2):
        assert (await send(call, rows_chunk(seq, events(seq * 100, 10)))).ack.rows_written == 10
    await call.done_writing()
    assert (await call.read()).summary.rows_written == 20
    # ATOMIC with a commit: counted once committed, under the same qualified table name.
    call, _ = await open_stream(ostub, header(table="public.events"))
    await send(call, rows_chunk(1, events(1000, 5)))
    assert (await send(call, COMMIT)).summary.committed
    # ATOMIC without a commit: rolled back, so nothing was ingested.
    call, _ = await open_stream(ostub, header(table="events"))
    await send(call, rows_chunk(1, events(2000, 7)))
    await call.done_writing()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    # A stream is counted as its handler unwinds, a moment after the client's last read.
    after = await eventually(observed, lambda s: s(
        "batchd_rpc_duration_seconds_count", method=STREAM) - before(
        "batchd_rpc_duration_seconds_count", method=STREAM) >= 3)

    def delta(name: str, **labels: str) -> float:
        return after(name, **labels) - before(name, **labels)

    assert delta("batchd_rows_ingested_total", table="public.events") == 25
    assert delta("batchd_rpcs_total", method=STREAM, code="OK") == 2
    assert delta("batchd_rpcs_total", method=STREAM, code="FAILED_PRECONDITION") == 1
    assert delta("batchd_rpc_duration_seconds_count", method=STREAM) == 3
    assert after("batchd_in_flight", rpc="BatchStream") == 0


async def test_cancelled_batch_counts_as_cancelled(observed, ostub, db):
    before = await scrape(observed)
    call = ostub.BatchExecute(batch([
        {"id": "nap", "call": {"handler": "sleep", "args": {"seconds": 5}}}]))
    await eventually(observed, lambda s: s("batchd_in_flight", rpc="BatchExecute") >= 1)
    call.cancel()

    def counted(s: Scrape) -> bool:
        return s("batchd_rpcs_total", method=EXECUTE, code="CANCELLED") > before(
            "batchd_rpcs_total", method=EXECUTE, code="CANCELLED")

    after = await eventually(observed, counted)
    assert counted(after)
    assert after("batchd_in_flight", rpc="BatchExecute") == 0
    assert (after("batchd_operations_total", kind="call", outcome="CANCELLED")
            - before("batchd_operations_total", kind="call", outcome="CANCELLED")) == 1


async def test_cancelled_stream_is_counted_and_ingests_nothing(observed, ostub, db):
    """The server sees a cancel either as its handler being cancelled (CANCELLED) or, first,
    as the end of the request stream, which an ATOMIC stream answers with FAILED_PRECONDITION
    (ended without a commit): either way, one call, and no rows."""
    codes = ("CANCELLED", "FAILED_PRECONDITION")

    def ended(s: Scrape) -> float:
        return sum(s("batchd_rpcs_total", method=STREAM, code=c) for c in codes)

    before = await scrape(observed)
    call, _ = await open_stream(ostub, header(table="events"))
    await send(call, rows_chunk(1, events(0, 5)))
    call.cancel()
    after = await eventually(observed, lambda s: ended(s) > ended(before))
    assert ended(after) - ended(before) == 1
    assert after("batchd_in_flight", rpc="BatchStream") == 0
    assert after("batchd_rows_ingested_total", table="public.events") == before(
        "batchd_rows_ingested_total", table="public.events")


async def test_in_flight_and_pool_in_use_show_a_running_batch(observed, ostub, db):
    running = ostub.BatchExecute(batch([  # a grpc.aio call runs without being awaited
        {"id": "nap", "call": {"handler": "sleep", "args": {"seconds": 1}}}]))
    during = await eventually(observed, lambda s: (  # counted in flight, then it acquires
        s("batchd_in_flight", rpc="BatchExecute") >= 1
        and s("batchd_pool_connections", state="in_use") >= 1))
    assert during("batchd_in_flight", rpc="BatchExecute") == 1
    assert during("batchd_pool_connections", state="in_use") >= 1
    await running
    after = await scrape(observed)
    assert after("batchd_in_flight", rpc="BatchExecute") == 0


async def test_pool_gauges_are_read_at_scrape_time(observed):
    now = await scrape(observed)
    assert "batchd_pool_connections" in now.text
    in_use = now("batchd_pool_connections", state="in_use")
    idle = now("batchd_pool_connections", state="idle")
    assert in_use >= 0 and idle >= 0
    assert in_use + idle == observed.pool.get_size()


async def test_every_rpc_is_counted_health_included(observed):
    before = await scrape(observed)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{observed.port}") as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    after = await scrape(observed)
    method = "/grpc.health.v1.Health/Check"
    assert (after("batchd_rpcs_total", method=method, code="OK")
            - before("batchd_rpcs_total", method=method, code="OK")) == 1


async def test_refused_calls_are_counted_with_their_code(schema):
    """The metrics interceptor runs before authentication: UNAUTHENTICATED is counted."""
    settings = make_settings(schema, metrics_port=free_port(), tokens=[
        TokenSettings(sha256=hash_token("secret"), principal="ops", scopes=["admin"])])
    app = await App.start(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = batch_pb2_grpc.BatchServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetSchema(batch_pb2.GetSchemaRequest())
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        now = await scrape(app)
        assert now("batchd_rpcs_total", method="/batchd.v1.BatchService/GetSchema",
                   code="UNAUTHENTICATED") == 1
    finally:
        await app.stop(grace=1)


async def test_metrics_endpoint_stops_with_the_app_and_port_0_disables_it(schema, app):
    assert not app.metrics.serving  # the session app: make_settings gives metrics_port=0
    port = free_port()
    own = await App.start(make_settings(schema, metrics_port=port))
    assert own.metrics.serving
    assert "batchd_pool_connections" in (await scrape(own)).text
    await own.stop(grace=1)
    assert not own.metrics.serving
    with pytest.raises(urllib.error.URLError):
        await scrape(own)


async def test_a_taken_metrics_port_fails_the_start_only_when_configured(schema):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match="metrics endpoint"):
            await App.start(make_settings(schema, metrics_port=port))
    # The default port (9464) is not the operator's choice: taken, the server starts anyway.
    values = make_settings(schema).model_dump(exclude={"metrics_port"})
    with socket.socket() as taken:
        try:
            taken.bind(("127.0.0.1", 9464))
            taken.listen()
        except OSError:
            pass  # someone else holds it: taken all the same
        app = await App.start(Settings(**values))
        try:
            assert app.settings.metrics_port == 9464
            assert not app.metrics.serving
        finally:
            await app.stop(grace=1)


async def test_two_apps_in_one_process_keep_their_own_counts(schema, observed, ostub):
    other = await App.start(make_settings(schema, metrics_port=free_port()))
    try:
        before = await scrape(other)
        await ostub.BatchExecute(batch([{"id": "r", "get": {"table": "products",
                                                            "key": {"id": 1}}}]))
        after = await scrape(other)
        assert after("batchd_rpcs_total", method=EXECUTE, code="OK") == before(
            "batchd_rpcs_total", method=EXECUTE, code="OK")
    finally:
        await other.stop(grace=1)


# --- logs ------------------------------------------------------------------------------------

def json_lines(caplog: pytest.LogCaptureFixture, message_start: str) -> list[dict[str, Any]]:
    formatter = logs.JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records
            if r.name == "batchd.service" and r.getMessage().startswith(message_start)]


async def test_each_batch_logs_one_json_line(stub, db, caplog):
    caplog.set_level(logging.INFO, logger="batchd.service")
    await stub.BatchExecute(batch([customer("c", "log@example.com"),
                                   {"id": "g", "get": {"table": "products", "key": {"id": 1}}}]),
                            metadata=(("x-request-id", "obs-ok-1"),))
    await fails(stub, batch([customer("a", "same@x"), customer("b", "same@x")]))
    lines = json_lines(caplog, "BatchExecute")
    assert len(lines) == 2
    ok, failed = lines
    assert ok["request_id"] == "obs-ok-1"
    assert ok["principal"] == "anonymous"
    assert ok["method"] == EXECUTE
    assert ok["operations"] == 2
    assert ok["code"] == "OK"
    assert ok["outcomes"] == {"SUCCEEDED": 2}
    assert ok["mode"] == "MODE_ATOMIC"
    assert isinstance(ok["duration_ms"], float) and ok["duration_ms"] >= 0
    assert ok["level"] == "INFO" and ok["logger"] == "batchd.service"
    assert ok["timestamp"].endswith("Z")
    assert failed["code"] == "ALREADY_EXISTS"
    assert failed["outcomes"] == {"ROLLED_BACK": 1, "FAILED": 1}
    assert len(failed["request_id"]) == 32  # generated when the caller sent none


async def test_each_stream_logs_one_json_line(stub, db, caplog):
    caplog.set_level(logging.INFO, logger="batchd.service")
    call, opened = await open_stream(stub, header(table="events", stream_id="obs-log-stream",
                                                  mode="MODE_INDEPENDENT"))
    await send(call, rows_chunk(1, events(0, 3)))
    await call.done_writing()
    await call.read()
    assert await call.code() == grpc.StatusCode.OK
    for _ in range(100):  # the line is written as the handler unwinds, after the summary
        lines = json_lines(caplog, "BatchStream")
        if lines:
            break
        await asyncio.sleep(0.02)
    [line] = lines
    assert line["method"] == STREAM
    assert line["stream_id"] == "obs-log-stream" == opened.stream_id
    assert line["table"] == "events"
    assert line["mode"] == "MODE_INDEPENDENT"
    assert (line["chunks"], line["rows_written"], line["rows_rejected"]) == (1, 3, 0)
    assert line["code"] == "OK"
    assert line["principal"] == "anonymous"


async def test_log_line_names_the_authenticated_principal(schema, caplog):
    caplog.set_level(logging.INFO, logger="batchd.service")
    app = await App.start(make_settings(schema, tokens=[
        TokenSettings(sha256=hash_token("s3cret"), principal="reporting",
                      scopes=["read:public.*"])]))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = batch_pb2_grpc.BatchServiceStub(channel)
            await stub.BatchExecute(
                batch([{"id": "g", "get": {"table": "products", "key": {"id": 1}}}]),
                metadata=(("authorization", "Bearer s3cret"), ("x-request-id", "obs-who")))
    finally:
        await app.stop(grace=1)
    [line] = [entry for entry in json_lines(caplog, "BatchExecute")
              if entry["request_id"] == "obs-who"]
    assert line["principal"] == "reporting"


def test_json_formatter_writes_one_object_per_line_with_extras_and_traceback():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("batchd.test").makeRecord(
            "batchd.test", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info(),
            extra={"request_id": "r1", "rows": 3})
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "failed x"
    assert entry["level"] == "ERROR" and entry["logger"] == "batchd.test"
    assert entry["request_id"] == "r1" and entry["rows"] == 3
    assert "ValueError: boom" in entry["exception"]
    assert not {"args", "msg", "exc_info", "levelno", "pathname"} & set(entry)


def test_log_format_auto_is_text_on_a_terminal_and_json_otherwise(monkeypatch):
    class Stream:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.setattr(sys, "stderr", Stream(True))
    assert not logs.wants_json("auto")
    assert logs.wants_json("json")
    monkeypatch.setattr(sys, "stderr", Stream(False))
    assert logs.wants_json("auto")
    assert not logs.wants_json("text")


# --- tracing ---------------------------------------------------------------------------------

async def test_otel_enabled_makes_a_span_per_rpc(schema):
    exporter = span_exporter("opentelemetry.instrumentation.grpc")
    app = await App.start(make_settings(schema, otel_enabled=True))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            await batch_pb2_grpc.BatchServiceStub(channel).BatchExecute(
                batch([{"id": "g", "get": {"table": "products", "key": {"id": 1}}}]))
    finally:
        await app.stop(grace=1)
    assert any(span.name.endswith("BatchService/BatchExecute")
               for span in exporter.get_finished_spans())


async def test_an_expired_call_is_logged_as_deadline_exceeded_like_it_is_counted(stub, caplog):
    caplog.set_level(logging.INFO, logger="batchd.service")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchExecute(batch([{"id": "s", "call": {"handler": "sleep",
                                                            "args": {"seconds": 5}}}]),
                                timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(200):  # the server logs once its handler has unwound
        lines = json_lines(caplog, "BatchExecute")
        if lines:
            break
        await asyncio.sleep(0.05)
    assert [line["code"] for line in lines] == ["DEADLINE_EXCEEDED"]
