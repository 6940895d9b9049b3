"""Batches as a test writes and reads them: a request from the JSON a grpcurl user would type
(``batch``), the rows of a result (``rows``), a failed call unpacked (``fails``,
``BatchFailure``), the outcomes by short name, and what the database holds (``count``,
``no_open_transaction``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import json_format
from grpc_status import rpc_status

from batchd.v1 import batch_pb2, batch_pb2_grpc

# The operation outcomes by short name (the proto's values carry the enum's prefix).
SUCCEEDED = batch_pb2.OUTCOME_SUCCEEDED
FAILED = batch_pb2.OUTCOME_FAILED
ROLLED_BACK = batch_pb2.OUTCOME_ROLLED_BACK
NOT_RUN = batch_pb2.OUTCOME_NOT_RUN
SKIPPED = batch_pb2.OUTCOME_SKIPPED


def batch(operations: list[dict[str, Any]], **fields: Any) -> batch_pb2.BatchExecuteRequest:
    """A request from the same JSON a grpcurl user would type."""
    return json_format.ParseDict({"operations": operations, **fields},
                                 batch_pb2.BatchExecuteRequest())


def rows(result: batch_pb2.OperationResult) -> list[dict[str, Any]]:
    return [json_format.MessageToDict(r) for r in result.rows]


class BatchFailure:
    """An RPC error unpacked: code, message, and the details batchd attaches."""

    def __init__(self, err: grpc.aio.AioRpcError) -> None:
        self.code = err.code()
        self.message = err.details()
        status = rpc_status.from_call(err)
        assert status is not None, "no google.rpc.Status details on the error"
        self.status = status
        self.response: batch_pb2.BatchExecuteResponse | None = None
        self.error_info: dict[str, str] = {}
        self.violations: list[tuple[str, str]] = []
        from google.rpc import error_details_pb2

        for detail in status.details:
            if detail.Is(batch_pb2.BatchExecuteResponse.DESCRIPTOR):
                self.response = batch_pb2.BatchExecuteResponse()
                detail.Unpack(self.response)
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                self.error_info = dict(info.metadata) | {"reason": info.reason}
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                self.violations = [(v.field, v.description) for v in bad.field_violations]

    def outcomes(self) -> dict[str, int]:
        assert self.response is not None
        return {r.id: r.outcome for r in self.response.results}


async def fails(stub: batch_pb2_grpc.BatchServiceStub,
                request: batch_pb2.BatchExecuteRequest) -> BatchFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchExecute(request)
    return BatchFailure(caught.value)


async def count(db: asyncpg.Connection, table: str) -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM {table}"))


async def no_open_transaction(db: asyncpg.Connection, patience: float = 10.0) -> None:
    """Wait until no batchd backend holds a transaction: only then is "nothing committed"
    a real observation (uncommitted rows are invisible to other connections anyway)."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        busy = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'batchd' "
            "AND backend_xid IS NOT NULL")
        if busy == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("a batchd transaction is still open")
