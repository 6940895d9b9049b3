"""Batches held on purpose: one waits on an advisory lock the test holds (the test handler
``wait_for_lock``), so that a test can act while it is running."""

from __future__ import annotations

import asyncio

import asyncpg

from batchd.v1 import batch_pb2
from tests.support.batches import batch

LOCK = 515151


def blocked_batch(email: str) -> batch_pb2.BatchExecuteRequest:
    """An atomic batch that inserts a customer, then waits on ``LOCK``."""
    return batch([
        {"id": "c", "insert": {"table": "customers", "rows": [{"name": "b", "email": email}]}},
        {"id": "wait", "call": {"handler": "wait_for_lock", "args": {"key": LOCK}}},
    ])


async def waiters(db: asyncpg.Connection, n: int) -> None:
    """Until ``n`` batches wait on ``LOCK`` (PostgreSQL's own view of it, polled: 20 s)."""
    for _ in range(400):
        if await db.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                             "AND objid = $1 AND NOT granted", LOCK) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {n} batches waiting")
