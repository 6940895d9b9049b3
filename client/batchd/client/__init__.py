"""The Python client of batchd: ``AsyncClient``, ``Client``, the ``Batch`` builder, typed
results and errors (``batchd.client.api``), and the command-line clients (``exec_cli``,
``ingest_cli``: install the ``batchd-client[cli]`` extra for their progress bar and YAML)."""

from batchd.client.api import *  # noqa: F403
from batchd.client.api import __all__ as __all__
