"""What resuming ``batchd ingest`` needs: the state file (``State``: the stream id, the last
acknowledged chunk and the place after it, the totals so far) and the rejects file, which holds
exactly the rejects of the chunks acknowledged so far. Kept apart from the command that runs
the stream (batchd.client.ingest_cli), whose docstring says when each is written."""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from batchd.client.ingest_files import Chunk, UsageError
from batchd.v1 import batch_pb2
from batchd.vocabulary import code_of


@dataclass
class State:
    """What a resume needs, and what the ingest has done so far: saved before the first chunk
    is sent (so a kill at any moment leaves the stream id behind), after every acknowledged
    chunk, and at the end (``finished``), when it is kept so that running the same command
    again reports the finished ingest instead of sending the file again."""

    file: str
    size: int
    mtime_ns: int
    table: str
    stream_id: str
    chunk_rows: int
    sequence: int = 0  # last acknowledged
    offset: int = 0  # byte offset after it (Parquet, Arrow: row offset)
    rows: int = 0  # rows sent up to it (header excluded)
    written: int = 0  # rows written, as the acks say (re-sent chunks' acks repeat theirs)
    rejected: int = 0  # rows rejected, each one line of the rejects file
    rejects_bytes: int = 0  # the rejects file's size after the last acknowledged chunk
    finished: bool = False
    # --upsert: of the rows taken, inserted, updated and left unchanged (as the acks say)
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def save(self, path: Path) -> None:
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self)))
        os.replace(temporary, path)  # never a half-written state file

    @classmethod
    def load(cls, path: Path) -> State | None:
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{path}: not a batchd ingest state file ({exc})") from None


def state_for(path: Path, args: argparse.Namespace, state_path: Path, data_start: int) -> State:
    """The saved state of this file's ingest (resumed), or a new one, saved at once."""
    stat = path.stat()
    atomic = args.mode == "atomic"
    state = None if atomic else State.load(state_path)
    if state is not None and (state.file != str(path.resolve()) or state.size != stat.st_size
                              or state.mtime_ns != stat.st_mtime_ns or state.table != args.table):
        done = (f"{state.written:,} rows of it were written" if state.sequence
                else "no chunk of it was acknowledged")
        raise UsageError(f"{state_path} belongs to another file, table or version of the file "
                         f"({done}); remove it to start over")
    if state is None:
        state = State(str(path.resolve()), stat.st_size, stat.st_mtime_ns, args.table,
                      args.stream_id or f"ingest-{uuid.uuid4().hex}", args.chunk_rows,
                      offset=data_start)
        if not atomic:
            state.save(state_path)
    elif state.sequence and not state.finished:
        print(f"resuming {path} after chunk {state.sequence} ({state.rows:,} rows)",
              file=sys.stderr)
    return state


def rejects_file(path: Path, state: State) -> IO[str]:
    """The rejects file, holding exactly the rejects of the chunks acknowledged so far: a new
    ingest starts it empty; a resumed one cuts what a killed run wrote after its last saved
    state (those chunks are re-sent, and their acks bring their rejects again)."""
    if state.sequence == 0:
        return path.open("w")
    f = path.open("a")
    f.truncate(state.rejects_bytes)
    return f


def write_rejects(rejects: Any, ack: batch_pb2.ChunkAck, chunk: Chunk) -> int:
    for row in ack.rejected:
        rejects.write(json.dumps({
            "row": row.index, "sequence": ack.sequence, "chunk_row": row.chunk_index,
            "code": code_of(row.status.code).name, "message": row.status.message,
            "record": _record(chunk, row.chunk_index)}, default=str) + "\n")
    return len(ack.rejected)


def _record(chunk: Chunk, index: int) -> Any:
    """The rejected record: its CSV or JSON line, or (Parquet, Arrow) its values by column
    (values JSON cannot hold, such as decimals and timestamps, as their text)."""
    if chunk.table is not None:
        return chunk.table.slice(index, 1).to_pylist()[0] if index < chunk.rows else None
    if 0 <= index < len(chunk.records):
        return chunk.records[index].decode("utf-8", "replace").rstrip("\n")
    return None
