"""``workers``: real ``jobqueue worker`` processes on the test's database, all killed at the end.

One fixture for every tier (it was written out three times: the chaos conftest,
test_ops.py and test_worker_notify.py, on slightly different databases). The database is
``ledger_db``: the test's own, with the execution ledgers of tests/chaos/harness.py installed
(the chaos app writes them; other apps ignore them). The app is ``workers_app``: the chaos
app unless a module overrides that fixture (test_ops.py runs the soak app).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.chaos.harness import APP, Workers, install_ledgers


@pytest.fixture
def ledger_db(db: psycopg.Connection[Any], db_url: str) -> str:
    install_ledgers(db_url)
    return db_url


@pytest.fixture
def workers_app() -> str:
    return APP


@pytest.fixture
def workers(ledger_db: str, workers_app: str, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(ledger_db, tmp_path, app=workers_app)
    yield pool
    pool.kill_all()
