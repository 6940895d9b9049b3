"""What ROWS and COLUMNAR share: two ways to decode a chunk, and the writing of each.

A chunk goes through Arrow and pgpq when the whole chunk allows it (``batchd.stream.arrow_rows``:
one array per column, no Python per value) and becomes binary COPY data; else, and whenever
PostgreSQL refuses such a chunk's COPY, it becomes Python records for asyncpg's binary COPY,
value by value. Values are coerced by column type while decoding, so a bad value rejects its
row with a reason naming the column before anything reaches PostgreSQL.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from batchd import offload
from batchd.errors import InvalidArgument
from batchd.stream.arrow_rows import Fast
from batchd.stream.arrow_types import Rows
from batchd.stream.encodings.base import (
    Decoded,
    Encoding,
    Joined,
    Outcome,
    Rejected,
    binary_joined,
    copy_whole,
    whole_binary,
)
from batchd.stream.isolating import write_isolating
from batchd.stream.sink import Sink
from batchd.stream.target import Target, Written
from batchd.v1 import batch_pb2
from batchd.values import CoercionError, coerce


@dataclass(slots=True)
class RecordsDecoded(Decoded):
    """Decoded value by value: a tuple per row kept, and each one's chunk index."""

    records: list[tuple[Any, ...]] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class FastDecoded(Decoded):
    """Decoded on the fast path: the rows and their binary COPY data; the chunk, decoded
    again value by value if PostgreSQL refuses the COPY."""

    rows: Rows
    binary: bytes
    retry: batch_pb2.StreamChunk


class RecordsEncoding(Encoding):
    """ROWS and COLUMNAR: the fast path when it takes the chunk, else value by value."""

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self.plans = Fast(target.columns)

    def decode(self, chunk: batch_pb2.StreamChunk) -> Decoded:
        if chunk.arrow:
            raise InvalidArgument.field("chunk.arrow", "is for ARROW streams")
        self.check(chunk)
        return self.fast(chunk) or self.per_value(chunk)

    @abstractmethod
    def check(self, chunk: batch_pb2.StreamChunk) -> None:
        """INVALID_ARGUMENT if the chunk carries another encoding's rows."""

    def fast(self, chunk: batch_pb2.StreamChunk) -> FastDecoded | None:
        """The chunk through Arrow and pgpq, if every value allows it; None: value by value."""
        made = self.arrow_rows(chunk)
        if made is None:
            return None
        rows, data = made
        return FastDecoded(chunk.sequence, len(rows), rows=rows, binary=data, retry=chunk)

    @abstractmethod
    def arrow_rows(self, chunk: batch_pb2.StreamChunk) -> tuple[Rows, bytes] | None:
        """The fast path's rows and COPY data (batchd.stream.arrow_rows), or None."""

    @abstractmethod
    def per_value(self, chunk: batch_pb2.StreamChunk) -> RecordsDecoded:
        """The chunk as records, value by value: each bad row rejected, with why."""

    async def write(self, conn: asyncpg.Connection, decoded: Decoded, sink: Sink) -> Outcome:
        if isinstance(decoded, FastDecoded):  # its COPY whole, else value by value
            written = await copy_whole(conn, sink, decoded.binary)
            if written is not None:
                return Outcome(decoded.row_count, written, [])
            decoded = await offload.run_pipelined(self.per_value, decoded.retry)
        assert isinstance(decoded, RecordsDecoded)
        rejected = list(decoded.rejected)

        async def copy(records: Sequence[Any]) -> Written:
            return await sink.records(conn, records)
        try:
            async with conn.transaction():
                return Outcome(decoded.row_count, await copy(decoded.records), rejected)
        except asyncpg.PostgresError:
            pass
        except (ArithmeticError, ValueError, TypeError):
            # The driver could not encode a value passed to it unchecked: check them all.
            rejected += self._check_lazy(decoded)
        written, refused = await write_isolating(conn, copy, decoded.records, decoded.indexes)
        return Outcome(decoded.row_count, written, sorted(rejected + refused,
                                                          key=lambda r: r[0]))

    def joinable(self, decoded: Decoded) -> bool:
        return isinstance(decoded, FastDecoded) and not decoded.rejected and \
            whole_binary(decoded.binary)

    def join(self, chunks: Sequence[Decoded]) -> Joined:
        return binary_joined([(c.binary, c.row_count) for c in chunks
                              if isinstance(c, FastDecoded)])

    def _check_lazy(self, decoded: RecordsDecoded) -> Rejected:
        """Coerce the unchecked values; drop (and return) the rows that do not pass."""
        target = self.target
        refused: Rejected = []
        records, indexes = [], []
        for record, index in zip(decoded.records, decoded.indexes, strict=True):
            values = list(record)
            try:
                for position in target.lazy:
                    column = target.columns[position]
                    try:
                        values[position] = coerce(values[position], column)
                    except CoercionError as exc:
                        raise InvalidArgument.field(f"rows[{index}].{column.name}",
                                                    f"{exc} (column type {column.type_sql})") \
                            from None
            except InvalidArgument as exc:
                refused.append((index, exc))
                continue
            records.append(tuple(values))
            indexes.append(index)
        decoded.records, decoded.indexes = records, indexes
        return refused
