"""BatchStream: the session (``session``) reading ahead (``readahead``), one module per
encoding (``encodings``), the COPY sink (``sink``), bad-row isolation (``isolating``), and the
ledger of committed chunks (``ledger``)."""
