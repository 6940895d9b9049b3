"""Load for the fleet's drain tests: callers sending 10-operation atomic batches (each with a
request id, 10 events rows) until told to stop, counting answers and failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import grpc

from batchd.v1 import batch_pb2_grpc
from tests.support.batches import batch


class BatchLoad:
    """``callers`` concurrent callers over ``stubs`` (spread), each looping until ``stop``."""

    def __init__(self, stubs: Sequence[batch_pb2_grpc.BatchServiceStub], callers: int,
                 tag: str, per_caller: int = 100_000) -> None:
        self.stubs, self.tag, self.per_caller = stubs, tag, per_caller
        self.answered = 0
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._caller(n)) for n in range(callers)]

    async def _caller(self, n: int) -> None:
        stub = self.stubs[n % len(self.stubs)]
        for i in range(self.per_caller):
            if self._stop.is_set():
                return
            first = (n * self.per_caller + i) * 10
            operations = [{"id": f"e{k}", "insert": {"table": "events", "rows": [
                {"id": str(first + k), "kind": self.tag, "score": k}]}} for k in range(10)]
            try:
                response = await stub.BatchExecute(
                    batch(operations, request_id=f"{self.tag}-{n}-{i}"), timeout=30)
                assert response.committed
                self.answered += 1
            except grpc.aio.AioRpcError as exc:
                self.failures.append(f"{exc.code().name}: {exc.details()}")

    def answered_at_least(self, count: int) -> Callable[[], Awaitable[bool]]:
        """A check for ``wait_until``: ``count`` answers (the callers must not have run out)."""
        async def check() -> bool:
            assert not all(t.done() for t in self._tasks), "the callers ran out of calls"
            return self.answered >= count
        return check

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 60)
