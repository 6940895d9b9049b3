"""The gRPC edge: the servicer, interceptors, admission, per-call observation, reflection,
tracing. Requests enter here and leave as responses or ``google.rpc.Status``."""
