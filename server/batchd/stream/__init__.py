"""BatchStream: the session (``session``), decoding and COPY (``copy``), and the ledger of
committed chunks (``ledger``)."""
