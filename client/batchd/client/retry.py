"""Retries of the Python client: what is retried, how long to wait, and the deadline over it all.

What is retried (``retryable``) follows what the server promises (docs/how-to/idempotency.md):

- RESOURCE_EXHAUSTED with reason ``TOO_MANY_CONCURRENT`` and UNAVAILABLE with reason
  ``DRAINING``: always. Both are refusals at admission, before anything ran, whatever the
  request; the wait is at least the RetryInfo delay the server attached (1 s).
- ABORTED with reason ``REQUEST_IN_PROGRESS``: always. It only happens with a request id, and
  the retry gets the first call's stored answer (``replayed``), or runs if that one stored none.
- Any other UNAVAILABLE (a lost connection, a lost reply, DATABASE_UNAVAILABLE): only when a
  second run is harmless (``replay_safe``): an ATOMIC batch with a request id (its answer commits
  with its operations, so a retry finds one or the other and is replayed, not run twice), a
  ``validate_only`` or ``read_only`` batch (nothing commits), GetSchema. Not an INDEPENDENT
  batch, even with a request id: a server that dies in the middle of one leaves the operations
  that committed committed and the id free, so a retry would run those again. Not a request
  sent with ``request_id=False``: the first run may have committed.
- Nothing else: INVALID_ARGUMENT, FAILED_PRECONDITION (REQUEST_ID_REUSED among them), other
  ABORTED (VERSION_CONFLICT needs a fresh read; serialization failures are retried by the server
  already), DEADLINE_EXCEEDED, ... are the answer.

The deadline covers every attempt: each attempt gets what remains of it, and no wait is started
that would end past it (the last error is raised instead). grpc's own retry policy (the service
config, see ``batchd.client.channel``) works below this one: it re-sends only calls that got no
response headers, i.e. that never reached batchd's handler, which sends its headers first.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.rpc import error_details_pb2

from batchd.client.results import rpc_error
from batchd.v1 import batch_pb2
from batchd.vocabulary import BatchdRpcError, reasons

__all__ = ["RetryEvent", "RetryHook", "RetryPolicy", "full_jitter", "replay_safe", "retryable"]

_S = grpc.StatusCode
_T = TypeVar("_T")


def full_jitter(cap: float) -> float:
    """A wait drawn uniformly from [0, cap] ("full jitter"): retries of many clients spread out
    instead of arriving together."""
    return random.uniform(0.0, cap)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry. After failed attempt n (1-based) the client waits
    ``jitter(min(max_backoff, initial_backoff * multiplier ** (n - 1)))`` seconds, and at least
    the RetryInfo delay the server sent; at most ``max_attempts`` attempts in all (1: no retry).
    The defaults match the published service config."""

    max_attempts: int = 5
    initial_backoff: float = 0.05
    max_backoff: float = 2.0
    multiplier: float = 2.0
    jitter: Callable[[float], float] = full_jitter

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and the multiplier >= 1")

    def backoff(self, attempt: int) -> float:
        """The jittered wait after failed attempt ``attempt`` (1-based), RetryInfo aside."""
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return self.jitter(cap)

    def next_delay(self, error: BatchdRpcError, attempt: int, *, replay_safe: bool,
                   remaining: float | None) -> float | None:
        """How long to wait before attempt ``attempt + 1``, or None to give up: the error is
        not retryable, the attempts are used up, or the wait would outlast the deadline
        (``remaining`` seconds from now; None: no deadline)."""
        if attempt >= self.max_attempts or not retryable(error, replay_safe=replay_safe):
            return None
        delay = max(self.backoff(attempt), retry_info_delay(error))
        if remaining is not None and delay >= remaining:
            return None
        return delay


DEFAULT = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1)


def retryable(error: BatchdRpcError, *, replay_safe: bool) -> bool:
    """Whether sending the same request again is right after ``error`` (see the module doc)."""
    if error.code == _S.RESOURCE_EXHAUSTED:
        return error.reason == reasons.TOO_MANY_CONCURRENT
    if error.code == _S.ABORTED:
        return error.reason == reasons.REQUEST_IN_PROGRESS
    if error.code == _S.UNAVAILABLE:
        return error.reason == reasons.DRAINING or replay_safe
    return False


def replay_safe(request: batch_pb2.BatchExecuteRequest) -> bool:
    """Whether running ``request`` twice is harmless, so that an UNAVAILABLE (which may come
    after it ran) can be retried: validate_only and read_only batches commit nothing; an ATOMIC
    batch with a request id is replayed, not run again."""
    if request.validate_only or request.read_only:
        return True
    return bool(request.request_id) and request.mode != batch_pb2.MODE_INDEPENDENT


def retry_info_delay(error: BatchdRpcError) -> float:
    """The RetryInfo delay the server attached to ``error`` (0 without one)."""
    info = error.detail(error_details_pb2.RetryInfo)
    if info is None:
        return 0.0
    return float(info.retry_delay.seconds) + float(info.retry_delay.nanos) / 1e9


@dataclass(frozen=True)
class RetryEvent:
    """Told to the ``on_retry`` hook before each wait: attempt ``attempt`` of ``method`` failed
    with ``error``, and the next one starts in ``delay`` seconds."""

    method: str
    attempt: int
    error: BatchdRpcError
    delay: float


#: Called before each wait. AsyncClient awaits what it returns if that is awaitable.
RetryHook = Callable[[RetryEvent], object]


async def call_async(send: Callable[[float | None], Awaitable[_T]], *, method: str,
                     policy: RetryPolicy, replay_safe: bool, seconds: float | None,
                     on_retry: RetryHook | None) -> _T:
    """``send(remaining_seconds)`` until it succeeds or ``policy`` gives up, within ``seconds``
    in all (None: no deadline); raises the last error as a ``BatchdRpcError``."""
    loop = asyncio.get_running_loop()
    deadline = None if seconds is None else loop.time() + seconds
    attempt = 1
    while True:
        remaining = None if deadline is None else deadline - loop.time()
        try:
            return await send(remaining)
        except grpc.RpcError as exc:
            error = rpc_error(exc)
            remaining = None if deadline is None else deadline - loop.time()
            delay = policy.next_delay(error, attempt, replay_safe=replay_safe,
                                      remaining=remaining)
            if delay is None:
                raise error from exc
        if on_retry is not None:
            outcome = on_retry(RetryEvent(method, attempt, error, delay))
            if inspect.isawaitable(outcome):
                await outcome
            if deadline is not None:  # the hook's own time counts against the deadline
                if deadline - loop.time() <= 0:
                    raise error
                delay = min(delay, deadline - loop.time())
        await asyncio.sleep(delay)
        attempt += 1


def call_sync(send: Callable[[float | None], _T], *, method: str, policy: RetryPolicy,
              replay_safe: bool, seconds: float | None, on_retry: RetryHook | None) -> _T:
    """``call_async`` for the blocking client."""
    deadline = None if seconds is None else time.monotonic() + seconds
    attempt = 1
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        try:
            return send(remaining)
        except grpc.RpcError as exc:
            error = rpc_error(exc)
            remaining = None if deadline is None else deadline - time.monotonic()
            delay = policy.next_delay(error, attempt, replay_safe=replay_safe,
                                      remaining=remaining)
            if delay is None:
                raise error from exc
        if on_retry is not None:
            on_retry(RetryEvent(method, attempt, error, delay))
            if deadline is not None:
                if deadline - time.monotonic() <= 0:
                    raise error
                delay = min(delay, deadline - time.monotonic())
        time.sleep(delay)
        attempt += 1
