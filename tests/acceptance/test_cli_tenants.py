"""`jobqueue tenants` in subprocesses, on a database whose schema a plain role owns."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.test_sql_tenancy import Cluster, TenantDb, cluster, tdb  # noqa: F401
from tests.support.cli import run_cli

pytestmark = pytest.mark.timeout(180)

Run = Callable[..., subprocess.CompletedProcess[str]]


def run_as(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, database_url=url, timeout=60)


def error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, f"exit {proc.returncode}, wanted {code}\n{proc.stdout}\n{proc.stderr}"
    line = proc.stderr.strip()
    for needle in needles:
        assert needle in line, line


def test_tenants_verbs(tdb: TenantDb, db_url: str, login_role: Callable[[str], str]) -> None:  # noqa: F811
    roles = tdb.cluster.roles
    ops, a_admin, a_prod = (tdb.url(roles[k]) for k in ("ops_admin", "a_admin", "a_prod"))
    work = roles["ops_work"]
    proc = run_as(ops, "tenants", "map", work, "C", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"role_name": work, "tenant_id": "C"}
    listed: dict[str, Any] = json.loads(run_as(ops, "tenants", "list", "--json").stdout)
    assert {"role_name": work, "tenant_id": "C"} in [
        {k: r[k] for k in ("role_name", "tenant_id")} for r in listed["roles"]
    ]
    assert "tenant roles" in run_as(ops, "tenants", "list").stdout
    error(run_as(ops, "tenants", "map", "no_such_role_xyz", "C"), 65, "jobqueue: error: role_name:")
    error(run_as(ops, "tenants", "map", work, ""), 65, "tenant_id:")
    error(run_as(a_admin, "tenants", "map", work, "A"), 77, "acts for tenant A")
    assert run_as(ops, "tenants", "unmap", work).returncode == 0
    error(run_as(ops, "tenants", "unmap", work), 1)

    error(run_as(ops, "tenants", "limit", "A", "--rate", "0"), 2, "--rate")
    error(run_as(ops, "tenants", "limit", "A", "--rate", "1", "--burst", "0"), 2, "--burst")
    proc = run_as(ops, "tenants", "limit", "A", "--rate", "0.001", "--burst", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["burst"] == 1
    assert run_as(a_prod, "enqueue", "t").returncode == 0
    error(run_as(a_prod, "enqueue", "t"), 75, 'tenant "A" is over its enqueue rate limit')
    error(run_as(a_prod, "enqueue", "t", "--tenant", "B"), 65, "tenant_id:")
    assert run_as(ops, "tenants", "unlimit", "A").returncode == 0
    error(run_as(ops, "tenants", "unlimit", "A"), 1)
    assert run_as(a_prod, "enqueue", "t").returncode == 0
    # a superuser-owned install refuses multi-tenant mode: bad configuration
    error(run_as(db_url, "tenants", "map", login_role("jobqueue_producer"), "A"), 78, "SUPERUSER or BYPASSRLS")
