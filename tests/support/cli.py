"""The real `jobqueue` command in a subprocess, with a clean environment: one runner for all tests.

Two runners had drifted: one cleared every ``JOBQUEUE_*`` variable, the other only
``DATABASE_URL``, ``JOBQUEUE_DATABASE_URL`` and ``XDG_RUNTIME_DIR``. Both halves matter:
every CLI flag reads a ``JOBQUEUE_*`` variable (so a stray one in the developer's shell
changes what a test runs), ``DATABASE_URL`` picks the database, and CI runs with
``XDG_RUNTIME_DIR`` unset. ``JOBQUEUE_HOME`` is kept: it says where the test session's
embedded server lives.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Cleared besides every JOBQUEUE_* variable but JOBQUEUE_HOME. COLUMNS too: the CLI's tables
#: are as wide as COLUMNS says, else PIPE_WIDTH into a pipe; pytest-xdist's workers set it to
#: 80 where a plain pytest run does not, so the same test saw two widths. A test that wants a
#: width passes it in ``env``.
CLEARED = ("DATABASE_URL", "XDG_RUNTIME_DIR", "COLUMNS")
KEPT = ("JOBQUEUE_HOME",)


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without what could steer the CLI, plus ``extra``."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in CLEARED and (not k.startswith("JOBQUEUE_") or k in KEPT)
    }
    return {**base, **(extra or {})}


def run_cli(
    *args: str,
    database_url: str | None = None,
    input: str = "",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 150,
) -> subprocess.CompletedProcess[str]:
    """``python -m jobqueue [--database-url URL] ARGS``; never raises on a non-zero exit."""
    url = ["--database-url", database_url] if database_url is not None else []
    return subprocess.run(
        [sys.executable, "-m", "jobqueue", *url, *args],
        capture_output=True,
        text=True,
        input=input,
        env=cli_env(env),
        cwd=cwd or ROOT,
        timeout=timeout,
        check=False,
    )
