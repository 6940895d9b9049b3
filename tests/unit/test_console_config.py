"""The console's config.json (batchd.http.console.page_config): the gRPC address its copied
grpcurl and Python commands name, from the settings, and nothing else (the file is served to
anyone who reaches the port)."""

from __future__ import annotations

import json

from batchd.config import Settings
from batchd.http.console import page_config


def test_console_config_names_the_grpc_address_a_user_can_dial() -> None:
    assert json.loads(page_config(Settings(host="0.0.0.0", port=50051))) == {
        "grpcTarget": "localhost:50051"}
    assert json.loads(page_config(Settings(host="batchd.internal", port=6000))) == {
        "grpcTarget": "batchd.internal:6000"}


def test_console_config_is_empty_when_the_port_is_chosen_at_bind_time() -> None:
    assert json.loads(page_config(Settings(port=0))) == {}
