"""What the compose files' services set: their environments, and the BATCHD_* names there that
are not settings (batchd reads them in cli.py and healthcheck.py, not as settings)."""

from __future__ import annotations

from typing import Any

NOT_SETTINGS = {"BATCHD_CONFIG", "BATCHD_LOG_LEVEL"}


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, written as a mapping or as a list of NAME=value."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}
