"""Work batchd does in the background while it serves (deleting expired request ids, watching
the database): one task each, started with the app and stopped by ``App.stop``."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self


class Background:
    """A task running ``_loop`` from ``start`` until ``stop`` (which cancels it and waits)."""

    name = "batchd-background"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Self:
        self._task = asyncio.create_task(self._loop(), name=self.name)
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        raise NotImplementedError
