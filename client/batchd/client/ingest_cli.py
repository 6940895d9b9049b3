"""``batchd ingest FILE --table T``: stream a CSV, JSON Lines, Parquet or Arrow file into a
table.

CSV goes through the stream's CSV passthrough: the file is cut into chunks of whole records
(a quoted field may span lines: the cut follows quote parity, without parsing fields) and
PostgreSQL's COPY parses them. JSON Lines go as rows (one object per line). Parquet
(``.parquet``, ``.pq``) and Arrow IPC files (``.arrow``, ``.feather``, ``.ipc``, ``.arrows``) go
as ENCODING_ARROW: read ``--chunk-rows`` rows at a time (Parquet: row group by row group, so
memory stays bounded), the schema in the header, so a column the server cannot store exactly
is refused before anything is sent; their position is a row offset instead of a byte offset.

INDEPENDENT mode (the default) is resumable. After every acknowledged chunk the state file
(FILE.batchd-ingest.json unless --state) records the stream id, the last acknowledged sequence
and the byte offset after it, with the rows written and rejected so far. Run the same command
again after an interruption: it continues from there, and chunks the server had committed
without the client hearing so are recognised by the server's ledger and not written twice;
their acknowledgements carry what they wrote and rejected the first time, so the totals, the
exit code and the rejects file always match the table. When the ingest finishes, the state file
says so: the same command again reports the finished ingest and sends nothing (remove the
state file to ingest the file again). ATOMIC mode commits everything at the end or nothing.

A failure says what comes next. A passing one (the server unavailable, draining or overloaded,
a deadline, a cut connection) keeps the state file: the same command resumes. A permanent one
(the server refused the file, the table or the command: an unknown column, an Arrow type it
cannot store exactly, a permission) says what to fix; when nothing was written it leaves no
state file behind, so the corrected file or command starts afresh (the server's refusal comes
after every acknowledgement it sent, so nothing unacknowledged was written). A state file an
earlier run left is kept even then: a run killed before hearing an acknowledgement may have
had chunks written, which only its stream id finds again. When chunks were written before
the refusal, the state file keeps their place, and the same command resumes after them once
the cause is fixed.

Rejected rows go to FILE.rejects.jsonl (or --rejects) with their row number and reason.
Exit codes: 0 all rows written; 3 finished, but some rows were rejected; 1 failed (see above);
2 usage error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import grpc

from batchd.client import connect
from batchd.client.ingest_files import (
    ARROW_FORMATS,
    Chunk,
    UsageError,
    arrow_chunks,
    csv_chunks,
    file_format,
    jsonl_chunks,
    open_arrow,
    read_columns,
    to_request,
)
from batchd.client.ingest_state import State, rejects_file, state_for, write_rejects
from batchd.client.results import rpc_error
from batchd.v1 import batch_pb2, batch_pb2_grpc
from batchd.vocabulary import is_refusal

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


async def ingest(args: argparse.Namespace) -> int:
    """The whole command: check the file and the state, stream the chunks, report. Exact in
    what it reports: its totals and rejects file always match what the table received, across
    kills, lost acknowledgements and reruns (see ``State``)."""
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    _on_conflict(args)  # --upsert's options, checked before anything is saved
    args.format = args.format or file_format(path)
    state_path = Path(args.state or f"{path}.batchd-ingest.json")
    rejects_path = Path(args.rejects or f"{path}.rejects.jsonl")
    arrow = open_arrow(path, args) if args.format in ARROW_FORMATS else None
    if arrow is not None:
        columns, data_start = list(arrow.schema.names), 0
    else:
        columns, data_start = read_columns(path, args)
    fresh = not state_path.exists()
    state = state_for(path, args, state_path, data_start)
    if state.finished:
        print(f"{path}: already ingested into {state.table}: {state.written:,} rows written"
              + (f", {state.rejected:,} rejected (see {rejects_path})" if state.rejected else "")
              + f"; nothing sent. Remove {state_path} to ingest it again.", file=sys.stderr)
        return EXIT_REJECTED if state.rejected else EXIT_OK
    run = _Run(args, path, state, state_path, columns, arrow)
    try:
        with rejects_file(rejects_path, state) as rejects:
            if arrow is not None:
                await run.stream(None, rejects)
            else:
                with path.open("rb") as f:
                    f.seek(state.offset)
                    await run.stream(f, rejects)
    except grpc.aio.AioRpcError as exc:
        run.progress.close()
        raise _failed(exc, args, path, state, state_path, rejects_path, columns,
                      fresh) from None
    run.progress.close()
    state.finished = True
    if not run.atomic:
        state.save(state_path)
    if state.rejected == 0 and rejects_path.exists() and rejects_path.stat().st_size == 0:
        rejects_path.unlink()
    elapsed = time.monotonic() - run.started
    merged = (f" ({state.inserted:,} inserted, {state.updated:,} updated; "
              f"{state.unchanged:,} unchanged"
              + (f"; {run.deleted:,} deleted" if args.delete_missing else "") + ")"
              if args.upsert else "")
    print(f"{path}: {state.written:,} rows written to {args.table}{merged} in {elapsed:.1f}s"
          + (f"; {state.rejected:,} rejected, see {rejects_path}" if state.rejected else ""),
          file=sys.stderr)
    if not run.atomic:
        print(f"{state_path} is kept: the same command again sends nothing; to load {path} "
              f"again, remove it first (rm {shlex.quote(str(state_path))})", file=sys.stderr)
    return EXIT_REJECTED if state.rejected else EXIT_OK


class Failed(Exception):
    """The stream failed; the message says what happened and what to do next."""


def _failed(exc: grpc.aio.AioRpcError, args: argparse.Namespace, path: Path, state: State,
            state_path: Path, rejects_path: Path, columns: list[str], fresh: bool) -> Failed:
    """What the failure was and what to do next (see the module's docstring). ``fresh``: the
    state file was made by this run."""
    code = exc.code()
    lines = [f"batchd ingest: failed: {code.name}: {exc.details()}"]
    separator = (_other_separator(args, columns) if code == grpc.StatusCode.INVALID_ARGUMENT
                 else None)
    if separator:
        lines.append(f"the header line has no {args.delimiter!r}, but {separator[0]!r} between "
                     f"its columns: add --delimiter {separator[1]}")
    if not is_refusal(code):  # it passes: the same command again resumes
        lines.append("nothing was written (ATOMIC); run the same command again"
                     if args.mode == "atomic" else "run the same command again to resume")
        return Failed("\n".join(lines))
    fix = f"add --delimiter {separator[1]}" if separator else _what_to_fix(exc, args, path)
    if args.mode == "atomic":
        lines.append(f"nothing was written (ATOMIC); {fix}, then run the command again")
    elif state.sequence == 0 and fresh:
        state_path.unlink(missing_ok=True)  # nothing written: the fixed input starts afresh
        if rejects_path.exists() and rejects_path.stat().st_size == 0:
            rejects_path.unlink()
        lines.append(f"nothing was written; {fix}, then run the command again")
    elif state.sequence == 0:
        # The state came from an earlier run, which may have had chunks written without
        # hearing so: only its stream id finds them (the server's ledger). Kept.
        lines.append(f"nothing was written by this run; {fix}, then run the same command "
                     f"again to resume ({state_path} is an earlier run's, which may have sent "
                     f"chunks; if {path} itself must change, remove it first)")
    else:
        lines.append(
            f"{state.written:,} rows were written before it (chunks 1 to {state.sequence}); "
            f"{fix}, then run the same command again to resume after them ({state_path} "
            f"keeps their place; if {path} itself must change, remove it first: the rows "
            "already written stay)")
    return Failed("\n".join(lines))


def _what_to_fix(exc: grpc.aio.AioRpcError, args: argparse.Namespace, path: Path) -> str:
    """Where the refused thing is, by the field the server names (or the code)."""
    error = rpc_error(exc)
    field = error.field_violations[0].field if error.field_violations else \
        (exc.details() or "").split(":", 1)[0]
    code = error.code
    if field.startswith("header.columns"):
        if args.columns:
            return "correct --columns"
        if args.format in ARROW_FORMATS:
            return f"correct the column's name in {path}, or choose columns with --columns"
        return f"correct the header line of {path}"
    if field.startswith("header.arrow_schema"):
        return (f"store that column in {path} as the type the message names, or leave it out "
                "with --columns")
    if field.startswith("header.table"):
        return "correct --table (batchd schema lists the tables you may use)"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return "give a valid token (--token)"
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return "use a token, or a database role, allowed to write to the table"
    return "fix what the error names (in the file, the command or the server's settings)"


_SEPARATORS = {";": "';'", "\t": "$'\\t'", "|": "'|'", ",": ","}


def _other_separator(args: argparse.Namespace, columns: list[str]) -> tuple[str, str] | None:
    """A CSV header read as one column that holds another separator (and how to write it for
    a shell): --delimiter is missing."""
    if args.format != "csv" or args.columns or len(columns) != 1:
        return None
    for separator, shown in _SEPARATORS.items():
        if separator != args.delimiter and separator in columns[0]:
            return separator, shown
    return None


class _Run:
    """One run of the stream: its messages out, its acknowledgements in."""

    def __init__(self, args: argparse.Namespace, path: Path, state: State, state_path: Path,
                 columns: list[str], arrow: Any = None) -> None:
        self.args = args
        self.state = state
        self.state_path = state_path
        self.atomic = args.mode == "atomic"
        self.arrow = arrow  # Parquet, Arrow: the file's ArrowSource
        encoding = {"csv": batch_pb2.ENCODING_CSV, "jsonl": batch_pb2.ENCODING_ROWS}.get(
            args.format, batch_pb2.ENCODING_ARROW)
        self.header = batch_pb2.StreamHeader(
            table=args.table, columns=columns,
            mode=batch_pb2.MODE_ATOMIC if self.atomic else batch_pb2.MODE_INDEPENDENT,
            encoding=encoding, stream_id="" if self.atomic else state.stream_id,
            csv=batch_pb2.CsvOptions(delimiter=args.delimiter))
        merge = _on_conflict(args)
        if merge is not None:
            self.header.on_conflict.CopyFrom(merge)
            self.header.delete_missing = args.delete_missing
        if arrow is not None:
            self.header.arrow_schema = arrow.schema.serialize().to_pybytes()
        self.progress = _progress_bar()(
            total=state.size if arrow is None else arrow.rows, initial=state.offset,
            unit="B" if arrow is None else " rows", unit_scale=True,
            disable=args.quiet or None, dynamic_ncols=True, desc=path.name)
        self.started = time.monotonic()
        self.resumed_written = state.written
        self.deleted = 0  # --delete-missing: rows deleted at the commit
        self.sent_rows = state.rows
        self.in_flight: dict[int, Chunk] = {}
        self.problems: list[UsageError] = []
        # Chunks wait for the server's StreamOpened: a client writing after the server has
        # ended the stream (say, refusing the header) can see grpc.aio report INTERNAL "Internal
        # error from Core" instead of the server's status (grpc/grpc#36066).
        self.opened = asyncio.Event()

    async def requests(self, f: BinaryIO | None) -> AsyncIterator[batch_pb2.BatchStreamRequest]:
        """The stream's messages. A problem with the file ends the stream (an atomic one
        without its commit, so nothing is written) and is reported afterwards: raised in here,
        gRPC would turn it into an anonymous cancellation."""
        args = self.args
        chunker: Iterator[tuple[Any, int]]
        if f is None:
            chunker = arrow_chunks(self.arrow, self.state.offset, self.state.chunk_rows)
        elif args.format == "csv":
            chunker = csv_chunks(f, self.state.chunk_rows, (args.quote or '"').encode())
        else:
            chunker = jsonl_chunks(f, self.state.chunk_rows)
        yield batch_pb2.BatchStreamRequest(header=self.header)
        await self.opened.wait()
        sequence = self.state.sequence
        try:
            for records, end in chunker:
                sequence += 1
                if f is None:
                    table, data = cast(tuple[Any, bytes], records)
                    request = batch_pb2.BatchStreamRequest(chunk=batch_pb2.StreamChunk(
                        sequence=sequence, arrow=data))
                    chunk = Chunk(sequence, request, end, table.num_rows, [], table)
                else:
                    chunk = Chunk(sequence, to_request(records, sequence, args.format,
                                                       self.sent_rows), end, len(records),
                                  records)
                request = chunk.request
                self.in_flight[sequence] = chunk
                self.sent_rows += chunk.rows
                if args.rate:
                    await asyncio.sleep(chunk.rows / args.rate)
                yield request
        except UsageError as exc:
            self.problems.append(exc)
            return
        if self.atomic:
            yield batch_pb2.BatchStreamRequest(commit=batch_pb2.StreamCommit())

    async def stream(self, f: BinaryIO | None, rejects: IO[str]) -> None:
        connection = connect.from_arguments(self.args)
        async with connect.aio_channel(connection) as channel:
            stub = batch_pb2_grpc.BatchServiceStub(channel)  # type: ignore[no-untyped-call]
            try:
                async for response in stub.BatchStream(self.requests(f),
                                                       metadata=connection.metadata or None):
                    kind = response.WhichOneof("kind")
                    if kind == "opened":
                        self.opened.set()
                        last = response.opened.last_committed_sequence
                        if last > self.state.sequence:
                            print(f"the server has chunks up to {last} committed; re-sent "
                                  "ones are not written again", file=sys.stderr)
                    elif kind == "ack":
                        self.acknowledged(response.ack, rejects)
                    elif kind == "summary":
                        self.deleted = response.summary.rows_deleted
                        break
            except grpc.aio.AioRpcError:
                if self.problems:  # the stream ended because of the file, not the server
                    raise self.problems[0] from None
                raise
            if self.problems:
                raise self.problems[0]

    def acknowledged(self, ack: batch_pb2.ChunkAck, rejects: IO[str]) -> None:
        """A chunk is written (a re-sent one's ack repeats what it wrote the first time): its
        rejects go to the file, the totals grow, and the state moves past it."""
        state = self.state
        chunk = self.in_flight.pop(ack.sequence)
        state.rejected += write_rejects(rejects, ack, chunk)
        state.written += ack.rows_written
        state.inserted += ack.rows_inserted
        state.updated += ack.rows_updated
        state.unchanged += ack.rows_unchanged
        if not self.atomic:
            rejects.flush()
            state.sequence, state.offset = ack.sequence, chunk.end_offset
            state.rows += chunk.rows
            state.rejects_bytes = rejects.tell()
            state.save(self.state_path)
        self.progress.update(chunk.end_offset - self.progress.n)
        rate = (state.written - self.resumed_written) / max(time.monotonic() - self.started, 1e-9)
        self.progress.set_postfix(rows=f"{state.written:,}", rows_s=f"{rate:,.0f}",
                                  rejected=state.rejected)


COMMANDS: tuple[str, ...] = ("ingest",)


def add_commands(commands: Any) -> None:
    """Adds ``ingest`` to the ``batchd`` subcommands."""
    p = commands.add_parser("ingest", help="stream a CSV, JSON Lines, Parquet or Arrow file "
                                           "into a table",
                            description=__doc__.split("\n\n")[0])
    p.add_argument("file")
    p.add_argument("--table", required=True)
    connect.add_arguments(p)
    p.add_argument("--format", choices=["csv", "jsonl", "parquet", "arrow"],
                   help="default: by file extension (.jsonl .ndjson; .parquet .pq; .arrow "
                        ".feather .ipc .arrows; else CSV)")
    p.add_argument("--columns", help="comma-separated; default: the CSV header line (Parquet, "
                                     "Arrow: the file's columns; given: only those)")
    p.add_argument("--delimiter", default=",")
    p.add_argument("--quote", default='"')
    p.add_argument("--chunk-rows", type=int, default=10_000)
    p.add_argument("--mode", choices=["independent", "atomic"], default="independent")
    p.add_argument("--upsert", metavar="KEY[,KEY...]",
                   help="merge instead of append: insert rows of new keys, update the rows of "
                        "keys already present (KEY: a unique key of the table, e.g. its primary "
                        "key); the same key twice in a chunk: the last row wins")
    p.add_argument("--update", metavar="COLS",
                   help="with --upsert: the comma-separated columns to update (default: every "
                        "column sent but the key's)")
    p.add_argument("--delete-missing", action="store_true",
                   help="with --upsert and --mode atomic: the file is the whole table; at "
                        "commit, delete the rows whose key it did not bring")
    p.add_argument("--keep-existing", action="store_true",
                   help="with --upsert: leave the rows of keys already present as they are "
                        "(insert only new keys)")
    p.add_argument("--stream-id", help="default: a new one, kept in the state file")
    p.add_argument("--state", help="resume state file (default FILE.batchd-ingest.json)")
    p.add_argument("--rejects", help="rejected rows (default FILE.rejects.jsonl)")
    p.add_argument("--rate", type=float, help="at most this many rows per second")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _on_conflict(args: argparse.Namespace) -> batch_pb2.OnConflict | None:
    """--upsert, --update, --keep-existing as the header's on_conflict (None: append)."""
    if not args.upsert:
        if args.update or args.keep_existing or args.delete_missing:
            raise UsageError("--update, --keep-existing and --delete-missing go with "
                             "--upsert KEY")
        return None
    if args.delete_missing and args.mode != "atomic":
        raise UsageError("--delete-missing needs --mode atomic (the whole file, or nothing)")
    if args.update and args.keep_existing:
        raise UsageError("--update and --keep-existing exclude each other")
    return batch_pb2.OnConflict(
        action=batch_pb2.OnConflict.ACTION_DO_NOTHING if args.keep_existing
        else batch_pb2.OnConflict.ACTION_UPDATE,
        conflict_columns=_names(args.upsert), update_columns=_names(args.update or ""))


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(ingest(args))
    except UsageError as exc:
        print(f"batchd ingest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Failed as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("batchd ingest: interrupted; run the same command again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED


def _progress_bar() -> Any:
    """tqdm, from the ``cli`` extra (the server does not need it)."""
    try:
        from tqdm import tqdm
    except ImportError:
        raise UsageError("batchd ingest needs the cli extra: "
                         "pip install 'batchd-client[cli]'") from None
    return tqdm
