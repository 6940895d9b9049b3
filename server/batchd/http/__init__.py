"""The HTTP edge: the same BatchService over Connect, gRPC-Web and gRPC (``connect``), the curl
ingest (``ingest``), the browser console (``console``), served beside the grpc.aio server by one
ASGI server (``server``). Everything a call does runs in batchd.rpc.calls, shared with gRPC."""
