"""ATOMIC streams: the chunks already decoded and waiting, written in one COPY.

PostgreSQL keeps busy through one long COPY, and idles between short ones (the writer's round
trips: RELEASE, ack, SAVEPOINT, COPY). So when the writer is behind, it takes the chunks
waiting in the queue along with the one it has (``batchd.stream.session``) and writes them in
one COPY, under one savepoint, if each one's data gives exactly the rows it gives alone
(``joinable``). Each chunk still gets its own ack, sent once the COPY has returned. If
PostgreSQL refuses the COPY, nothing of it is left and the chunks are written one by one, as
any chunk is (``batchd.stream.write.write``), so that the refused row is found and named.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg

from batchd.stream.copy import Decoded, Target
from batchd.stream.write import destination, moved
from batchd.v1 import batch_pb2

# Binary COPY data as pgpq writes it: the signature, no flags, no header extension; the trailer.
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_BINARY_TRAILER = b"\xff\xff"


class _Miscounted(Exception):
    pass


def joinable(decoded: Decoded | None, target: Target) -> bool:
    """Whether a decoded chunk's COPY data can share a COPY with the next chunks' and give
    exactly the rows it gives alone: binary data made here (whole tuples), or CSV text of whole
    records (``batchd.stream.copy.whole_records``), nothing rejected while decoding."""
    if decoded is None or decoded.rejected:
        return False
    if target.encoding == batch_pb2.ENCODING_CSV:
        return decoded.csv_records is not None
    binary = decoded.binary
    return binary is not None and binary.startswith(_BINARY_HEADER) and \
        binary.endswith(_BINARY_TRAILER) and (decoded.retry is not None
                                              or target.encoding == batch_pb2.ENCODING_ARROW)


async def write_joined(conn: asyncpg.Connection, chunks: list[Decoded], target: Target,
                       ) -> list[int] | None:
    """COPY several ``joinable`` chunks as one, under a savepoint: the rows of each, or None if
    PostgreSQL refused them (nothing of them is left: write them one by one, to know which row
    it was)."""
    pieces: list[bytes | memoryview]
    if target.encoding == batch_pb2.ENCODING_CSV:
        counts = [chunk.csv_records or 0 for chunk in chunks]
        pieces = [chunk.csv for chunk in chunks]
        form = "csv"
    else:  # one header, every chunk's tuples, one trailer
        counts = [chunk.row_count for chunk in chunks]
        pieces = [_BINARY_HEADER, *(memoryview(chunk.binary)[len(_BINARY_HEADER):-2]
                                    for chunk in chunks if chunk.binary is not None),
                  _BINARY_TRAILER]
        form = "binary"

    async def source() -> AsyncIterator[bytes | memoryview]:
        for piece in pieces:
            yield piece
    (name, schema), options = destination(target), target.csv
    try:
        async with conn.transaction():
            status = await conn.copy_to_table(
                name, schema_name=schema, columns=target.names, source=source(),
                format=form, **({"delimiter": options.delimiter or None,
                                 "null": options.null or None, "quote": options.quote or None}
                                if form == "csv" else {}))
            written = await moved(conn, target, int(str(status).rsplit(" ", 1)[-1]))
            if written != sum(counts):
                # CSV that PostgreSQL read otherwise than one record a newline (a carriage
                # return as line end, an end-of-data marker): undone, written one by one.
                raise _Miscounted
    except (asyncpg.PostgresError, _Miscounted):
        return None
    return counts
