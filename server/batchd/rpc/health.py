"""Health that tells the truth: the standard gRPC health service, fed by what batchd knows.

Two entries. The overall one ("") is SERVING while the process lives and can take calls (a
liveness probe restarts nothing because the database is away). ``batchd.v1.BatchService`` is
SERVING only while PostgreSQL answers: ``DatabaseWatch`` asks it every ``db_check_seconds`` on
a connection of its own (a busy pool must not look like a dead database), and the entry turns
NOT_SERVING once no check has succeeded for ``db_unhealthy_after_seconds``, SERVING again at
the first that does. A readiness probe or a load balancer's check on that entry takes the
replica out while it cannot work. Draining (``App.stop``) turns both NOT_SERVING for good.

``HealthServicer`` answers all three RPCs of ``grpc.health.v1.Health``: Check, Watch, and List
(every entry at once), which grpcio-health-checking's servicer leaves UNIMPLEMENTED.
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


class HealthServicer(health.aio.HealthServicer):  # type: ignore[misc]
    """grpcio-health-checking's asyncio servicer, and List. The entries are kept here too, as
    ``set`` and ``enter_graceful_shutdown`` leave them (the servicer's own are private)."""

    def __init__(self) -> None:
        super().__init__()
        self._statuses: dict[str, int] = {"": SERVING}
        self._draining = False

    async def set(self, service: str, status: int) -> None:
        await super().set(service, status)
        if not self._draining:  # as the servicer: once draining, entries stay NOT_SERVING
            self._statuses[service] = status

    async def enter_graceful_shutdown(self) -> None:
        await super().enter_graceful_shutdown()
        self._draining = True
        self._statuses = dict.fromkeys(self._statuses, NOT_SERVING)

    def status(self, service: str = "") -> int:
        """An entry's status as Check answers it (SERVICE_UNKNOWN: no such entry); the HTTP
        server's /healthz reads it."""
        return int(self._statuses.get(service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN))

    async def List(self, request: health_pb2.HealthListRequest,
                   context: object) -> health_pb2.HealthListResponse:
        """Every entry and its status (two: "" and batchd.v1.BatchService), as Check would
        answer each."""
        return health_pb2.HealthListResponse(statuses={
            name: health_pb2.HealthCheckResponse(status=status)
            for name, status in self._statuses.items()})


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
