"""Exactly-once ingest covers what is reported, not only what is written."""

from __future__ import annotations

from tests.support.streams import header, open_stream, rows_chunk, send


async def test_a_resent_committed_chunk_is_answered_with_its_original_ack(stub, db):
    """Exactly-once covers reporting: the ack of a re-sent chunk repeats the rows written and
    the rejected rows of the first one (kept in the ledger), marked duplicate."""
    bad_rows = [{"id": "1", "kind": "k", "score": 1}, {"id": "2", "kind": None, "score": 2},
                {"id": "3", "kind": "k", "score": "x"}]
    first_header = header(table="events", mode="MODE_INDEPENDENT", stream_id="resent-acks")
    call, _ = await open_stream(stub, first_header)
    first = (await send(call, rows_chunk(1, bad_rows))).ack
    await call.done_writing()
    assert first.rows_written == 1 and [r.index for r in first.rejected] == [1, 2]
    call, opened = await open_stream(stub, first_header)
    assert opened.last_committed_sequence == 1
    again = (await send(call, rows_chunk(1, bad_rows))).ack
    assert again.duplicate
    again.duplicate = False
    assert again == first
    assert await db.fetchval("SELECT count(*) FROM events") == 1
