"""The overview with its Redis cache configured but down: the page reads the database and
shows nothing amiss (a real `jobqueue serve`, JOBQUEUE_REDIS_URL at a closed loopback port)."""

from __future__ import annotations

import http.client
import socket
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("redis")

from tests.support.web import ApiServer, api_server  # noqa: F401 - the module's server fixture


def _closed_port() -> int:
    with socket.socket() as s:  # bound, never listening, then released: nothing answers there
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: The module's server gets the overview cache at a port where nothing listens.
REDIS_DOWN = f"redis://127.0.0.1:{_closed_port()}/0"
SERVE_ENV = {"JOBQUEUE_REDIS_URL": REDIS_DOWN}


def _get(api: ApiServer, path: str, token: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection(api.host, api.port, timeout=30)
    conn.request("GET", path, headers={"Cookie": f"jobqueue_session={token}"})
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    return resp.status, body


def test_overview_reads_the_database_when_redis_is_down(api_server: ApiServer) -> None:  # noqa: F811
    api: Any = api_server
    token = api.token("admin")
    with api.owner() as conn:
        conn.execute("SELECT jobqueue.enqueue('x.y', '{}', 'cached-or-not')")
    for _ in range(2):  # the second read finds the cache still down
        status, body = _get(api, "/", token)
        assert status == 200
        assert 'data-queue="cached-or-not"' in body
        assert 'data-cache="unavailable"' in body  # configured, tried, and read the database instead
        assert "redis" not in body.lower() and "role=\"alert\"" not in body and "class=\"error\"" not in body
