"""The curl ingest's CSV cutting (batchd.http.bodies.CsvCutter): chunks of whole records,
however the body's bytes arrive, quoted fields holding commas, quotes and line breaks
included; each chunk's record count right; the header line apart."""

from __future__ import annotations

import csv
import io
import random

import pytest

from batchd.errors import InvalidArgument
from batchd.http.bodies import CsvCutter

FIELDS = ["plain", "with,comma", "two\nlines", 'q"uote', "", "x" * 40, '"\n"', "a\r\nb"]


def a_csv(count: int, seed: int) -> tuple[bytes, list[list[str]]]:
    rng = random.Random(seed)
    rows = [[str(i), rng.choice(FIELDS)] for i in range(count)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "kind"])
    writer.writerows(rows)
    return out.getvalue().encode(), rows


def cut(data: bytes, piece: int, chunk_rows: int, chunk_bytes: int) -> tuple[CsvCutter, list]:
    cutter = CsvCutter(b'"', chunk_rows, chunk_bytes, header=True)
    chunks = []
    for start in range(0, len(data), piece):
        chunks += cutter.feed(data[start:start + piece])
    return cutter, chunks + cutter.end()


@pytest.mark.parametrize(("piece", "chunk_rows", "chunk_bytes"), [
    (1, 1, 1 << 20), (2, 3, 1 << 20), (13, 7, 1 << 20), (777, 100, 1 << 20),
    (4096, 1000, 2000), (65536, 50, 1 << 20)])
def test_chunks_hold_whole_records_however_the_bytes_arrive(piece, chunk_rows, chunk_bytes):
    data, rows = a_csv(1500, seed=piece)
    cutter, chunks = cut(data, piece, chunk_rows, chunk_bytes)
    assert cutter.header == b"id,kind\n"
    read = []
    for chunk, count in chunks:
        records = list(csv.reader(io.StringIO(chunk.decode(), newline="")))
        assert len(records) == count <= chunk_rows
        read += records
    assert read == rows


def test_the_same_bytes_make_the_same_chunks():
    data, _ = a_csv(800, seed=3)
    assert cut(data, 100, 64, 1 << 20)[1] == cut(data, 4096, 64, 1 << 20)[1]


def test_a_last_record_without_a_newline_is_kept():
    _, chunks = cut(b"a,b\n1,2\n3,4", 1024, 10, 1 << 20)
    assert chunks == [(b"1,2\n3,4\n", 2)]


def test_a_quote_that_never_closes_is_refused():
    cutter = CsvCutter(b'"', 10, 64, header=False)
    with pytest.raises(InvalidArgument, match="longer than 64 bytes"):
        cutter.feed(b'1,"never closed\n' + b'more text\n' * 10)
    short = CsvCutter(b'"', 10, 1 << 20, header=False)
    short.feed(b'1,"open\n')
    with pytest.raises(InvalidArgument, match="inside a quoted field"):
        short.end()
