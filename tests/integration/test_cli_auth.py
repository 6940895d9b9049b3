"""The command-line clients against a server that requires tokens."""

from __future__ import annotations

from batchd.app import App
from tests.support import cli
from tests.support.servers import make_settings
from tests.support.tokens import ADMIN, TOKENS


async def batchd(*args: str, **env: str) -> tuple[int, str]:
    """``batchd ARGS`` without the caller's BATCHD_* settings (BATCHD_TOKEN among them), plus
    ``env``: its exit code, and both outputs together (for the assertion's message)."""
    done = await cli.batchd(*args, env=cli.clean_env(**env))
    return done.code, done.stdout + done.stderr


async def test_cli_commands_send_the_bearer_token(schema, db, tmp_path):
    app = await App.start(make_settings(schema, tokens=TOKENS))
    target = f"127.0.0.1:{app.port}"
    try:
        code, out = await batchd("schema", "--target", target)
        assert code == 1 and "UNAUTHENTICATED" in out
        code, out = await batchd("schema", "--target", target, "--token", ADMIN)
        assert code == 0, out
        code, out = await batchd("schema", "--target", target, BATCHD_TOKEN=ADMIN)
        assert code == 0, out
        data = tmp_path / "e.csv"
        data.write_text("id,kind,score\n1,a,1\n2,b,2\n")
        code, out = await batchd("ingest", str(data), "--table", "events", "--target", target,
                                 "--quiet", BATCHD_TOKEN=ADMIN)
        assert code == 0, out
        assert await db.fetchval("SELECT count(*) FROM events") == 2
    finally:
        await app.stop(grace=1)
