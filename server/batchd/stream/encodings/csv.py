"""ENCODING_CSV: CSV text passed to PostgreSQL's COPY as the bytes it arrived as.

Python does not touch the rows: a chunk is one COPY of its bytes. Only when PostgreSQL refuses
it are its records split (``split_csv``) to find the refused ones. Chunks whose every newline
ends a record (``whole_records``) may share a COPY with the next ones (batchd.stream.joined).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from batchd.errors import InvalidArgument
from batchd.stream.encodings.base import Decoded, Encoding, Joined, Outcome
from batchd.stream.isolating import write_isolating
from batchd.stream.sink import Sink
from batchd.stream.target import Written
from batchd.v1 import batch_pb2


@dataclass(slots=True, kw_only=True)
class CsvDecoded(Decoded):
    """A CSV chunk: its bytes, and its records if each ends within the chunk (else None)."""

    data: bytes
    records: int | None


class CsvEncoding(Encoding):
    value = batch_pb2.ENCODING_CSV
    name = "CSV"

    def decode(self, chunk: batch_pb2.StreamChunk) -> Decoded:
        if chunk.arrow:
            raise InvalidArgument.field("chunk.arrow", "is for ARROW streams")
        if chunk.rows or chunk.HasField("columnar"):
            raise InvalidArgument.field("chunk", "a CSV stream's chunks carry csv bytes")
        return CsvDecoded(chunk.sequence, -1, data=chunk.csv,
                          records=whole_records(chunk.csv, self.target.csv))

    async def write(self, conn: asyncpg.Connection, decoded: Decoded, sink: Sink) -> Outcome:
        assert isinstance(decoded, CsvDecoded)

        async def copy(units: Sequence[Any]) -> Written:
            return (await sink.data(conn, [b"".join(units)], "csv"))[0]
        try:
            async with conn.transaction():
                written = await copy([decoded.data])
            return Outcome(written.taken, written, [])
        except asyncpg.PostgresError:
            units = split_csv(decoded.data, self.target.csv)
        written, refused = await write_isolating(conn, copy, units, list(range(len(units))))
        return Outcome(len(units), written, refused)

    def joinable(self, decoded: Decoded) -> bool:
        return isinstance(decoded, CsvDecoded) and decoded.records is not None

    def join(self, chunks: Sequence[Decoded]) -> Joined:
        mine = [c for c in chunks if isinstance(c, CsvDecoded)]
        return Joined("csv", [c.data for c in mine], [c.records or 0 for c in mine])


def whole_records(data: bytes, options: batch_pb2.CsvOptions) -> int | None:
    """The records of a CSV chunk if, in one COPY with the next chunks', it gives exactly the
    rows it gives alone: it ends with a newline and holds no quote character, so that no record
    spans two chunks and each newline ends one. Else None. (What else could make PostgreSQL
    read the joined data otherwise: a carriage return, "\\." on a line of its own: it refuses
    it, or counts other rows than these newlines, and the chunks are written one by one; see
    ``batchd.stream.joined``.)"""
    quote = (options.quote or '"').encode()
    if not data.endswith(b"\n") or quote in data:
        return None
    return data.count(b"\n")


def split_csv(data: bytes, options: batch_pb2.CsvOptions) -> list[bytes]:
    """The chunk's records, each as CSV bytes of its own (only on the bad-row path)."""
    # surrogateescape: bytes that are not UTF-8 survive the round trip, so that PostgreSQL
    # refuses exactly the record that holds them.
    text = data.decode("utf-8", "surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=options.delimiter or ",",
                        quotechar=options.quote or '"')
    units = []
    for record in reader:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=options.delimiter or ",", quotechar=options.quote or '"',
                   lineterminator="\n").writerow(record)
        units.append(buffer.getvalue().encode("utf-8", "surrogateescape"))
    return units
