"""The house's layers, read from the code's own imports: every module imports only modules of
its own layer or of a layer below it, no circle of imports runs anywhere,
and below the gRPC edge nothing but the error vocabulary knows gRPC.

The layers, from the top down (``LAYERS``): a request enters at the edge (``rpc/``), which
hands plain values down to the work (``stream/``, ``batch/``), which asks the domain (scopes,
operation kinds, values, the catalog) and reaches PostgreSQL through ``db/``; what every
layer uses (settings, errors, names, codecs) lies at the bottom. A module placed in no layer
fails ``test_every_module_has_a_layer``: put it where its imports and its callers say.

Imports are read with ``ast``, all of them: inside functions and under ``TYPE_CHECKING`` too,
since a lazy import that runs back up is still one. ``from batchd.rpc import decode`` is an
import of the module ``batchd.rpc.decode``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

# (layer, its modules and packages, what it is), from the top of the house down.
LAYERS: list[tuple[str, tuple[str, ...], str]] = [
    ("command line", ("batchd", "batchd.__main__", "batchd.cli", "batchd.healthcheck"),
     "`batchd serve|exec|ingest|schema`, the container's health check, the package's face"),
    ("wiring", ("batchd.app",), "start and stop: pool, catalog, server, background tasks"),
    ("edge", ("batchd.rpc", "batchd.http"),
     "the edges: gRPC (servicer, decoding, interceptors, authentication, TLS, admission) and "
     "HTTP beside it (Connect, the curl ingest, the console), one behaviour behind both"),
    ("stream", ("batchd.stream",), "BatchStream: sessions, decoding, COPY, the ledger"),
    ("batch", ("batchd.batch",), "BatchExecute: plan, run, answer, idempotency"),
    ("services", ("batchd.describe", "batchd.reload", "batchd.demo"),
     "GetSchema's answer, the live catalog, the demo's handlers"),
    ("authorization", ("batchd.principals", "batchd.grants"),
     "who may do what: principals and their scopes, a database role's grants"),
    ("kinds", ("batchd.kinds",), "operation kinds: one module each, one registry"),
    ("values", ("batchd.values", "batchd.coercion", "batchd.rendering"),
     "values both ways: from protobuf, coerced for PostgreSQL; PostgreSQL -> protobuf"),
    ("catalog", ("batchd.catalog", "batchd.introspection"),
     "the tables and functions PostgreSQL exposes: looked up by name; read from PostgreSQL"),
    ("database", ("batchd.db",), "the pool, the embedded PostgreSQL"),
    ("client", ("batchd.client",),
     "the other side of the wire: it shares only the contract and the error vocabulary"),
    ("settings", ("batchd.config", "batchd.metrics"), "settings read once; metrics"),
    ("ground", ("batchd.errors", "batchd.vocabulary", "batchd.names", "batchd.pgtext",
                "batchd.pgtypes", "batchd.logs", "batchd.offload", "batchd.background",
                "batchd.startup", "batchd.v1"),
     "errors and their codes (the vocabulary shared with the client), enum names, "
     "PostgreSQL's text and codecs, logging, worker "
     "threads, background tasks, start-up failures, the generated contract"),
]

# Folders whose modules may import one another in a circle, and why.
CIRCLES_ALLOWED: dict[str, str] = {}

# Below the edge, only these may import gRPC: the one mapping of errors to status codes (the
# vocabulary the client shares, and the server's errors on it), and the client (which is a gRPC
# client).
GRPC_ALLOWED = ("batchd.errors", "batchd.vocabulary", "batchd.client")
GRPC_PACKAGES = ("grpc", "grpc_status", "grpc_health", "grpc_reflection")

GENERATED = "batchd.v1"  # made by scripts/generate, not read here


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _package_dirs() -> list[Path]:
    """Where the package's modules lie (more than one folder if it is ever split into
    distributions sharing the ``batchd`` name)."""
    import batchd  # its __path__ is whole once it ran (the server's extends it to the client's)

    return [Path(location) for location in batchd.__path__]


def _modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its ``__init__``)."""
    found = {}
    for root in _package_dirs():
        for path in sorted(root.rglob("*.py")):
            parts = ("batchd", *path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join(parts)
            if not _within(name, GENERATED):
                found[name] = path
    return found


MODULES = _modules()


def _layer_of(name: str) -> int | None:
    """The index of ``name``'s layer: the one with the longest prefix of it."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes, _) in enumerate(LAYERS):
        for prefix in prefixes:
            if _within(name, prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return best[1] if best is not None else None


def _target(name: str) -> str:
    """The module an imported name lives in: the longest module of the package it starts
    with (``batchd.v1.batch_pb2``: the generated package)."""
    if _within(name, GENERATED):
        return GENERATED
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def _imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported name, line) for every import in the module, wherever it stands."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                child = f"{base}.{alias.name}"
                yield (child if child in MODULES or _within(child, GENERATED) else base,
                       node.lineno)


def _arrows() -> Iterator[tuple[str, str, int]]:
    """(importer, imported module of the package, line)."""
    for name, path in MODULES.items():
        for imported, line in _imports(name, path):
            if _within(imported, "batchd"):
                yield name, _target(imported), line


def test_every_module_has_a_layer() -> None:
    assert {"batchd.app", "batchd.rpc.service", "batchd.db.pool"} <= MODULES.keys()  # found
    homeless = sorted(name for name in MODULES if _layer_of(name) is None)
    assert not homeless, f"modules in no layer (add them to LAYERS): {homeless}"


def test_every_import_points_down_the_layers() -> None:
    upward = []
    for importer, imported, line in _arrows():
        here, there = _layer_of(importer), _layer_of(imported)
        if here is not None and there is not None and there < here:
            upward.append(f"{importer}:{line} ({LAYERS[here][0]}) imports {imported} "
                          f"({LAYERS[there][0]}), a layer above it")
    assert not upward, "imports that run back up the house:\n" + "\n".join(upward)


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_import_circle_outside_stream() -> None:
    """A package's ``__init__`` that hands on the names of its own modules (errors/) is the
    package's face: that arrow is not counted toward a circle."""
    graph: dict[str, set[str]] = {}
    for importer, imported, _ in _arrows():
        face = MODULES[importer].name == "__init__.py" and imported.rpartition(".")[0] == importer
        if imported != importer and not face:
            graph.setdefault(importer, set()).add(imported)
    unexpected = [circle for circle in _circles(graph)
                  if not any(all(_within(m, folder) for m in circle)
                             for folder in CIRCLES_ALLOWED)]
    assert not unexpected, f"import circles: {unexpected}"


def test_below_the_edge_nothing_but_the_error_vocabulary_knows_grpc() -> None:
    edge = next(i for i, (layer, _, _) in enumerate(LAYERS) if layer == "edge")
    knowing = []
    for name, path in MODULES.items():
        layer = _layer_of(name)
        if layer is None or layer <= edge or any(_within(name, p) for p in GRPC_ALLOWED):
            continue
        for imported, line in _imports(name, path):
            if imported.split(".")[0] in GRPC_PACKAGES:
                knowing.append(f"{name}:{line} imports {imported}")
    assert not knowing, "the domain imports gRPC:\n" + "\n".join(knowing)


def test_an_import_back_up_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself: a stream module that imports the edge fails it."""
    path = tmp_path / "probe.py"
    path.write_text("from batchd.rpc.admission import Admission\n")
    monkeypatch.setitem(MODULES, "batchd.stream.probe", path)
    with pytest.raises(AssertionError, match=r"batchd.stream.probe:1 \(stream\) imports "
                                             r"batchd.rpc.admission \(edge\)"):
        test_every_import_points_down_the_layers()
