"""Fixtures of the fleet tests: PostgreSQL, pgbouncer (transaction mode), three batchd replicas
and HAProxy (HTTP/2), as real processes on free ports of 127.0.0.1 (see processes.py).

Marked ``fleet`` and left out of the default run (pyproject.toml); ``scripts/test-fleet`` runs
them. Without the pgbouncer or haproxy binaries they are skipped, loudly, except under CI
(environment variable CI set), where that is a failure: CI installs both (``.ci/run``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.fleet.processes import Fleet, FleetError, find_tool, start_fleet

# What the replicas run with. The timeouts are odd numbers so that seeing them proves they
# came from here (PostgreSQL shows them as '12345ms', not rounded to seconds).
STATEMENT_TIMEOUT_MS = 12345
LOCK_TIMEOUT_MS = 2345
IDLE_IN_TRANSACTION_TIMEOUT_MS = 34567
# HAProxy takes a NOT_SERVING replica out within one check interval (500 ms, fall 1): the
# drain delay must be longer, with margin for a loaded machine.
DRAIN_DELAY_SECONDS = 2.5
GRACE_SECONDS = 15.0
REPLICA_ENV = {
    "BATCHD_POOLER": "transaction",
    "BATCHD_DRAIN_DELAY_SECONDS": str(DRAIN_DELAY_SECONDS),
    "BATCHD_STATEMENT_TIMEOUT_MS": str(STATEMENT_TIMEOUT_MS),
    "BATCHD_LOCK_TIMEOUT_MS": str(LOCK_TIMEOUT_MS),
    "BATCHD_IDLE_IN_TRANSACTION_TIMEOUT_MS": str(IDLE_IN_TRANSACTION_TIMEOUT_MS),
    "BATCHD_METRICS_PORT": "0",
    "BATCHD_HTTP_PORT": "0",
    "BATCHD_DEMO_SCHEMA": "false",  # the harness made the tables, once
    "BATCHD_HANDLER_MODULES": '["tests.fleet.handlers"]',
    "BATCHD_POOL_MIN_SIZE": "1",
    "BATCHD_POOL_MAX_SIZE": "8",
    "BATCHD_LOG_FORMAT": "json",
}
TABLES = ["events", "customers"]


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember each phase's report on the test, so fixtures can tell it failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


def require_tools() -> None:
    missing = [name for name in ("pgbouncer", "haproxy") if find_tool(name) is None]
    if not missing:
        return
    message = (f"FLEET TESTS NOT RUN: {' and '.join(missing)} not found on PATH "
               "(Debian: apt-get install -y pgbouncer haproxy)")
    if os.environ.get("CI"):
        pytest.fail(message + " -- required under CI", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
async def fleet() -> AsyncIterator[Fleet]:
    require_tools()
    workdir = Path(tempfile.mkdtemp(prefix="batchd-fleet-"))
    started: list[Any] = []
    try:
        running = await start_fleet(workdir, REPLICA_ENV, GRACE_SECONDS, started)
    except BaseException as exc:
        for thing in reversed(started):
            await thing.stop()
        logs = "\n".join(thing.tail() for thing in started)
        if isinstance(exc, FleetError):
            raise FleetError(f"{exc}\n\nlogs in {workdir}:\n{logs}") from None
        raise
    try:
        yield running
    finally:
        await running.stop()
        if not running.failed:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(autouse=True)
async def fleet_ready(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Every test of the fleet starts with all replicas UP behind HAProxy and empty tables,
    and a failed one prints every process's log. (Tests that do not use the fleet do not
    start it.)"""
    if "fleet" not in request.fixturenames:
        yield
        return
    fleet: Fleet = request.getfixturevalue("fleet")
    await fleet.ensure_all_up()
    conn = await asyncpg.connect(fleet.db_dsn)
    try:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()
    yield
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        fleet.failed = True
        print(f"\nfleet logs (kept in {fleet.workdir}):\n{fleet.logs()}")


@pytest.fixture
async def fleet_db(fleet: Fleet) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to PostgreSQL (not through pgbouncer), to see what is committed."""
    conn = await asyncpg.connect(fleet.db_dsn)
    yield conn
    await conn.close()
