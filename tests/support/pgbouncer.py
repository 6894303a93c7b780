"""A real PgBouncer on a loopback port in front of the test server (Debian's ``pgbouncer``).

``pgbouncer_binary()`` finds the binary, installing the Debian package with apt-get when it
is missing and this process is root (a fresh CI machine has none); when it cannot be had,
it raises ``PgBouncerUnavailable`` with the exact reason, and the tests skip with it.

``PgBouncer(upstream_url)`` writes its own config and auth file in a temporary directory,
starts ``pgbouncer`` in the foreground on a free 127.0.0.1 port (as an unprivileged user
when we are root: PgBouncer refuses to run as root), and forwards every database name to
the server of ``upstream_url`` (TCP or a Unix socket). ``url(dbname)`` is a URL through it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict

from tests.support.apt import AptUnavailable, apt_install

START_TIMEOUT_S = 20.0
_SEARCH = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer")


class PgBouncerUnavailable(Exception):
    """PgBouncer cannot be had here; the message says exactly why."""


_found: str | None = None
_failure: str | None = None


def pgbouncer_binary() -> str:
    """The pgbouncer binary, installed with apt-get when missing (once per process)."""
    global _found, _failure
    if _found is not None:
        return _found
    if _failure is not None:
        raise PgBouncerUnavailable(_failure)
    try:
        _found = _locate() or _install()
    except PgBouncerUnavailable as exc:
        _failure = str(exc)
        raise
    return _found


def _locate() -> str | None:
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((path for path in _SEARCH if os.access(path, os.X_OK)), None)


def _install() -> str:
    try:
        apt_install(["pgbouncer"], "pgbouncer")
    except AptUnavailable as exc:
        raise PgBouncerUnavailable(str(exc)) from None
    found = _locate()
    if found is None:
        raise PgBouncerUnavailable(f"`apt-get install pgbouncer` succeeded but none of {_SEARCH} is there")
    return found


def version(binary: str) -> str:
    proc = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return (proc.stdout or proc.stderr).strip().splitlines()[0] if (proc.stdout or proc.stderr) else "unknown"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgBouncer:
    """One pgbouncer process; ``close()`` stops it and removes its directory."""

    def __init__(self, upstream_url: str, *, pool_mode: str = "transaction", pool_size: int = 4) -> None:
        self.binary = pgbouncer_binary()
        params = conninfo_to_dict(upstream_url)
        self.host = str(params.get("host") or "127.0.0.1")
        self.upstream_port = int(params.get("port") or 5432)
        self.user = str(params.get("user") or "postgres")
        password = params.get("password")
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="jq-pgbouncer-"))
        self.dir.chmod(0o755)  # readable by the unprivileged user pgbouncer runs as
        server = f"host={self.host} port={self.upstream_port} user={self.user}"
        if password:
            server += f" password={password}"
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = {server}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'userlist.txt'}\n"
            f"pool_mode = {pool_mode}\n"
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 500\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            "server_login_retry = 1\n"
        )
        (self.dir / "userlist.txt").write_text(f'"{self.user}" ""\n')
        for path in self.dir.iterdir():
            path.chmod(0o644)
        command = [self.binary]
        if os.geteuid() == 0:
            command += ["-u", self._run_as()]
        command.append(str(ini))
        self.log_path = self.dir / "pgbouncer.log"
        self._log: IO[str] = open(self.log_path, "w")  # noqa: SIM115 - closed by close()
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, text=True)
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _run_as(self) -> str:
        """Root: the owner of the server's socket directory (so it can reach the socket), else nobody."""
        if self.host.startswith("/"):
            owner = pwd.getpwuid(os.stat(self.host).st_uid).pw_name
            if owner != "root":
                return owner
        return "nobody"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise PgBouncerUnavailable(f"pgbouncer exited with {self.proc.returncode}: {self.log()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            if time.monotonic() > deadline:
                log = self.log()[-2000:]
                raise PgBouncerUnavailable(f"pgbouncer did not listen within {START_TIMEOUT_S:g} s: {log}")
            time.sleep(0.05)

    def url(self, dbname: str, **params: str) -> str:
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
        base = f"postgresql://{quote(self.user, safe='')}@127.0.0.1:{self.port}/{dbname}"
        return f"{base}?{query}" if query else base

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
