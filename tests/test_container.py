"""The Dockerfile (no Docker engine here: it is parsed, and its health check is run for real)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in lines if line and not line.startswith("#")]


def test_dockerfile_is_multi_stage_slim_and_runs_as_non_root():
    steps = instructions()
    stages = [arg for op, arg in steps if op == "FROM"]
    assert len(stages) == 2 and all("slim" in s for s in stages)
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM"):]
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("ENTRYPOINT", '["batchd"]') in final and ("CMD", '["serve"]') in final


def test_dockerfile_copies_everything_the_build_needs():
    copied = " ".join(arg for op, arg in instructions() if op == "COPY")
    for needed in ("pyproject.toml", "hatch_build.py", "README.md", "protos", "scripts/generate",
                   "server"):
        assert needed in copied
        assert (ROOT / needed).exists()


async def test_healthcheck_command_reports_the_server_serving(app):
    healthcheck = next(arg for op, arg in instructions() if op == "HEALTHCHECK")
    assert '"python", "-m", "batchd.healthcheck"' in healthcheck
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchd.healthcheck", f"127.0.0.1:{app.port}")
    assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_healthcheck_command_fails_when_nothing_listens(unused_tcp_port):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchd.healthcheck", f"127.0.0.1:{unused_tcp_port}",
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1 and b"unhealthy" in err
