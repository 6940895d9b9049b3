"""Custom handlers of the fleet tests (BATCHD_HANDLER_MODULES='["tests.fleet.handlers"]')."""

from __future__ import annotations

import os
from typing import Any

from batchd import HandlerContext, handler


@handler("whoami")
async def whoami(ctx: HandlerContext, args: dict[str, Any]) -> dict[str, Any]:
    """Which replica ran the operation, and the timeouts its transaction really has: read on
    the batch's own connection, so behind pgbouncer they are those of whatever backend the
    transaction got, not of the session batchd thinks it opened."""
    row = await ctx.connection.fetchrow(
        "SELECT current_setting('statement_timeout') AS statement_timeout, "
        "current_setting('lock_timeout') AS lock_timeout, "
        "current_setting('idle_in_transaction_session_timeout') "
        "AS idle_in_transaction_session_timeout, "
        "pg_backend_pid() AS backend_pid")
    return {"pid": os.getpid(), **dict(row)}


@handler("pause")
async def pause(ctx: HandlerContext, args: dict[str, Any]) -> None:
    """Hold the batch's transaction open for ``seconds`` (in PostgreSQL), so that concurrent
    calls really overlap."""
    await ctx.connection.execute("SELECT pg_sleep($1)", float(args["seconds"]))


_failures: dict[str, int] = {}


@handler("fail_serialization")
async def fail_serialization(ctx: HandlerContext, args: dict[str, Any]) -> None:
    """A real 40001 from PostgreSQL for the first ``times`` runs with this ``key`` (in the
    replica that runs it)."""
    key = str(args["key"])
    done = _failures.get(key, 0)
    if done < int(args["times"]):
        _failures[key] = done + 1
        await ctx.connection.execute(
            "DO $$ BEGIN RAISE EXCEPTION 'simulated conflict' "
            "USING ERRCODE = 'serialization_failure'; END $$")
