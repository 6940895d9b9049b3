"""What a stream has done, counted: each written chunk into its ack (its rejected rows by
stream-wide index; a merging stream's rows inserted, updated and left unchanged) and into the
stream's totals, which its summary reports."""

from __future__ import annotations

from dataclasses import dataclass, field

from batchd.errors import to_rpc_status
from batchd.stream.encodings.base import Outcome
from batchd.stream.readahead import Chunk
from batchd.stream.target import Written
from batchd.v1 import batch_pb2


@dataclass(slots=True)
class Tally:
    chunks: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    last_sequence: int = 0
    next_row: int = 0
    rejected_rows: list[batch_pb2.RejectedRow] = field(default_factory=list)
    # A merging stream (header.on_conflict): its acks and summary say what the rows did.
    merging: bool = False
    merged: Written = field(default_factory=Written)
    deleted: int = 0  # a delete_missing stream's, at commit

    def count(self, ack: batch_pb2.ChunkAck, chunk: Chunk, outcome: Outcome) -> None:
        """A written chunk: into its ack (rejected rows by stream-wide index) and the tally."""
        row_count, written, rejected = outcome.row_count, outcome.written, outcome.rejected
        ack.rows_written = written.written
        if self.merging:
            ack.rows_inserted, ack.rows_updated = written.inserted, written.updated
            ack.rows_unchanged = written.unchanged
            self.merged = self.merged + written
        for index, error in rejected:
            ack.rejected.append(batch_pb2.RejectedRow(index=self.next_row + index,
                                                      chunk_index=index,
                                                      status=to_rpc_status(error)))
        if chunk.decoded is not None:
            chunk.decoded.row_count = row_count
        self.next_row += row_count
        self.chunks += 1
        self.rows_written += written.written
        self.rows_rejected += row_count - written.taken

    def summary(self, committed: bool) -> batch_pb2.BatchStreamResponse:
        summary = batch_pb2.StreamSummary(
            chunks=self.chunks, rows_written=self.rows_written, rows_rejected=self.rows_rejected,
            committed=committed, last_committed_sequence=self.last_sequence)
        if self.merging:
            summary.rows_inserted, summary.rows_updated = (self.merged.inserted,
                                                           self.merged.updated)
            summary.rows_unchanged = self.merged.unchanged
            summary.rows_deleted = self.deleted
        return batch_pb2.BatchStreamResponse(summary=summary)
