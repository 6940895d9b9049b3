"""The gRPC edge, the one layer that knows the wire: the servicer, request decoding, the four
RPC shapes, interceptors (metrics, authentication), TLS, admission, per-call observation,
reflection, tracing. Requests enter here and go down as plain values (a principal, a plan, a
stream session); they leave as responses or ``google.rpc.Status``."""
