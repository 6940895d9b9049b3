"""Unit tests of the pure logic: no PostgreSQL, no server, no network (see conftest.py)."""
