"""Admission: whether new work may start now.

Every BatchExecute and BatchStream takes a slot in its lane ("batch" or "stream", each with
its own limit) for as long as it runs. When a lane's slots are all taken the call is refused
at once with RESOURCE_EXHAUSTED and a RetryInfo: batchd never queues without bound (a bounded
wait does happen further in, for a pooled connection). While the server drains for shutdown,
new work is refused with UNAVAILABLE (another replica can take it) and ``wait_idle`` lets the
work in flight finish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from batchd.config import Settings
from batchd.errors import Overloaded, Unavailable, retry_later

_PLURAL = {"batch": "batches", "stream": "streams"}


class Admission:
    def __init__(self, settings: Settings) -> None:
        self.limits = {"batch": settings.max_concurrent_batches,
                       "stream": settings.max_concurrent_streams}
        self.in_use = dict.fromkeys(self.limits, 0)
        self.draining = False
        self.last_refused = 0.0  # event-loop time a call was last refused for draining
        self._idle = asyncio.Event()
        self._idle.set()

    def check_open(self) -> None:
        """UNAVAILABLE (retry elsewhere) while the server drains."""
        if self.draining:
            self.last_refused = asyncio.get_running_loop().time()
            raise retry_later(Unavailable("the server is shutting down; retry (another "
                                          "replica can serve it)", reason="DRAINING"), 1)

    @contextmanager
    def admit(self, lane: str) -> Iterator[None]:
        self.check_open()
        if self.in_use[lane] >= self.limits[lane]:
            raise retry_later(Overloaded(f"too many concurrent {_PLURAL[lane]}: the limit is "
                                         f"{self.limits[lane]}; retry shortly"), 1)
        self.in_use[lane] += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.in_use[lane] -= 1
            if not any(self.in_use.values()):
                self._idle.set()

    def drain(self) -> None:
        self.draining = True
        # The quiet period (wait_quiet) counts from here at the earliest: callers get at least
        # that long to be refused (and retry elsewhere) before the server stops.
        self.last_refused = asyncio.get_running_loop().time()

    async def wait_quiet(self, quiet: float, seconds: float) -> None:
        """Wait (at most ``seconds``) until no call has been refused for ``quiet`` seconds:
        until callers have moved to other replicas. Stopping the server while calls still
        arrive would cancel them (CANCELLED, which no retry policy retries) instead of
        refusing them (UNAVAILABLE before any header, which it does)."""
        loop = asyncio.get_running_loop()
        ends = loop.time() + seconds
        while loop.time() < ends:
            wait = self.last_refused + quiet - loop.time()
            if wait <= 0:
                return
            await asyncio.sleep(min(wait, ends - loop.time()))

    async def wait_idle(self, seconds: float) -> bool:
        """True if everything in flight finished within ``seconds``."""
        if self._idle.is_set():
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
        except TimeoutError:
            return False
        return True
