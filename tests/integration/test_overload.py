"""Overload is answered by batchd itself: a burst of concurrent calls gets OK or
RESOURCE_EXHAUSTED with RetryInfo, never CANCELLED by gRPC's own queue, and every call is
counted."""

from __future__ import annotations

import asyncio
import collections

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from batchd.app import App
from batchd.v1 import batch_pb2_grpc
from tests.support.batches import batch
from tests.support.servers import make_settings

CALLS = 10_000
EXECUTE = "/batchd.v1.BatchService/BatchExecute"


@pytest.mark.timeout(300)
async def test_a_burst_of_10000_calls_gets_ok_or_resource_exhausted_and_all_are_counted(schema):
    app = await App.start(make_settings(schema, max_concurrent_batches=16))
    request = batch([{"id": "e", "call": {"handler": "echo", "args": {"x": 1}}}])
    codes: collections.Counter[grpc.StatusCode] = collections.Counter()
    retry_info = 0
    try:
        # Several connections, as many clients would open.
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{app.port}",
                                              options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(8)]
        stubs = [batch_pb2_grpc.BatchServiceStub(c) for c in channels]

        async def one(i: int) -> None:
            nonlocal retry_info
            try:
                await stubs[i % len(stubs)].BatchExecute(request, timeout=120)
                codes[grpc.StatusCode.OK] += 1
            except grpc.aio.AioRpcError as err:
                codes[err.code()] += 1
                status = rpc_status.from_call(err)
                if status is not None and any(
                        d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details):
                    retry_info += 1

        await asyncio.gather(*(one(i) for i in range(CALLS)))
        for channel in channels:
            await channel.close()
        counted = {code: app.metrics.registry.get_sample_value(
            "batchd_rpcs_total", {"method": EXECUTE, "code": code.name}) for code in codes}
    finally:
        await app.stop(grace=1)
    print(f"\n{CALLS:,} concurrent calls: " + ", ".join(f"{c.name} {n:,}" for c, n in
                                                      codes.most_common()))
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert sum(codes.values()) == CALLS and codes[grpc.StatusCode.OK] > 0
    assert retry_info == codes[grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert counted == {code: float(n) for code, n in codes.items()}
