"""pg_cron drives reconcile for real: no worker, no Python process calling reconcile.

A private PostgreSQL 15 (Debian's binaries in /usr/lib/postgresql/15/bin) is initialised in
a temporary directory with shared_preload_libraries = 'pg_cron', its own port and socket
directory, run as an unprivileged OS user when the test runs as root. The jobqueue schema is
migrated into it, a per-second schedule is created and a job's lease is made to expire; then
`cron.schedule` runs `SELECT jobqueue.reconcile()` (every minute: Debian bookworm ships pg_cron
1.4, whose finest grain is a minute). The test waits for pg_cron's first run and checks that
the schedule fired (jobs with run_at = their ticks) and the lease was reclaimed.

Debian's postgresql-15-cron package is installed when missing (as root, with apt-get); when it
cannot be had the test skips and says exactly why.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from jobqueue import migrations
from jobqueue.config import DatabaseTarget

pytestmark = pytest.mark.timeout(400)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_CRON_SO = Path("/usr/lib/postgresql/15/lib/pg_cron.so")
PACKAGES = ["postgresql-15", "postgresql-15-cron"]
#: pg_cron 1.4 runs jobs at minute boundaries: the first run comes within 60 s (+ slack).
FIRST_RUN_TIMEOUT_S = 150


def _apt_install() -> str | None:
    """Install the packages; None on success, else why not."""
    if os.geteuid() != 0:
        return f"{' '.join(PACKAGES)} not installed and not root (cannot apt-get install)"
    if shutil.which("apt-get") is None:
        return f"{' '.join(PACKAGES)} not installed and no apt-get on this machine"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["install", "-y", "--no-install-recommends", *PACKAGES], None):
        if args is None:  # the package lists may be stale: update once, then try again
            update = subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "update"],
                                    capture_output=True, text=True, env=env, check=False)
            if update.returncode != 0:
                return f"apt-get update failed: {update.stderr.strip()[-300:]}"
            args = ["install", "-y", "--no-install-recommends", *PACKAGES]
        done = subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=600", *args],
                              capture_output=True, text=True, env=env, check=False)
        if done.returncode == 0 and PG_CRON_SO.exists():
            return None
    return f"apt-get install {' '.join(PACKAGES)} failed: {done.stderr.strip()[-300:]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as(user: str | None, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False, user=user, timeout=120)


@pytest.fixture
def pg15_with_pg_cron() -> Iterator[dict[str, Any]]:
    if not (PG_BIN / "initdb").exists() or not PG_CRON_SO.exists():
        why = _apt_install()
        if why is not None:
            pytest.skip(f"pg_cron test: {why}")
    user: str | None = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        for candidate in ("postgres", "nobody"):
            try:
                pwd.getpwnam(candidate)
                user = candidate
                break
            except KeyError:
                continue
        if user is None:
            pytest.skip("pg_cron test: running as root and no unprivileged user (postgres, nobody) to run PostgreSQL")
    base = Path(tempfile.mkdtemp(prefix="jq-pgcron-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if user is not None:
        info = pwd.getpwnam(user)
        for path in (base, sock):
            os.chown(path, info.pw_uid, info.pw_gid)
    port = _free_port()
    init = _run_as(user, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                   "--no-sync")
    assert init.returncode == 0, init.stderr
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"port = {port}\nlisten_addresses = ''\nunix_socket_directories = '{sock}'\n"
            "shared_preload_libraries = 'pg_cron'\ncron.database_name = 'jq'\n"
            "cron.use_background_workers = on\nmax_worker_processes = 16\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\ntimezone = 'UTC'\n"
        )
    started = _run_as(user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60",
                      "start")
    assert started.returncode == 0, started.stderr + (base / "log").read_text()
    try:
        admin = f"postgresql://postgres@/postgres?host={sock}&port={port}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE jq")
        yield {"url": f"postgresql://postgres@/jq?host={sock}&port={port}", "log": base / "log"}
    finally:
        _run_as(user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


def test_pg_cron_alone_fires_schedules_and_reclaims_leases(pg15_with_pg_cron: dict[str, Any]) -> None:
    url = pg15_with_pg_cron["url"]
    migrations.upgrade(DatabaseTarget(url, "pg_cron test"))
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as db:
        assert db.execute("SHOW server_version_num").fetchone()["server_version_num"].startswith("15")  # type: ignore[index]
        db.execute("CREATE EXTENSION pg_cron")
        db.execute("""SELECT jobqueue.set_schedule(name => 'every-second', cron => '* * * * * *',
                                                   job => '{"type": "cron.ping"}')""")
        # a job whose worker vanished: claimed, then its lease ran out
        job_id = db.execute("SELECT jobqueue.enqueue('lost.work') AS id").fetchone()["id"]  # type: ignore[index]
        claimed = db.execute("SELECT * FROM jobqueue.claim(ARRAY['default'], 'gone-worker')").fetchall()
        assert [c["id"] for c in claimed] == [job_id]
        db.execute("UPDATE jobqueue.job SET lease_expires_at = now() - interval '1 second' WHERE id = %s", [job_id])
        assert db.execute("SELECT count(*) AS n FROM jobqueue.jobs WHERE type = 'cron.ping'").fetchone()["n"] == 0  # type: ignore[index]

        db.execute("SELECT cron.schedule('jobqueue-reconcile', '* * * * *', 'SELECT jobqueue.reconcile()')")
        deadline = time.monotonic() + FIRST_RUN_TIMEOUT_S
        run: dict[str, Any] | None = None
        while time.monotonic() < deadline:  # waiting on an outside event: pg_cron's first run
            run = db.execute(
                "SELECT status, return_message FROM cron.job_run_details WHERE status IN ('succeeded', 'failed') "
                "ORDER BY start_time LIMIT 1"
            ).fetchone()
            if run is not None:
                break
            time.sleep(1)
        log_tail = pg15_with_pg_cron["log"].read_text()[-2000:] if run is None else ""
        assert run is not None, f"pg_cron never ran reconcile; server log:\n{log_tail}"
        assert run["status"] == "succeeded", run["return_message"]

        ticks = db.execute(
            "SELECT run_at, created_at, (metadata->>'tick')::timestamptz AS tick FROM jobqueue.jobs "
            "WHERE type = 'cron.ping' ORDER BY tick").fetchall()
        assert len(ticks) >= 55  # one per second of the 60 s lookahead
        # Ahead of its tick, a job runs at the tick; a tick already past when pg_cron fired it
        # (pg_cron 1.4 runs at whole minutes) runs at once: a past run_at means now.
        assert all(t["run_at"] == max(t["tick"], t["created_at"]) for t in ticks)
        assert sum(t["run_at"] == t["tick"] for t in ticks) >= 55
        lost = db.execute("SELECT state::text, errors FROM jobqueue.jobs WHERE id = %s", [job_id]).fetchone()
        assert lost is not None and lost["state"] == "retrying"
        assert lost["errors"][-1]["source"] == "reconcile" and lost["errors"][-1]["error_class"] == "timeout"
        view = db.execute("SELECT last_fire_at, last_job_state FROM jobqueue.schedules").fetchone()
        assert view is not None and view["last_fire_at"] == ticks[-1]["tick"] and view["last_job_state"] == "pending"
