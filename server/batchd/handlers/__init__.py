"""The operation kinds: planning and running insert, get, query, update, delete and call."""
