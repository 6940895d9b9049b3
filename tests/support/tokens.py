"""The bearer tokens of the authentication tests: one principal per kind of scope."""

from __future__ import annotations

from batchd.config import TokenSettings
from batchd.principals import hash_token

READER, CLERK, CALLER, ADMIN = "reader-secret", "clerk-secret", "caller-secret", "admin-secret"
TOKENS = [
    TokenSettings(sha256=hash_token(READER), principal="reporting", scopes=["read:public.*"]),
    TokenSettings(sha256=hash_token(CLERK), principal="clerk",
                  scopes=["read:public.*", "write:public.customers", "write:public.events"]),
    TokenSettings(sha256=hash_token(CALLER), principal="stock", scopes=["call:reserve_*"]),
    TokenSettings(sha256=hash_token(ADMIN), principal="ops", scopes=["admin"]),
]
