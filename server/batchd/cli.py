"""The server's commands of ``batchd``: ``serve`` and ``new-token``.

    batchd serve [--dsn DSN] [--host H] [--port P] [--http-port P] [--data-dir DIR]
                 [--config FILE] [--workers N]
    batchd new-token --principal NAME [--scope SCOPE ...]

The ``batchd`` command itself is the client's (``batchd.client.cli``, in ``batchd-client``, with
``exec``, ``schema`` and ``ingest``); this module joins it through the entry-point group
``batchd.commands`` (pyproject.toml), so that the server's commands appear when the server is
installed and a client-only install still has ``batchd exec``.

Without a DSN (flag or BATCHD_DSN) ``serve`` starts an embedded PostgreSQL with the demo schema.
A start-up failure (settings, DSN, port, roles...) is one line on standard error naming the
value and the fix, exit code 2 (batchd.startup). SIGHUP reloads the catalog (batchd.reload).
The first SIGTERM or SIGINT drains: health goes NOT_SERVING, new calls are refused, in-flight
ones get the grace period; a second signal exits at once. The server modules are imported only
by ``serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("batchd")


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {"dsn": args.dsn, "host": args.host, "port": args.port, "data_dir": args.data_dir,
            "http_port": args.http_port}


def _startup_failed(exc: BaseException) -> int:
    """A start-up failure: one line naming the value and the fix (batchd.startup), exit 2. A
    failure nobody foresaw is one line too; its traceback is logged at DEBUG."""
    from batchd import startup

    if not isinstance(exc, startup.StartupError):
        log.debug("start-up failed", exc_info=exc)
        exc = startup.unexpected(exc)
    # One line, whatever the message holds (PostgreSQL's DETAIL and HINT come on lines of
    # their own).
    print("batchd serve: " + " ".join(str(exc).split()), file=sys.stderr, flush=True)
    return startup.EXIT_STARTUP


async def serve(args: argparse.Namespace, **overrides: Any) -> int:
    from batchd import logs
    from batchd.app import App
    from batchd.config import load_settings

    try:
        settings = load_settings(args.config, **{**_flags(args), **overrides})
        logs.configure(settings.log_format)  # the server's log lines: JSON unless on a terminal
        app = await App.start(settings)
    except Exception as exc:
        return _startup_failed(exc)
    print(f"batchd listening on {settings.host}:{app.port}", flush=True)
    if app.http is not None:
        print(f"batchd HTTP on http{'s' if settings.tls_cert_file else ''}://{settings.host}:"
              f"{app.http.port} (Connect, gRPC-Web, /v1/ingest/TABLE"
              f"{', /console' if settings.wants_console else ''})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            log.warning("second signal: exiting at once")
            os._exit(1)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    if app.catalog_reload is not None:  # SIGHUP: read the catalog again (batchd.reload)
        loop.add_signal_handler(signal.SIGHUP, app.catalog_reload.request)
    await stop.wait()
    log.info("draining (grace %.1fs)", args.grace)
    await app.stop(args.grace)
    return 0


def _run_server(args: argparse.Namespace, **overrides: Any) -> int:
    try:
        import uvloop
        return uvloop.run(serve(args, **overrides))
    except ImportError:  # pragma: no cover - non-POSIX
        return asyncio.run(serve(args, **overrides))


def serve_workers(args: argparse.Namespace) -> int:
    """``serve --workers N``: N server processes on one port (SO_REUSEPORT; the kernel spreads
    connections). Workers are *spawned*, not forked: each is a fresh interpreter, so no gRPC
    or asyncpg object ever crosses a fork. An embedded PostgreSQL is started once, here, and
    shared. Signals are forwarded: the first drains every worker, a second kills them."""
    import multiprocessing

    from batchd import startup
    from batchd.config import load_settings
    from batchd.db.embedded import start_embedded

    overrides: dict[str, Any] = {"reuse_port": True}
    embedded = None
    try:  # what would fail every worker alike fails here, once
        settings = load_settings(args.config, **_flags(args))
        if settings.port == 0:
            raise startup.StartupError("--workers needs a fixed --port (or BATCHD_PORT)")
        startup.check_port(settings.host, settings.port)
        if settings.dsn is not None:
            asyncio.run(startup.check_database(settings.dsn, settings.connect_timeout_seconds))
        else:
            try:
                overrides["dsn"], embedded = asyncio.run(start_embedded(settings.data_dir))
            except Exception as exc:
                raise startup.embedded_error(exc, settings.data_dir) from exc
            overrides["demo_schema"] = settings.wants_demo_schema
    except Exception as exc:
        return _startup_failed(exc)
    spawn = multiprocessing.get_context("spawn")
    # Each worker exports its own metrics, on metrics_port + its index (scrape them all).
    workers = [spawn.Process(target=_run_server, args=(args,), name=f"batchd-worker-{i}",
                             kwargs={**overrides, "metrics_port": settings.metrics_port + i
                                     if settings.metrics_port else 0})
               for i in range(args.workers)]
    for worker in workers:
        worker.start()
    signals = 0

    def forward(signum: int, frame: Any) -> None:
        nonlocal signals
        signals += 1
        for worker in workers:
            if worker.is_alive():
                (worker.kill if signals > 1 else worker.terminate)()

    def forward_reload(signum: int, frame: Any) -> None:
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward_reload)
    for worker in workers:
        worker.join()
    del embedded  # stops the embedded PostgreSQL when this process exits
    codes = {w.exitcode for w in workers}
    return 0 if codes == {0} else 2 if 2 in codes else 1


def new_token(args: argparse.Namespace) -> int:
    """Print a fresh random token and the ``[[tokens]]`` settings holding only its SHA-256."""
    from batchd.config import check_scope

    try:
        scopes = [check_scope(s) for s in args.scopes]
    except ValueError as exc:
        print(f"batchd new-token: {exc}", file=sys.stderr)
        return 2
    token = secrets.token_urlsafe(32)
    print(f"# Bearer token for {args.principal!r}; give it to the client (batchd keeps only "
          f"its hash):\n#   {token}\n[[tokens]]\nprincipal = {json.dumps(args.principal)}\n"
          f'sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
          f"scopes = {json.dumps(scopes)}")
    return 0


COMMANDS: tuple[str, ...] = ("serve", "new-token")


def add_commands(commands: Any) -> None:
    """Adds ``serve`` and ``new-token`` to the ``batchd`` subcommands."""
    p = commands.add_parser("serve", help="run the gRPC server")
    p.add_argument("--dsn", help="PostgreSQL DSN (default: embedded PostgreSQL)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 50051; 0 = any free)")
    p.add_argument("--http-port", type=int, help="HTTP port: Connect, gRPC-Web, curl ingest, "
                   "console (default 8080; 0 = no HTTP server)")
    p.add_argument("--data-dir", type=Path, help="embedded PostgreSQL data folder")
    p.add_argument("--config", type=Path, help="TOML settings file")
    p.add_argument("--grace", type=float, default=10.0, help="drain grace period, seconds")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes sharing the port (SO_REUSEPORT); default 1")
    p = commands.add_parser("new-token", help="make a bearer token and its settings stanza")
    p.add_argument("--principal", required=True, help="who the token's holder is")
    p.add_argument("--scope", dest="scopes", action="append", default=[],
                   help="admin, read:SCHEMA.TABLE, write:SCHEMA.TABLE, call:HANDLER "
                        "(fnmatch patterns; repeatable)")


def run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        try:
            return serve_workers(args) if args.workers > 1 else _run_server(args)
        except KeyboardInterrupt:  # before the signal handlers are installed: still starting
            print("batchd serve: interrupted while starting", file=sys.stderr)
            return 130
    return new_token(args)


def main(argv: list[str] | None = None) -> int:
    """``batchd`` (``python -m batchd``): the client's command, which finds these through the
    entry point."""
    from batchd.client import cli

    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
