"""What every stream encoding provides, and what a decoded chunk is.

An encoding (``StreamHeader.encoding``) is made for one stream (it keeps what it learns of its
chunks, e.g. the Arrow plan of their schema). It *decodes* a chunk (on a worker thread, ahead
of the writer: batchd.stream.readahead) into a ``Decoded``, rejecting the rows it cannot store
with a reason naming the column; it *writes* a decoded chunk through the stream's sink
(batchd.stream.sink: the table, or a staging table), isolating the rows PostgreSQL refuses
(batchd.stream.isolating); and it says whether a decoded chunk may *join* the next ones in one
COPY (batchd.stream.joined), and gives their joined COPY data. Nothing else knows which
encoding a stream has: the registry (batchd.stream.encodings.registry) makes the right one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import asyncpg

from batchd.errors import BatchdError, InvalidArgument
from batchd.stream.sink import Piece, Sink
from batchd.stream.target import Target, Written
from batchd.v1 import batch_pb2

Rejected = list[tuple[int, BatchdError]]  # rejected rows by chunk index, and why

# Binary COPY data as pgpq writes it: the signature, no flags, no header extension; the trailer.
BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
BINARY_TRAILER = b"\xff\xff"


@dataclass(slots=True)
class Decoded:
    """A chunk ready to write: its rows as its encoding made them, and the rows rejected
    while decoding. Each encoding has a type of its own (a subclass)."""

    sequence: int
    row_count: int
    rejected: Rejected = field(default_factory=list)


@dataclass(slots=True)
class Outcome:
    """A chunk written: its rows, what was written, and the rows rejected (by chunk index)."""

    row_count: int
    written: Written
    rejected: Rejected


@dataclass(frozen=True, slots=True)
class Joined:
    """Several chunks' COPY data as one COPY: its form, pieces, and each chunk's rows."""

    form: str
    pieces: Sequence[Piece]
    counts: list[int]


class Encoding(ABC):
    """One stream's encoding of its chunks (see the module's docstring)."""

    value: ClassVar[int]  # its batch_pb2.Encoding
    name: ClassVar[str]  # for errors: "ROWS", "CSV", ...

    def __init__(self, target: Target) -> None:
        self.target = target

    @classmethod
    def columns(cls, header: batch_pb2.StreamHeader, first: batch_pb2.StreamChunk | None,
                ) -> list[str]:
        """The stream's columns: ``header.columns``, or what the encoding tells from the
        header or the first chunk (``first``: None at the header); INVALID_ARGUMENT if it
        cannot tell."""
        if not header.columns:
            raise InvalidArgument.field("header.columns", f"required for {cls.name} streams")
        return list(header.columns)

    def prepare(self, header: batch_pb2.StreamHeader) -> None:  # noqa: B027 (optional)
        """Once, at the stream's resolution: check what the header says of the chunks."""

    @abstractmethod
    def decode(self, chunk: batch_pb2.StreamChunk) -> Decoded:
        """The chunk's rows, checked and converted (pure: runs on a worker thread);
        INVALID_ARGUMENT if the chunk is malformed as a whole."""

    @abstractmethod
    async def write(self, conn: asyncpg.Connection, decoded: Decoded, sink: Sink) -> Outcome:
        """Write one decoded chunk inside the caller's transaction, rejecting the rows
        PostgreSQL refuses (batchd.stream.isolating), leaving the transaction usable."""

    def joinable(self, decoded: Decoded) -> bool:
        """Whether the chunk's COPY data, in one COPY with the next chunks', gives exactly
        the rows it gives alone (and nothing of it was rejected while decoding)."""
        return False

    def join(self, chunks: Sequence[Decoded]) -> Joined:
        """The COPY data of ``joinable`` chunks as one."""
        raise NotImplementedError


def binary_joined(parts: Sequence[tuple[bytes, int]]) -> Joined:
    """Binary COPY data of several chunks (data, rows) as one: one header, every chunk's
    tuples, one trailer."""
    return Joined("binary", [BINARY_HEADER, *(memoryview(data)[len(BINARY_HEADER):-2]
                                              for data, _ in parts), BINARY_TRAILER],
                  [rows for _, rows in parts])


def whole_binary(data: bytes | None) -> bool:
    """Whether binary COPY data is whole tuples between pgpq's header and trailer."""
    return data is not None and data.startswith(BINARY_HEADER) and data.endswith(BINARY_TRAILER)


async def copy_whole(conn: asyncpg.Connection, sink: Sink, data: bytes) -> Written | None:
    """COPY one chunk's binary data under a savepoint: what it wrote, or None if PostgreSQL
    refused it (nothing of it is left)."""
    try:
        async with conn.transaction():
            return (await sink.data(conn, [data], "binary"))[0]
    except asyncpg.PostgresError:
        return None
