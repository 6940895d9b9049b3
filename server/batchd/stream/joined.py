"""ATOMIC streams: the chunks already decoded and waiting, written in one COPY.

PostgreSQL keeps busy through one long COPY, and idles between short ones (the writer's round
trips: RELEASE, ack, SAVEPOINT, COPY). So when the writer is behind, it takes the chunks
waiting in the queue along with the one it has (``batchd.stream.session``) and writes them in
one COPY, under one savepoint, if its encoding says each one's data gives exactly the rows it
gives alone (``Encoding.joinable``, ``Encoding.join``). Each chunk still gets its own ack, sent
once the COPY has returned; a merging stream's chunks are merged one after the other from
the staging table (batchd.stream.sink), so that each ack counts what its chunk did, as alone.
If PostgreSQL refuses the COPY, nothing of it is left and the chunks are written one by one,
as any chunk is (``Encoding.write``), so that the refused row is found and named.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from batchd.stream.encodings.base import Decoded
from batchd.stream.encodings.registry import Ingest
from batchd.stream.sink import Miscounted
from batchd.stream.target import Written


async def write_joined(conn: asyncpg.Connection, chunks: Sequence[Decoded], ingest: Ingest,
                       ) -> list[Written] | None:
    """COPY several ``joinable`` chunks as one, under a savepoint: what each wrote, or None if
    PostgreSQL refused them (nothing of them is left: write them one by one, to know which row
    it was)."""
    joined = ingest.encoding.join(chunks)
    try:
        async with conn.transaction():
            return await ingest.sink.data(conn, joined.pieces, joined.form, joined.counts)
    except (asyncpg.PostgresError, Miscounted):
        # Miscounted: CSV that PostgreSQL read otherwise than one record a newline (a carriage
        # return as line end, an end-of-data marker): undone, written one by one.
        return None
