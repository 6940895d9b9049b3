"""A PostgreSQL of a test's own, in its own process (tests/support/pg_process.py), so that the
test can restart it under load: ``own_postgres`` starts it and yields its DSN and data folder,
``restart_postgres`` restarts it (a fast shutdown: work in flight is cut)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.support.ports import ROOT

PG_PROCESS = ROOT / "tests" / "support" / "pg_process.py"


async def pg_process(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(PG_PROCESS), *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)


@asynccontextmanager
async def own_postgres() -> AsyncIterator[tuple[str, str]]:
    """A PostgreSQL of the test's own, in its own process (to restart it): (dsn, data dir).
    Stopped, and its data deleted, when the block ends."""
    postgres = await pg_process("start")
    assert postgres.stdout is not None and postgres.stdin is not None
    try:
        dsn, folder = (await asyncio.wait_for(postgres.stdout.readline(), 60)).decode().split()
        yield dsn, folder
    finally:
        postgres.stdin.close()
        await asyncio.wait_for(postgres.wait(), 60)


async def restart_postgres(folder: str) -> None:
    restart = await pg_process("restart", folder)
    assert await asyncio.wait_for(restart.wait(), 60) == 0
