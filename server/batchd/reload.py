"""The catalog, live: reloaded after DDL without a restart.

``CatalogReload.reload`` reads the catalog again (tables and functions) and makes it the one
new calls plan with (``PlanContext.catalog``); calls already planned finish on the catalog they
planned with (their plans hold its tables and functions), and a stream keeps the catalog it
started with. GetSchema shows the new one at once. What triggers a reload:

- ``NOTIFY batchd, 'reload'`` from any session of the database: every batchd listening on it
  reloads. batchd listens on a connection of its own (``notify_dsn``, default the DSN); behind
  a pooler in transaction mode LISTEN does not work, so there set ``notify_dsn`` to a direct
  connection, or use SIGHUP.
- SIGHUP to ``batchd serve`` (cli.py).
- Optional: ``reload_trigger = true`` installs an event trigger (``batchd.notify_reload``, at
  start-up, which needs a superuser) that sends that NOTIFY after every DDL command.

A reload also replaces the pool's connections, so that no statement prepared on the old schema
is used again (``reload``).

A failed reload (the database away) keeps the catalog as it was and is logged; the next
trigger tries again.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from batchd.background import Background
from batchd.config import Settings
from batchd.db.pool import run_ddl
from batchd.introspection import load_catalog
from batchd.kinds import registry as kinds
from batchd.kinds.base import PlanContext

log = logging.getLogger(__name__)
CHANNEL = "batchd"

TRIGGER_SQL = """
CREATE SCHEMA IF NOT EXISTS batchd;
CREATE OR REPLACE FUNCTION batchd.notify_reload() RETURNS event_trigger
LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('batchd', 'reload'); END $$;
DROP EVENT TRIGGER IF EXISTS batchd_reload;
CREATE EVENT TRIGGER batchd_reload ON ddl_command_end EXECUTE FUNCTION batchd.notify_reload();
"""


class CatalogReload(Background):
    name = "batchd-catalog-reload"

    def __init__(self, pool: asyncpg.Pool, plan_ctx: PlanContext, settings: Settings,
                 notify_dsn: str | None) -> None:
        super().__init__()
        self.pool = pool
        self.plan_ctx = plan_ctx
        self.settings = settings
        self.notify_dsn = notify_dsn
        self.reloads = 0  # completed reloads (tests and logs)
        self._wanted = asyncio.Event()
        self._listener: asyncpg.Connection | None = None

    async def listen(self) -> CatalogReload:
        """LISTEN before serving, so that no NOTIFY sent after start-up is missed."""
        self._listener = await self._listen()
        return self

    def request(self) -> None:
        """Reload soon (several requests close together make one reload)."""
        self._wanted.set()

    async def reload(self) -> None:
        async with self.pool.acquire() as conn:
            catalog = await load_catalog(conn, self.settings, kinds.TABLE_KINDS)
        self.plan_ctx.catalog = catalog
        # No statement prepared on the old schema is left behind (PostgREST empties its pool
        # on a reload too): a column whose type changed would fail a cached statement with
        # "cached plan must not change result type". Idle connections are replaced at their
        # next acquire, busy ones when released; asyncpg's type caches go with them. A stale
        # statement met anyway (DDL not yet reloaded) reruns its transaction: DatabaseError.
        await self.pool.expire_connections()
        self.reloads += 1
        log.info("catalog reloaded: %d tables, %d functions exposed", len(catalog.tables),
                 sum(len(f) for f in catalog.functions.values()))

    async def _loop(self) -> None:
        listener = self._listener
        try:
            while True:
                await self._wanted.wait()
                self._wanted.clear()
                try:
                    await self.reload()
                except Exception:  # the database may be away: keep the catalog, retry later
                    log.warning("catalog reload failed; the previous catalog stays",
                                exc_info=True)
        finally:
            if listener is not None:
                listener.terminate()

    async def _listen(self) -> asyncpg.Connection | None:
        if self.notify_dsn is None:
            return None
        try:
            conn = await asyncpg.connect(self.notify_dsn, statement_cache_size=0,
                                         timeout=self.settings.connect_timeout_seconds)
            await conn.add_listener(CHANNEL, self._notified)
        except Exception:
            log.warning("cannot LISTEN %s for catalog reloads (use SIGHUP)", CHANNEL,
                        exc_info=True)
            return None
        return conn

    def _notified(self, conn: object, pid: int, channel: str, payload: str) -> None:
        if payload in ("reload", ""):
            self.request()


async def install_trigger(pool: asyncpg.Pool) -> None:
    await run_ddl(pool, TRIGGER_SQL)
