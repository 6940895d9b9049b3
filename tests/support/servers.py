"""batchd servers of a test's own: in this process (``own_server``, its settings the test's),
or as a real ``batchd serve`` process (``serving``: signals, exit codes); and the settings
every test server starts from (``make_settings``), the session's too (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from batchd.app import App
from batchd.config import Settings, TableSettings
from tests.support.cli import BATCHD
from tests.support.ports import ROOT, free_port


def make_settings(dsn: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        dsn=dsn, host="127.0.0.1", port=0, demo_schema=True,
        handler_modules=["tests.support.handlers"], pool_min_size=1, pool_max_size=8,
        metrics_port=0,  # no /metrics endpoint unless a test asks for one
        http_port=0,  # no HTTP server unless a test asks for one (tests/support/http.py)
        tables={"public.readonly_things": TableSettings(operations=["get", "query"])},
        # tests/support/schema.sql's functions; see tests/integration/test_functions.py.
        expose_functions=["public.fn_*"],
    )
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def own_server(schema: str, **settings: Any) -> AsyncIterator[App]:
    """A server in this process with ``settings`` over the test defaults."""
    app = await App.start(make_settings(schema, **settings))
    try:
        yield app
    finally:
        await app.stop(grace=0)


@asynccontextmanager
async def serving(schema: str, grace: float) -> AsyncIterator[tuple[asyncio.subprocess.Process,
                                                                     grpc.aio.Channel]]:
    """``batchd serve`` in a process of its own on a free port, with a channel to it; killed
    afterwards if it is still running."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")},
           "BATCHD_DSN": schema, "BATCHD_HANDLER_MODULES": '["tests.support.handlers"]',
           "BATCHD_METRICS_PORT": "0", "BATCHD_HTTP_PORT": "0", "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        str(BATCHD), "serve", "--port", str(port), "--grace", str(grace), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    while b"listening on" not in await asyncio.wait_for(proc.stdout.readline(), 60):
        pass
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield proc, channel
    finally:
        await channel.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
