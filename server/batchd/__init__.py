"""batchd: batches of PostgreSQL operations over gRPC.

The extension point for custom handlers is re-exported here::

    from batchd import HandlerContext, handler

``batchd`` is shared by two distributions: this one, the server (``batchd``), and the client
(``batchd-client``: ``batchd.client``, the generated contract ``batchd.v1``, the error
vocabulary ``batchd.vocabulary``, ``batchd.names``), which ships no ``batchd/__init__.py`` and
so, installed alone, makes ``batchd`` a namespace package. Installed together in one
site-packages they share one folder; installed editable from this repository (``server/`` and
``client/`` on ``sys.path``), ``extend_path`` adds the client's folder to this package's path.

The re-export is lazy (PEP 562) because every ``import batchd.client`` runs this module first:
importing the handler API here would load the catalog and asyncpg into every client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The packaging guide's pkgutil spelling, letter for letter: tools that read source without
# importing it (griffe, for the docs' client reference) recognise a namespace package by it.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

__all__ = ["HandlerContext", "handler"]

if TYPE_CHECKING:
    from batchd.kinds.call import HandlerContext, handler


def __getattr__(name: str) -> Any:
    if name in __all__:
        from batchd.kinds import call

        return getattr(call, name)
    raise AttributeError(f"module 'batchd' has no attribute {name!r}")
