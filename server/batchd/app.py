"""Wiring and lifecycle: database, catalog, gRPC server with reflection and health.

``App.start`` brings everything up in order (embedded PostgreSQL if no DSN, the pool, the demo
schema, handler modules, batchd's own tables, the catalog, the server, the cleanup of expired
request ids) and ``App.stop`` takes it down in reverse: health flips to NOT_SERVING first, so
load balancers stop sending work, then in-flight calls get the grace period, then the cleanup
and the pool stop, and last the metrics endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from batchd import startup
from batchd.batch.executor import Executor
from batchd.batch.idempotency import Cleanup, ensure_schema
from batchd.config import Settings
from batchd.db.embedded import start_embedded
from batchd.db.pool import apply_demo_schema, check_roles, create_pool
from batchd.http.server import HttpServer, http_server
from batchd.introspection import load_catalog
from batchd.kinds import registry as kinds
from batchd.kinds.base import PlanContext
from batchd.kinds.call import load_modules
from batchd.metrics import Metrics
from batchd.reload import CatalogReload, install_trigger
from batchd.rpc import decode, reflection, tracing
from batchd.rpc.admission import Admission
from batchd.rpc.auth import AuthInterceptor
from batchd.rpc.health import DatabaseWatch, HealthServicer
from batchd.rpc.interceptors import MetricsInterceptor
from batchd.rpc.observe import Observer
from batchd.rpc.service import BatchService
from batchd.rpc.tls import server_credentials
from batchd.stream.ledger import ensure_internal_schema
from batchd.stream.session import StreamServices
from batchd.v1 import batch_pb2

log = logging.getLogger(__name__)
SERVICE_NAME = batch_pb2.DESCRIPTOR.services_by_name["BatchService"].full_name
DEMO_HANDLERS = "batchd.demo.handlers"
QUIET_SECONDS = 0.25


@dataclass
class App:
    settings: Settings
    server: grpc.aio.Server
    pool: asyncpg.Pool
    health: health.aio.HealthServicer
    port: int
    embedded: Any = None  # keeps the embedded PostgreSQL up while the app lives
    metrics: Metrics = field(default_factory=Metrics)  # this app's own registry
    admission: Admission | None = None  # who may start work; drained by stop()
    cleanup: Cleanup | None = None  # deletes expired request ids; stopped by stop()
    watch: DatabaseWatch | None = None  # the BatchService health entry; stopped by stop()
    catalog_reload: CatalogReload | None = None  # NOTIFY / SIGHUP reloads; stopped by stop()
    http: HttpServer | None = None  # Connect, curl ingest, console (batchd.http); http_port 0: none
    # Set to end the drain delay early (tests; an operator's second thought is a second signal).
    drain_released: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def start(cls, settings: Settings) -> App:
        # Large requests are planned, and large responses built, on worker threads; with the
        # default 5 ms GIL switch interval the event loop would wait up to that long for every
        # step of every other call meanwhile. 0.5 ms keeps it answering (health checks too).
        sys.setswitchinterval(0.0005)
        # The address first: a port already taken is found before PostgreSQL is touched.
        startup.check_port(settings.host, settings.port, reuse_port=settings.reuse_port)
        try:  # and the TLS files
            credentials = server_credentials(settings)
        except OSError as exc:
            raise startup.tls_file_error(exc, {
                name: getattr(settings, name)
                for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file")}) from exc
        embedded = None
        dsn = settings.dsn
        if dsn is None:
            try:
                dsn, embedded = await start_embedded(settings.data_dir)
            except Exception as exc:
                raise startup.embedded_error(exc, settings.data_dir) from exc
        try:
            pool, pooler = await create_pool(dsn, settings)
        except Exception as exc:
            raise startup.database_error(exc, dsn, settings.connect_timeout_seconds) from exc
        metrics = Metrics()
        metrics.watch_pool(pool)
        http: HttpServer | None = None
        try:
            modules = list(settings.handler_modules)
            if settings.wants_demo_schema:
                await apply_demo_schema(pool)
                modules.append(DEMO_HANDLERS)
            startup.import_handler_modules(load_modules, modules)
            # Created if missing; a login role that may not create them is told (run_ddl).
            await ensure_internal_schema(pool)
            await ensure_schema(pool)  # batchd.requests (request ids)
            await check_roles(pool, settings.roles)
            if settings.reload_trigger:
                try:
                    await install_trigger(pool)
                except asyncpg.InsufficientPrivilegeError as exc:
                    raise startup.StartupError(
                        f"reload_trigger = true: {exc}; an event trigger needs a superuser: "
                        "install it once as one, or set reload_trigger = false (NOTIFY batchd, "
                        "'reload' and SIGHUP still reload)") from exc
            async with pool.acquire() as conn:
                try:
                    catalog = await load_catalog(conn, settings, kinds.TABLE_KINDS)
                except ValueError as exc:  # [tables."..."] that do not fit the table
                    raise startup.StartupError(f"tables: {exc}") from exc
            plan_ctx = PlanContext(catalog, settings)
            executor = Executor(pool, plan_ctx, settings)

            server = _grpc_server(settings, metrics)
            admission = Admission(settings)
            streams = StreamServices(pool, executor, plan_ctx, settings, admission)
            service = BatchService(executor, plan_ctx, streams, Observer(metrics, plan_ctx),
                                   admission)
            decode.register(service, server)
            health_servicer = HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
            reflection.enable(
                (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name),
                server)
            port = _listen(server, settings, credentials)
            if settings.http_port:  # the same calls (one behaviour, two transports)
                http = http_server(settings, service.calls, metrics, health_servicer,
                                   SERVICE_NAME)
                http.bind()
            try:
                metrics.serve(settings.metrics_host, settings.metrics_port,
                              required="metrics_port" in settings.model_fields_set)
            except OSError as exc:
                raise startup.StartupError(f"{exc}; choose another metrics_port (0: no "
                                           "endpoint)") from exc
            await server.start()
            if http is not None:
                http.start()
            for name in ("", SERVICE_NAME):
                await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        except BaseException:
            if http is not None:
                await http.stop()
            await asyncio.to_thread(metrics.stop)
            await pool.close()
            raise
        log.info("batchd listening on %s:%d", settings.host, port)
        if http is not None:
            log.info("batchd HTTP on %s:%d", settings.host, http.port)
        notify_dsn = settings.notify_dsn or (dsn if pooler != "transaction" else None)
        return cls(settings, server, pool, health_servicer, port, embedded, metrics, admission,
                   Cleanup(pool, settings).start(),
                   DatabaseWatch(dsn, settings, health_servicer, SERVICE_NAME).start(),
                   (await CatalogReload(pool, plan_ctx, settings, notify_dsn).listen()).start(),
                   http=http)

    async def stop(self, grace: float | None = 5.0) -> None:
        """Drain, in stages, so that a rolling restart fails no call:

        1. health NOT_SERVING (every entry), while work is still taken for
           ``drain_delay_seconds``: load balancers and clients watching health move away;
        2. new work refused with UNAVAILABLE before any header (retryable elsewhere), and the
           work in flight gets ``grace`` seconds to finish; then, within the same grace, until
           no call has been refused for QUIET_SECONDS (callers have gone elsewhere);
        3. the server stops: a call still running past the grace period is cancelled, and its
           transaction rolls back, never half-committed; then the background tasks, the pool,
           and last the metrics endpoint (it shows the drain).
        """
        await self.health.enter_graceful_shutdown()
        if self.settings.drain_delay_seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drain_released.wait(),
                                       self.settings.drain_delay_seconds)
        if self.admission is not None:
            loop = asyncio.get_running_loop()
            ends = loop.time() + (grace or 0)
            self.admission.drain()
            if await self.admission.wait_idle(grace or 0):
                await self.admission.wait_quiet(QUIET_SECONDS, ends - loop.time())
        await self.server.stop(0)
        if self.http is not None:
            await self.http.stop()
        if self.watch is not None:
            await self.watch.stop()
        if self.catalog_reload is not None:
            await self.catalog_reload.stop()
        if self.cleanup is not None:
            await self.cleanup.stop()
        await self.pool.close()
        await asyncio.to_thread(self.metrics.stop)  # last: it shows the drain


def _grpc_server(settings: Settings, metrics: Metrics) -> grpc.aio.Server:
    """The gRPC server with its interceptors and limits (no services yet)."""
    # Metrics (and tracing) first, so that the calls authentication refuses count too.
    interceptors: list[grpc.aio.ServerInterceptor] = [
        MetricsInterceptor(metrics), *tracing.server_interceptors(settings.otel_enabled)]
    # Authentication only when configured: the zero-config demo stays open.
    if settings.auth_enabled:
        interceptors.append(AuthInterceptor(settings))
    return grpc.aio.server(interceptors=interceptors, options=[
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", int(settings.reuse_port)),
        # Clients may ping every 20 s (batchd.client pings every 30 s) to find a dead
        # connection; the server pings too, so a vanished client's calls (and the stream slot
        # or transaction they hold) end within keepalive time + timeout.
        ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.server.max_pending_requests", settings.max_pending_calls),
        ("grpc.server.max_pending_requests_hard_limit", settings.max_pending_calls),
    ])


def _listen(server: grpc.aio.Server, settings: Settings,
            credentials: grpc.ServerCredentials | None) -> int:
    """Bind the address (TLS / mTLS, or plaintext); the port bound."""
    address = f"{settings.host}:{settings.port}"
    try:
        port = (server.add_secure_port(address, credentials) if credentials is not None
                else server.add_insecure_port(address))
    except RuntimeError as exc:  # gRPC says "Failed to bind", not why
        raise startup.listen_error(exc, settings.host, settings.port,
                                   settings.reuse_port) from exc
    if port == 0:
        raise startup.listen_error(OSError("not bound"), settings.host, settings.port,
                                   settings.reuse_port)
    return int(port)
