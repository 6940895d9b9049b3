"""Health that tells the truth: the standard gRPC health service, fed by what batchd knows.

Two entries. The overall one ("") is SERVING while the process lives and can take calls (a
liveness probe restarts nothing because the database is away). ``batchd.v1.BatchService`` is
SERVING only while PostgreSQL answers: ``DatabaseWatch`` asks it every ``db_check_seconds`` on
a connection of its own (a busy pool must not look like a dead database), and the entry turns
NOT_SERVING once no check has succeeded for ``db_unhealthy_after_seconds``, SERVING again at
the first that does. A readiness probe or a load balancer's check on that entry takes the
replica out while it cannot work. Draining (``App.stop``) turns both NOT_SERVING for good.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from grpc_health.v1 import health, health_pb2

from batchd.background import Background
from batchd.config import Settings

log = logging.getLogger(__name__)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DatabaseWatch(Background):
    name = "batchd-database-watch"

    def __init__(self, dsn: str, settings: Settings, servicer: health.aio.HealthServicer,
                 service: str) -> None:
        super().__init__()
        self.dsn = dsn
        self.every = settings.db_check_seconds
        self.unhealthy_after = settings.db_unhealthy_after_seconds
        self.timeout = min(settings.connect_timeout_seconds, self.unhealthy_after)
        self.servicer = servicer
        self.service = service
        self.reachable = True
        self._conn: asyncpg.Connection | None = None

    async def stop(self) -> None:
        await super().stop()
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def check(self) -> bool:
        """One check: whether PostgreSQL answered ``SELECT 1`` in time."""
        try:
            async with asyncio.timeout(self.timeout):
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(self.dsn, statement_cache_size=0)
                await self._conn.fetchval("SELECT 1")
            return True
        except Exception as exc:  # unreachable, refused, reset, timed out: all "not now"
            log.debug("database check failed: %r", exc)
            if self._conn is not None:
                self._conn.terminate()
                self._conn = None
            return False

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        while True:
            if await self.check():
                last_ok = loop.time()
                if not self.reachable:
                    log.warning("database reachable again: %s is SERVING", self.service)
                    self.reachable = True
                    await self.servicer.set(self.service, SERVING)
            elif self.reachable and loop.time() - last_ok >= self.unhealthy_after:
                log.warning("database unreachable for %.1f s: %s is NOT_SERVING",
                            loop.time() - last_ok, self.service)
                self.reachable = False
                await self.servicer.set(self.service, NOT_SERVING)
            await asyncio.sleep(self.every)
