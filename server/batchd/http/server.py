"""The HTTP server, beside the grpc.aio one and in the same event loop (so both share one
pool, one admission, one catalog, one set of metrics): Hypercorn serving one small ASGI router.

Routes: ``/batchd.v1.BatchService/*`` (Connect, gRPC-Web, gRPC: batchd.http.connect),
``/v1/ingest/TABLE`` (the curl ingest: batchd.http.ingest), ``/healthz`` (200 while the server
serves, 503 while it drains or PostgreSQL is unreachable), and ``/console`` when the setting
``console`` is on (batchd.http.console).

Why Hypercorn: it is an ASGI server that runs *inside* batchd's own event loop
(``worker_serve`` with sockets batchd binds), speaks HTTP/1.1 and HTTP/2 — with TLS (ALPN) and
in cleartext (h2c, prior knowledge) — and implements ASGI's response trailers, which gRPC and
streaming need; it is maintained by the Pallets project. Uvicorn speaks HTTP/1.1 only (no
BatchStream, no gRPC); Granian (Rust) runs its own loop and processes, so it could not share
batchd's pool and admission, and does not implement trailers. Hypercorn's cost is its
pure-Python HTTP parsing: the figures (scripts/bench_http.py, BENCHMARKS.md / docs/http.md)
are why gRPC clients keep the grpc.aio port, which remains the fast path.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.utils import wrap_app

from batchd import startup
from batchd.config import Settings
from batchd.http.connect import SERVICE, BatchServiceApp
from batchd.http.console import console_app
from batchd.http.edge import Gatekeeper, send_json
from batchd.http.ingest import IngestApp
from batchd.metrics import Metrics
from batchd.rpc import tracing
from batchd.rpc.auth import Authenticator
from batchd.rpc.calls import Calls
from batchd.rpc.health import SERVING, HealthServicer

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
INGEST_PREFIX = "/v1/ingest/"


class Router:
    """The one ASGI application the server runs."""

    def __init__(self, connect: App, ingest: App | None, console: App | None,
                 health: HealthServicer, service_name: str) -> None:
        self.connect = connect
        self.ingest = ingest
        self.console = console
        self.health = health
        self.service_name = service_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if scope.get("http_version") in ("1.0", "1.1") and _has_body(scope):
            receive, send = _closes_when_unread(receive, send)
        path: str = scope["path"]
        if path.startswith(f"/{SERVICE}/"):
            await self.connect(scope, receive, send)
        elif path.startswith(INGEST_PREFIX) and self.ingest is not None:
            await self.ingest(scope, receive, send)
        elif self.console is not None and (path == "/console" or path.startswith("/console/")):
            await self.console(scope, receive, send)
        elif path == "/healthz":
            serving = (self.health.status("") == SERVING
                       and self.health.status(self.service_name) == SERVING)
            await send_json(send, 200 if serving else 503,
                            {"status": "SERVING" if serving else "NOT_SERVING"})
        else:
            await send_json(send, 404, {"code": "not_found", "message": (
                f"no route {path}: BatchService is at /{SERVICE}/METHOD (Connect, gRPC-Web), "
                f"the ingest at {INGEST_PREFIX}TABLE")})


def _has_body(scope: Scope) -> bool:
    """Whether the request comes with a body (chunked, or a Content-Length above 0)."""
    for key, value in scope.get("headers", ()):
        if key == b"transfer-encoding":
            return True
        if key == b"content-length":
            return value.strip() not in (b"0", b"")
    return False


def _closes_when_unread(receive: Receive, send: Send) -> tuple[Receive, Send]:
    """An answer that starts before the request's body was read whole (a 404, a 415, a
    refusal of the body itself) says ``Connection: close``. HTTP/1.1 cannot carry the next
    request on that connection (the rest of this body is in the way), so the server closes it
    after answering; without the header a keep-alive client sends its next request into that
    closing connection and sees it dropped without an answer."""
    body_read = False

    async def tracked_receive() -> MutableMapping[str, Any]:
        nonlocal body_read
        message = await receive()
        if (message["type"] == "http.request" and not message.get("more_body", False)) \
                or message["type"] == "http.disconnect":
            body_read = True
        return message

    async def closing_send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start" and not body_read:
            headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)

    return tracked_receive, closing_send


class HttpServer:
    """Hypercorn in batchd's loop: ``bind`` (start-up: a taken port is one line), ``start``,
    ``stop`` (after admission has drained: the ASGI server closes its connections)."""

    def __init__(self, settings: Settings, app: App) -> None:
        self.settings = settings
        self.app = app
        self.config = Config()
        self.config.keep_alive_timeout = settings.http_idle_seconds
        self.config.read_timeout = int(settings.http_idle_seconds)
        self.config.graceful_timeout = 1.0
        self.config.include_server_header = False
        self.config.h2_max_concurrent_streams = 256
        self.config.accesslog = None
        self.config.errorlog = logging.getLogger("batchd.http.server")
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            self.config.certfile = str(settings.tls_cert_file)
            self.config.keyfile = str(settings.tls_key_file)
            if settings.tls_client_ca_file is not None:
                self.config.ca_certs = str(settings.tls_client_ca_file)
                self.config.verify_mode = ssl.CERT_REQUIRED
        self.sockets: Sockets | None = None
        self.port = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def bind(self) -> int:
        """Bind (and listen on) the port now; a port that cannot be bound is a StartupError
        naming it and the setting to change."""
        host, port = self.settings.host, self.settings.http_port
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                             socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.settings.reuse_port:  # `serve --workers`: siblings share the port
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host.strip("[]"), port))
            sock.listen(self.config.backlog)  # connections queue from now on
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                problem = (f"cannot listen on {host}:{port} for HTTP: the port is in use; "
                           "choose another with --http-port (or BATCHD_HTTP_PORT), or stop "
                           "the process holding it")
            else:
                problem = startup.address_problem(exc, host, port) + " (the HTTP port)"
            raise startup.StartupError(f"{problem}; 0 turns the HTTP server off") from None
        sock.setblocking(False)
        if self.config.ssl_enabled:
            self.sockets = Sockets([sock], [], [])
        else:
            self.sockets = Sockets([], [sock], [])
        self.port = int(sock.getsockname()[1])
        return self.port

    def start(self) -> None:
        wrapped = wrap_app(self.app, self.config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
        self._task = asyncio.create_task(worker_serve(
            wrapped, self.config, sockets=self.sockets, shutdown_trigger=self._stop.wait))

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, self.config.graceful_timeout + 1)
        elif self.sockets is not None:
            for sock in (*self.sockets.secure_sockets, *self.sockets.insecure_sockets):
                sock.close()


def http_server(settings: Settings, calls: Calls, metrics: Metrics, health: HealthServicer,
                service_name: str) -> HttpServer:
    """The HTTP server of ``settings`` (not yet bound)."""
    gatekeeper = Gatekeeper(settings.auth_enabled, Authenticator(settings))
    # connectrpc types its ASGI callable with asgiref's precise dicts, where installed.
    connect = cast(App, BatchServiceApp(calls, gatekeeper, metrics, settings.max_message_bytes))
    console = console_app(settings) if settings.wants_console else None
    ingest = IngestApp(settings, calls, gatekeeper)
    router = Router(connect, ingest, console, health, service_name)
    return HttpServer(settings, tracing.asgi_app(router, settings.otel_enabled))
