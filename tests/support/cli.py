"""The ``batchd`` command as a user runs it: a subprocess, its exit code and both outputs; the
server it talks to (``target``) and a CSV file for ``batchd ingest`` (``write_csv``)."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BATCHD = Path(sys.executable).parent / "batchd"


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()


def clean_env(**variables: str) -> dict[str, str]:
    """The environment without the caller's BATCHD_* settings, plus ``variables``; no
    /metrics endpoint (its default port may be taken by another test's server)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
    return {**env, "BATCHD_METRICS_PORT": "0", "BATCHD_HTTP_PORT": "0", **variables}


async def batchd(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                 seconds: float = 60) -> Finished:
    """Run ``batchd ARGV`` to its end (killed after ``seconds``: a server that started
    when it should have refused to is a failure, not a hang)."""
    proc = await asyncio.create_subprocess_exec(
        str(BATCHD), *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env if env is not None else clean_env(), cwd=cwd)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), seconds)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(f"batchd {' '.join(argv)} still running after {seconds}s: "
                             f"{out.decode()} {err.decode()}") from None
    return Finished(proc.returncode or 0, out.decode(), err.decode())


def target(app: Any) -> list[str]:
    """The flags that point a client command at ``app`` (a test server in this process)."""
    return ["--target", f"127.0.0.1:{app.port}"]


def write_csv(path: Path, rows: int, bad: dict[int, str] | None = None) -> Path:
    """``rows`` events as CSV (id,kind,score; ``bad``: row number -> the line written instead)."""
    lines = ["id,kind,score"]
    for i in range(rows):
        lines.append((bad or {}).get(i, f'{i},"kind, {i % 3}",{i % 100}'))
    path.write_text("\n".join(lines) + "\n")
    return path
