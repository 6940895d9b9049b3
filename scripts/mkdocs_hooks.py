"""MkDocs hooks of the docs site (mkdocs.yml ``hooks``).

The Python client reference (docs/reference/client.md) is read by griffe, which reads source
without importing it. The package ``batchd`` lives in two folders: the client's (a namespace
folder, no ``__init__.py``) and the server's, whose ``__init__.py`` extends ``__path__`` to the
client's folder at import time — a namespace package in all but form. griffe recognises only the
pkgutil / pkg_resources spellings of that, so it would take server/batchd for the whole package
and find no ``batchd.client``. Telling it the truth about that one file (a private hook of
griffe's finder; `mkdocs build --strict` in scripts/check fails if it stops working) makes it
merge both folders, as Python does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SERVER_INIT = Path(__file__).resolve().parent.parent / "server" / "batchd" / "__init__.py"


def on_startup(**kwargs: Any) -> None:
    from griffe._internal import finder

    plain = finder._is_pkg_style_namespace

    def is_namespace(init_module: Path) -> bool:
        return init_module.resolve() == SERVER_INIT or plain(init_module)

    finder._is_pkg_style_namespace = is_namespace
