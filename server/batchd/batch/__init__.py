"""One BatchExecute request: planned whole (``plan``), run (``executor``), answered, and, with
a request id, stored for replay (``idempotency``)."""
