"""`batchd serve` as a newcomer runs it: no configuration, embedded PostgreSQL, demo schema."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal

from tests.support.cli import BATCHD
from tests.support.grpcurl import GRPCURL


async def run(*argv: str, data: object | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(
        proc.communicate(json.dumps(data).encode() if data is not None else None), 30)
    return proc.returncode or 0, out.decode()


async def test_serve_with_no_configuration_runs_the_demo_and_drains_on_sigterm(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
    proc = await asyncio.create_subprocess_exec(
        str(BATCHD), "serve", "--port", "0", "--data-dir", str(tmp_path / "pgdata"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env)
    try:
        port = None
        assert proc.stdout is not None
        while port is None:
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert line, "batchd serve exited before listening"
            m = re.search(r"batchd listening on 127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
        target = f"127.0.0.1:{port}"
        code, out = await run(str(GRPCURL), "-plaintext", target, "list")
        assert code == 0 and "batchd.v1.BatchService" in out, out
        code, out = await run(
            str(GRPCURL), "-plaintext", "-d", "@", target, "batchd.v1.BatchService/BatchExecute",
            data={"operations": [
                {"id": "c", "insert": {"table": "customers",
                                       "rows": [{"name": "New", "email": "new@example.com"}]}},
                {"id": "stock", "call": {"handler": "reserve_stock",
                                         "args": {"product_id": 1, "quantity": 1}}}]})
        assert code == 0, out
        assert json.loads(out)["committed"] is True
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
