"""The ``batchd`` command.

Its client commands are here; other installed distributions add theirs through the
entry-point group ``batchd.commands`` (the server: ``serve``, ``new-token``).

    batchd exec FILE [--target HOST:PORT] [--json] [--mode atomic|independent] [--validate-only]
    batchd schema [--target HOST:PORT] [--json]
    batchd ingest FILE --table T [--target HOST:PORT] [--format csv|jsonl|parquet|arrow] ...
    batchd serve ... / batchd new-token ...       (with the server: pip install batchd)

Why the command lives in ``batchd-client`` and not in the server: whoever calls a batchd
service from a shell wants ``batchd exec`` and ``batchd ingest`` without installing a server,
and one distribution must own the ``batchd`` script (two that both install it overwrite each
other). The server depends on the client, so ``pip install batchd`` still gives every command.
An entry point is a module (or object) with ``COMMANDS`` (the names it adds),
``add_commands(subparsers)`` and ``run(args) -> int``; it is loaded only when the command runs,
so ``import batchd.client`` never imports the server.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib.metadata import entry_points
from typing import Any, Protocol

from batchd.client import exec_cli, ingest_cli

ENTRY_POINT_GROUP = "batchd.commands"
# What a client-only install answers for the server's commands, instead of argparse's
# "invalid choice".
SERVER_COMMANDS = ("serve", "new-token")


class Commands(Protocol):
    """Subcommands of ``batchd``: the client's modules, and each entry point."""

    COMMANDS: tuple[str, ...]

    def add_commands(self, commands: Any) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def installed() -> list[Commands]:
    """The client's commands, then those of the installed entry points."""
    found: list[Commands] = [exec_cli, ingest_cli]
    found += [point.load() for point in entry_points(group=ENTRY_POINT_GROUP)]
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    groups = installed()
    parser = argparse.ArgumentParser(prog="batchd", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for group in groups:
        group.add_commands(commands)
    known = {name for group in groups for name in group.COMMANDS}
    if argv and argv[0] in SERVER_COMMANDS and argv[0] not in known:
        print(f"batchd {argv[0]}: the server is not installed (pip install batchd); this is "
              "batchd-client, which has exec, schema and ingest", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("BATCHD_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for group in groups:
        if args.command in group.COMMANDS:
            return group.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
