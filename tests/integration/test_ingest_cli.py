"""`batchd ingest`: a file into a table, with rejects, resume after a kill, and exit codes."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

from tests.support.cli import BATCHD, write_csv
from tests.support.ports import free_port
from tests.support.proxy import Proxy


async def ingest(app, *args: str) -> tuple[int, str]:
    return await ingest_to(f"127.0.0.1:{app.port}", *args)


async def ingest_to(target: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BATCHD), "ingest", *args, "--target", target, "--quiet",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode()


async def test_ingest_csv_writes_every_row_and_cleans_up(app, db, tmp_path):
    data = write_csv(tmp_path / "events.csv", 2500)
    code, out = await ingest(app, str(data), "--table", "events", "--chunk-rows", "1000")
    assert code == 0, out
    assert "2,500 rows written to events" in out
    assert await db.fetchval("SELECT count(*) FROM events") == 2500
    assert await db.fetchval("SELECT kind FROM events WHERE id = 4") == "kind, 1"
    # The state file stays, saying the ingest finished (so a rerun sends nothing).
    state = json.loads((tmp_path / "events.csv.batchd-ingest.json").read_text())
    assert state["finished"] and (state["written"], state["rejected"]) == (2500, 0)
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
    assert "nothing was written; correct --table (batchd schema lists the tables you may " \
           "use)" in out


async def test_rerunning_a_finished_ingest_says_so_and_sends_nothing(app, db, tmp_path):
    data = write_csv(tmp_path / "done.csv", 100, bad={7: "7,,1"})
    code, out = await ingest(app, str(data), "--table", "events", "--chunk-rows", "30")
    assert code == 3, out
    # The finished run says what a rerun does, and how to load the file again.
    state = tmp_path / "done.csv.batchd-ingest.json"
    assert f"{state} is kept: the same command again sends nothing; to load {data} again, " \
           f"remove it first (rm {state})" in out
    rejects = (tmp_path / "done.csv.rejects.jsonl").read_text()
    await db.execute("DELETE FROM events")  # a rerun that sent anything would show here
    code, out = await ingest(app, str(data), "--table", "events", "--chunk-rows", "30")
    assert code == 3, out
    assert "already ingested" in out and "99 rows written" in out and "1 rejected" in out
    assert await db.fetchval("SELECT count(*) FROM events") == 0
    assert (tmp_path / "done.csv.rejects.jsonl").read_text() == rejects


async def test_a_refused_header_says_what_to_fix_and_the_fixed_file_then_runs(app, db,
                                                                             tmp_path):
    data = tmp_path / "typo.csv"
    data.write_text("id,kind,scores\n1,a,1\n2,b,2\n")
    code, out = await ingest(app, str(data), "--table", "events")
    assert code == 1, out
    assert 'no column "scores"' in out
    assert f"nothing was written; correct the header line of {data}, then run the command " \
           "again" in out and "resume" not in out
    assert not (tmp_path / "typo.csv.batchd-ingest.json").exists()
    assert not (tmp_path / "typo.csv.rejects.jsonl").exists()
    data.write_text("id,kind,score\n1,a,1\n2,b,2\n")  # fixed: the same command now runs
    code, out = await ingest(app, str(data), "--table", "events")
    assert code == 0, out
    assert await db.fetchval("SELECT count(*) FROM events") == 2


async def test_a_semicolon_separated_csv_is_told_to_add_delimiter(app, db, tmp_path):
    data = tmp_path / "export.csv"
    data.write_text("id;kind;score\n1;a;1\n")
    code, out = await ingest(app, str(data), "--table", "events")
    assert code == 1, out
    assert 'no column "id;kind;score"' in out
    assert "the header line has no ',', but ';' between its columns: add --delimiter ';'" in out
    assert "nothing was written; add --delimiter ';', then run the command again" in out
    assert not (tmp_path / "export.csv.batchd-ingest.json").exists()
    code, out = await ingest(app, str(data), "--table", "events", "--delimiter", ";")
    assert code == 0, out
    assert await db.fetchval("SELECT kind FROM events WHERE id = 1") == "a"


async def test_a_refused_arrow_type_leaves_no_state_and_the_fixed_file_runs(app, db, tmp_path):
    import decimal

    import pyarrow as pa
    import pyarrow.feather as feather

    path = tmp_path / "money.arrow"
    feather.write_feather(pa.table({"id": [1], "num": [0.1]}), path)
    code, out = await ingest(app, str(path), "--table", "all_types")
    assert code == 1, out
    assert 'column "num"' in out and f"nothing was written; store that column in {path} as " \
           "the type the message names, or leave it out with --columns" in out
    assert not (tmp_path / "money.arrow.batchd-ingest.json").exists()
    feather.write_feather(pa.table({"id": [1], "num": pa.array([decimal.Decimal("0.1")],
                                                                pa.decimal128(5, 1))}), path)
    code, out = await ingest(app, str(path), "--table", "all_types")
    assert code == 0, out
    assert await db.fetchval("SELECT num FROM all_types WHERE id = 1") == decimal.Decimal("0.1")


async def test_a_passing_failure_keeps_the_state_and_says_to_resume(app, db, tmp_path):
    data = write_csv(tmp_path / "later.csv", 10)
    code, out = await ingest_to(f"127.0.0.1:{free_port()}", str(data), "--table", "events")
    assert code == 1, out
    assert "UNAVAILABLE" in out and "run the same command again to resume" in out
    assert (tmp_path / "later.csv.batchd-ingest.json").exists()
    code, out = await ingest(app, str(data), "--table", "events")
    assert code == 0, out
    assert await db.fetchval("SELECT count(*) FROM events") == 10


async def test_a_refusal_keeps_the_state_an_earlier_run_left(app, db, tmp_path):
    # An earlier run that failed in passing may have had chunks written without hearing so:
    # its state (its stream id) is what finds them, so a later refusal does not remove it.
    data = tmp_path / "plain.csv"
    data.write_text("".join(f"{i},k,{i}\n" for i in range(10)))  # no header line
    state = tmp_path / "plain.csv.batchd-ingest.json"
    code, out = await ingest_to(f"127.0.0.1:{free_port()}", str(data), "--table", "events",
                                "--columns", "id,kind,scor")
    assert code == 1 and "run the same command again to resume" in out, out
    stream_id = json.loads(state.read_text())["stream_id"]
    code, out = await ingest(app, str(data), "--table", "events", "--columns", "id,kind,scor")
    assert code == 1, out
    assert "nothing was written by this run; correct --columns, then run the same command " \
           "again to resume" in out
    assert json.loads(state.read_text())["stream_id"] == stream_id
    code, out = await ingest(app, str(data), "--table", "events", "--columns", "id,kind,score")
    assert code == 0, out
    assert await db.fetchval("SELECT count(*) FROM events") == 10


async def test_a_new_ingest_starts_a_new_rejects_file(app, db, tmp_path):
    data = write_csv(tmp_path / "fresh.csv", 20, bad={3: "3,,1"})
    (tmp_path / "fresh.csv.rejects.jsonl").write_text('{"row": 999, "stale": true}\n')
    code, out = await ingest(app, str(data), "--table", "events")
    assert code == 3, out
    rejects = [json.loads(line) for line in
               (tmp_path / "fresh.csv.rejects.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rejects] == [3]


async def test_lost_acks_then_resume_report_exactly_what_the_table_holds(app, db, tmp_path):
    """The server commits chunks whose acks never reach the client (they are dropped on the
    way), the client is killed, and the rerun re-sends those chunks: their acks repeat what
    they wrote and rejected, so the summary, the exit code and the rejects file match the
    table, with every refused row in the unacknowledged chunks."""
    bad = {i: f"{i},,1" for i in range(1000, 2000, 25)}  # 40 bad rows, all after chunk 10
    data = write_csv(tmp_path / "lost.csv", 2000, bad=bad)
    state_path = tmp_path / "lost.csv.batchd-ingest.json"
    proxy = await Proxy.tcp("127.0.0.1", app.port)
    proc = await asyncio.create_subprocess_exec(
        str(BATCHD), "ingest", str(data), "--table", "events", "--chunk-rows", "50",
        "--rate", "4000", "--quiet", "--target", f"127.0.0.1:{proxy.port}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        await until(lambda: json.loads(state_path.read_text())["sequence"] >= 2)
        proxy.drop_replies = True  # from now on the client hears nothing back
        expected = 2000 - len(bad)
        await until_async(lambda: db.fetchval("SELECT count(*) FROM events"), expected)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        await proxy.close()
    saved = json.loads(state_path.read_text())
    assert saved["sequence"] < 20 and saved["rejected"] == 0  # the bad rows were never acked
    code, out = await ingest(app, str(data), "--table", "events", "--chunk-rows", "50")
    assert code == 3, out
    assert f"{expected:,} rows written" in out and f"{len(bad)} rejected" in out
    rejects = [json.loads(line) for line in
               (tmp_path / "lost.csv.rejects.jsonl").read_text().splitlines()]
    assert sorted(r["row"] for r in rejects) == sorted(bad)
    assert await db.fetchval("SELECT count(*) FROM events") == expected


async def until(check, patience: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    ends = loop.time() + patience
    while loop.time() < ends:
        try:
            if check():
                return
        except (FileNotFoundError, ValueError):  # not written yet, or being replaced
            pass
        await asyncio.sleep(0.02)
    raise AssertionError("the condition never held")


async def until_async(value, wanted, patience: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    ends = loop.time() + patience
    while loop.time() < ends:
        if await value() == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached {wanted}")


# --- Parquet and Arrow files (ENCODING_ARROW) --------------------------------------------------

def events_table(rows: int, duplicates: tuple[int, ...] = ()) -> Any:
    import pyarrow as pa

    ids = [i if i not in duplicates else 0 for i in range(rows)]
    return pa.table({"id": pa.array(ids, pa.int64()), "kind": [f"k{i % 3}" for i in range(rows)],
                     "score": pa.array([i % 100 for i in range(rows)], pa.int32())})


async def test_ingest_parquet_with_rejects_exit_3_and_a_finished_state(app, db, tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "events.parquet"
    pq.write_table(events_table(2500, duplicates=(1200, 2499)), path, row_group_size=700)
    code, out = await ingest(app, str(path), "--table", "events", "--chunk-rows", "1000")
    assert code == 3, out
    assert "2,498 rows written to events" in out and "2 rejected" in out
    assert await db.fetchval("SELECT count(*) FROM events") == 2498
    rejects = [json.loads(line) for line in
               (tmp_path / "events.parquet.rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["sequence"], r["chunk_row"], r["code"], r["record"]) for r in rejects] \
        == [(1200, 2, 200, "ALREADY_EXISTS", {"id": 0, "kind": "k0", "score": 0}),
            (2499, 3, 499, "ALREADY_EXISTS", {"id": 0, "kind": "k0", "score": 99})]
    state = json.loads((tmp_path / "events.parquet.batchd-ingest.json").read_text())
    assert state["finished"] and (state["offset"], state["written"], state["rejected"]) == \
        (2500, 2498, 2)
    code, out = await ingest(app, str(path), "--table", "events")
    assert code == 3 and "already ingested" in out


async def test_ingest_feather_atomic_and_a_refused_type_exits_1(app, db, tmp_path):
    import pyarrow as pa
    import pyarrow.feather as feather

    path = tmp_path / "events.feather"
    feather.write_feather(events_table(300), path)
    code, out = await ingest(app, str(path), "--table", "events", "--mode", "atomic",
                             "--chunk-rows", "100")
    assert code == 0, out
    assert await db.fetchval("SELECT count(*) FROM events") == 300
    floats = tmp_path / "money.arrow"
    feather.write_feather(pa.table({"id": [1], "num": [0.1]}), floats)
    code, out = await ingest(app, str(floats), "--table", "all_types")
    assert code == 1, out
    assert "INVALID_ARGUMENT" in out and 'column "num"' in out
    assert await db.fetchval("SELECT count(*) FROM all_types") == 0
    code, out = await ingest(app, str(tmp_path / "events.feather"), "--table", "events",
                             "--format", "parquet")
    assert code == 2 and "cannot be read as parquet" in out


async def test_ingest_parquet_resumes_by_row_offset_after_a_kill(app, db, tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "big.parquet"
    pq.write_table(events_table(3000), path, row_group_size=450)
    state = tmp_path / "big.parquet.batchd-ingest.json"
    proc = await asyncio.create_subprocess_exec(
        str(BATCHD), "ingest", str(path), "--table", "events", "--chunk-rows", "100",
        "--rate", "2000", "--quiet", "--target", f"127.0.0.1:{app.port}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await until(lambda: json.loads(state.read_text())["sequence"] >= 5)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    saved = json.loads(state.read_text())
    assert 5 <= saved["sequence"] < 30 and saved["offset"] == saved["rows"] == \
        saved["sequence"] * 100
    code, out = await ingest(app, str(path), "--table", "events", "--chunk-rows", "100")
    assert code == 0, out
    assert "resuming" in out and "3,000 rows written" in out
    ids = [r["id"] for r in await db.fetch("SELECT id FROM events ORDER BY id")]
    assert ids == list(range(3000))
