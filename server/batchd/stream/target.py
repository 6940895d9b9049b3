"""What a stream writes into: its table and columns (``Target``), and what a write did
(``Written``).

The target is resolved from the header (or, for a ROWS stream without columns, from its first
chunk: ``batchd.stream.encodings.registry.resolve``). Its encoding (``batchd.stream.encodings``)
decodes the chunks; its sink (``batchd.stream.sink``) takes their COPY data into the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from batchd.catalog import Column, Table
from batchd.stream.upsert import Upsert
from batchd.v1 import batch_pb2


@dataclass(slots=True)
class Target:
    table: Table
    columns: list[Column]
    csv: batch_pb2.CsvOptions
    # The header's on_conflict, when it merges rows (DO NOTHING, UPDATE): None appends.
    upsert: Upsert | None = None
    # Positions of numeric columns: their strings go to the driver unparsed (it parses them
    # exactly as coercion would), and are checked one by one only if a COPY's encoding fails.
    lazy: list[int] = field(init=False)
    # Row-level security applies to the stream's role (batchd.stream.access, before the
    # first chunk): PostgreSQL refuses COPY into the table.
    rls: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.lazy = [i for i, c in enumerate(self.columns) if c.family == "numeric"
                     and not c.is_array]

    @property
    def staged(self) -> bool:
        """Whether rows go in through a staging table (batchd.stream.sink): under row-level
        security, and for an upsert."""
        return self.rls or self.upsert is not None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(slots=True)
class Written:
    """What writing some rows did: rows inserted, rows updated (an upsert's), and rows taken
    but left as they were (an upsert's: a conflict under DO NOTHING, an update that changes
    nothing, an earlier row of a key that a later row of the same chunk replaced)."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def written(self) -> int:
        return self.inserted + self.updated

    @property
    def taken(self) -> int:
        """The rows not rejected."""
        return self.inserted + self.updated + self.unchanged

    def __add__(self, other: Written) -> Written:
        return Written(self.inserted + other.inserted, self.updated + other.updated,
                       self.unchanged + other.unchanged)
