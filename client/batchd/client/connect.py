"""How the command-line clients reach a server: address, bearer token, TLS and mTLS.

    --target HOST:PORT     default 127.0.0.1:50051
    --token TOKEN          or the BATCHD_TOKEN environment variable (preferred: a flag shows
                           in the process list); sent as "authorization: Bearer TOKEN"
    --ca-file PEM          use TLS, trusting this CA (the server's certificate's issuer)
    --cert-file/--key-file PEM   client certificate for mTLS
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

DEFAULT_TARGET = "127.0.0.1:50051"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default=DEFAULT_TARGET,
                        help=f"server address (default {DEFAULT_TARGET})")
    parser.add_argument("--token", default=None,
                        help="bearer token (default: the BATCHD_TOKEN environment variable)")
    parser.add_argument("--ca-file", type=Path, help="TLS: the CA to trust (PEM)")
    parser.add_argument("--cert-file", type=Path, help="mTLS: client certificate (PEM)")
    parser.add_argument("--key-file", type=Path, help="mTLS: client private key (PEM)")


@dataclass(frozen=True)
class Connection:
    target: str
    metadata: tuple[tuple[str, str], ...]
    credentials: grpc.ChannelCredentials | None


def from_arguments(args: argparse.Namespace) -> Connection:
    token = args.token or os.environ.get("BATCHD_TOKEN")
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    credentials = None
    if args.ca_file or args.cert_file:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=args.ca_file.read_bytes() if args.ca_file else None,
            private_key=args.key_file.read_bytes() if args.key_file else None,
            certificate_chain=args.cert_file.read_bytes() if args.cert_file else None)
    return Connection(args.target, metadata, credentials)


def aio_channel(connection: Connection) -> grpc.aio.Channel:
    options = [("grpc.max_receive_message_length", 64 << 20),
               ("grpc.max_send_message_length", 64 << 20)]
    if connection.credentials is not None:
        return grpc.aio.secure_channel(connection.target, connection.credentials, options)
    return grpc.aio.insecure_channel(connection.target, options)
