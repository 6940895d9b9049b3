"""Idempotent BatchExecute: a request id, the first final answer stored, retries replayed.

A client that sends ``request_id`` and gets no answer (a lost reply, a timeout, a server that
died) sends the same request again. The answer of the first run is kept in ``batchd.requests``
and the retry gets it back, marked ``replayed``, without anything running again. The table is
in the database, not in batchd, so this holds across reconnects, restarts and servers.

A run claims its id with ``begin``, inside a transaction that later commits with the answer:

1. ``pg_try_advisory_xact_lock`` on the id. Taken: another call with this id is running, on
   this server or another one of the database: ABORTED (REQUEST_IN_PROGRESS), to be retried.
   It does not wait, because the first run may take long and its caller is waiting too.
2. A claim row is inserted (over an expired row of the same id). If a live row is there, the
   request is compared with it: same fingerprint (SHA-256 of the request serialized
   deterministically, its request_id cleared) and same principal: its stored answer is the
   answer; otherwise FAILED_PRECONDITION (REQUEST_ID_REUSED).
3. The answer is written into the claim row (``store``) before the transaction commits.

The lock says "running now" without waiting on anyone; the row says "done". Under REPEATABLE
READ and SERIALIZABLE the batch's snapshot may predate a duplicate that committed before the
lock was free: the claim INSERT then fails with a serialization failure (40001), and the atomic
executor reruns the batch, which then finds the answer. Two different ids whose hashes collide
share a lock: one of them is told to retry, nothing worse.

ATOMIC: the transaction is the batch's own, so the operations and the answer commit together,
or neither does. A final failure rolls it back, and is stored under the id claimed again in a
transaction of its own (if another call took the id in between, that call's answer is the
answer). A READ ONLY batch, or one run as a role, runs under a savepoint instead: read-only, or
as the role, until it is rolled back (its operations wrote nothing) or released and the role
set back, before the answer is written; a final failure rolls back to it and is stored, and
that commits.

INDEPENDENT: the operations have transactions of their own, so the claim lives in a guard
transaction on a connection of its own, kept open while they run and committed with the
answer. At most half the pool's connections are guards at once, so operations always find a
connection. If the server dies in the middle, what committed stays committed and the id stays
free: a retry runs the whole batch again.

Stored (final answers, which the same request would get again from the state it met): every
successful answer, an INDEPENDENT batch's answer whatever its operations' outcomes, and a failed
ATOMIC batch whose operation failed with a final code (``batchd.errors.is_final``). Not
stored, so that a retry runs again: ABORTED, UNAVAILABLE, DEADLINE_EXCEEDED,
RESOURCE_EXHAUSTED, CANCELLED, INTERNAL, a failing COMMIT, and requests refused before
anything ran (they never reach the executor's run). validate_only requests claim nothing
(``claim_of`` gives no claim).

Expired rows count as absent and are overwritten by the next claim; ``Cleanup`` deletes them in
the background, a bounded number per statement, skipping rows a claim has locked.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from google.protobuf import any_pb2
from google.rpc import status_pb2

from batchd.background import Background
from batchd.config import Settings
from batchd.db.pool import connection, run_ddl, set_limits
from batchd.errors import (
    BatchdError,
    FailedPrecondition,
    InvalidArgument,
    RequestIdReused,
    RequestInProgress,
    from_rpc_status,
    to_rpc_status,
)
from batchd.v1 import batch_pb2

log = logging.getLogger(__name__)

REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
LOCK_CLASS = 0x69646D70  # "idmp": the advisory locks of request ids, (LOCK_CLASS, hashtext(id))
CLEANUP_BATCH = 1000  # rows per DELETE


SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS batchd;
CREATE TABLE IF NOT EXISTS batchd.requests (
    request_id  text PRIMARY KEY,
    fingerprint bytea NOT NULL,       -- SHA-256 of the request, request_id cleared
    principal   text,                 -- who sent it; NULL: authentication is off
    response    bytea,                -- a BatchExecuteResponse
    status      bytea,                -- or the google.rpc.Status of a failed atomic batch
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_expires_at ON batchd.requests (expires_at);
"""

# A BatchExecuteResponse to return, or the error to raise: what a call with an id answers.
Answer = batch_pb2.BatchExecuteResponse | BatchdError


async def ensure_schema(pool: asyncpg.Pool) -> None:
    await run_ddl(pool, SCHEMA_SQL, _PRESENT_SQL, "batchd's request id table (batchd.requests)",
                  ["batchd.requests"])


# Whether SCHEMA_SQL has nothing left to do (by name in the catalog: to_regclass would need
# USAGE on the schema, which a login role not yet granted it lacks, and run_ddl says so).
_PRESENT_SQL = """
SELECT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'batchd' AND c.relname = 'requests')
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """The request id of a call, and what tells its request apart from another."""

    request_id: str
    fingerprint: bytes
    principal: str | None


def claim_of(request: batch_pb2.BatchExecuteRequest, principal: str | None) -> Claim | None:
    """The claim a request makes; None without a request id, or with validate_only (a dry
    run changes nothing, so there is nothing to protect). A malformed id is INVALID_ARGUMENT."""
    request_id = request.request_id
    if not request_id:
        return None
    if not REQUEST_ID.fullmatch(request_id):
        raise InvalidArgument.field("request_id", "must be 1-128 characters of "
                                                  "A-Z a-z 0-9 _ . : -")
    if request.validate_only:
        return None
    return Claim(request_id, fingerprint(request), principal)


def fingerprint(request: batch_pb2.BatchExecuteRequest) -> bytes:
    """SHA-256 of the request serialized deterministically (map entries, such as a row's
    columns, sorted), its request_id cleared: equal for the same request sent again."""
    request_id = request.request_id
    request.ClearField("request_id")
    try:
        data = request.SerializeToString(deterministic=True)
    finally:
        request.request_id = request_id
    return hashlib.sha256(data).digest()



# Steps 1 and 2 in one statement (one round trip): the lock, then, only if it was taken, the
# claim row. A row with neither answer nor failure cannot have committed; it is taken over all
# the same. ``held``: the lock was taken; ``claimed``: the row is this call's. As CTEs, so that
# a batch's first statement can lead with them (batchd.batch.chain.Guard: its parts insert only
# behind a claimed row), parameters $1-$5 (``claim_args``).
CLAIM_CTES = """lock AS MATERIALIZED (SELECT pg_try_advisory_xact_lock($1, hashtext($2)) AS held),
claimed AS (
    INSERT INTO batchd.requests AS r (request_id, fingerprint, principal, expires_at)
    SELECT $2, $3, $4, now() + make_interval(secs => $5) FROM lock WHERE held
    ON CONFLICT (request_id) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
        principal = EXCLUDED.principal, response = NULL, status = NULL, created_at = now(),
        expires_at = EXCLUDED.expires_at
    WHERE r.expires_at <= now() OR (r.response IS NULL AND r.status IS NULL)
    RETURNING true)"""
CLAIM_FLAGS = ("(SELECT held FROM lock)", "EXISTS (SELECT FROM claimed)")
CLAIM_SQL = f"WITH {CLAIM_CTES}\nSELECT {', '.join(CLAIM_FLAGS)}"


def claim_args(claim: Claim, ttl_seconds: float) -> list[object]:
    """The parameters of CLAIM_CTES."""
    return [LOCK_CLASS, claim.request_id, claim.fingerprint, claim.principal, float(ttl_seconds)]


async def begin(conn: asyncpg.Connection, claim: Claim,
                ttl_seconds: float) -> Answer | None:
    """Inside a transaction: claim the id (None: run the batch, then ``store`` its answer
    before committing), or the answer to give without running anything: the stored one,
    REQUEST_IN_PROGRESS or REQUEST_ID_REUSED."""
    held, claimed = await conn.fetchrow(CLAIM_SQL, *claim_args(claim, ttl_seconds))
    return await claimed_answer(conn, claim, held, claimed)


async def claimed_answer(conn: asyncpg.Connection, claim: Claim, held: bool,
                         claimed: bool) -> Answer | None:
    """What a claim found (CLAIM_FLAGS): None if the id is this call's, else the answer."""
    if not held:
        return RequestInProgress(f'a call with request id "{claim.request_id}" is still '
                                 "running; retry later to get its answer")
    if claimed:
        return None
    row = await conn.fetchrow("SELECT fingerprint, principal, response, status "
                              "FROM batchd.requests WHERE request_id = $1", claim.request_id)
    assert row is not None  # it conflicted, and we hold the id's lock
    if row["fingerprint"] != claim.fingerprint or row["principal"] != claim.principal:
        return RequestIdReused(f'request id "{claim.request_id}" was already used for a '
                               "different request; use a new id for a new request")
    return replay(row["response"], row["status"])


def replay(response: bytes | None, status: bytes | None) -> Answer:
    """A stored answer, marked ``replayed`` (a failure: in its BatchExecuteResponse detail)."""
    if response is not None:
        answer = batch_pb2.BatchExecuteResponse.FromString(response)
        answer.replayed = True
        return answer
    assert status is not None
    error = from_rpc_status(status_pb2.Status.FromString(status))
    for i, detail in enumerate(error.extra_details):
        outcomes = batch_pb2.BatchExecuteResponse()
        if isinstance(detail, any_pb2.Any) and detail.Unpack(outcomes):
            outcomes.replayed = True
            error.extra_details[i] = outcomes
    return error


async def store(conn: asyncpg.Connection, claim: Claim, answer: Answer) -> None:
    """Inside the claiming transaction: the answer to replay."""
    if isinstance(answer, BatchdError):
        await conn.execute("UPDATE batchd.requests SET status = $2 WHERE request_id = $1",
                           claim.request_id, to_rpc_status(answer).SerializeToString())
    else:
        await conn.execute("UPDATE batchd.requests SET response = $2 WHERE request_id = $1",
                           claim.request_id, answer.SerializeToString())


class Guards:
    """The guard transactions of INDEPENDENT batches with a request id (see the module's
    docstring): at most half the pool's connections, so that operations always find one."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings
        self.ttl_seconds = settings.idempotency_ttl_seconds
        slots = settings.pool_max_size // 2
        self._slots = asyncio.Semaphore(slots) if slots else None

    async def run(self, claim: Claim,
                  run: Callable[[], Awaitable[batch_pb2.BatchExecuteResponse]]) -> Answer:
        """``run()``'s response, stored under ``claim``; or the answer ``begin`` gives."""
        if self._slots is None:
            raise FailedPrecondition("INDEPENDENT batches with a request id need a "
                                     "pool_max_size of 2 or more")
        async with self._slots, connection(self.pool) as conn:
            response = None
            try:
                async with conn.transaction():
                    # Idle while the operations run, on purpose: not a forgotten transaction.
                    await set_limits(conn, self.settings, idle_ms=0)
                    answer = await begin(conn, claim, self.ttl_seconds)
                    if answer is not None:
                        return answer
                    response = await run()
                    await store(conn, claim, response)
            except Exception:
                if response is None:
                    raise
                # The operations ran: their caller gets the response. Only a retry loses.
                log.warning('request id "%s": the answer could not be stored; a retry will '
                            "run the batch again", claim.request_id, exc_info=True)
            assert response is not None
            return response


async def delete_expired(pool: asyncpg.Pool, limit: int = CLEANUP_BATCH) -> int:
    """Delete expired request ids, ``limit`` rows per statement; the number deleted. Rows a
    claim holds (being taken over) are skipped, not waited for."""
    deleted = 0
    while True:
        status = await pool.execute(
            "DELETE FROM batchd.requests WHERE request_id IN (SELECT request_id "
            "FROM batchd.requests WHERE expires_at < now() LIMIT $1 FOR UPDATE SKIP LOCKED)",
            limit)
        count = int(status.rsplit(" ", 1)[1])
        deleted += count
        if count < limit:
            return deleted


class Cleanup(Background):
    """Deletes expired request ids every ``idempotency_cleanup_seconds``, in the background,
    until ``stop``. Every server of a database runs one; they do not get in each other's way."""

    name = "batchd-idempotency-cleanup"

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        super().__init__()
        self.pool = pool
        self.interval = settings.idempotency_cleanup_seconds

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                deleted = await delete_expired(self.pool)
            except Exception:  # the database may be away for a while; try again later
                log.warning("deleting expired request ids failed", exc_info=True)
                continue
            if deleted:
                log.debug("deleted %d expired request ids", deleted)
