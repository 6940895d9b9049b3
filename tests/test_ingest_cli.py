"""`batchd ingest`: a file into a table, with rejects, resume after a kill, and exit codes."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

BATCHD = Path(sys.executable).parent / "batchd"


async def ingest(app, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BATCHD), "ingest", *args, "--target", f"127.0.0.1:{app.port}", "--quiet",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode()


def write_csv(path: Path, rows: int, bad: dict[int, str] | None = None) -> Path:
    lines = ["id,kind,score"]
    for i in range(rows):
        lines.append((bad or {}).get(i, f'{i},"kind, {i % 3}",{i % 100}'))
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_ingest_csv_writes_every_row_and_cleans_up(app, db, tmp_path):
    data = write_csv(tmp_path / "events.csv", 2500)
    code, out = await ingest(app, str(data), "--table", "events", "--chunk-rows", "1000")
    assert code == 0, out
    assert "2,500 rows written to events" in out
    assert await db.fetchval("SELECT count(*) FROM events") == 2500
    assert await db.fetchval("SELECT kind FROM events WHERE id = 4") == "kind, 1"
    assert not (tmp_path / "events.csv.batchd-ingest.json").exists()
    assert not (tmp_path / "events.csv.rejects.jsonl").exists()


async def test_ingest_csv_with_multiline_fields_across_chunk_boundaries(app, db, tmp_path):
    path = tmp_path / "multi.csv"
    path.write_text("id,kind,score\n" + "".join(f'{i},"line one\nline two {i}",{i}\n'
                                                  for i in range(30)))
    code, out = await ingest(app, str(path), "--table", "events", "--chunk-rows", "7")
    assert code == 0, out
    assert await db.fetchval("SELECT count(*) FROM events") == 30
    assert await db.fetchval("SELECT kind FROM events WHERE id = 29") == "line one\nline two 29"


async def test_ingest_reports_rejected_rows_in_a_file_and_exits_3(app, db, tmp_path):
    data = write_csv(tmp_path / "bad.csv", 100, bad={10: "10,,5", 42: "42,ok,not-a-number"})
    code, out = await ingest(app, str(data), "--table", "events", "--chunk-rows", "25")
    assert code == 3, out
    assert "98 rows written" in out and "2 rejected" in out
    rejects = [json.loads(line) for line in
               (tmp_path / "bad.csv.rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["code"], r["record"]) for r in rejects] == [
        (10, "INVALID_ARGUMENT", "10,,5"), (42, "INVALID_ARGUMENT", "42,ok,not-a-number")]
    assert await db.fetchval("SELECT count(*) FROM events") == 98


async def test_ingest_jsonl_goes_as_rows(app, db, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "kind": "j", "score": i}) + "\n"
                            for i in range(300)))
    code, out = await ingest(app, str(path), "--table", "events", "--chunk-rows", "100")
    assert code == 0, out
    assert await db.fetchval("SELECT sum(score) FROM events") == sum(range(300))


async def test_ingest_resumes_after_being_killed_without_duplicates_or_gaps(app, db, tmp_path):
    data = write_csv(tmp_path / "big.csv", 3000)
    state = tmp_path / "big.csv.batchd-ingest.json"
    proc = await asyncio.create_subprocess_exec(
        str(BATCHD), "ingest", str(data), "--table", "events", "--chunk-rows", "100",
        "--rate", "2000", "--quiet", "--target", f"127.0.0.1:{app.port}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    for _ in range(200):  # wait for a few acknowledged chunks, then kill it hard
        if state.exists() and json.loads(state.read_text())["sequence"] >= 3:
            break
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    saved = json.loads(state.read_text())
    assert 3 <= saved["sequence"] < 30
    partial = await db.fetchval("SELECT count(*) FROM events")
    assert saved["rows"] <= partial < 3000
    code, out = await ingest(app, str(data), "--table", "events", "--chunk-rows", "100")
    assert code == 0, out
    assert "resuming" in out
    ids = [r["id"] for r in await db.fetch("SELECT id FROM events ORDER BY id")]
    assert ids == list(range(3000))


async def test_ingest_atomic_mode_writes_nothing_when_a_row_is_bad(app, db, tmp_path):
    data = write_csv(tmp_path / "atomic.csv", 50, bad={30: "30,,1"})
    code, out = await ingest(app, str(data), "--table", "events", "--mode", "atomic",
                             "--chunk-rows", "10")
    assert code == 1, out
    assert "row 30" in out
    assert await db.fetchval("SELECT count(*) FROM events") == 0


async def test_ingest_usage_errors_exit_2(app, tmp_path):
    code, out = await ingest(app, str(tmp_path / "missing.csv"), "--table", "events")
    assert code == 2 and "no such file" in out
    broken = tmp_path / "open.csv"
    broken.write_text('id,kind,score\n1,"never closed,2\n')
    code, out = await ingest(app, str(broken), "--table", "events")
    assert code == 2 and "inside a quoted field" in out


async def test_ingest_into_an_unknown_table_fails_clearly(app, tmp_path):
    data = write_csv(tmp_path / "x.csv", 5)
    code, out = await ingest(app, str(data), "--table", "nope")
    assert code == 1
    assert "INVALID_ARGUMENT" in out and "unknown or not exposed table" in out
