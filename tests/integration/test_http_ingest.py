"""The curl ingest, as a data engineer with a shell runs it: ``curl -T FILE
http://HOST:8080/v1/ingest/TABLE`` (a PUT; or a POST) with CSV, JSON Lines, Arrow or Parquet,
ATOMIC or INDEPENDENT, bad rows isolated and reported, an upload cut short resumed exactly once.
"""

from __future__ import annotations

import asyncio
import decimal
import io
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchd.app import App
from tests.support.http import bearer, error_info, http_app, until, violations
from tests.support.tokens import CLERK, READER, TOKENS


def events_csv(count: int, bad: set[int] = frozenset()) -> bytes:  # type: ignore[assignment]
    lines = ["id,kind,score"]
    lines += [f"{i},kind {i},{'x' if i in bad else i}" for i in range(1, count + 1)]
    return ("\n".join(lines) + "\n").encode()


async def test_curl_t_of_a_csv_file_writes_its_rows_and_answers_a_summary(schema, db, tmp_path):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("needs curl")
    path = tmp_path / "events.csv"
    path.write_bytes(events_csv(2500))
    async with http_app(schema) as (app, _):
        assert app.http is not None
        proc = await asyncio.create_subprocess_exec(
            curl, "-sS", "-T", str(path), f"http://127.0.0.1:{app.http.port}/v1/ingest/events",
            stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
    summary = json.loads(out)
    assert summary["committed"] is True and summary["mode"] == "atomic"
    assert summary["rows_written"] == 2500 and summary["rows_rejected"] == 0
    assert await db.fetchval("SELECT count(*) FROM events") == 2500
    assert await db.fetchval("SELECT kind FROM events WHERE id = 7") == "kind 7"


async def test_a_quoted_field_over_two_lines_stays_one_row(schema, db):
    body = b'id,kind,score\n1,"two\nlines",1\n2,"a ""quote""",2\n'
    async with http_app(schema) as (_, client):
        answer = await client.put("/v1/ingest/events?chunk_rows=1", content=body)
    assert answer.json()["rows_written"] == 2 and answer.json()["chunks"] == 2
    assert await db.fetchval("SELECT kind FROM events WHERE id = 1") == "two\nlines"
    assert await db.fetchval("SELECT kind FROM events WHERE id = 2") == 'a "quote"'


async def test_an_atomic_upload_with_a_bad_row_commits_nothing_and_names_the_row(schema, db):
    async with http_app(schema) as (_, client):
        answer = await client.put("/v1/ingest/events?chunk_rows=100",
                                  content=events_csv(300, bad={150}))
    assert answer.status_code == 400
    body = answer.json()
    assert body["committed"] is False
    assert "row 149" in body["error"]["message"]
    assert error_info(body["error"]).metadata["row_index"] == "149"
    assert await db.fetchval("SELECT count(*) FROM events") == 0


async def test_an_independent_upload_rejects_bad_rows_and_writes_the_others(schema, db):
    async with http_app(schema) as (_, client):
        answer = await client.post("/v1/ingest/events?mode=independent&chunk_rows=100",
                                   content=events_csv(300, bad={150, 151}),
                                   headers={"Content-Type": "text/csv"})
    body = answer.json()
    assert answer.status_code == 200 and body["committed"] is True
    assert body["rows_written"] == 298 and body["rows_rejected"] == 2
    assert [(r["row"], r["code"]) for r in body["rejects"]] == [
        (150, "invalid_argument"), (151, "invalid_argument")]
    assert "integer" in body["rejects"][0]["message"]
    assert body["committed_rows"] == 300
    assert await db.fetchval("SELECT count(*) FROM events") == 298


async def test_json_lines_arrow_and_parquet_by_content_type(schema, db):
    jsonl = b"".join(json.dumps({"id": i, "kind": "jsonl", "score": i}).encode() + b"\n"
                     for i in range(1, 101))
    table = pa.table({"id": pa.array(range(101, 301), pa.int64()),
                      "kind": ["arrow"] * 200, "score": pa.array(range(200), pa.int32())})
    arrow = io.BytesIO()
    with pa.ipc.new_stream(arrow, table.schema) as writer:
        writer.write_table(table, max_chunksize=33)
    parquet = io.BytesIO()
    pq.write_table(table.set_column(0, "id", pa.array(range(301, 501), pa.int64())),
                   parquet, row_group_size=70)
    async with http_app(schema) as (_, client):
        answers = [
            await client.put("/v1/ingest/events?chunk_rows=40", content=jsonl,
                             headers={"Content-Type": "application/x-ndjson"}),
            await client.put("/v1/ingest/events?chunk_rows=64", content=arrow.getvalue(),
                             headers={"Content-Type": "application/vnd.apache.arrow.stream"}),
            await client.put("/v1/ingest/events", content=parquet.getvalue(),
                             headers={"Content-Type": "application/vnd.apache.parquet"}),
        ]
    assert [a.json()["rows_written"] for a in answers] == [100, 200, 200]
    assert answers[0].json()["chunks"] == 3 and answers[1].json()["chunks"] == 4
    assert await db.fetchval("SELECT count(*) FROM events") == 500


async def test_a_json_line_that_is_not_json_is_named_by_its_line(schema, db):
    async with http_app(schema) as (_, client):
        answer = await client.put("/v1/ingest/events", content=b'{"id": 1, "kind": "a"}\n{oops\n',
                                  headers={"Content-Type": "application/jsonl"})
    assert answer.status_code == 400
    assert "line 2: not JSON" in answer.json()["error"]["message"]
    assert await db.fetchval("SELECT count(*) FROM events") == 0


async def test_wrong_content_type_unknown_parameter_and_bad_table_are_named(schema):
    async with http_app(schema) as (_, client):
        image = await client.put("/v1/ingest/events", content=b"x",
                                 headers={"Content-Type": "image/png"})
        unknown = await client.put("/v1/ingest/events?modes=atomic", content=b"id\n1\n")
        table = await client.put("/v1/ingest/nope", content=b"id\n1\n")
        method = await client.delete("/v1/ingest/events")
    assert image.status_code == 415
    assert violations(image.json()["error"])[0][0] == "Content-Type"
    assert unknown.status_code == 400 and violations(unknown.json()["error"])[0][0] == "modes"
    assert table.status_code in (400, 404) and "nope" in table.json()["error"]["message"]
    assert method.status_code == 405


async def test_a_body_over_the_limit_is_refused_413_and_nothing_committed(schema, db):
    async with http_app(schema, http_max_body_bytes=10_000) as (_, client):
        answer = await client.put("/v1/ingest/events", content=events_csv(2000))
    assert answer.status_code == 413
    assert "http_max_body_bytes" in answer.json()["error"]["message"]
    assert await db.fetchval("SELECT count(*) FROM events") == 0


async def test_missing_token_and_a_token_whose_scopes_forbid_the_table(schema, db):
    async with http_app(schema, tokens=TOKENS) as (_, client):
        missing = await client.put("/v1/ingest/events", content=events_csv(3))
        reader = await client.put("/v1/ingest/events", content=events_csv(3),
                                  headers=bearer(READER))
        clerk = await client.put("/v1/ingest/events", content=events_csv(3),
                                 headers=bearer(CLERK))
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert reader.status_code == 403 and "events" in reader.json()["error"]["message"]
    assert clerk.status_code == 200 and clerk.json()["rows_written"] == 3
    assert await db.fetchval("SELECT count(*) FROM events") == 3


async def _cut_upload(app: App, path: str, head: bytes, declared: int, db, rows: int) -> None:
    """Send ``head`` of a body declared ``declared`` bytes long, wait until ``rows`` rows are
    committed, then drop the connection."""
    assert app.http is not None
    _reader, writer = await asyncio.open_connection("127.0.0.1", app.http.port)
    writer.write(f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                 f"Batchd-Stream-Id: cut-1\r\nContent-Length: {declared}\r\n\r\n".encode())
    writer.write(head)
    await writer.drain()
    await until(lambda: db.fetchval("SELECT count(*) >= $1 FROM events", rows))
    writer.transport.abort()
    assert app.admission is not None
    await until(lambda: app.admission.in_use["stream"] == 0)  # the server saw the cut


async def test_a_cut_independent_upload_resumes_exactly_once(schema, db):
    body = events_csv(1000)
    path = "/v1/ingest/events?mode=independent&chunk_rows=100"
    async with http_app(schema) as (app, client):
        await _cut_upload(app, path, body[: len(body) // 2], len(body), db, 300)
        committed = await db.fetchval("SELECT count(*) FROM events")
        where = await client.get("/v1/ingest/events", params={"stream_id": "cut-1"})
        assert where.json()["committed_rows"] == committed
        assert committed % 100 == 0  # whole chunks only: nothing acknowledged is lost
        again = await client.put(path, content=body, headers={"Batchd-Stream-Id": "cut-1"})
    summary = again.json()
    assert summary["duplicate_chunks"] == committed // 100
    assert summary["committed_rows"] == 1000
    assert await db.fetchval("SELECT count(*) FROM events") == 1000
    assert await db.fetchval("SELECT count(DISTINCT id) FROM events") == 1000


async def test_a_resume_may_send_only_the_rest_from_the_committed_row(schema, db):
    body = events_csv(500)
    lines = body.splitlines(keepends=True)
    path = "/v1/ingest/events?mode=independent&chunk_rows=100"
    async with http_app(schema) as (_, client):
        first = await client.put(path, content=b"".join(lines[:201]),
                                 headers={"Batchd-Stream-Id": "rest-1"})
        assert first.json()["committed_rows"] == 200
        wrong = await client.put(path, content=lines[0] + b"".join(lines[151:]),
                                 headers={"Batchd-Stream-Id": "rest-1", "Batchd-Offset": "150"})
        rest = await client.put(path, content=lines[0] + b"".join(lines[201:]),
                                headers={"Batchd-Stream-Id": "rest-1", "Batchd-Offset": "200"})
    assert wrong.status_code == 400
    assert error_info(wrong.json()["error"]).reason == "STREAM_OFFSET_MISMATCH"
    assert "row 200" in wrong.json()["error"]["message"]
    assert rest.json()["committed_rows"] == 500
    assert await db.fetchval("SELECT count(DISTINCT id) FROM events") == 500
    assert await db.fetchval("SELECT count(*) FROM events") == 500


async def test_a_cut_atomic_upload_commits_nothing(schema, db):
    body = events_csv(1000)
    async with http_app(schema) as (app, _):
        assert app.http is not None
        _reader, writer = await asyncio.open_connection("127.0.0.1", app.http.port)
        writer.write(f"PUT /v1/ingest/events?chunk_rows=100 HTTP/1.1\r\nHost: x\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
        await writer.drain()
        assert app.admission is not None
        await until(lambda: app.admission.in_use["stream"] == 1)
        writer.transport.abort()
        await until(lambda: app.admission.in_use["stream"] == 0)
    assert await db.fetchval("SELECT count(*) FROM events") == 0


async def test_upsert_options_merge_rows(schema, db):
    await db.execute("INSERT INTO events (id, kind, score) VALUES (1, 'old', 0)")
    async with http_app(schema) as (_, client):
        answer = await client.put("/v1/ingest/events?on_conflict=update",
                                  content=b"id,kind,score\n1,new,5\n2,two,6\n")
    assert answer.status_code == 200, answer.text
    assert await db.fetch("SELECT id, kind FROM events ORDER BY id") == [(1, "new"), (2, "two")]
    assert decimal  # numeric values travel as text in CSV
