"""The differential fuzzer's harness: batchd (a real server in a thread of its own, called
through a blocking channel, so that a plain hypothesis test can drive it) and the reference
executor side by side, each on its own schema, both reset before every example; and batchd's
answer normalised into the reference executor's terms (tests/support/reference_executor.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from typing import Any, TypeVar

import asyncpg
import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from batchd.app import App
from batchd.v1 import batch_pb2, batch_pb2_grpc
from tests.support.batch_model import (
    BATCHD_SCHEMA,
    DDL,
    REFERENCE_SCHEMA,
    RESET,
    Batch,
    Op,
    Query,
    canonical,
    to_request,
)
from tests.support.reference_executor import BatchResult, OpResult, ReferenceExecutor
from tests.support.servers import make_settings

_T = TypeVar("_T")
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


class Harness:
    """batchd serving schema ``fuzz`` and the reference executor on ``fuzz_ref``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, app: App, conn: asyncpg.Connection,
                 channel: grpc.Channel) -> None:
        self.loop = loop
        self.app = app
        self.conn = conn
        self.stub = batch_pb2_grpc.BatchServiceStub(channel)
        self.reference = ReferenceExecutor(conn, REFERENCE_SCHEMA)
        self.observer = ReferenceExecutor(conn, BATCHD_SCHEMA)  # reads batchd's tables

    def call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def reset(self) -> None:
        self.call(self.conn.execute(RESET.format(s=BATCHD_SCHEMA)
                                    + RESET.format(s=REFERENCE_SCHEMA)))

    def run(self, batch: Batch) -> tuple[BatchResult, BatchResult]:
        """(batchd's answer, the reference's), each with its tables' contents after it. A
        batch with a request id is sent to batchd twice: the second answer must be the first."""
        self.reset()
        request_id = str(uuid.uuid4()) if batch.idempotent else ""
        got = batchd_result(self.stub, batch, request_id)
        got.tables = self.call(self.observer.contents())
        if request_id and not batch.validate_only:  # again: the same answer, nothing ran
            # twice (validate_only is not stored: it would run again, and draw other ids)
            again = batchd_result(self.stub, batch, request_id)
            again.tables = self.call(self.observer.contents())
            replayed = differences(again, got)
            assert not replayed, ("the same request under its request id again got another "
                                  "answer:\n  " + "\n  ".join(replayed)
                                  + f"\nrequest:\n{describe(batch)}")
        expected = self.call(self.reference.run(batch))
        for result in (got, expected):
            unordered(batch, result)
        return got, expected


    def pages(self, batch: Batch, query: Query) -> tuple[list[OpResult], OpResult]:
        """``batch`` run on both copies (so that they hold the same rows), then ``query``
        read from batchd page by page, each with the token of the page before, until a page
        has none; and the whole of it from the reference, in one page."""
        got, expected = self.run(batch)
        assert not differences(got, expected), differences(got, expected)
        pages: list[OpResult] = []
        token = ""
        while token or not pages:
            assert len(pages) < 100, "pages without end"
            page = replace(query, page_token=token)
            answer = batchd_result(self.stub, Batch([Op("page", page)], run_order=["page"]))
            assert answer.code == "OK", answer
            pages.append(answer.results[0])
            token = answer.tokens[0]
        whole = replace(query, limit=10_000)
        reference = self.call(self.reference.run(Batch([Op("all", whole)], run_order=["all"])))
        return pages, reference.results[0]


@contextmanager
def harness(dsn: str) -> Iterator[Harness]:
    """The schemas made afresh, a batchd server exposing ``fuzz``, a connection for the
    reference executor; all on one event loop in a thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="batchd-differential", daemon=True)
    thread.start()

    def call(coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(60)

    conn: asyncpg.Connection = call(asyncpg.connect(dsn))
    app: App | None = None
    channel: grpc.Channel | None = None
    try:
        for schema in (BATCHD_SCHEMA, REFERENCE_SCHEMA):
            call(conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            call(conn.execute(DDL.format(s=schema)))
        app = call(App.start(make_settings(dsn, expose=[f"{BATCHD_SCHEMA}.*"],
                                           default_schema=BATCHD_SCHEMA)))
        channel = grpc.insecure_channel(f"127.0.0.1:{app.port}")
        yield Harness(loop, app, conn, channel)
    finally:
        if channel is not None:
            channel.close()
        if app is not None:
            call(app.stop(grace=1))
        for schema in (BATCHD_SCHEMA, REFERENCE_SCHEMA):
            call(conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        call(conn.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


# --- batchd's answer, normalised ------------------------------------------------------------

def batchd_result(stub: batch_pb2_grpc.BatchServiceStub, batch: Batch,
                  request_id: str = "") -> BatchResult:
    try:
        response = stub.BatchExecute(to_request(batch, request_id), timeout=30)
        code = "OK"
    except grpc.RpcError as err:
        code = err.code().name
        response = batch_pb2.BatchExecuteResponse()
        status = rpc_status.from_call(err)
        for detail in status.details if status is not None else ():
            if detail.Is(batch_pb2.BatchExecuteResponse.DESCRIPTOR):
                detail.Unpack(response)
        if not response.results:  # refused before any operation: say why
            code = f"{code}: {err.details()}"
    tables = {op.id: op.kind.table for op in batch.ops}
    result = BatchResult(code, response.committed, response.attempts,
                         [_op_result(r, tables.get(r.id, "")) for r in response.results])
    result.tokens = [r.next_page_token for r in response.results]
    return result


def _op_result(r: batch_pb2.OperationResult, table: str) -> OpResult:
    out = OpResult(r.id, batch_pb2.Outcome.Name(r.outcome).removeprefix("OUTCOME_"),
                   CODE_NAMES.get(r.status.code, str(r.status.code)),
                   message=r.status.message)
    for detail in r.status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            out.sqlstate = info.metadata.get("sqlstate", "")
            out.constraint = info.metadata.get("constraint", "")
            out.reason = "" if out.sqlstate else info.reason
    out.columns = [(c.name, c.type) for c in r.columns]
    types = dict(out.columns)
    out.rows = [{name: canonical(table, name, decode(types.get(name, ""), value))
                 for name, value in json_format.MessageToDict(row).items()} for row in r.rows]
    out.rows_affected = r.rows_affected
    out.more = bool(r.next_page_token)
    out.total_count = r.total_count if r.HasField("total_count") else None
    return out


def decode(type_: str, value: Any) -> Any:
    """A wire value (JSON as the Struct holds it) by its column's type: bigint and numeric
    come as strings, every number as a double."""
    if value is None:
        return None
    if type_ in ("integer", "bigint"):
        if isinstance(value, float) and not value.is_integer():
            raise AssertionError(f"{type_} value {value!r} is not integral")
        return int(value)
    return value


def unordered(batch: Batch, result: BatchResult) -> None:
    """The rows of updates and deletes by filters sorted (their order is not defined)."""
    for op, r in zip(batch.ops, result.results, strict=False):
        if not op.ordered_rows:
            r.rows.sort(key=lambda row: json.dumps(row, sort_keys=True, default=str))


# --- the comparison --------------------------------------------------------------------------

def differences(got: BatchResult, expected: BatchResult) -> list[str]:
    """What batchd answered differently from the reference (empty: nothing)."""
    found = []
    for name in ("code", "committed", "attempts"):
        if getattr(got, name) != getattr(expected, name):
            found.append(f"{name}: batchd {getattr(got, name)!r}, "
                         f"reference {getattr(expected, name)!r}")
    if [r.id for r in got.results] != [r.id for r in expected.results]:
        found.append(f"results: batchd {[r.id for r in got.results]}, "
                     f"reference {[r.id for r in expected.results]}")
    for mine, theirs in zip(got.results, expected.results, strict=False):
        a, b = asdict(mine), asdict(theirs)
        for key in a:
            if key != "message" and a[key] != b[key]:
                found.append(f"{mine.id}.{key}: batchd {a[key]!r}, reference {b[key]!r}"
                             + (f" ({mine.message})" if key == "code" and mine.message else ""))
    for table, rows in expected.tables.items():
        if got.tables.get(table) != rows:
            found.append(f"table {table}: batchd {got.tables.get(table)!r}, reference {rows!r}")
    return found


def describe(batch: Batch) -> str:
    """The request as JSON (what to paste into a regression test)."""
    return json_format.MessageToJson(to_request(batch), indent=1)
