"""Multi-tenant mode (RELIABILITY.md 3.3, 3.6; SEC-05): row-level security and rate limits.

Row-level security only binds the SECURITY DEFINER functions when their owner is neither a
superuser nor BYPASSRLS. The shared test template is migrated by the (superuser) test user,
so these tests build their own template, migrated by a plain LOGIN role that owns it, and
clone one database per test from it. Tenants: login roles mapped with set_tenant_role by
an unmapped admin, exactly as an operator would.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from jobqueue import migrations
from jobqueue.config import DatabaseTarget
from tests.support.plans import explained, nodes
from tests.support.sql_api import claim, claim_one, enqueue, one, rows

pytestmark = pytest.mark.timeout(300)

#: Every table that holds a tenant's data, and must have RLS enabled and forced.
TENANT_TABLES = ("job", "job_history", "dead_letter", "job_event", "job_log", "worker")

#: Login roles of the module: name suffix -> group role. "a_*" act for tenant A, "b_*" for
#: tenant B, "ops_*" are mapped to nothing (the operator's roles).
ROLES = {
    "a_prod": "jobqueue_producer",
    "a_work": "jobqueue_worker",
    "a_admin": "jobqueue_admin",
    "b_prod": "jobqueue_producer",
    "b_work": "jobqueue_worker",
    "b_admin": "jobqueue_admin",
    "ops_work": "jobqueue_worker",
    "ops_admin": "jobqueue_admin",
}


@dataclass
class Cluster:
    server: Any
    owner: str
    template: str
    roles: dict[str, str]


@dataclass
class TenantDb:
    """One test's database (objects owned by a plain role) and connections to it by role key."""

    cluster: Cluster
    name: str
    opened: list[psycopg.Connection[Any]] = field(default_factory=list)

    def url(self, user: str | None = None) -> str:
        return str(self.cluster.server.url(self.name, user=user))

    def conn(self, key: str | None = None, autocommit: bool = True) -> psycopg.Connection[Any]:
        """A connection as role `key` (ROLES), "owner", or the superuser (None)."""
        user = None if key is None else self.cluster.owner if key == "owner" else self.cluster.roles[key]
        conn = psycopg.connect(self.url(user), autocommit=autocommit, row_factory=dict_row)
        self.opened.append(conn)
        return conn


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


@pytest.fixture(scope="module")
def cluster(server: Any, postgresql_noproc: Any) -> Iterator[Cluster]:
    suffix = uuid.uuid4().hex[:8]
    owner = f"jq_owner_{suffix}"
    template = f"jq_mt_tpl_{suffix}"
    roles = {key: f"jq_{key}_{suffix}" for key in ROLES}
    with psycopg.connect(server.url(server.maintenance_db), autocommit=True) as su:
        su.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS").format(_ident(owner)))
        for key, name in roles.items():
            su.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(_ident(name), _ident(ROLES[key])))
        su.execute(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(_ident(template), _ident(owner)))
    migrations.upgrade(DatabaseTarget(server.url(template, user=owner), "tenancy template"))
    yield Cluster(server, owner, template, roles)
    with psycopg.connect(server.url(server.maintenance_db), autocommit=True) as su:
        su.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(template)))
        for name in [*roles.values(), owner]:
            su.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(_ident(name)))


@pytest.fixture
def tdb(cluster: Cluster) -> Iterator[TenantDb]:
    server = cluster.server
    name = f"jq_mt_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url(server.maintenance_db), autocommit=True) as su:
        su.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
                _ident(name), _ident(cluster.template), _ident(cluster.owner)
            )
        )
    t = TenantDb(cluster, name)
    ops = t.conn("ops_admin")
    for key in ROLES:
        if key[0] in "ab":
            ops.execute("SELECT jobqueue.set_tenant_role(%s, %s)", (cluster.roles[key], key[0].upper()))
    yield t
    for conn in t.opened:
        conn.close()
    with psycopg.connect(server.url(server.maintenance_db), autocommit=True) as su:
        su.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(name)))


def tenant_rows(su: psycopg.Connection[Any], tenant: str) -> dict[str, list[str]]:
    """Every row of tenant `tenant` in every table (as text, sorted), read as the superuser."""
    out = {}
    for table in ("job", "job_history", "dead_letter"):
        found = su.execute(
            sql.SQL("SELECT x::text AS r FROM jobqueue.{} x WHERE tenant_id = %s").format(_ident(table)), (tenant,)
        ).fetchall()
        out[table] = sorted(r["r"] for r in found)
    for table in ("job_event", "job_log"):
        found = su.execute(
            sql.SQL(
                "SELECT x::text AS r FROM jobqueue.{} x WHERE x.job_id IN (SELECT id FROM jobqueue.job "
                "WHERE tenant_id = %s UNION ALL SELECT id FROM jobqueue.job_history WHERE tenant_id = %s "
                "UNION ALL SELECT id FROM jobqueue.dead_letter WHERE tenant_id = %s)"
            ).format(_ident(table)),
            (tenant, tenant, tenant),
        ).fetchall()
        out[table] = sorted(r["r"] for r in found)
    return out


@dataclass
class TenantB:
    pending: int
    running: int
    token: int
    dead: int
    done: int
    unique_key: str = "k-1"


def populate_b(t: TenantDb) -> TenantB:
    """Tenant B's jobs in every state; its waiting job is in queue 'shared', which A uses too."""
    prod, work = t.conn("b_prod"), t.conn("b_work")
    pending = enqueue(prod, "b.job", queue="shared", unique_key="k-1", payload={"secret": "B"})
    done = enqueue(prod, "b.job", queue="b-done")
    c = claim_one(work, ["b-done"], worker_id="wb")
    assert one(work, "complete", done, c["token"]) == "completed"
    dead = enqueue(prod, "b.job", queue="b-dead", max_attempts=1)
    c = claim_one(work, ["b-dead"], worker_id="wb")
    assert one(work, "fail", dead, c["token"], "boom", "permanent") == "dead_letter"
    running = enqueue(prod, "b.job", queue="b-only")
    r = claim_one(work, ["b-only"], worker_id="wb")
    assert one(work, "add_log", running, r["token"], "b's log line") == "ok"
    one(work, "register_worker", "wb", host="b-host")
    return TenantB(pending=pending, running=running, token=r["token"], dead=dead, done=done)


def test_rls_is_enabled_and_forced(tdb: TenantDb, db: psycopg.Connection[Any]) -> None:
    """SEC-05: every table with tenant data has RLS enabled AND forced, with a policy (both installs)."""
    for conn in (tdb.conn(), db):
        found = conn.execute(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
            "(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies "
            "FROM pg_class c WHERE c.relnamespace = 'jobqueue'::regnamespace AND c.relname = ANY(%s)",
            (list(TENANT_TABLES),),
        ).fetchall()
        assert {r["relname"] for r in found} == set(TENANT_TABLES)
        for r in found:
            assert r["relrowsecurity"] and r["relforcerowsecurity"] and r["policies"] >= 1, r
    owner = tdb.conn().execute(
        "SELECT r.rolsuper OR r.rolbypassrls AS bypass FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner "
        "WHERE c.oid = 'jobqueue.job'::regclass"
    ).fetchone()
    assert owner is not None and owner["bypass"] is False


def test_enqueue_takes_the_tenant_from_the_login_role(tdb: TenantDb) -> None:
    """SEC-05: a mapped producer's jobs get its tenant; naming another is an error naming the field."""
    su, a = tdb.conn(), tdb.conn("a_prod")
    job = enqueue(a, "t")
    same = enqueue(a, "t", tenant_id="A")
    assert [r["tenant_id"] for r in su.execute(
        "SELECT tenant_id FROM jobqueue.job WHERE id = ANY(%s)", ([job, same],)).fetchall()] == ["A", "A"]
    before = tenant_rows(su, "A"), tenant_rows(su, "B")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        enqueue(a, "t", tenant_id="B")
    assert err.value.diag.column_name == "tenant_id"
    assert str(err.value.diag.message_primary).startswith("tenant_id: ")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        a.execute(
            "SELECT jobqueue.enqueue_many(%s::jsonb)",
            (json.dumps([{"type": "t"}, {"type": "t", "tenant_id": "B"}]),),
        )
    assert str(err.value.diag.message_primary).startswith("jobs[1].tenant_id: ")
    assert (tenant_rows(su, "A"), tenant_rows(su, "B")) == before
    # GUCs a caller can set change nothing
    a.execute("SET app.tenant = 'B'")
    a.execute("SELECT set_config('jobqueue.tenant', 'B', false)")
    a.execute("SET ROLE jobqueue_producer")  # current_user changes, session_user does not
    spoofed = enqueue(a, "t")
    row = su.execute("SELECT tenant_id, created_by FROM jobqueue.job WHERE id = %s", (spoofed,)).fetchone()
    assert row == {"tenant_id": "A", "created_by": tdb.cluster.roles["a_prod"]}
    # an unmapped role passes tenant_id through, as in a single-tenant install
    ops = tdb.conn("ops_admin")
    assert su.execute(
        "SELECT tenant_id FROM jobqueue.job WHERE id = %s", (enqueue(ops, "t", tenant_id="B"),)
    ).fetchone() == {"tenant_id": "B"}
    assert su.execute("SELECT tenant_id FROM jobqueue.job WHERE id = %s", (enqueue(ops, "t"),)).fetchone() == {
        "tenant_id": None
    }


def test_tenant_a_cannot_reach_tenant_b_through_any_function(tdb: TenantDb) -> None:
    """SEC-05: A sees, claims, acks, cancels, retries, redrives, purges and reads none of B's jobs."""
    su = tdb.conn()
    b = populate_b(tdb)
    a_prod, a_work, a_admin = tdb.conn("a_prod"), tdb.conn("a_work"), tdb.conn("a_admin")
    a_job = enqueue(a_prod, "a.job", queue="shared", unique_key=b.unique_key)
    assert a_job != b.pending  # unique keys are per tenant: no collision, no disclosure
    su.execute("UPDATE jobqueue.job SET lease_expires_at = now() - interval '1 second' WHERE id = %s", (b.running,))
    b_before = tenant_rows(su, "B")

    for conn in (a_prod, a_work, a_admin):
        seen = {r["id"] for r in conn.execute("SELECT id FROM jobqueue.jobs").fetchall()}
        assert seen <= {a_job}, seen
    assert a_admin.execute("SELECT id FROM jobqueue.dead_letters").fetchall() == []
    assert [r["id"] for r in a_admin.execute("SELECT id FROM jobqueue.jobs").fetchall()] == [a_job]
    # claim: only A's job, whatever queues it names; B's expired lease is not A's to reconcile
    got = claim(a_work, ["shared", "b-only", "default"], batch=100)
    assert [r["id"] for r in got] == [a_job]
    one(a_work, "release", a_job, got[0]["token"])
    summary = one(a_work, "reconcile")
    assert summary["leases_retried"] == 0 and summary["leases_dead_lettered"] == 0, summary
    # acknowledgements with B's real lease token: the lease is "lost", nothing changes
    for fn, args in [
        ("complete", (b.running, b.token)),
        ("fail", (b.running, b.token, "x", "transient")),
        ("snooze", (b.running, b.token, "1 second")),
        ("release", (b.running, b.token)),
        ("add_log", (b.running, b.token, "a's line")),
        ("set_progress", (b.running, b.token, 50)),
    ]:
        assert one(a_work, fn, *args) == "lease_lost", fn
    assert rows(a_work, "heartbeat", b.running, b.token)[0]["status"] == "lease_lost"
    assert rows(a_work, "complete_many", [b.running], [b.token])[0]["status"] == "lease_lost"
    # admin verbs: B's ids do not exist for A (the same answer as an id nobody has)
    for fn, job_id in [("cancel", b.pending), ("cancel", b.running), ("retry", b.dead)]:
        with pytest.raises(psycopg.errors.NoDataFound):
            one(a_admin, fn, job_id)
    assert rows(a_admin, "redrive", {}) == []
    assert rows(a_admin, "redrive", {"tenant_id": "B"}) == []
    assert one(a_admin, "purge_dead_letters", {"tenant_id": "B"}) == 0
    assert one(a_admin, "purge_dead_letters", {}) == 0
    assert one(a_admin, "archive_dead_letters", 0) == 0
    for conn in (a_prod, a_work, a_admin):
        assert rows(conn, "job_logs", b.running) == []
    stats = {r["queue"]: r for r in rows(a_admin, "queue_stats")}
    assert sum(r["pending"] + r["processing"] + r["dead_letters"] for r in stats.values()) == 1
    assert sum(r["completed"] + r["failed"] for r in rows(a_admin, "metrics")) == 0
    assert one(a_work, "next_due", ["b-only"]) is None
    assert a_work.execute("SELECT worker_id FROM jobqueue.workers").fetchall() == []
    assert one(a_work, "worker_heartbeat", "wb") is False
    one(a_work, "unregister_worker", "wb")
    # enqueue can neither depend on B's job nor learn whether it exists
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown job id"):
        enqueue(a_prod, "t", depends_on=[b.pending])
    # spoofing: GUCs, SET ROLE, row_security off
    a_work.execute("SET app.tenant = 'B'")
    a_work.execute("SET jobqueue.tenant = 'B'")
    a_work.execute("SET ROLE jobqueue_worker")
    assert [r["id"] for r in a_work.execute("SELECT id FROM jobqueue.jobs").fetchall()] == [a_job]
    assert [r["id"] for r in claim(a_work, ["shared", "b-only"], batch=100)] == [a_job]
    a_work.execute("RESET ROLE")
    a_work.execute("SET row_security = off")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        claim(a_work, ["shared"], batch=100)

    assert tenant_rows(su, "B") == b_before
    # B itself still sees and works its jobs
    b_work = tdb.conn("b_work")
    assert {r["id"] for r in b_work.execute("SELECT id FROM jobqueue.jobs").fetchall()} == {
        b.pending,
        b.running,
        b.dead,
        b.done,
    }
    assert rows(b_work, "job_logs", b.running)[0]["message"] == "b's log line"
    assert one(b_work, "complete", b.running, b.token) == "completed"


def test_unmapped_roles_see_every_tenant(tdb: TenantDb) -> None:
    """An unmapped role is not confined: a shared worker fleet and the operator see all tenants."""
    a, b = enqueue(tdb.conn("a_prod"), "t"), enqueue(tdb.conn("b_prod"), "t")
    ops_work = tdb.conn("ops_work")
    assert {r["id"] for r in claim(ops_work, batch=10)} == {a, b}
    assert {r["id"] for r in tdb.conn("ops_admin").execute("SELECT id FROM jobqueue.jobs").fetchall()} == {a, b}


def test_mapped_roles_cannot_change_what_tenants_share(tdb: TenantDb) -> None:
    """A tenant's admin can neither remap roles, set rate limits nor change shared queue settings."""
    su, a_admin = tdb.conn(), tdb.conn("a_admin")
    before = su.execute("SELECT (SELECT json_agg(t ORDER BY role_name) FROM jobqueue.tenant_role t) AS m, "
                        "(SELECT json_agg(q) FROM jobqueue.queue q) AS q").fetchone()
    for statement, args in [
        ("SELECT jobqueue.set_tenant_role(%s, 'B')", (tdb.cluster.roles["a_admin"],)),
        ("SELECT jobqueue.unset_tenant_role(%s)", (tdb.cluster.roles["a_admin"],)),
        ("SELECT jobqueue.set_tenant_rate_limit('B', 1)", ()),
        ("SELECT jobqueue.clear_tenant_rate_limit('A')", ()),
        ("SELECT jobqueue.pause_queue('shared')", ()),
        ("SELECT jobqueue.resume_queue('shared')", ()),
        ("SELECT jobqueue.configure_queue('shared', '{\"max_size\": 1}')", ()),
        ("SELECT jobqueue.set_retry_policy('t', '{}')", ()),
    ]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
            a_admin.execute(statement, args)
        assert "acts for tenant A" in str(err.value), statement
    assert su.execute("SELECT (SELECT json_agg(t ORDER BY role_name) FROM jobqueue.tenant_role t) AS m, "
                      "(SELECT json_agg(q) FROM jobqueue.queue q) AS q").fetchone() == before
    # the mapping view shows a mapped admin its own tenant only
    assert {r["tenant_id"] for r in a_admin.execute("SELECT * FROM jobqueue.tenant_roles").fetchall()} == {"A"}


def test_health_is_refused_to_a_mapped_admin_as_a_server_wide_read(tdb: TenantDb) -> None:
    """health() only reads, but it reports on the whole server (every session, slot and
    tenant's jobs): a mapped admin gets 42501 saying that, not that it "changes" anything."""
    for key in ("a_admin", "a_work"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
            tdb.conn(key).execute("SELECT * FROM jobqueue.health()")
        message = str(err.value.diag.message_primary)
        if key == "a_admin":
            assert message.startswith("health: ") and "acts for tenant A" in message, message
            assert "reports on the whole server" in message and "changes" not in message, message
    assert len(tdb.conn("ops_admin").execute("SELECT * FROM jobqueue.health()").fetchall()) == 8


def test_worker_ids_are_per_tenant(tdb: TenantDb) -> None:
    """Two tenants (and the unmapped fleet) may each run a worker named web-1: registering one
    neither fails nor reveals or touches another tenant's; heartbeat and unregister reach only
    the caller's own."""
    su = tdb.conn()
    a, b, ops = tdb.conn("a_work"), tdb.conn("b_work"), tdb.conn("ops_work")
    one(a, "register_worker", "web-1", host="a-host", concurrency=2)
    a_row = su.execute("SELECT * FROM jobqueue.worker WHERE host = 'a-host'").fetchone()
    one(b, "register_worker", "web-1", host="b-host", concurrency=3)
    one(ops, "register_worker", "web-1", host="ops-host")
    assert su.execute("SELECT * FROM jobqueue.worker WHERE host = 'a-host'").fetchone() == a_row
    seen = {key: [(r["worker_id"], r["host"], r["tenant_id"]) for r in tdb.conn(key).execute(
        "SELECT * FROM jobqueue.workers ORDER BY host").fetchall()] for key in ("a_work", "b_work", "ops_work")}
    assert seen["a_work"] == [("web-1", "a-host", "A")]
    assert seen["b_work"] == [("web-1", "b-host", "B")]
    assert seen["ops_work"] == [("web-1", "a-host", "A"), ("web-1", "b-host", "B"), ("web-1", "ops-host", None)]
    # re-registering restarts one's own record only
    one(b, "register_worker", "web-1", host="b-host-2")
    assert su.execute("SELECT * FROM jobqueue.worker WHERE host = 'a-host'").fetchone() == a_row
    # heartbeat and unregister by id reach the caller's own worker only
    su.execute("UPDATE jobqueue.worker SET last_seen_at = now() - interval '1 hour'")
    assert one(b, "worker_heartbeat", "web-1", 7) is True
    one(ops, "unregister_worker", "web-1")
    state = {r["host"]: (r["jobs_done"], r["stopped_at"] is None, r["last_seen_at"] > r["started_at"])
             for r in su.execute("SELECT * FROM jobqueue.worker").fetchall()}
    assert state["a-host"] == (0, True, False)
    assert state["b-host-2"] == (7, True, True)
    assert state["ops-host"][1] is False
    # each worker's running jobs are counted under its own tenant
    enqueue(tdb.conn("a_prod"), "t", queue="wq")
    enqueue(tdb.conn("b_prod"), "t", queue="wq")
    claim_one(a, ["wq"], worker_id="web-1")
    claim_one(b, ["wq"], worker_id="web-1")
    running = {r["host"]: r["running"] for r in su.execute("SELECT * FROM jobqueue.workers").fetchall()}
    assert running["a-host"] == 1 and running["b-host-2"] == 1


@pytest.mark.serial  # the oldest xid holder is the whole server's
def test_health_on_a_plain_owner_install_still_counts_a_hidden_xid_holder(tdb: TenantDb) -> None:
    """Without pg_read_all_stats the owner sees only pid, user and xids of other roles'
    sessions: the age in xids still counts them and names the holder's pid, and says what
    more would need that privilege."""
    holder = tdb.conn(autocommit=False)  # the superuser: invisible to the plain owner
    holder.execute("SELECT txid_current()")
    su = tdb.conn()
    for _ in range(5):
        su.execute("SELECT txid_current()")
    rows = tdb.conn("ops_admin").execute("SELECT * FROM jobqueue.health(max_xmin_xids => 3)").fetchall()
    xids = next(r for r in rows if r["check_name"] == "oldest_xmin_age_xids")
    assert xids["alert"] is True and xids["value"] >= 5
    oldest = su.execute(
        "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND (backend_xid IS NOT NULL OR "
        "backend_xmin IS NOT NULL) ORDER BY greatest(age(backend_xid), age(backend_xmin)) DESC LIMIT 1"
    ).fetchone()["pid"]  # type: ignore[index]
    if oldest == holder.info.backend_pid:  # else a session of a test run beside this one is older
        assert xids["detail"] == f"pid {oldest} (user postgres; more needs pg_read_all_stats)"
    else:
        assert xids["detail"].startswith(f"pid {oldest} (")
    holder.rollback()


def test_superuser_owned_install_refuses_tenant_mapping(
    db: psycopg.Connection[Any], login_role: Callable[[str], str]
) -> None:
    """RLS never binds a superuser-owned install, so multi-tenant mode is refused there (55000)."""
    name = login_role("jobqueue_producer")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="SUPERUSER or BYPASSRLS"):
        db.execute("SELECT jobqueue.set_tenant_role(%s, 'A')", (name,))
    assert db.execute("SELECT count(*) AS n FROM jobqueue.tenant_role").fetchone() == {"n": 0}


BAD_ADMIN_CALLS = [
    ("set_tenant_role", (None, "A"), "role_name", "22023"),
    ("set_tenant_role", ("", "A"), "role_name", "22023"),
    ("set_tenant_role", ("r" * 64, "A"), "role_name", "22001"),
    ("set_tenant_role", ("no_such_role_xyz", "A"), "role_name", "22023"),
    ("set_tenant_role", ("postgres_super", "A"), "role_name", "22023"),
    ("set_tenant_role", ("ops_work", None), "tenant_id", "22023"),
    ("set_tenant_role", ("ops_work", ""), "tenant_id", "22023"),
    ("set_tenant_role", ("ops_work", "x" * 256), "tenant_id", "22001"),
    ("set_tenant_role", ("ops_work", "a\nb"), "tenant_id", "22023"),
    ("unset_tenant_role", (None,), "role_name", "22023"),
    ("set_tenant_rate_limit", (None, 1), "tenant_id", "22023"),
    ("set_tenant_rate_limit", ("A", None), "rate", "22023"),
    ("set_tenant_rate_limit", ("A", 0), "rate", "22023"),
    ("set_tenant_rate_limit", ("A", -1), "rate", "22023"),
    ("set_tenant_rate_limit", ("A", float("nan")), "rate", "22023"),
    ("set_tenant_rate_limit", ("A", 2_000_000), "rate", "22023"),
    ("set_tenant_rate_limit", ("A", 1, 0), "burst", "22023"),
    ("set_tenant_rate_limit", ("A", 1, 100_000_001), "burst", "22023"),
    ("clear_tenant_rate_limit", ("",), "tenant_id", "22023"),
]


@pytest.mark.parametrize(("function", "args", "column", "sqlstate"), BAD_ADMIN_CALLS)
def test_bad_tenant_admin_input_is_refused_naming_the_field(
    tdb: TenantDb, function: str, args: tuple[Any, ...], column: str, sqlstate: str
) -> None:
    su, ops = tdb.conn(), tdb.conn("ops_admin")
    roles = {**tdb.cluster.roles, "postgres_super": tdb.cluster.server.user}
    args = tuple(roles.get(a, a) if isinstance(a, str) else a for a in args)
    state = "SELECT (SELECT json_agg(t ORDER BY role_name) FROM jobqueue.tenant_role t) AS m, " \
            "(SELECT json_agg(l) FROM jobqueue.tenant_limit l) AS l"
    before = su.execute(state).fetchone()
    with pytest.raises(psycopg.Error) as err:
        one(ops, function, *args)
    assert err.value.sqlstate == sqlstate, err.value
    assert err.value.diag.column_name == column
    assert str(err.value.diag.message_primary).startswith(f"{column}: ")
    assert su.execute(state).fetchone() == before


def test_tenant_admin_functions(tdb: TenantDb) -> None:
    ops, su = tdb.conn("ops_admin"), tdb.conn()
    work = tdb.cluster.roles["ops_work"]
    one(ops, "set_tenant_role", work, "C")
    assert {"role_name": work, "tenant_id": "C"} in [
        {k: r[k] for k in ("role_name", "tenant_id")} for r in ops.execute("SELECT * FROM jobqueue.tenant_roles")
    ]
    assert enqueue(tdb.conn("a_prod"), "t") not in {r["id"] for r in claim(tdb.conn("ops_work"), batch=10)}
    assert one(ops, "unset_tenant_role", work) is True
    assert one(ops, "unset_tenant_role", work) is False
    one(ops, "set_tenant_rate_limit", "A", 2.5)
    limit = ops.execute("SELECT * FROM jobqueue.tenant_rate_limits").fetchone()
    assert limit is not None and limit["rate"] == 2.5 and limit["burst"] == 3 and limit["tokens_available"] == 3
    assert one(ops, "clear_tenant_rate_limit", "A") is True
    assert one(ops, "clear_tenant_rate_limit", "A") is False
    assert su.execute("SELECT count(*) AS n FROM jobqueue.tenant_limit").fetchone() == {"n": 0}


def test_rate_limit_refuses_over_the_bucket_and_changes_nothing(tdb: TenantDb) -> None:
    """Token bucket per tenant: JQ429 naming the tenant and the limit; nothing written; B unaffected."""
    su, ops = tdb.conn(), tdb.conn("ops_admin")
    a, b = tdb.conn("a_prod"), tdb.conn("b_prod")
    one(ops, "set_tenant_rate_limit", "A", 0.001, 5)
    ids = [r["id"] for r in a.execute(
        "SELECT id FROM jobqueue.enqueue_many(%s::jsonb) AS id", (json.dumps([{"type": "t"}] * 4),)).fetchall()]
    assert len(ids) == 4
    enqueue(a, "t")  # the fifth token
    before = tenant_rows(su, "A"), su.execute("SELECT tokens FROM jobqueue.tenant_limit").fetchone()
    with pytest.raises(psycopg.Error) as err:
        enqueue(a, "t")
    assert err.value.sqlstate == "JQ429"
    assert err.value.diag.column_name == "tenant_id"
    message = str(err.value.diag.message_primary)
    assert message.startswith('tenant_id: tenant "A" is over its enqueue rate limit (0.001 jobs/s, burst 5)'), message
    assert (tenant_rows(su, "A"), su.execute("SELECT tokens FROM jobqueue.tenant_limit").fetchone()) == before
    # an unmapped producer enqueuing for A is limited too; B and untenanted jobs are not
    with pytest.raises(psycopg.Error) as err:
        enqueue(ops, "t", tenant_id="A")
    assert err.value.sqlstate == "JQ429"
    enqueue(b, "t")
    enqueue(ops, "t")
    # a batch larger than the burst can never pass, and says so
    su.execute("UPDATE jobqueue.tenant_limit SET refilled_at = now() - interval '1 day'")
    with pytest.raises(psycopg.Error) as err:
        a.execute("SELECT jobqueue.enqueue_many(%s::jsonb)", (json.dumps([{"type": "t"}] * 6),))
    assert err.value.sqlstate == "JQ429" and "split it" in str(err.value.diag.message_hint)
    # time refills the bucket (moved by editing the row, never by sleeping)
    enqueue(a, "t")
    # no limit: no bucket row is touched
    one(ops, "clear_tenant_rate_limit", "A")
    for _ in range(10):
        enqueue(a, "t")


def test_rate_limit_holds_under_concurrent_producers(tdb: TenantDb) -> None:
    """Eight connections of tenant A race for a bucket of 20: exactly 20 jobs are admitted."""
    su = tdb.conn()
    one(tdb.conn("ops_admin"), "set_tenant_rate_limit", "A", 0.0001, 20)
    conns = [tdb.conn("a_prod") for _ in range(8)]
    barrier = threading.Barrier(len(conns))
    admitted: list[int] = []
    refused: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(conn: psycopg.Connection[Any]) -> None:
        try:
            barrier.wait()
            for _ in range(5):
                try:
                    n = len(conn.execute(
                        "SELECT id FROM jobqueue.enqueue_many(%s::jsonb) AS id",
                        (json.dumps([{"type": "t"}] * 2),)).fetchall())
                    with lock:
                        admitted.append(n)
                except psycopg.Error as exc:
                    with lock:
                        refused.append(str(exc.sqlstate))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in conns]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert sum(admitted) == 20 and set(refused) == {"JQ429"} and len(refused) == 40 - 10
    assert su.execute("SELECT count(*) AS n FROM jobqueue.job WHERE tenant_id = 'A'").fetchone() == {"n": 20}


@pytest.mark.parametrize("who", ["a_work", "ops_work"])
def test_claim_plan_under_rls(tdb: TenantDb, who: str) -> None:
    """PLAN-01 with RLS in force: an ordered scan of job_claim_idx, the tenant an InitPlan (once per statement)."""
    ops = tdb.conn("ops_admin")
    for tenant in ("A", "B"):
        ops.execute(
            "SELECT count(*) FROM jobqueue.enqueue_many(%s::jsonb)",
            (json.dumps([{"type": "t", "tenant_id": tenant, "payload": {"i": i}} for i in range(10_000)]),),
        )
    su = tdb.conn()
    su.execute("ANALYZE jobqueue.job")
    with explained(su) as plans:
        # become the worker's login role: session_user changes, the loaded auto_explain stays
        su.execute(sql.SQL("SET SESSION AUTHORIZATION {}").format(_ident(tdb.cluster.roles[who])))
        got = su.execute("SELECT id FROM jobqueue.claim(ARRAY['default'], 'w', 10)").fetchall()
        su.execute("RESET SESSION AUTHORIZATION")
    assert len(got) == 10
    if who == "a_work":
        tenants = su.execute("SELECT DISTINCT tenant_id FROM jobqueue.job WHERE id = ANY(%s)",
                             ([r["id"] for r in got],)).fetchall()
        assert tenants == [{"tenant_id": "A"}]
    claims = [p for p in plans if "FOR UPDATE SKIP LOCKED" in p.get("Query Text", "")]
    assert claims, f"no claim plan among {len(plans)} plans"
    every = nodes(claims[-1]["Plan"])
    on_job = [n for n in every if n.get("Relation Name") == "job"]
    assert any(n["Node Type"] == "Index Scan" and n.get("Index Name") == "job_claim_idx" for n in on_job), [
        (n["Node Type"], n.get("Index Name")) for n in on_job
    ]
    assert not any(n["Node Type"] in ("Seq Scan", "Sort") for n in every if n.get("Relation Name") == "job")
    # the tenant lookups are InitPlans: run once per statement, not once per row
    lookups = _under_initplan(claims[-1]["Plan"], inside=False)
    assert lookups and all(lookups), lookups


def _under_initplan(node: dict[str, Any], inside: bool) -> list[bool]:
    """For every scan of tenant_role in the plan: whether it sits under an InitPlan."""
    inside = inside or node.get("Parent Relationship") == "InitPlan"
    found = [inside] if node.get("Relation Name") == "tenant_role" else []
    for child in node.get("Plans", []):
        found.extend(_under_initplan(child, inside))
    return found


def test_library_tenant_admin_and_errors(tdb: TenantDb, db_url: str, login_role: Callable[[str], str]) -> None:
    """The JobQueue methods: mapping, limits, and the errors they raise (field named, nothing changed)."""
    from jobqueue import ConfigurationError, InvalidInput, JobQueue, PermissionDenied, RateLimited

    roles = tdb.cluster.roles
    with JobQueue(tdb.url(roles["ops_admin"]), pool_size=1) as ops, JobQueue(
        tdb.url(roles["a_prod"]), pool_size=1
    ) as a, JobQueue(tdb.url(roles["a_admin"]), pool_size=1) as a_admin:
        ops.set_tenant_role(roles["ops_work"], "C")
        assert {(r["role_name"], r["tenant_id"]) for r in ops.tenant_roles()} >= {(roles["ops_work"], "C")}
        assert ops.unset_tenant_role(roles["ops_work"]) is True
        assert ops.unset_tenant_role(roles["ops_work"]) is False
        with pytest.raises(InvalidInput) as err:
            ops.set_tenant_role("no_such_role_xyz", "A")
        assert err.value.field == "role_name"
        with pytest.raises(PermissionDenied):
            a_admin.set_tenant_role(roles["a_admin"], "B")
        for rate, burst, name in [(float("nan"), None, "rate"), (0, None, "rate"), (1, 0, "burst"), (1, 1.5, "burst")]:
            with pytest.raises(InvalidInput) as err:
                ops.set_tenant_rate_limit("A", rate, burst)  # type: ignore[arg-type]
            assert err.value.field == name
        assert ops.tenant_rate_limits() == []
        ops.set_tenant_rate_limit("A", 0.001, 2)
        assert [r["burst"] for r in ops.tenant_rate_limits()] == [2]
        job = a.enqueue("t")
        assert a.get(job).tenant_id == "A"
        with pytest.raises(InvalidInput) as err:
            a.enqueue("t", tenant_id="B")
        assert err.value.field == "tenant_id"
        a.enqueue_many([{"type": "t"}])
        with pytest.raises(RateLimited, match='tenant "A" is over its enqueue rate limit'):
            a.enqueue("t")
        assert ops.clear_tenant_rate_limit("A") is True
        assert ops.clear_tenant_rate_limit("A") is False
        a.enqueue("t")
    # a superuser-owned install cannot enter multi-tenant mode
    with JobQueue(db_url, pool_size=1) as su, pytest.raises(ConfigurationError, match="SUPERUSER or BYPASSRLS"):
        su.set_tenant_role(login_role("jobqueue_producer"), "A")
