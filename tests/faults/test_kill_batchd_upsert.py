"""`batchd serve` killed with SIGKILL in the middle of a merging ingest (`batchd ingest
--upsert`), its acknowledgements lost: the same command again against a new server leaves each
key's final row as if the stream had run once, and the counts add up to the file's rows.

The file sends every key twice, the second time in a later chunk with another value: a chunk
merged again after its successor would leave the earlier value behind."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.faults.conftest import BATCHD, Batchd, until
from tests.support.batches import no_open_transaction
from tests.support.proxy import Proxy

pytestmark = pytest.mark.faults

KEYS = 2000
CHUNK = 50


def snapshot(path: Path) -> Path:
    """Each key twice: kind "a" in the first half of the file, "b" in the second; keys below
    KEYS // 10 are already in the table."""
    lines = ["id,kind,score"]
    lines += [f"{i},a,{i % 7}" for i in range(KEYS)]
    lines += [f"{i},b,{i % 5}" for i in range(KEYS)]
    path.write_text("\n".join(lines) + "\n")
    return path


async def run_ingest(data: Path, target: str, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(BATCHD), "ingest", str(data), "--table", "events", "--chunk-rows", str(CHUNK),
        "--upsert", "id", "--quiet", "--target", target, *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


async def test_sigkill_mid_upsert_resumes_to_each_keys_final_row_once(schema, db, tmp_path):
    await db.executemany("INSERT INTO events (id, kind, score) VALUES ($1, 'old', 0)",
                         [(i,) for i in range(KEYS // 10)])
    data = snapshot(tmp_path / "snapshot.csv")
    state_path = tmp_path / "snapshot.csv.batchd-ingest.json"
    server = await Batchd(schema).start()
    proxy = await Proxy.tcp("127.0.0.1", server.port)
    try:
        cli = await run_ingest(data, f"127.0.0.1:{proxy.port}", "--rate", "4000")
        try:
            await until(lambda: json.loads(state_path.read_text())["sequence"] >= 3,
                        what="three acknowledged chunks")
            proxy.drop_replies = True  # the server's acks are lost from now on
            acked = json.loads(state_path.read_text())["sequence"]

            async def committed_past_the_acks() -> bool:
                last = await db.fetchval("SELECT coalesce(max(sequence), 0) "
                                         "FROM batchd.stream_chunks")
                return int(last) >= acked + 2
            await until(committed_past_the_acks, what="chunks committed without their acks")
            await server.kill()
        finally:
            cli.kill()
            await asyncio.wait_for(cli.wait(), 30)
        assert not json.loads(state_path.read_text())["finished"]
        await no_open_transaction(db)

        proxy.drop_replies = False
        server = await Batchd(schema, port=server.port).start()
        cli = await run_ingest(data, f"127.0.0.1:{proxy.port}")
        out = (await asyncio.wait_for(cli.communicate(), 120))[0].decode()
    finally:
        await server.kill()
        await proxy.close()
    assert cli.returncode == 0, out
    rows = {r["id"]: (r["kind"], r["score"]) for r in
            await db.fetch("SELECT id, kind, score FROM events")}
    assert rows == {i: ("b", i % 5) for i in range(KEYS)}
    state = json.loads(state_path.read_text())
    assert state["finished"]
    # Each key: inserted (or, if present before, updated) once in the first half, updated
    # once in the second; nothing unchanged, whatever was re-sent.
    assert (state["inserted"], state["updated"], state["unchanged"]) == \
        (KEYS - KEYS // 10, KEYS + KEYS // 10, 0)
    assert state["written"] == 2 * KEYS
