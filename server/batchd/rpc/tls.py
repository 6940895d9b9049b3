"""TLS for the gRPC server: the server's certificate, and with a client CA, mTLS.

The files are read once, at start-up (``App.start``), before PostgreSQL is touched, so that a
missing or unreadable file is a one-line start-up error (``startup.tls_file_error``). A client
certificate's subject CN names the principal when no bearer token is sent (batchd.rpc.auth).
"""

from __future__ import annotations

import grpc

from batchd.config import Settings


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the PEM files, or None for plaintext. With ``tls_client_ca_file``
    the server requires a client certificate signed by that CA (mTLS)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    client_ca = (settings.tls_client_ca_file.read_bytes()
                 if settings.tls_client_ca_file is not None else None)
    return grpc.ssl_server_credentials(
        ((settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes()),),
        root_certificates=client_ca, require_client_auth=client_ca is not None)
