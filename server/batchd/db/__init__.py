"""PostgreSQL itself: the connection pool and the embedded server."""
