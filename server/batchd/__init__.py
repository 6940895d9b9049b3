"""batchd: batches of PostgreSQL operations over gRPC.

The extension point for custom handlers is re-exported here::

    from batchd import HandlerContext, handler
"""

from batchd.kinds.call import HandlerContext, handler

__all__ = ["HandlerContext", "handler"]
