"""BANDITROUTE_WEB_PORT=0 means a free port (faust itself rejects 0)."""

from __future__ import annotations

import logging
import socket

import pytest

from banditroute.services import make_app
from banditroute.settings import Settings


def test_web_port_zero_gives_the_worker_a_free_port_and_says_which(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="banditroute.worker"):
        app = make_app(Settings(web_port=0, web_host="127.0.0.1", app_id="webport0"))
    port = app.conf.web_port
    assert 0 < port <= 65535
    assert f"port {port}" in caplog.text
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # it was free (nobody bound it since)
    assert make_app(Settings(web_port=7123, app_id="webport1")).conf.web_port == 7123
    assert make_app(Settings(web_port=0, web_enabled=False, app_id="webport2")).conf.web_port > 0
