"""The connection pool, and the limits every transaction of batchd runs under.

Timeouts are set inside each transaction (``transaction`` / ``set_limits``: ``SET LOCAL``
through ``set_config(..., true)``), not as connection start-up parameters: a pooler in
transaction mode (pgbouncer) refuses unknown start-up parameters, and would not keep a
session's settings from one transaction to the next anyway. So ``statement_timeout``,
``lock_timeout`` and ``idle_in_transaction_session_timeout`` hold on every transaction, through
a pooler or not, and a vanished client never holds locks for long. A call's deadline lowers
``statement_timeout`` for its transaction: work nobody waits for stops in PostgreSQL too.

Behind a pooler in transaction mode prepared statements do not survive their transaction, so
asyncpg's statement cache is turned off (``pooler = "transaction"``, or found out by
``detect_pooler`` when ``pooler = "auto"``).

A connection handed back to the pool is reset (asyncpg's reset query: advisory locks released,
cursors closed, UNLISTEN, RESET ALL), so that nothing one call left in the session reaches the
next, a custom handler's ``SET`` for one. A transaction whose connection goes straight back
(``transaction(..., then_release=True)``) sends that query in the same message as its COMMIT
or ROLLBACK, and the release then skips it: the same reset, one round trip fewer per call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, TypeVar

import asyncpg
from asyncpg.transaction import Transaction

from batchd import pgtypes
from batchd.config import Settings
from batchd.errors import DeadlineExceeded
from batchd.pgtext import dumps_json, quote_ident
from batchd.startup import StartupError

log = logging.getLogger(__name__)


def _jsonb_encode(value: object) -> bytes:
    return b"\x01" + dumps_json(value).encode()  # jsonb's binary form: version 1, then text


def _jsonb_decode(data: bytes) -> object:
    return json.loads(data[1:])


def _json_encode(value: object) -> bytes:
    return dumps_json(value).encode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    await pgtypes.install(conn)
    # Binary codecs, so that json and jsonb also travel through binary COPY (stream ingest),
    # where a text codec has no encoder.
    await conn.set_type_codec("jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode,
                              schema="pg_catalog", format="binary")
    await conn.set_type_codec("json", encoder=_json_encode, decoder=json.loads,
                              schema="pg_catalog", format="binary")


async def create_pool(dsn: str, settings: Settings) -> tuple[asyncpg.Pool, str]:
    """The pool, and what is between batchd and PostgreSQL ("transaction" or "none")."""
    pooler: str = settings.pooler
    if pooler == "auto":
        pooler = await detect_pooler(dsn, settings.connect_timeout_seconds)
        log.info("database: %s", "behind a pooler in transaction mode: statement cache off"
                 if pooler == "transaction" else "no transaction pooler in between")
    # A client-side bound on each statement as well, for a server that stopped answering
    # (a network partition): PostgreSQL's own statement_timeout cannot fire then.
    command_timeout = (settings.statement_timeout_ms / 1000 + 5
                       if settings.statement_timeout_ms else None)
    pool = await asyncpg.create_pool(
        dsn,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        statement_cache_size=0 if pooler == "transaction" else settings.statement_cache_size,
        timeout=settings.connect_timeout_seconds,
        command_timeout=command_timeout,
        init=_init_connection,
        reset=_reset,
        connection_class=Connection,
        server_settings={"application_name": "batchd"},
    )
    assert pool is not None
    return pool, pooler


async def detect_pooler(dsn: str, connect_seconds: float) -> str:
    """"transaction" if two connections to ``dsn`` can share one PostgreSQL backend, which only
    a pooler in transaction mode does; else "none".

    Connection A runs a statement (its own transaction) and learns its backend; B then holds a
    transaction open and learns its own; A runs again. Directly or through a session-mode
    pooler, A keeps its backend and B has another. Through a transaction-mode pooler, B takes
    the backend A just released (pgbouncer hands out the most recently used one), or A must
    take another one while B holds it. A pool of one backend makes A wait: that too is a
    transaction pooler.
    """
    a = await asyncpg.connect(dsn, timeout=connect_seconds, statement_cache_size=0)
    b = await asyncpg.connect(dsn, timeout=connect_seconds, statement_cache_size=0)
    try:
        first = await a.fetchval("SELECT pg_backend_pid()")
        async with b.transaction():
            held = await b.fetchval("SELECT pg_backend_pid()")
            try:
                again = await a.fetchval("SELECT pg_backend_pid()",
                                         timeout=min(connect_seconds, 2.0))
            except TimeoutError:
                return "transaction"
        return "transaction" if held == first or again != first else "none"
    finally:
        await asyncio.gather(a.close(), b.close(), return_exceptions=True)


def limits(settings: Settings, deadline: float | None = None,
           idle_ms: int | None = None) -> tuple[int, int, int]:
    """A transaction's statement, lock and idle-in-transaction timeouts in ms. A ``deadline``
    (event-loop time) sooner than statement_timeout lowers it (DEADLINE_EXCEEDED if it has
    passed); ``idle_ms`` overrides the idle timeout."""
    statement_ms = settings.statement_timeout_ms
    if deadline is not None:
        remaining_ms = int((deadline - asyncio.get_running_loop().time()) * 1000)
        if remaining_ms <= 0:
            raise DeadlineExceeded("the deadline passed before the batch started")
        statement_ms = min(statement_ms, remaining_ms) if statement_ms else remaining_ms
    idle = settings.idle_in_transaction_timeout_ms if idle_ms is None else idle_ms
    return statement_ms, settings.lock_timeout_ms, idle


def _limits_sql(values: tuple[int, int, int]) -> str:
    """SET LOCAL statements for ``limits`` (integers we computed: nothing from a client)."""
    statement_ms, lock_ms, idle_ms = (int(v) for v in values)
    return (f" SET LOCAL statement_timeout = {statement_ms};"
            f" SET LOCAL lock_timeout = {lock_ms};"
            f" SET LOCAL idle_in_transaction_session_timeout = {idle_ms};")


async def set_limits(conn: asyncpg.Connection, settings: Settings,
                     deadline: float | None = None, idle_ms: int | None = None) -> None:
    """Inside a transaction already begun: its timeouts, for as long as it lasts (SET LOCAL)."""
    await conn.execute(_limits_sql(limits(settings, deadline, idle_ms)))


# Connections whose session was reset at the end of their last transaction (``transaction``,
# ``then_release``) and that ran nothing since: the pool's reset has nothing left to do.
_reset_already: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()


async def _reset(conn: asyncpg.Connection) -> None:
    """The pool's reset of a connection handed back (asyncpg has rolled back any open
    transaction): asyncpg's reset query, unless the last COMMIT or ROLLBACK carried it."""
    if isinstance(conn, Connection):
        conn._carry = None  # a transaction that never ended (the pool rolled it back)
    if conn in _reset_already:
        _reset_already.discard(conn)
        return
    query = conn.get_reset_query()
    if query:
        await conn.execute(query)


class Connection(asyncpg.Connection):  # type: ignore[misc]
    """asyncpg's connection (the pool's ``connection_class``), whose next transaction can
    carry more statements in its BEGIN's and its end's messages (``carry``): the
    transaction's SET LOCAL statements ride on its BEGIN (one round trip where BEGIN and then
    the limits would take two); its COMMIT or ROLLBACK carries ``DISCARD PLANS`` after work as
    a role, and with ``reset``, the pool's reset query (marked done: ``_reset``). asyncpg's own
    Transaction sends them, so that savepoints nest in it as usual."""

    _carry: tuple[str, str, bool] | None = None

    def carry(self, begin_sql: str, end_sql: str, reset: bool) -> None:
        """What the next transaction's BEGIN, and its COMMIT or ROLLBACK, carry."""
        _reset_already.discard(self)
        self._carry = (begin_sql, end_sql, reset)

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        carry = self._carry
        if carry is None or args:
            return str(await super().execute(query, *args, **kwargs))
        begin_sql, end_sql, reset = carry
        if query.startswith("BEGIN"):
            self._carry = ("", end_sql, reset)  # its end still to come
            return str(await super().execute(query + begin_sql, **kwargs))
        if query not in ("COMMIT;", "ROLLBACK;"):
            return str(await super().execute(query, **kwargs))
        self._carry = None
        result = str(await super().execute(
            query + end_sql + (" " + self.get_reset_query() if reset else ""), **kwargs))
        if reset:  # only once all of it ran: a failed COMMIT leaves the reset to the pool
            _reset_already.add(self)
        return result


def role_sql(role: str | None) -> str:
    """``SET LOCAL ROLE`` for a configured role (checked at start-up: ``check_roles``), or
    back to batchd's own login role (None); either way with ``DISCARD PLANS``.

    Nothing planned under one role is run under another. PostgreSQL caches plans per session
    (backend), not per role: asyncpg's prepared statements (keyed by SQL text), the bodies of
    SQL functions (PostgreSQL 18) and of PL/pgSQL functions. A cached plan is not always
    checked again for the role that runs it: the planner inlines a plain SQL function once it
    has checked EXECUTE *for the role that plans*, so a plan made for batchd's login role would
    let a tenant without EXECUTE call the function (in a call, a column default, a view, a
    policy, a function's body). ``plan_cache_mode = force_custom_plan`` is not enough (a
    statement without parameters, and a function body, keep their generic plan), nor is a
    cache keyed by role (a plan made for a role outlives a REVOKE of one of its memberships).
    So every change of role in a transaction discards the session's plans, and so does the
    end of a transaction that ran as a role (``transaction``, ``roles_inside``): statements
    are planned again, for the role that runs them, at the cost of some planning in
    PostgreSQL and no round trip (it rides the message that changes the role). Through a
    pooler the backend is another client's after COMMIT: the discard is in the same message.
    Row-level security alone would need none of this: PostgreSQL replans per role for it."""
    role_part = f" SET LOCAL ROLE {quote_ident(role)};" if role else " SET LOCAL ROLE NONE;"
    return role_part + " DISCARD PLANS;"


async def check_roles(pool: asyncpg.Pool, roles: set[str]) -> None:
    """At start-up: every role a principal may run as exists, and batchd's login role is a
    member of it (else SET ROLE would fail on every call)."""
    if not roles:
        return
    missing = await pool.fetch(
        "SELECT r FROM unnest($1::text[]) AS r WHERE NOT EXISTS (SELECT FROM pg_roles "
        "WHERE rolname = r) OR NOT pg_has_role(current_user, r, 'MEMBER')", sorted(roles))
    if missing:
        names = sorted(r["r"] for r in missing)
        login = await pool.fetchval("SELECT current_user")
        role = quote_ident(names[0])
        raise StartupError(
            f"tokens[].role / client_cert_roles: {', '.join(names)}: no such role, or batchd's "
            f"login role {login} is not a member of it; in PostgreSQL: CREATE ROLE {role}; "
            f"GRANT {role} TO {quote_ident(login)}; or fix the role in the settings")


def begin(conn: asyncpg.Connection, settings: Settings, *,
          isolation: str | None = None, readonly: bool = False,
          deadline: float | None = None, role: str | None = None, roles_inside: bool = False,
          then_release: bool = False) -> Transaction:
    """A transaction of batchd, not yet started: asyncpg's (so savepoints nest in it as
    usual), begun together with its limits (``limits``) and the role its work runs as, in one
    round trip. ``roles_inside``: its work changes role itself (``role_sql``), so that its end
    discards the plans made under a role too. ``then_release``: nothing runs on the connection
    after this transaction before it goes back to the pool, so the COMMIT or ROLLBACK carries
    the pool's reset (see the module's docstring)."""
    sql = _limits_sql(limits(settings, deadline)) + (role_sql(role) if role else "")
    end_sql = " DISCARD PLANS;" if role or roles_inside else ""
    # First: on a connection released meanwhile (its call cut), asyncpg's InterfaceError.
    tx = conn.transaction(isolation=isolation, readonly=readonly)
    conn.carry(sql, end_sql, then_release)  # BEGIN, COMMIT, ROLLBACK (``Connection``)
    return tx


@asynccontextmanager
async def transaction(conn: asyncpg.Connection, settings: Settings, *,
                      isolation: str | None = None, readonly: bool = False,
                      deadline: float | None = None, role: str | None = None,
                      roles_inside: bool = False,
                      then_release: bool = False) -> AsyncIterator[None]:
    """``begin``'s transaction for the block: commits when it ends, rolls back when it
    raises."""
    async with begin(conn, settings, isolation=isolation, readonly=readonly, deadline=deadline,
                     role=role, roles_inside=roles_inside, then_release=then_release):
        yield


_T = TypeVar("_T")


async def decided(tx: Transaction, work: Callable[[], Awaitable[_T]],
                  keep: Callable[[_T], bool]) -> _T:
    """``work()`` inside ``tx`` (a transaction or savepoint, started here), whose end its
    answer decides: committed (released) when ``keep(answer)``, else rolled back; rolled back
    too when it raises. batchd's executor carries failures as values (batchd.batch.steps),
    so the value, not an exception, says whether what ran stays. A failed ROLLBACK raises
    its own error, as asyncpg's ``async with`` does."""
    await tx.start()
    try:
        answer = await work()
    except BaseException:
        await tx.rollback()
        raise
    if keep(answer):
        await tx.commit()
    else:
        await tx.rollback()
    return answer


# How long handing a connection back may take (asyncpg resets it: ROLLBACK, RESET ALL, and
# after a cancelled query, waits for PostgreSQL to confirm the cancel). Past it the connection
# is terminated and replaced: over a dead network path the confirmation never comes, and the
# call (and its pool slot) would otherwise wait for it far past the call's deadline.
RELEASE_SECONDS = 2.0


@asynccontextmanager
async def connection(pool: asyncpg.Pool,
                     deadline: float | None = None) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for the work of one call: waiting for it ends at ``deadline``
    (event-loop time; TimeoutError), and giving it back takes at most RELEASE_SECONDS."""
    timeout = None
    if deadline is not None:
        timeout = max(deadline - asyncio.get_running_loop().time(), 0.001)
    conn = await pool.acquire(timeout=timeout)
    try:
        yield conn
    finally:
        try:
            await pool.release(conn, timeout=RELEASE_SECONDS)
        except Exception as exc:  # asyncpg terminated it; the work's own outcome stands
            log.warning("a pooled connection could not be reset in %.0f s and was replaced: "
                        "%r", RELEASE_SECONDS, exc)


DDL_LOCK = 0x62617463  # "batc": serializes batchd's own DDL across processes and replicas


async def run_ddl(pool: asyncpg.Pool, sql: str, present: str | None = None,
                  what: str = "", tables: Sequence[str] = ()) -> None:
    """Run idempotent DDL (CREATE ... IF NOT EXISTS) under an advisory lock: two processes
    creating the same table at once would otherwise collide in the catalog.

    ``present``: a query that is true when everything ``sql`` makes is already there; then
    nothing runs. A hardened deployment has an owner make batchd's tables once and lets
    batchd's login role only use them: even ``CREATE ... IF NOT EXISTS`` needs the privilege
    to create. If it is missing and may not be made, start-up stops naming ``what``; so it
    does if batchd's login role may not use the ``tables`` it finds."""
    async with pool.acquire() as conn:
        if present is not None and await conn.fetchval(present):
            await _check_use(conn, tables)
            return
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", DDL_LOCK)
                await conn.execute(sql)
        except asyncpg.InsufficientPrivilegeError as exc:
            if not what:  # the caller says what it was for
                raise
            user = await conn.fetchval("SELECT current_user")
            raise StartupError(
                f"{what} are missing or out of date, and batchd's "
                f'login role "{user}" may not create them ({exc}): start batchd once as a '
                "role that may, or have an owner create them (docs/how-to/roles.md, "
                '"A login role that owns nothing")') from None


async def _check_use(conn: asyncpg.Connection, tables: Sequence[str]) -> None:
    """batchd's login role may read and write each of batchd's own ``tables`` (made by
    another role): else start-up stops with the GRANT that fixes it."""
    denied = await conn.fetchval(  # by oid: a name would need USAGE on the schema to resolve
        "SELECT array_agg(n.nspname || '.' || c.relname ORDER BY c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname || '.' || c.relname = ANY($1::text[]) AND NOT "
        "(has_schema_privilege(n.oid, 'USAGE') AND "
        "has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE'))", list(tables))
    if denied:
        user = quote_ident(await conn.fetchval("SELECT current_user"))
        raise StartupError(
            f"batchd's login role {user} may not use its own tables {', '.join(denied)}; in "
            f"PostgreSQL, as their owner: GRANT USAGE ON SCHEMA batchd TO {user}; GRANT "
            f"SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA batchd TO {user}")


async def apply_demo_schema(pool: asyncpg.Pool) -> None:
    await run_ddl(pool, resources.files("batchd.demo").joinpath("schema.sql").read_text())
