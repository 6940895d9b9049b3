"""The Python client of batchd: ``AsyncClient``, ``Client``, the ``Batch`` builder, typed
results and errors (``batchd.client.api``), and the ``batchd`` command (``cli``: ``exec_cli``,
``ingest_cli``; install the ``batchd-client[cli]`` extra for their progress bar and YAML).

Part of the ``batchd-client`` distribution (client/pyproject.toml says why the layout), which
imports nothing of the server: what it shares with it is the generated contract
(``batchd.v1``) and the error vocabulary (``batchd.vocabulary``)."""

from batchd.client.api import *  # noqa: F403
from batchd.client.api import __all__ as __all__
