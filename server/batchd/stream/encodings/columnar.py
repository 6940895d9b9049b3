"""ENCODING_COLUMNAR: one typed array per column (fast to decode).

The chunk takes the fast path when it can (batchd.stream.arrow_rows); else its arrays are
coerced by column type (batchd.stream.columnar), a value that cannot be rejecting its row with
a reason naming the column.
"""

from __future__ import annotations

from batchd.errors import InvalidArgument
from batchd.stream import arrow_rows, columnar
from batchd.stream.arrow_types import Rows
from batchd.stream.encodings.records import RecordsDecoded, RecordsEncoding
from batchd.v1 import batch_pb2


class ColumnarEncoding(RecordsEncoding):
    value = batch_pb2.ENCODING_COLUMNAR
    name = "COLUMNAR"

    def check(self, chunk: batch_pb2.StreamChunk) -> None:
        if chunk.rows or chunk.csv:
            raise InvalidArgument.field("chunk", "a COLUMNAR stream's chunks carry columnar")

    def arrow_rows(self, chunk: batch_pb2.StreamChunk) -> tuple[Rows, bytes] | None:
        return arrow_rows.columnar(chunk, self.plans)

    def per_value(self, chunk: batch_pb2.StreamChunk) -> RecordsDecoded:
        lists, bad, count = columnar.columns_of(chunk.columnar, self.target.columns)
        out = RecordsDecoded(chunk.sequence, count)
        out.rejected = sorted(bad.items())
        if bad:
            keep = [i for i in range(count) if i not in bad]
            out.records = [tuple(col[i] for col in lists) for i in keep]
            out.indexes = keep
        else:
            out.records = list(zip(*lists, strict=True))
            out.indexes = list(range(count))
        return out
