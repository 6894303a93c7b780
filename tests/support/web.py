"""A real ``jobqueue serve`` (uvicorn in a subprocess on loopback) on a real database whose
jobqueue schema is owned by a plain role, so that row-level security binds (as in
production multi-tenant installs), and an HTTP client for it (the standard library's).

The server logs in as ``jobqueue_web`` (made LOGIN here; the schema creates it NOLOGIN).
Tests create tokens with the SQL API as the owner (an unmapped admin), exactly as
``jobqueue tokens create`` does.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from jobqueue import migrations
from jobqueue.config import DatabaseTarget
from tests.support.cli import cli_env

ROOT = Path(__file__).resolve().parents[2]
#: Seconds the server may take to answer /healthz after start.
START_TIMEOUT_S = 60.0


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


@dataclass
class ApiServer:
    """One uvicorn serving the app, and the database behind it."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    owner_url: str
    su_url: str
    log_path: Path
    #: The URL `jobqueue serve` logs in with (as jobqueue_web).
    web_url: str = ""
    tokens: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        token: str | None = None,
        *,
        json_body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        hdrs = dict(headers or {})
        body = raw
        if json_body is not None:
            body = json.dumps(json_body).encode()
        if body is not None:
            hdrs.setdefault("Content-Type", "application/json")
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def owner(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.owner_url, autocommit=True, row_factory=dict_row)

    def superuser(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.su_url, autocommit=True, row_factory=dict_row)

    def token(self, role: str, tenant: str | None = None, expires: str | None = None, name: str | None = None) -> str:
        with self.owner() as conn:
            row = conn.execute(
                "SELECT * FROM jobqueue.create_token(%s, %s, %s::interval, %s)", (role, tenant, expires, name)
            ).fetchone()
        assert row is not None
        return str(row["token"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_serve(
    web_url: str, args: list[str], log_path: Path, env: dict[str, str], *, owner_url: str, su_url: str
) -> ApiServer:
    """`jobqueue serve ARGS` logging in with ``web_url``, on a free port, once /healthz answers."""
    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobqueue", "--database-url", web_url,
             "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
        )  # fmt: skip
    api = ApiServer("127.0.0.1", port, proc, owner_url, su_url, log_path, web_url)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"jobqueue serve exited with {proc.returncode}:\n{api.log()}")
        try:
            if api.request("GET", "/healthz").status == 200:
                return api
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_serve(api)
            raise AssertionError(f"jobqueue serve did not answer within {START_TIMEOUT_S} s:\n{api.log()}")
        time.sleep(0.1)


def stop_serve(api: ApiServer) -> None:
    api.process.terminate()
    try:
        api.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        api.process.kill()
        api.process.wait()


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


@pytest.fixture(scope="module")
def api_server(
    server: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ApiServer]:
    """A module's server: database owned by a plain role, uvicorn started by `jobqueue serve`."""
    suffix = uuid.uuid4().hex[:8]
    owner, dbname, scratch = f"jq_web_owner_{suffix}", f"jq_web_{suffix}", f"jq_web_roles_{suffix}"
    with psycopg.connect(server.url(server.maintenance_db), autocommit=True) as su:
        # The roles are cluster-wide: a superuser's migration creates them (and jobqueue_web's
        # memberships) once; the plain owner below cannot create roles.
        su.execute(sql.SQL("CREATE DATABASE {}").format(_ident(scratch)))
        migrations.upgrade(DatabaseTarget(server.url(scratch), "web roles"))
        su.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(_ident(scratch)))
        su.execute("ALTER ROLE jobqueue_web LOGIN")
        su.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS").format(_ident(owner)))
        su.execute(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(_ident(dbname), _ident(owner)))
    migrations.upgrade(DatabaseTarget(server.url(dbname, user=owner), "web test database"))
    log_path = tmp_path_factory.mktemp("web") / "serve.log"
    # a test module may set SERVE_ENV (e.g. JOBQUEUE_REDIS_URL) for its server, and SERVE_ARGS
    # (the access log is on unless a module says otherwise: tests read it)
    env = cli_env({"PYTHONUNBUFFERED": "1", **getattr(request.module, "SERVE_ENV", {})})
    args = list(getattr(request.module, "SERVE_ARGS", ["--access-log"]))
    web_url = server.url(dbname, user="jobqueue_web")
    api = start_serve(web_url, args, log_path, env, owner_url=server.url(dbname, user=owner), su_url=server.url(dbname))
    try:
        yield api
    finally:
        stop_serve(api)
        with psycopg.connect(server.url(server.maintenance_db), autocommit=True) as su:
            su.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(dbname)))
            su.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(_ident(owner)))
