"""The README's Quick start, run top to bottom as a new user would (issue 14).

The blocks are read from README.md itself, so the README cannot drift from what is tested:
the ``python`` block headed ``# app.py`` is written to ``app.py``, the ``sh`` blocks run
in order in one bash (``set -e``), in a fresh folder standing in for a fresh clone (its
``.venv`` is this test's virtual environment), with a fresh ``JOBQUEUE_HOME`` and nothing
else configured: on the embedded server, as the README says; under ``$DATABASE_URL``
(another server) on a fresh empty database given as ``JOBQUEUE_DATABASE_URL``. Any other
kind of block in the section fails the test: the Quick start holds only what runs.

It then runs again on the same database after leaving a job of another type, as ``make
demo`` does (issue 14 item 2: the Quick start's ``jobs show 1`` then showed the demo's job,
not the reader's).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(600)

#: How long the whole Quick start may take (it starts an embedded server on the first call).
RUN_TIMEOUT_S = 300
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def quick_start() -> tuple[dict[str, str], str]:
    """(files to write, shell script) from the README's Quick start section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    files: dict[str, str] = {}
    script: list[str] = []
    for lang, body in _BLOCK.findall(section):
        first = body.splitlines()[0] if body else ""
        if lang == "python" and re.fullmatch(r"# [\w.]+\.py", first):
            files[first[2:]] = body
        elif lang == "sh":
            script.append(body)
        else:
            raise AssertionError(f"the Quick start has a {lang or 'plain'} block the test cannot run: {first!r}")
    assert files and script, "the Quick start lost its app.py or its commands"
    return files, "\n".join(script)


@pytest.fixture
def fresh_clone(tmp_path: Path, server: Any) -> Iterator[tuple[Path, dict[str, str]]]:
    """A folder with the files a clone has that the Quick start uses, and its environment."""
    venv = Path(sys.prefix)
    if not (venv / "bin" / "jobqueue").exists() or sys.prefix == sys.base_prefix:
        pytest.skip(f"needs jobqueue installed in a virtual environment (make install); {sys.prefix} is not one")
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / ".venv").symlink_to(venv)
    unset = ("DATABASE_URL", "XDG_RUNTIME_DIR", "COLUMNS")
    env = {k: v for k, v in os.environ.items() if k not in unset and not k.startswith("JOBQUEUE_")}
    env["JOBQUEUE_HOME"] = str(tmp_path / "home")
    env["COLUMNS"] = "200"
    made = None
    if os.environ.get("DATABASE_URL"):
        made = f"jq_readme_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(server.url(server.maintenance_db), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(made)))
        env["JOBQUEUE_DATABASE_URL"] = server.url(made)
    try:
        yield clone, env
    finally:
        if made is None:
            subprocess.run(
                [str(venv / "bin" / "jobqueue"), "db", "stop"], env=env, cwd=clone, capture_output=True, timeout=120
            )
        else:
            with psycopg.connect(server.url(server.maintenance_db), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(made)))


def run_quick_start(clone: Path, env: dict[str, str], before: str = "") -> subprocess.CompletedProcess[str]:
    files, script = quick_start()
    for name, text in files.items():
        (clone / name).write_text(text)
    proc = subprocess.run(
        ["bash", "-c", f"set -eu -o pipefail\n{before}\nset -x\n{script}"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def check_outcome(proc: subprocess.CompletedProcess[str]) -> None:
    """`jobs show $JOB` showed the reader's job, completed; `enqueue --wait` printed its output."""
    shown = proc.stdout.split("\njob ", 1)[1]  # the table titled "job N"
    fields = dict((part.strip() for part in line.split("│", 1)) for line in shown.splitlines() if "│" in line)
    assert (fields["type"], fields["state"], fields["output"]) == ("email.send", "completed", '{"sent":true}'), shown
    enqueued = re.findall(r"^\+ JOB=(\d+)$", proc.stderr, re.M)  # set -x: what app.py printed
    assert enqueued == [fields["id"]], (enqueued, fields["id"])
    assert proc.stdout.rstrip().endswith('{"sent": true}'), proc.stdout  # enqueue --wait: the output
    assert "worker stopped" in proc.stderr  # `kill $!`: a graceful stop


def test_readme_quick_start_runs_top_to_bottom_on_a_fresh_clone(fresh_clone: tuple[Path, dict[str, str]]) -> None:
    clone, env = fresh_clone
    check_outcome(run_quick_start(clone, env))
    # Again, as after `make demo`: the database already holds other jobs, of another type.
    demo_job = '.venv/bin/jobqueue enqueue examples.resize_image \'{"image": "demo.png"}\' -q demo >/dev/null'
    again = run_quick_start(clone, env, before=demo_job)
    check_outcome(again)
    assert "examples.resize_image" not in again.stdout
