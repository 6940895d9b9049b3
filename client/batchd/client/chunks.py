"""What a source becomes for ``ingest``: its chunks (``Chunk``) and the header they need
(``Opened``), and which files are Arrow data (``FILE_FORMATS``).

A module of its own so that the sources of each kind depend on it and not on each other:
``sources`` (rows, columns, CSV) hands Arrow data to ``arrow_source`` (imported only then, with
pyarrow), which needs these types back: with them here, the imports run one way, sources ->
arrow_source -> chunks, and no circle.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

from batchd.v1 import batch_pb2

__all__ = ["ARROW_EXTRA", "FILE_FORMATS", "Chunk", "Opened", "is_arrow_file"]

#: File name suffixes read as Arrow data (batchd.client.arrow_source), and their format.
FILE_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow", ".feather": "arrow",
                ".ipc": "arrow", ".arrows": "arrow"}


@dataclass(frozen=True, slots=True)
class Chunk:
    """A chunk's content (its sequence is set when it is sent) and how many rows it holds."""

    content: batch_pb2.StreamChunk
    rows: int


@dataclass
class Opened:
    """A source ready to stream: the header's encoding and columns, and its chunks."""

    encoding: int
    columns: list[str]
    chunks: AsyncIterator[Chunk]
    arrow_schema: bytes = b""  # ENCODING_ARROW: the header's schema


def is_arrow_file(source: object) -> bool:
    """A path whose suffix is a Parquet or Arrow file's (``FILE_FORMATS``)."""
    return isinstance(source, str | os.PathLike) and \
        os.path.splitext(os.fspath(source))[1].lower() in FILE_FORMATS


ARROW_EXTRA = "pip install 'batchd-client[arrow]'"
