"""The Dockerfile and compose.yaml (no Docker engine here: they are parsed, and the image's
health check is run for real)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from batchd.config import Settings
from tests.support.compose import NOT_SETTINGS, environment

ROOT = Path(__file__).parents[2]


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
    # client/: batchd-client, whose build (client/hatch_build.py) generates the contract.
    for needed in ("pyproject.toml", "README.md", "protos", "scripts/generate", "client",
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


# --- compose.yaml ------------------------------------------------------------------------------

def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def published(service: dict[str, Any]) -> dict[int, int]:
    """Container port -> host port, from "HOST:CONTAINER" strings or long-form mappings."""
    ports = {}
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports[int(port["target"])] = int(port["published"])
        else:
            host, _, container = str(port).rpartition(":")
            ports[int(container.split("/")[0])] = int(host.rpartition(":")[2])
    return ports


def test_compose_has_postgres_and_batchd_built_from_the_dockerfile():
    services = compose()["services"]
    assert set(services) >= {"postgres", "batchd"}
    assert services["postgres"]["image"] == "postgres:18"
    build = services["batchd"]["build"]
    context, dockerfile = ((build, "Dockerfile") if isinstance(build, str)
                           else (build["context"], build.get("dockerfile", "Dockerfile")))
    assert (ROOT / context).resolve() == ROOT.resolve()
    assert (ROOT / context / dockerfile).is_file()


def test_compose_batchd_reaches_the_postgres_service_once_it_is_healthy():
    services = compose()["services"]
    postgres, batchd = services["postgres"], services["batchd"]
    db = environment(postgres)
    dsn = urlsplit(environment(batchd)["BATCHD_DSN"])
    assert dsn.scheme in ("postgresql", "postgres")
    assert dsn.hostname == "postgres" and (dsn.port or 5432) == 5432
    assert dsn.username == db.get("POSTGRES_USER", "postgres")
    assert dsn.password == db["POSTGRES_PASSWORD"]
    assert dsn.path.lstrip("/") == db.get("POSTGRES_DB", dsn.username)
    assert batchd["depends_on"]["postgres"]["condition"] == "service_healthy"
    test = postgres["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))


def test_compose_postgres_keeps_its_data_in_a_named_volume_where_postgres_18_puts_it():
    config = compose()
    mounts = [str(m).split(":") for m in config["services"]["postgres"]["volumes"]]
    # 18+ images: VOLUME /var/lib/postgresql (PGDATA 18/docker below it); a mount at
    # /var/lib/postgresql/data makes the container refuse to start.
    assert [(name, path) for name, path, *_ in mounts
            if path == "/var/lib/postgresql" and name in (config.get("volumes") or {})]


def test_compose_publishes_grpc_and_metrics_on_the_ports_batchd_listens_on():
    batchd = compose()["services"]["batchd"]
    env = environment(batchd)
    assert env["BATCHD_HOST"] == "0.0.0.0" and env["BATCHD_METRICS_HOST"] == "0.0.0.0"
    ports = published(batchd)
    assert ports.get(int(env.get("BATCHD_PORT", "50051"))) == 50051
    assert ports.get(int(env.get("BATCHD_METRICS_PORT", "9464"))) == 9464
    assert ports.get(int(env.get("BATCHD_HTTP_PORT", "8080"))) == 8080


def test_compose_batchd_variables_are_real_settings(monkeypatch: pytest.MonkeyPatch):
    env = environment(compose()["services"]["batchd"])
    settings = {f"BATCHD_{name.upper()}" for name in Settings.model_fields}
    unknown = {name for name in env if name.startswith("BATCHD_")} - settings - NOT_SETTINGS
    assert not unknown, f"not batchd settings: {sorted(unknown)}"
    # ...and they parse: the server would start with exactly these values.
    for name in list(os.environ):
        if name.startswith("BATCHD_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    loaded = Settings()
    assert loaded.dsn == env["BATCHD_DSN"]
    assert (loaded.host, loaded.metrics_host) == ("0.0.0.0", "0.0.0.0")
    assert (loaded.port, loaded.metrics_port) == (50051, 9464)
