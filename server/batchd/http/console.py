"""The browser console's files, served by the HTTP server on ``/console`` (setting ``console``;
on in the embedded demo): a small ASGI application that serves the static files shipped in
``console_static/`` (package data; no build step at install time).

Every answer carries a strict Content-Security-Policy: everything from this origin only
(``default-src 'self'``), no inline script or style, no plugins, never framed
(``frame-ancestors 'none'``), and ``X-Content-Type-Options: nosniff``; ``index.html`` is never
cached (it names the other files), the others may be revalidated. Only GET and HEAD; a path
that leaves the folder, or names no file, is 404.

``/console/config.json`` tells the page the gRPC address its "copy as grpcurl / Python"
commands name (``host:port`` of the settings; nothing when the port is chosen at bind time).
Nothing secret is ever in it: the page is served to anyone who reaches the port, and the
console is only a client of the same authenticated API (the token is typed into the page).
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from batchd.config import Settings

STATIC = Path(__file__).resolve().parent / "console_static"
PREFIX = "/console"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".json": "application/json",
          ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def _headers(content_type: str, length: int, cache: str) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", content_type.encode()), (b"content-length", str(length).encode()),
            (b"content-security-policy", CSP.encode()),
            (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"), (b"cache-control", cache.encode())]


def _file_of(path: str, root: Path) -> Path | None:
    """The file ``path`` (below /console) names, if it is one inside ``root``."""
    relative = path[len(PREFIX):].lstrip("/") or "index.html"
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate


def page_config(settings: Settings) -> bytes:
    """config.json: what the page cannot know from its own URL."""
    config: dict[str, str] = {}
    if settings.port:
        host = "localhost" if settings.host in ("0.0.0.0", "::", "127.0.0.1") else settings.host
        config["grpcTarget"] = f"{host}:{settings.port}"
    return json.dumps(config).encode()


def console_app(settings: Settings, root: Path = STATIC) -> App:
    """The console's ASGI application: ``root``'s files, and config.json from ``settings``."""
    root = root.resolve()
    config = page_config(settings)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        status, body, content_type, cache = 404, b"not found\n", "text/plain; charset=utf-8", \
            "no-store"
        if scope["method"] not in ("GET", "HEAD"):
            status, body = 405, b"method not allowed\n"
        elif scope["path"] == PREFIX:  # relative links resolve below /console/
            await send({"type": "http.response.start", "status": 308,
                        "headers": [*_headers("text/plain", 0, "no-store"),
                                    (b"location", b"/console/")]})
            await send({"type": "http.response.body", "body": b""})
            return
        elif scope["path"] == f"{PREFIX}/config.json":
            status, body, content_type = 200, config, "application/json"
        else:
            found = _file_of(scope["path"], root)
            if found is not None:
                status = 200
                body = await asyncio.to_thread(found.read_bytes)
                content_type = _TYPES.get(found.suffix) or (
                    mimetypes.guess_type(found.name)[0] or "application/octet-stream")
                cache = "no-store" if found.name == "index.html" else "no-cache"
        await send({"type": "http.response.start", "status": status,
                    "headers": _headers(content_type, len(body), cache)})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else body})

    return app
