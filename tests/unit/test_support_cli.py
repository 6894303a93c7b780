"""tests/support/cli.py: the one CLI runner's environment is clean of what steers the CLI."""

from __future__ import annotations

import pytest

from tests.support.cli import cli_env


def test_cli_env_clears_what_steers_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "DATABASE_URL": "postgresql://x/y",
        "JOBQUEUE_DATABASE_URL": "postgresql://x/z",
        "JOBQUEUE_WORKER_CONCURRENCY": "99",
        "XDG_RUNTIME_DIR": "/run/user/0",
        "JOBQUEUE_HOME": "/tmp/home",
        "PATH_LIKE_OTHER": "kept",
    }.items():
        monkeypatch.setenv(name, value)
    env = cli_env({"JOBQUEUE_DATABASE_URL": "given"})
    assert "DATABASE_URL" not in env and "XDG_RUNTIME_DIR" not in env
    assert "JOBQUEUE_WORKER_CONCURRENCY" not in env
    assert env["JOBQUEUE_DATABASE_URL"] == "given"
    assert env["JOBQUEUE_HOME"] == "/tmp/home" and env["PATH_LIKE_OTHER"] == "kept"
