"""The stream ledger: which chunks of which stream are committed, kept in PostgreSQL.

A COMMIT whose reply is lost looks to the client exactly like a failure, so it re-sends the
chunk. The ledger row for (stream_id, sequence) is written in the same transaction as the
chunk's rows, and claimed *first*: a re-sent chunk finds its row (or waits on the first
attempt's uncommitted one, then finds it) and is skipped. The ledger lives in the database,
not in batchd, so this holds across reconnects, restarts and replicas.

batchd's own tables live in the ``batchd`` schema (never exposed to clients) and are created at
start-up if missing, under an advisory lock so that replicas starting together do not race.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from batchd.db.pool import run_ddl
from batchd.errors import FailedPrecondition, SequenceOutOfOrder
from batchd.v1 import batch_pb2

INTERNAL_SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS batchd;
CREATE TABLE IF NOT EXISTS batchd.streams (
    stream_id  text PRIMARY KEY,
    target     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS batchd.stream_chunks (
    stream_id    text NOT NULL REFERENCES batchd.streams ON DELETE CASCADE,
    sequence     bigint NOT NULL,
    first_row    bigint NOT NULL,
    row_count    integer NOT NULL,
    rows_written integer NOT NULL DEFAULT 0,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, sequence)
);
-- The chunk's ChunkAck as first sent (rows written, rejected rows and why, operation results):
-- a re-sent chunk gets it again, so a resumed client's totals and rejects match the table.
ALTER TABLE batchd.stream_chunks ADD COLUMN IF NOT EXISTS ack bytea;
-- Who opened the stream (NULL: authentication off): only they may resume it.
ALTER TABLE batchd.streams ADD COLUMN IF NOT EXISTS principal text;
"""
# Whether INTERNAL_SCHEMA_SQL has nothing left to do.
# (Read from the catalog by name, not through to_regclass: that needs USAGE on the schema,
# which a login role not yet granted it lacks, and it should be told so: run_ddl.)
_PRESENT_SQL = """
SELECT count(*) = 2 FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'batchd' AND NOT a.attisdropped
  AND (c.relname, a.attname) IN (('stream_chunks', 'ack'), ('streams', 'principal'))
"""


async def ensure_internal_schema(pool: asyncpg.Pool) -> None:
    await run_ddl(pool, INTERNAL_SCHEMA_SQL, _PRESENT_SQL,
                  "batchd's stream ledger tables (batchd.streams, batchd.stream_chunks)",
                  ["batchd.streams", "batchd.stream_chunks"])


@dataclass(slots=True)
class Position:
    """Where a stream stands: its last committed chunk and the index of its next row."""

    last_sequence: int
    next_row: int


async def open_stream(conn: asyncpg.Connection, stream_id: str, target: str,
                      principal: str | None) -> Position:
    """Register the stream (or find it again) and tell where it stands. A stream is its
    principal's: another one resuming it would be told of its chunks (and their rejected
    rows), and its chunks would be taken as already written."""
    await conn.execute("INSERT INTO batchd.streams (stream_id, target, principal) "
                       "VALUES ($1, $2, $3) ON CONFLICT (stream_id) DO NOTHING",
                       stream_id, target, principal)
    known = await conn.fetchrow("SELECT target, principal FROM batchd.streams "
                                "WHERE stream_id = $1", stream_id)
    if known["principal"] != principal:
        raise FailedPrecondition(f'stream id "{stream_id}" is taken by another principal; '
                                 "use another stream id", reason="STREAM_ID_TAKEN")
    if known["target"] != target:
        raise FailedPrecondition(f'stream "{stream_id}" was opened for "{known["target"]}", '
                                 f'not "{target}"; use another stream id')
    last = await conn.fetchrow(
        "SELECT sequence, first_row + row_count AS next_row FROM batchd.stream_chunks "
        "WHERE stream_id = $1 ORDER BY sequence DESC LIMIT 1", stream_id)
    if last is None:
        return Position(0, 0)
    return Position(int(last["sequence"]), int(last["next_row"]))


async def claim_chunk(conn: asyncpg.Connection, stream_id: str, sequence: int, first_row: int,
                      row_count: int) -> bool:
    """Inside the chunk's transaction: False if this sequence is already committed."""
    claimed = await conn.fetchval(
        "INSERT INTO batchd.stream_chunks (stream_id, sequence, first_row, row_count) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
        stream_id, sequence, first_row, row_count)
    return bool(claimed)


async def record_written(conn: asyncpg.Connection, stream_id: str, sequence: int,
                         ack: batch_pb2.ChunkAck, row_count: int) -> None:
    """Inside the chunk's transaction: what it wrote, and the ack to answer a re-send with."""
    await conn.execute("UPDATE batchd.stream_chunks SET rows_written = $3, row_count = $4, "
                       "ack = $5 WHERE stream_id = $1 AND sequence = $2",
                       stream_id, sequence, ack.rows_written, row_count,
                       ack.SerializeToString())


async def committed_ack(conn: asyncpg.Connection, stream_id: str,
                        sequence: int) -> batch_pb2.ChunkAck:
    """The ack of a committed chunk, sent again for a re-sent one (``duplicate`` set): the same
    rows written and rejected rows as the first time."""
    row = await conn.fetchrow("SELECT rows_written, ack FROM batchd.stream_chunks "
                              "WHERE stream_id = $1 AND sequence = $2", stream_id, sequence)
    ack = batch_pb2.ChunkAck(sequence=sequence)
    if row is not None and row["ack"] is not None:
        ack.ParseFromString(row["ack"])
    elif row is not None:  # committed by a batchd from before acks were kept
        ack.rows_written = row["rows_written"]
    ack.duplicate = True
    return ack


def check_sequence(sequence: int, expected: int) -> None:
    if sequence != expected:
        raise SequenceOutOfOrder(sequence, expected)
