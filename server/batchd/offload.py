"""CPU-heavy work of one large call (parsing, planning, building a response), run on a worker
thread so that the event loop keeps answering every other call meanwhile.

The workers run at a lower OS priority (nice +10) than the event loop's thread: on a machine
whose cores are all busy (PostgreSQL working on the same large call), the scheduler then runs
the loop first, and health checks and small calls are not kept waiting behind the big one.

``run_pipelined`` is for work that PostgreSQL itself waits on: a stream's next chunk, decoded
while PostgreSQL writes the previous one. At nice +10 the scheduler held it behind PostgreSQL
and the gRPC threads of that very stream (measured: ingest 6-23 % slower), so it runs on
workers of normal priority.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")
NICENESS = 10


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
    except (AttributeError, OSError):  # not Linux, or not allowed: run at normal priority
        pass


_workers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="batchd-offload",
                              initializer=_lower_priority)


_pipeline_workers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="batchd-pipeline")


async def run(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``fn(*args, **kwargs)`` on a low-priority worker thread."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_workers, lambda: fn(*args, **kwargs))


async def run_pipelined(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``fn(*args, **kwargs)`` on a worker thread of normal priority (see above)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pipeline_workers, lambda: fn(*args, **kwargs))
