"""Custom handlers used by the tests (loaded through the handler_modules setting)."""

from __future__ import annotations

from typing import Any

from batchd import HandlerContext, handler

serialization_failures: dict[str, int] = {}


@handler("echo")
async def echo(ctx: HandlerContext, args: dict[str, Any]) -> dict[str, Any]:
    return args


@handler("fail_serialization")
async def fail_serialization(ctx: HandlerContext, args: dict[str, Any]) -> None:
    """Raise a real 40001 from PostgreSQL for the first ``times`` calls with this ``key``."""
    key = str(args["key"])
    done = serialization_failures.get(key, 0)
    if done < int(args["times"]):
        serialization_failures[key] = done + 1
        await ctx.connection.execute(
            "DO $$ BEGIN RAISE EXCEPTION 'simulated conflict' "
            "USING ERRCODE = 'serialization_failure'; END $$")


@handler("boom")
async def boom(ctx: HandlerContext, args: dict[str, Any]) -> None:
    raise RuntimeError("secret internal detail: password=hunter2")


@handler("sleep")
async def sleep(ctx: HandlerContext, args: dict[str, Any]) -> dict[str, Any]:
    """Sleep in PostgreSQL; returns when it started and ended, by the server's clock."""
    started = await ctx.connection.fetchval("SELECT clock_timestamp()")
    await ctx.connection.execute("SELECT pg_sleep($1)", float(args["seconds"]))
    ended = await ctx.connection.fetchval("SELECT clock_timestamp()")
    return {"started": started, "ended": ended}


@handler("tx_info")
async def tx_info(ctx: HandlerContext, args: dict[str, Any]) -> dict[str, Any]:
    """The transaction the handler runs in, as PostgreSQL sees it."""
    row = await ctx.connection.fetchrow(
        "SELECT current_setting('transaction_isolation') AS isolation, "
        "current_setting('transaction_read_only') AS read_only, "
        "pg_current_xact_id()::text AS txid")
    return dict(row)


@handler("kill_my_connection")
async def kill_my_connection(ctx: HandlerContext, args: dict[str, Any]) -> None:
    """Lose the database connection mid-batch, as a crash or failover would."""
    await ctx.connection.execute("SELECT pg_terminate_backend(pg_backend_pid())")


@handler("wait_for_lock")
async def wait_for_lock(ctx: HandlerContext, args: dict[str, Any]) -> dict[str, Any]:
    """Wait for advisory lock ``key`` (shared): a barrier a test holds and releases."""
    await ctx.connection.execute("SELECT pg_advisory_xact_lock_shared($1)", int(args["key"]))
    return {"passed": True}


@handler("server_pid")
async def server_pid(ctx: HandlerContext, args: dict[str, Any]) -> dict[str, Any]:
    """Which batchd process ran the operation (for tests of --workers)."""
    import os

    return {"pid": os.getpid()}


@handler("statement_timeout")
async def statement_timeout(ctx: HandlerContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"value": await ctx.connection.fetchval("SHOW statement_timeout")}


@handler("session_settings")
async def session_settings(ctx: HandlerContext, args: dict[str, Any]) -> dict[str, Any]:
    names = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
             "application_name")
    return {n: await ctx.connection.fetchval(f"SHOW {n}") for n in names}


@handler("leave_session_state")
async def leave_session_state(ctx: HandlerContext, args: dict[str, Any]) -> dict[str, Any]:
    """Change the session beyond the transaction: a session advisory lock (kept even when the
    transaction rolls back) and a setting set for the session, not SET LOCAL."""
    await ctx.connection.execute("SELECT pg_advisory_lock($1)", int(args["key"]))
    await ctx.connection.execute("SELECT set_config('batchd_test.left', 'left', false)")
    return {"done": True}


@handler("session_state")
async def session_state(ctx: HandlerContext, args: dict[str, Any]) -> dict[str, Any]:
    """What ``leave_session_state`` left on this connection, as this transaction sees it."""
    return {"setting": await ctx.connection.fetchval(
                "SELECT current_setting('batchd_test.left', true)"),
            "locks": await ctx.connection.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = pg_backend_pid()")}
