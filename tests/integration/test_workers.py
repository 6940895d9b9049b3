"""`batchd serve --workers N`: several processes on one port, spread by the kernel."""

from __future__ import annotations

import asyncio
import os
import signal

import grpc

from batchd.v1 import batch_pb2_grpc
from tests.support.batches import batch, rows
from tests.support.cli import BATCHD
from tests.support.ports import ROOT, free_port


async def test_workers_share_the_port_and_drain_on_sigterm(schema):
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")},
           "BATCHD_DSN": schema, "BATCHD_HANDLER_MODULES": '["tests.support.handlers"]',
           "BATCHD_METRICS_PORT": "0", "BATCHD_HTTP_PORT": "0", "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        str(BATCHD), "serve", "--workers", "2", "--port", str(port), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        listening = 0
        while listening < 2:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, "batchd exited early"
            listening += b"listening on" in line
        pids = set()
        for _ in range(30):  # new connections; the kernel hashes them across the workers
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = batch_pb2_grpc.BatchServiceStub(channel)
                response = await stub.BatchExecute(batch([
                    {"id": "p", "call": {"handler": "server_pid"}}]))
                pids.add(rows(response.results[0])[0]["pid"])
        assert len(pids) == 2
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
