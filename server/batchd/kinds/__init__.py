"""Operation kinds: one module per kind (insert, read, write, call), one registry."""
