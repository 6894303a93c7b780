"""The real `jobqueue` command in subprocesses: database resolution, migrate, db verbs, bad config."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from jobqueue.db import REQUIRED_SCHEMA_VERSION
from tests.support.cli import run_cli as run

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def closed_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    yield port


def test_unreachable_url_is_one_line_naming_the_url(closed_port: int) -> None:
    url = f"postgresql://postgres:hunter2@127.0.0.1:{closed_port}/nothing"
    proc = run("--database-url", url, "migrate")
    assert proc.returncode == 69
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"could not connect to postgresql://postgres:***@127.0.0.1:{closed_port}/nothing" in lines[0]
    assert "(from --database-url)" in lines[0] and "hunter2" not in proc.stderr


def test_url_that_is_not_postgres_is_refused() -> None:
    proc = run("migrate", env={"DATABASE_URL": "redis://127.0.0.1:6379/0"})
    assert proc.returncode == 78
    assert proc.stderr.strip() == (
        "jobqueue: error: DATABASE_URL is not a PostgreSQL URL: scheme 'redis', expected postgresql://"
    )


def test_postgres_url_pointing_at_a_non_postgres_server() -> None:
    """A postgresql:// URL whose port answers but speaks another protocol (a Redis port)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        proc = run("--database-url", f"postgresql://x@127.0.0.1:{port}/db?connect_timeout=3", "db", "status")
        assert proc.returncode == 1
        assert "reachable: False" in proc.stdout
        assert "could not connect to postgresql://x@127.0.0.1" in proc.stdout
    finally:
        listener.close()


def test_unwritable_jobqueue_home(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run("db", "url", env={"JOBQUEUE_HOME": str(blocker / "home")})
    assert proc.returncode == 78
    assert proc.stderr.startswith(f"jobqueue: error: JOBQUEUE_HOME {blocker / 'home'} is not writable")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_missing_schema_is_reported_and_migrate_fixes_it(server: object, tmp_path: Path) -> None:
    from tests.conftest import SERVER

    name = f"jq_cli_{os.getpid()}"
    with psycopg.connect(SERVER.url(SERVER.maintenance_db), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = SERVER.url(name)
    try:
        check = run("--database-url", url, "migrate", "--check")
        assert check.returncode == 1 and "database is behind: at nothing" in check.stderr
        sql = run("migrate", "--sql")
        assert sql.returncode == 0 and "CREATE SCHEMA IF NOT EXISTS jobqueue" in sql.stdout
        assert run("--database-url", url, "migrate", "--check").returncode == 1  # --sql changed nothing
        done = run("--database-url", url, "migrate")
        assert done.returncode == 0 and "migrated" in done.stdout
        again = run("--database-url", url, "migrate", "--check")
        assert again.returncode == 0 and "up to date" in again.stdout
        status = run("--database-url", url, "db", "status", "--json")
        assert status.returncode == 0 and f'"schema_version": {REQUIRED_SCHEMA_VERSION}' in status.stdout
    finally:
        with psycopg.connect(SERVER.url(SERVER.maintenance_db), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_conflicting_flags_are_a_usage_error() -> None:
    proc = run("migrate", "--sql", "--check")
    assert proc.returncode == 2
    assert "--sql and --check cannot be used together" in proc.stderr


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="exercises the embedded server only")
def test_embedded_server_lifecycle_in_a_fresh_home(tmp_path: Path) -> None:
    """No URL at all: the embedded server starts on demand, survives the command, stops on request."""
    env = {"JOBQUEUE_HOME": str(tmp_path / "home")}
    url = run("db", "url", env=env)
    assert url.returncode == 0, url.stderr
    assert url.stdout.startswith("postgresql://postgres@/jobqueue?host=")
    try:
        status = run("db", "status", env=env)
        assert status.returncode == 0 and "running: True" in status.stdout
        demo = run("demo", env=env)
        assert demo.returncode == 0, demo.stderr
        assert "PostgreSQL 18" in demo.stdout and f"jobqueue schema {REQUIRED_SCHEMA_VERSION}" in demo.stdout
    finally:
        stop = run("db", "stop", env=env)
    assert stop.returncode == 0 and "stopped" in stop.stdout
    down = run("db", "status", env=env)
    assert down.returncode == 1 and "running: False" in down.stdout


def with_param(url: str, param: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{param}"


@pytest.mark.parametrize(
    ("url_suffix", "env", "message"),
    [
        ("prepared_statements=nah", {}, "--database-url: prepared_statements: expected on or off, not 'nah'"),
        ("", {"JOBQUEUE_PREPARED_STATEMENTS": "maybe"}, "JOBQUEUE_PREPARED_STATEMENTS: expected on or off, not 'maybe'"),  # noqa: E501
    ],
)
def test_a_bad_prepared_statements_setting_is_refused_and_changes_nothing(
    db: psycopg.Connection[dict[str, object]], db_url: str, url_suffix: str, env: dict[str, str], message: str
) -> None:
    url = with_param(db_url, url_suffix) if url_suffix else db_url
    proc = run("--database-url", url, "enqueue", "t", "{}", env=env)
    assert (proc.returncode, proc.stderr.strip()) == (78, f"jobqueue: error: {message}")
    assert db.execute("SELECT count(*) AS n FROM jobqueue.jobs").fetchone() == {"n": 0}


def test_prepared_statements_off_from_the_command_line_and_the_url(db_url: str) -> None:
    """The URL parameter is taken out before libpq sees it; the flag is accepted before any verb."""
    for args in (("--database-url", with_param(db_url, "prepared_statements=off")),
                 ("--no-prepared-statements", "--database-url", db_url)):  # fmt: skip
        proc = run(*args, "enqueue", "t", "{}")
        assert proc.returncode == 0, proc.stderr
