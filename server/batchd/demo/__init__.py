"""The demo schema and handlers the embedded database starts with, so grpcurl works at once."""
