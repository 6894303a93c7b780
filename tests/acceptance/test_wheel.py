"""The built wheel carries sql/ and the alembic scripts: install it in a fresh venv, migrate."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import venv
import zipfile
from pathlib import Path

import psycopg
import pytest

from jobqueue.db import REQUIRED_SCHEMA_VERSION
from tests.conftest import ROOT, SERVER

pytestmark = pytest.mark.timeout(600)


def test_wheel_installs_and_migrates_outside_the_checkout(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    wheel = next((tmp_path / "dist").glob("jobqueue-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "jobqueue/_sql/schema.sql" in names
    assert "jobqueue/_alembic/env.py" in names
    assert any(n.startswith("jobqueue/_alembic/versions/0001_") and n.endswith(".sql") for n in names)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )

    name = f"jq_wheel_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(SERVER.url(SERVER.maintenance_db), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        outside = tmp_path / "elsewhere"
        outside.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PYTHONPATH")}
        proc = subprocess.run(
            [str(env_dir / "bin" / "jobqueue"), "--database-url", SERVER.url(name), "migrate"],
            cwd=outside,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        with psycopg.connect(SERVER.url(name)) as conn:
            assert conn.execute("SELECT jobqueue.schema_version()").fetchone() == (REQUIRED_SCHEMA_VERSION,)
        # The installed package resolves its resources from inside itself, not from this checkout.
        where = subprocess.run(
            [str(python), "-c", "from jobqueue.migrations import resource_dir; print(resource_dir('sql'))"],
            cwd=outside,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert where.startswith(str(env_dir)) and where.endswith("jobqueue/_sql")
    finally:
        with psycopg.connect(SERVER.url(SERVER.maintenance_db), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
