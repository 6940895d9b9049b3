"""A batchd server in a thread of its own, with its own event loop, for plain (sync) tests that
drive it with blocking clients — hypothesis's: its tests are not coroutines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator

from batchd.app import App
from batchd.config import Settings


class ErrorLog(logging.Handler):
    """batchd's records at ERROR while it serves: where the traceback of an unmapped
    exception (an INTERNAL) lands, even when the transport's status does not show it."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def about(self, request_id: str) -> str:
        return "\n".join(self.format(r) for r in self.records if request_id in r.getMessage())

    def take(self) -> list[str]:
        """The messages logged since the last take."""
        taken = [r.getMessage() for r in self.records]
        self.records.clear()
        return taken


@contextlib.contextmanager
def app_in_thread(settings: Settings) -> Iterator[tuple[App, ErrorLog]]:
    """The server started from ``settings`` on a loop in a daemon thread, and its ERROR log;
    stopped (a second of grace) and the thread joined afterwards."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="batchd-threaded", daemon=True)
    thread.start()
    errors = ErrorLog()
    logging.getLogger("batchd").addHandler(errors)
    try:
        app = asyncio.run_coroutine_threadsafe(App.start(settings), loop).result(60)
        try:
            yield app, errors
        finally:
            asyncio.run_coroutine_threadsafe(app.stop(grace=1), loop).result(60)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
        logging.getLogger("batchd").removeHandler(errors)
