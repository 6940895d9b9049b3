"""The command-line clients against a server that requires tokens."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from batchd.app import App
from tests.conftest import make_settings
from tests.support.tokens import ADMIN, TOKENS

BATCHD = Path(sys.executable).parent / "batchd"


async def batchd(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BATCHD), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**{k: v for k, v in os.environ.items() if k != "BATCHD_TOKEN"}, **(env or {})})
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_cli_commands_send_the_bearer_token(schema, db, tmp_path):
    app = await App.start(make_settings(schema, tokens=TOKENS))
    target = f"127.0.0.1:{app.port}"
    try:
        code, out = await batchd("schema", "--target", target)
        assert code == 1 and "UNAUTHENTICATED" in out
        code, out = await batchd("schema", "--target", target, "--token", ADMIN)
        assert code == 0, out
        code, out = await batchd("schema", "--target", target, env={"BATCHD_TOKEN": ADMIN})
        assert code == 0, out
        data = tmp_path / "e.csv"
        data.write_text("id,kind,score\n1,a,1\n2,b,2\n")
        code, out = await batchd("ingest", str(data), "--table", "events", "--target", target,
                                 "--quiet", env={"BATCHD_TOKEN": ADMIN})
        assert code == 0, out
        assert await db.fetchval("SELECT count(*) FROM events") == 2
    finally:
        await app.stop(grace=1)
