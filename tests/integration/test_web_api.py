"""The HTTP API over a real uvicorn on loopback and a real PostgreSQL whose schema is owned
by a plain role (so row-level security binds): every endpoint, tenant isolation through
each of them, viewers refused by the database, and bad input answered with problem+json
naming the field and changing nothing (issue 18)."""

from __future__ import annotations

import base64
import http.client
import os
import random
import re
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from jobqueue.cli.web import SHUTDOWN_GRACE_S
from jobqueue.db import REQUIRED_SCHEMA_VERSION
from tests.support.cli import ROOT, cli_env
from tests.support.sql_api import claim_one, one
from tests.support.web import (  # noqa: F401 - the module's server fixture
    ApiServer,
    Reply,
    api_server,
    free_port,
    start_serve,
    stop_serve,
)

pytestmark = pytest.mark.timeout(300)

API = "/api/v1"


def _overview_redis() -> tuple[str | None, str]:
    """REDIS_URL with a database number of this module's own (1..15, so that workers
    mirroring into REDIS_URL's own database at the same time do not clobber it), when Redis
    answers; else None and why not."""
    url = os.environ.get("REDIS_URL")
    if not url:
        return None, "REDIS_URL is not set: no Redis for the overview's cache"
    try:
        import redis

        mine = urlunsplit(urlsplit(url)._replace(path=f"/{random.randint(1, 15)}"))
        redis.Redis.from_url(mine, socket_timeout=1, socket_connect_timeout=1).ping()
    except Exception as exc:
        return None, f"Redis at {url} does not answer: {exc}"
    return mine, ""


#: The module's server gets the overview cache (the Redis mirror's keys) when Redis answers.
OVERVIEW_REDIS, NO_REDIS = _overview_redis()
SERVE_ENV = {"JOBQUEUE_REDIS_URL": OVERVIEW_REDIS} if OVERVIEW_REDIS else {}


def snapshot(api: ApiServer) -> dict[str, list[str]]:
    """Every row that an API call could change, as text (read as the superuser)."""
    out = {}
    with api.superuser() as su:
        for table in ("job", "job_history", "dead_letter", "job_event", "job_log", "queue", "schedule"):
            found = su.execute(f"SELECT x::text AS r FROM jobqueue.{table} x").fetchall()
            out[table] = sorted(r["r"] for r in found)
        found = su.execute("SELECT id, role, tenant_id, revoked_at FROM jobqueue.api_token").fetchall()
        out["api_token"] = sorted(str(r) for r in found)
    return out


def problem(reply: Reply, status: int, field: str | None) -> dict[str, Any]:
    """Assert an RFC 9457 problem with this status naming this field; return its body."""
    assert reply.status == status, (reply.status, reply.body)
    assert reply.content_type.startswith("application/problem+json"), reply.headers
    body = reply.json
    assert body["status"] == status and body["title"] and body["detail"], body
    if field is not None:
        assert body.get("field") == field, body
    return dict(body)


@dataclass
class World:
    """Tokens of tenants A and B and unconfined ones; tenant B's jobs in every state."""

    admin: str
    op: str
    viewer: str
    a_prod: str
    a_op: str
    a_view: str
    b_prod: str
    b_op: str
    b_pending: int
    b_done: int
    b_dead: int
    b_running: int


@pytest.fixture(scope="module")
def world(api_server: ApiServer) -> World:  # noqa: F811
    api = api_server
    w = {
        "admin": api.token("admin", name="ops"),
        "op": api.token("operator"),
        "viewer": api.token("viewer"),
        "a_prod": api.token("producer", "A"),
        "a_op": api.token("operator", "A"),
        "a_view": api.token("viewer", "A"),
        "b_prod": api.token("producer", "B"),
        "b_op": api.token("operator", "B"),
    }

    def enqueue_b(queue: str, **extra: Any) -> int:
        r = api.request("POST", f"{API}/jobs", w["b_prod"], json_body={"type": "b.job", "queue": queue,
                                                                       "payload": {"secret": "B-SECRET"}, **extra})
        assert r.status == 201, r.body
        return int(r.json["id"])

    pending = enqueue_b("shared", tags=["t1"], unique_key="k-1")
    done, dead, running = enqueue_b("b-done"), enqueue_b("b-dead", max_attempts=1), enqueue_b("b-run")
    with api.owner() as owner:
        c = claim_one(owner, ["b-done"], worker_id="wb")
        assert one(owner, "complete", done, c["token"]) == "completed"
        c = claim_one(owner, ["b-dead"], worker_id="wb")
        assert one(owner, "fail", dead, c["token"], "boom B-SECRET", "permanent") == "dead_letter"
        c = claim_one(owner, ["b-run"], worker_id="wb")
        assert one(owner, "add_log", running, c["token"], "b's log line B-SECRET") == "ok"
    return World(**w, b_pending=pending, b_done=done, b_dead=dead, b_running=running)


# -- the endpoints ---------------------------------------------------------------------------


def test_health_readiness_and_openapi(api_server: ApiServer) -> None:  # noqa: F811
    api = api_server
    assert api.request("GET", "/healthz").json == {"status": "ok"}
    ready = api.request("GET", "/readyz")
    assert ready.status == 200 and ready.json["schema_version"] >= REQUIRED_SCHEMA_VERSION
    spec = api.request("GET", f"{API}/openapi.json")
    assert spec.status == 200
    paths = spec.json["paths"]
    for path in ("/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/jobs/bulk/cancel", "/api/v1/dead-letters/redrive",
                 "/api/v1/queues/{name}", "/api/v1/schedules", "/api/v1/workers", "/api/v1/metrics"):
        assert path in paths, sorted(paths)


def test_create_get_and_list_with_cursor_and_total(api_server: ApiServer, world: World) -> None:  # noqa: F811
    api = api_server
    ids = []
    for i in range(7):
        r = api.request("POST", f"{API}/jobs", world.admin, json_body={
            "type": "page.job", "queue": "paging", "payload": {"i": i}, "tags": ["even" if i % 2 == 0 else "odd"]})
        assert r.status == 201 and r.headers["location"] == f"{API}/jobs/{r.json['id']}"
        ids.append(r.json["id"])
    got = api.request("GET", f"{API}/jobs/{ids[0]}", world.admin).json
    assert got["payload"] == {"i": 0} and got["state"] == "pending" and got["created_by"].startswith("token:")
    seen, cursor = [], None
    while True:
        r = api.request("GET", f"{API}/jobs?queue=paging&limit=3" + (f"&cursor={cursor}" if cursor else ""),
                        world.admin)
        assert r.status == 200 and r.json["total"] == 7 and r.json["total_display"] == "7"
        seen += [j["id"] for j in r.json["items"]]
        cursor = r.json["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)
    even = api.request("GET", f"{API}/jobs?queue=paging&tag=even&state=pending&type=page.job", world.admin).json
    assert [j["id"] for j in even["items"]] == [ids[6], ids[4], ids[2], ids[0]]
    later = api.request("GET", f"{API}/jobs?queue=paging&created_after=2999-01-01T00:00:00Z", world.admin).json
    assert later["items"] == [] and later["total"] == 0


def test_total_is_capped(api_server: ApiServer, world: World) -> None:  # noqa: F811
    api = api_server
    with api.owner() as owner:
        owner.execute("SELECT jobqueue.enqueue_many((SELECT jsonb_agg(jsonb_build_object('type', 'many', "
                      "'queue', 'capped-total')) FROM generate_series(1, 10005)))")
    r = api.request("GET", f"{API}/jobs?queue=capped-total&limit=5", world.admin).json
    assert r["total"] == 10_000 and r["total_capped"] is True and r["total_display"] == "10,000+"
    assert len(r["items"]) == 5


def test_idempotency_key_returns_the_live_job(api_server: ApiServer, world: World) -> None:  # noqa: F811
    api = api_server
    body = {"type": "idem", "queue": "idem"}
    first = api.request("POST", f"{API}/jobs", world.admin, json_body=body, headers={"Idempotency-Key": "order-7"})
    again = api.request("POST", f"{API}/jobs", world.admin, json_body=body, headers={"Idempotency-Key": "order-7"})
    assert first.status == again.status == 201 and first.json["id"] == again.json["id"]
    assert api.request("GET", f"{API}/jobs?queue=idem", world.admin).json["total"] == 1


def test_cancel_retry_delete_logs_progress(api_server: ApiServer, world: World) -> None:  # noqa: F811
    api = api_server
    new = lambda q: api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "x", "queue": q}).json["id"]  # noqa: E731
    waiting = new("actions")
    r = api.request("POST", f"{API}/jobs/{waiting}/cancel", world.admin, json_body={"reason": "not needed"})
    assert r.json == {"id": waiting, "status": "cancelled"}
    assert api.request("GET", f"{API}/jobs/{waiting}", world.admin).json["state"] == "cancelled"
    running = new("actions-run")
    with api.owner() as owner:
        c = claim_one(owner, ["actions-run"], worker_id="w1")
        one(owner, "add_log", running, c["token"], "step 1")
        owner.execute("SELECT jobqueue.set_progress(%s, %s, 42.5)", [running, c["token"]])
    assert api.request("GET", f"{API}/jobs/{running}/progress", world.admin).json == {
        "id": running, "state": "processing", "progress": 42.5}
    logs = api.request("GET", f"{API}/jobs/{running}/logs", world.admin).json["items"]
    assert [line["message"] for line in logs] == ["step 1"]
    problem(api.request("DELETE", f"{API}/jobs/{running}", world.admin), 409, "id")
    dead = new("actions-dead")
    with api.owner() as owner:
        c = claim_one(owner, ["actions-dead"], worker_id="w1")
        one(owner, "fail", dead, c["token"], "boom", "permanent")
    assert api.request("GET", f"{API}/dead-letters/{dead}", world.admin).json["state"] == "dead_letter"
    assert api.request("POST", f"{API}/jobs/{dead}/retry", world.admin).json == {"id": dead, "state": "pending"}
    assert api.request("GET", f"{API}/jobs/{dead}", world.admin).json["state"] == "pending"
    r = api.request("DELETE", f"{API}/jobs/{waiting}", world.admin)
    assert r.json == {"id": waiting, "deleted": True, "state": "cancelled"}
    problem(api.request("GET", f"{API}/jobs/{waiting}", world.admin), 404, None)


def test_bulk_cancel_and_retry_dry_run_first(api_server: ApiServer, world: World) -> None:  # noqa: F811
    api = api_server
    ids = [api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "bulk", "queue": "bulk"}).json["id"]
           for _ in range(4)]
    before = snapshot(api)
    dry = api.request("POST", f"{API}/jobs/bulk/cancel", world.admin,
                      json_body={"filter": {"queue": "bulk"}, "dry_run": True}).json
    assert dry == {"dry_run": True, "count": 4, "ids": sorted(ids, reverse=True), "more": False}
    assert snapshot(api) == before
    # a call does at most `limit` jobs and says when more remain: the caller calls again
    part = api.request("POST", f"{API}/jobs/bulk/cancel", world.admin,
                       json_body={"filter": {"queue": "bulk"}, "limit": 3}).json
    assert part["count"] == 3 and part["more"] is True and part["ids"] == sorted(ids, reverse=True)[:3]
    done = api.request("POST", f"{API}/jobs/bulk/cancel", world.admin, json_body={"filter": {"queue": "bulk"}}).json
    assert done["count"] == 1 and set(done["results"].values()) == {"cancelled"} and done["more"] is False
    with api.owner() as owner:
        for q in ("bulk-dead",):
            for _ in range(2):
                job = api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "bd", "queue": q}).json["id"]
                c = claim_one(owner, [q], worker_id="w")
                one(owner, "fail", job, c["token"], "x", "permanent")
    r = api.request("POST", f"{API}/jobs/bulk/retry", world.admin, json_body={"filter": {"queue": "bulk-dead"}})
    assert r.json["count"] == 2
    assert api.request("GET", f"{API}/jobs?queue=bulk-dead&state=pending", world.admin).json["total"] == 2


def test_dead_letters_list_redrive_purge(api_server: ApiServer, world: World) -> None:  # noqa: F811
    api = api_server
    ids = []
    with api.owner() as owner:
        for _ in range(3):
            job = api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "dl", "queue": "dlq"}).json["id"]
            c = claim_one(owner, ["dlq"], worker_id="w")
            one(owner, "fail", job, c["token"], "x", "permanent")
            ids.append(job)
    listed = api.request("GET", f"{API}/dead-letters?queue=dlq&limit=2", world.admin).json
    assert [d["id"] for d in listed["items"]] == [ids[2], ids[1]] and listed["next_cursor"]
    before = snapshot(api)
    dry = api.request("POST", f"{API}/dead-letters/redrive", world.admin,
                      json_body={"filter": {"queue": "dlq", "ids": ids[:1]}, "dry_run": True}).json
    assert dry["ids"] == ids[:1] and dry["more"] is False and snapshot(api) == before
    dry = api.request("POST", f"{API}/dead-letters/redrive", world.admin,
                      json_body={"filter": {"queue": "dlq"}, "dry_run": True, "limit": 2}).json
    assert dry["count"] == 2 and dry["more"] is True and snapshot(api) == before
    r = api.request("POST", f"{API}/dead-letters/redrive", world.admin, json_body={"filter": {"ids": ids[:1]}})
    assert r.json["ids"] == ids[:1] and r.json["more"] is False
    r = api.request("POST", f"{API}/dead-letters/purge", world.admin, json_body={"filter": {"queue": "dlq"}})
    assert r.json == {"dry_run": False, "purged": 2, "more": False}


def test_dashboard_redrive_by_filter_does_a_thousand_and_offers_the_rest(
    api_server: ApiServer, world: World  # noqa: F811
) -> None:
    """Redrive by filter from the dashboard: the dry run says more match than one run does,
    the run does 1,000 and offers to continue, and the next dry run finds the rest."""
    from urllib.parse import urlencode

    from jobqueue.web.dashboard import BULK_LIMIT, csrf_token

    api = api_server
    with api.owner() as owner:
        owner.execute("SELECT jobqueue.enqueue_many((SELECT jsonb_agg(jsonb_build_object('type', 'many', "
                      "'queue', 'dl-many')) FROM generate_series(1, %s)))", (BULK_LIMIT + 1,))
        for batch in (1000, BULK_LIMIT + 1 - 1000):
            owner.execute("SELECT jobqueue.fail(c.id, c.token, 'x', 'permanent') "
                          "FROM jobqueue.claim(ARRAY['dl-many'], 'w', %s) AS c", (batch,))

    def post(fields: dict[str, Any]) -> str:
        conn = http.client.HTTPConnection(api.host, api.port, timeout=60)
        conn.request("POST", "/dead-letters/redrive", body=urlencode({**fields, "queue": "dl-many",
                                                                     "csrf_token": csrf_token(world.admin)}),
                     headers={"Content-Type": "application/x-www-form-urlencoded",
                              "Cookie": f"jobqueue_session={world.admin}"})
        resp = conn.getresponse()
        body = resp.read().decode()
        conn.close()
        assert resp.status == 200, body
        return body

    def dead() -> int:
        return int(api.request("GET", f"{API}/jobs?queue=dl-many&state=dead_letter&limit=1", world.admin).json["total"])

    first = post({})
    assert f"would redrive {BULK_LIMIT} dead letters" in first and "More match the filter" in first
    assert dead() == BULK_LIMIT + 1
    done = post({"confirm": "yes"})
    assert f"Redrove {BULK_LIMIT} dead letters" in done and 'id="continue"' in done
    assert dead() == 1
    rest = post({})
    assert "would redrive 1 dead letter" in rest and "More match" not in rest
    done = post({"confirm": "yes"})
    assert "Redrove 1 dead letter" in done and 'id="continue"' not in done and dead() == 0


def test_queues_schedules_workers_metrics(api_server: ApiServer, world: World) -> None:  # noqa: F811
    api = api_server
    api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "q", "queue": "qs"})
    assert api.request("POST", f"{API}/queues/qs/pause", world.admin).json == {"queue": "qs", "paused": True}
    queues = {q["name"]: q for q in api.request("GET", f"{API}/queues", world.admin).json["items"]}
    assert queues["qs"]["paused"] is True
    assert api.request("POST", f"{API}/queues/qs/resume", world.admin).json["paused"] is False
    r = api.request("PATCH", f"{API}/queues/qs", world.admin, json_body={"max_attempts": 3})
    assert r.status == 200 and r.json["settings"]["max_attempts"] == 3
    stats = api.request("GET", f"{API}/queues/stats", world.admin).json["items"]
    assert any(s["queue"] == "qs" for s in stats)
    with api.owner() as owner:
        owner.execute("SELECT jobqueue.set_schedule('nightly', '0 3 * * *', '{\"type\": \"n\"}'::jsonb)")
    names = [s["name"] for s in api.request("GET", f"{API}/schedules", world.admin).json["items"]]
    assert "nightly" in names
    assert api.request("POST", f"{API}/schedules/nightly/pause", world.admin).json["paused"] is True
    assert api.request("POST", f"{API}/schedules/nightly/resume", world.admin).json["paused"] is False
    assert api.request("GET", f"{API}/workers", world.admin).status == 200
    m = api.request("GET", f"{API}/metrics?window=600", world.admin)
    assert m.status == 200 and m.json["window"] == 600


def test_alerts_list_show_and_acknowledge(api_server: ApiServer, world: World) -> None:  # noqa: F811
    api = api_server
    with api.owner() as owner:
        row = owner.execute(
            "INSERT INTO jobqueue.alert_incident (dedupe_key, rule, kind, severity, summary) "
            "VALUES ('web-test', 'web-test', 'queue_depth', 'warning', 'queue too deep') RETURNING id"
        ).fetchone()
    assert row is not None
    alert = row["id"]
    listed = api.request("GET", f"{API}/alerts", world.admin).json["items"]
    assert [a["id"] for a in listed if a["id"] == alert] == [alert]
    assert api.request("GET", f"{API}/alerts?state=all", world.viewer).status == 200
    assert api.request("GET", f"{API}/alerts/{alert}", world.admin).json["id"] == alert
    before = snapshot(api)
    # a tenant's tokens never see alerts (they report on every tenant); a viewer cannot acknowledge
    for token in (world.a_op, world.a_view, world.b_prod):
        problem(api.request("GET", f"{API}/alerts", token), 403, None)
        assert api.request("POST", f"{API}/alerts/{alert}/ack", token).status == 403
    problem(api.request("POST", f"{API}/alerts/{alert}/ack", world.viewer), 403, None)
    problem(api.request("GET", f"{API}/alerts?state=sleeping", world.admin), 422, "state")
    assert snapshot(api) == before
    acked = api.request("POST", f"{API}/alerts/{alert}/ack", world.admin).json
    assert acked["state"] == "acknowledged" and acked["acknowledged_by"].startswith("token:")


# -- who may do what -------------------------------------------------------------------------


def test_tenant_token_never_sees_or_touches_another_tenant(api_server: ApiServer, world: World) -> None:  # noqa: F811
    """Through every endpoint, filter, bulk action and error message, A's tokens neither see
    nor change B's jobs; B's rows are byte-for-byte unchanged."""
    api = api_server
    before = snapshot(api)
    b_ids = (world.b_pending, world.b_done, world.b_dead, world.b_running)
    replies: list[Reply] = []
    for token in (world.a_prod, world.a_op, world.a_view):
        for job in b_ids:
            for method, path in (("GET", f"/jobs/{job}"), ("GET", f"/jobs/{job}/logs"),
                                 ("GET", f"/jobs/{job}/progress"), ("GET", f"/dead-letters/{job}"),
                                 ("POST", f"/jobs/{job}/cancel"), ("POST", f"/jobs/{job}/retry"),
                                 ("DELETE", f"/jobs/{job}")):
                r = api.request(method, API + path, token)
                assert r.status in (403, 404), (method, path, r.status, r.body)
                replies.append(r)
        for query in ("", "?tenant_id=B", "?queue=shared", "?state=dead_letter", "?state=completed",
                      "?tag=t1", "?queue=b-run&state=processing"):
            r = api.request("GET", f"{API}/jobs{query}", token)
            assert r.status == 200 and not {j["id"] for j in r.json["items"]} & set(b_ids), (query, r.json)
            assert all(j["tenant_id"] == "A" for j in r.json["items"])
            replies.append(r)
        for path, body in (("/jobs/bulk/cancel", {"filter": {"queue": "shared"}}),
                           ("/jobs/bulk/cancel", {"filter": {"tenant_id": "B"}}),
                           ("/jobs/bulk/retry", {"filter": {}}),
                           ("/jobs/bulk/redrive", {"filter": {}}),
                           ("/dead-letters/redrive", {"filter": {"ids": [world.b_dead]}}),
                           ("/dead-letters/purge", {"filter": {"queue": "b-dead"}})):
            for dry in (True, False):
                r = api.request("POST", API + path, token, json_body={**body, "dry_run": dry})
                assert r.status in (200, 403), (path, r.status, r.body)
                if r.status == 200:
                    assert not set(r.json.get("ids", [])) & set(b_ids) and r.json.get("purged", 0) == 0, r.json
                replies.append(r)
        for path in ("/dead-letters", "/queues/stats", "/workers", "/metrics", "/schedules"):
            r = api.request("GET", API + path, token)
            replies.append(r)
            if r.status == 200:
                items = r.json["items"]
                assert not [i for i in items if i.get("id") in b_ids or i.get("worker_id") == "wb"], (path, items)
                # queue names and settings are shared by every tenant (docs/sql-api.md); B's counts are not
                for i in items:
                    if str(i.get("queue", "")).startswith("b-"):
                        assert not [v for k, v in i.items() if isinstance(v, int | float) and v and k != "paused"], i
    r = api.request("POST", f"{API}/jobs", world.a_prod, json_body={"type": "x", "tenant_id": "B"})
    problem(r, 422, "tenant_id")
    replies.append(r)
    # the same unique key as B's live job: A gets a job of its own, not B's id
    r = api.request("POST", f"{API}/jobs", world.a_prod, json_body={"type": "x", "queue": "shared",
                                                                     "unique_key": "k-1"})
    assert r.status == 201 and r.json["id"] not in b_ids
    for reply in replies:
        assert b"B-SECRET" not in reply.body and b"b's log" not in reply.body
    after = snapshot(api)
    for table in ("job_history", "dead_letter", "job_log", "schedule", "api_token"):
        assert after[table] == before[table], table
    assert [r for r in after["job"] if "B-SECRET" in r] == [r for r in before["job"] if "B-SECRET" in r]
    # and B's own operator still sees them all
    seen = {j["id"] for j in api.request("GET", f"{API}/jobs?limit=500", world.b_op).json["items"]}
    assert set(b_ids) <= seen


def test_a_tenant_tokens_refusals_name_the_token_not_the_servers_login(api_server: ApiServer, world: World) -> None:  # noqa: F811
    """They said "login role jobqueue_web ..." (the server's own login, meaningless to the
    caller) and told a tenant listing alerts that it "changes what every tenant shares"."""
    api = api_server
    other = problem(api.request("POST", f"{API}/jobs", world.a_prod, json_body={"type": "x", "tenant_id": "B"}),
                    422, "tenant_id")  # fmt: skip
    assert "jobqueue_web" not in other["detail"] and other["detail"].startswith("tenant_id: API token "), other
    alerts = problem(api.request("GET", f"{API}/alerts", world.a_op), 403, "list_alerts")
    assert "jobqueue_web" not in alerts["detail"] and "changes" not in alerts["detail"], alerts
    assert "API token" in alerts["detail"] and "shared by every tenant" in alerts["detail"], alerts


def test_viewer_actions_are_refused_by_the_database(api_server: ApiServer, world: World) -> None:  # noqa: F811
    api = api_server
    job = api.request("POST", f"{API}/jobs", world.a_prod, json_body={"type": "v", "queue": "viewer"}).json["id"]
    before = snapshot(api)
    for token in (world.viewer, world.a_view):
        assert api.request("GET", f"{API}/jobs?queue=viewer", token).status == 200
        for method, path, body in (
            ("POST", "/jobs", {"type": "v"}),
            ("POST", f"/jobs/{job}/cancel", None),
            ("POST", f"/jobs/{job}/retry", None),
            ("DELETE", f"/jobs/{job}", None),
            ("POST", "/jobs/bulk/cancel", {"filter": {"queue": "viewer"}}),
            ("POST", "/jobs/bulk/redrive", {"filter": {}}),
            ("POST", "/dead-letters/purge", {"filter": {}}),
            ("POST", "/queues/viewer/pause", None),
            ("PATCH", "/queues/viewer", {"max_attempts": 2}),
            ("POST", "/schedules/nightly/pause", None),
        ):
            r = api.request(method, API + path, token, json_body=body)
            assert r.status in (403, 404), (path, r.status, r.body)
            if token == world.viewer and path != f"/jobs/{job}/retry":
                problem(r, 403, None)
    assert api.request("GET", f"{API}/jobs/{job}", world.viewer).json["state"] == "pending"
    assert snapshot(api) == before


def test_operator_tokens_are_refused_admin_actions_by_the_database(api_server: ApiServer, world: World) -> None:  # noqa: F811
    """An operator token acts as jobqueue_operator: every admin-only endpoint is 403 from the
    database's grants and changes nothing; in SQL, its session is refused every admin-only
    function, and a session that takes jobqueue_admin for it acts for nothing."""
    api = api_server
    new = lambda: api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "o", "queue": "op-q"}).json["id"]  # noqa: E731
    dead, done = new(), new()
    with api.owner() as owner:
        c = claim_one(owner, ["op-q"], worker_id="wo")
        one(owner, "fail", dead, c["token"], "boom", "permanent")
        c = claim_one(owner, ["op-q"], worker_id="wo")
        assert one(owner, "complete", done, c["token"]) == "completed"
    before = snapshot(api)
    for method, path, body in (
        ("POST", "/dead-letters/purge", {"filter": {"queue": "op-q"}}),
        ("PATCH", "/queues/op-q", {"max_attempts": 2}),
        ("DELETE", f"/jobs/{done}", None),
        ("DELETE", f"/jobs/{dead}", None),
    ):
        problem(api.request(method, API + path, world.op, json_body=body), 403, None)
    assert snapshot(api) == before
    web_url = api.owner_url.replace(api.owner_url.split("://", 1)[1].split("@", 1)[0], "jobqueue_web", 1)
    with psycopg.connect(web_url, autocommit=True) as web:
        for acting_as, refused in (("jobqueue_operator", psycopg.errors.InsufficientPrivilege),
                                   ("jobqueue_admin", psycopg.errors.InsufficientPrivilege)):
            web.execute("BEGIN")
            web.execute("SELECT t.*, set_config('role', %s, true) FROM jobqueue.act_as_token(%s) AS t",
                        (acting_as, world.op))
            for call in (
                "SELECT jobqueue.purge_dead_letters('{}', 10)",
                "SELECT jobqueue.archive_dead_letters(1)",
                f"SELECT jobqueue.delete_job({done})",
                """SELECT jobqueue.configure_queue('op-q', '{"max_attempts": 3}')""",
                """SELECT jobqueue.set_retry_policy('o', '{"max_attempts": 3}')""",
                "SELECT * FROM jobqueue.create_token('admin')",
                "SELECT jobqueue.revoke_token(1)",
                "SELECT * FROM jobqueue.api_tokens",
                "SELECT jobqueue.set_tenant_role('jobqueue_web', 'T')",
                "SELECT jobqueue.set_tenant_rate_limit('T', 1, 1)",
                """SELECT jobqueue.set_schedule('s', '* * * * *', '{"type": "x"}')""",
                "SELECT jobqueue.remove_schedule('s')",
                "SELECT jobqueue.remove_alert_channel('c')",
                "SELECT * FROM jobqueue.list_alert_channels()",
            ):
                web.execute("SAVEPOINT s")
                with pytest.raises(refused):
                    web.execute(call)
                web.execute("ROLLBACK TO SAVEPOINT s")
            if acting_as == "jobqueue_operator":  # what an operator may do, it may
                web.execute("SELECT jobqueue.pause_queue('op-q'), jobqueue.resume_queue('op-q')")
                assert web.execute("SELECT jobqueue.retry(%s)", (dead,)).fetchone() is not None
            else:  # the wrong role for its token: not even a read
                with pytest.raises(refused, match="token of role operator acts as jobqueue_operator"):
                    web.execute("SELECT count(*) FROM jobqueue.jobs")
            web.execute("ROLLBACK")
    assert snapshot(api) == before
    # through the API an operator may pause, resume, retry and redrive; an admin may purge and configure
    assert api.request("POST", f"{API}/queues/op-q/pause", world.op).status == 200
    assert api.request("POST", f"{API}/queues/op-q/resume", world.op).status == 200
    assert api.request("POST", f"{API}/jobs/{dead}/retry", world.op).json == {"id": dead, "state": "pending"}
    r = api.request("PATCH", f"{API}/queues/op-q", world.admin, json_body={"max_attempts": 2})
    assert r.status == 200 and r.json["settings"]["max_attempts"] == 2
    assert api.request("DELETE", f"{API}/jobs/{done}", world.admin).json["deleted"] is True


def test_overview_reads_the_redis_mirror_when_fresh_and_the_database_otherwise(
    api_server: ApiServer, world: World  # noqa: F811
) -> None:
    if OVERVIEW_REDIS is None:
        pytest.skip(NO_REDIS)
    import redis

    api = api_server
    queue = f"mirrored-{uuid.uuid4().hex[:8]}"
    assert api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "m", "queue": queue}).status == 201

    def overview() -> tuple[str, int | None]:
        conn = http.client.HTTPConnection(api.host, api.port, timeout=30)
        conn.request("GET", "/", headers={"Cookie": f"jobqueue_session={world.admin}"})
        resp = conn.getresponse()
        body = resp.read().decode()
        conn.close()
        assert resp.status == 200, body
        cache = re.search(r'data-cache="(\w+)"', body)
        pending = re.search(rf'<tr data-queue="{queue}">.*?<td class="n"[^>]*>(\d+)</td>', body, re.S)
        assert cache is not None
        return cache.group(1), int(pending.group(1)) if pending else None

    client = redis.Redis.from_url(OVERVIEW_REDIS, decode_responses=True)
    key = f"jobqueue:queue:{queue}"
    figures = {"pending": "777.0", "scheduled": "0.0", "retrying": "0.0", "processing": "0.0",
               "dead_letters": "0.0", "oldest_pending_age_s": "1.0", "paused": "0"}
    try:
        assert overview() == ("empty", 1)  # configured, nothing mirrored: the database
        client.sadd("jobqueue:queues", queue)
        client.expire("jobqueue:queues", 60)
        client.hset(key, mapping={**figures, "updated_at": repr(time.time())})
        client.expire(key, 60)
        assert overview() == ("used", 777)  # present and fresh: the mirror's figures
        client.hset(key, "updated_at", repr(time.time() - 3600))
        assert overview() == ("stale", 1)  # an hour old: the database
    finally:
        client.srem("jobqueue:queues", queue)
        client.delete(key)
        client.close()
    # a tenant's token never reads the mirror (it holds every tenant's figures)
    conn = http.client.HTTPConnection(api.host, api.port, timeout=30)
    conn.request("GET", "/", headers={"Cookie": f"jobqueue_session={world.a_op}"})
    assert 'data-cache="none"' in conn.getresponse().read().decode()
    conn.close()


def test_producer_tokens_see_only_their_own_jobs(api_server: ApiServer) -> None:  # noqa: F811
    api = api_server
    p1, p2 = api.token("producer"), api.token("producer")
    mine = api.request("POST", f"{API}/jobs", p1, json_body={"type": "own", "queue": "own"}).json["id"]
    problem(api.request("GET", f"{API}/jobs/{mine}", p2), 404, "id")
    assert api.request("GET", f"{API}/jobs?queue=own", p2).json["items"] == []
    # nor by cancelling it: "no job", as the reads say (it was 403 "job N was not enqueued by token:M")
    refused = problem(api.request("POST", f"{API}/jobs/{mine}/cancel", p2), 404, "id")
    assert "enqueued by" not in refused["detail"] and "token:" not in refused["detail"], refused
    assert api.request("POST", f"{API}/jobs/{mine}/cancel", p1).json["status"] == "cancelled"


# -- bad input ---------------------------------------------------------------------------------


def test_bad_input_is_a_problem_naming_the_field_and_changes_nothing(api_server: ApiServer, world: World) -> None:  # noqa: F811
    api = api_server
    big_cursor = base64.urlsafe_b64encode(b"v1:" + b"9" * 25).decode().rstrip("=")  # well formed, over bigint
    before = snapshot(api)
    cases = [
        (api.request("POST", f"{API}/jobs", world.admin, raw=b'{"type": "x",'), 422, "body"),
        (api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "x", "colour": "red"}), 422, "colour"),
        (api.request("POST", f"{API}/jobs", world.admin, json_body={"type": 5}), 422, "type"),
        (api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "x", "payload": [1]}), 422, "payload"),
        (api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "x", "priority": 99}), 422, "priority"),
        (api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "x", "max_attempts": 0}), 422,
         "max_attempts"),
        (api.request("POST", f"{API}/jobs", world.admin, raw=b"x" * 2_000_000), 413, "body"),
        (api.request("GET", f"{API}/jobs?state=bogus", world.admin), 422, "state"),
        (api.request("GET", f"{API}/jobs?limit=0", world.admin), 422, "limit"),
        (api.request("GET", f"{API}/jobs?created_after=yesterday", world.admin), 422, "created_after"),
        (api.request("GET", f"{API}/jobs?cursor=not-a-cursor", world.admin), 422, "cursor"),
        (api.request("GET", f"{API}/jobs/999999999", world.admin), 404, "id"),
        (api.request("GET", f"{API}/jobs/999999999/logs", world.admin), 404, "id"),
        (api.request("GET", f"{API}/jobs/abc", world.admin), 422, "job_id"),
        (api.request("GET", f"{API}/jobs/99999999999999999999999", world.admin), 422, "job_id"),  # over bigint
        (api.request("GET", f"{API}/jobs?cursor={big_cursor}", world.admin), 422, "cursor"),
        (api.request("GET", f"{API}/jobs?created_after=2026-12-07T03:55:26", world.admin), 422, "created_after"),
        (api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "x", "run_at": "2026-12-07T03:55:26"}),
         422, "run_at"),
        # wrong types are refused, never converted (true was max_attempts 1, "no" a real bulk action)
        (api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "x", "max_attempts": True}), 422,
         "max_attempts"),
        (api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "x", "max_attempts": "3"}), 422,
         "max_attempts"),
        (api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "x", "max_attempts": 3.0}), 422,
         "max_attempts"),
        (api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "x", "priority": True}), 422, "priority"),
        (api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "x", "delay": "5"}), 422, "delay"),
        (api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "x", "tags": "t1"}), 422, "tags"),
        (api.request("POST", f"{API}/jobs/bulk/cancel", world.admin,
                     json_body={"filter": {"queue": "shared"}, "dry_run": "no"}), 422, "dry_run"),
        (api.request("POST", f"{API}/jobs/bulk/cancel", world.admin,
                     json_body={"filter": {"queue": "shared"}, "dry_run": 0}), 422, "dry_run"),
        (api.request("POST", f"{API}/jobs/bulk/cancel", world.admin,
                     json_body={"filter": {"queue": "shared"}, "dry_run": True, "limit": "7"}), 422, "limit"),
        (api.request("POST", f"{API}/dead-letters/redrive", world.admin, json_body={"dry_run": "yes"}), 422,
         "dry_run"),
        (api.request("PATCH", f"{API}/queues/q", world.admin, json_body={"max_size": False}), 422, "max_size"),
        (api.request("POST", f"{API}/jobs/{world.b_pending}/retry", world.admin), 409, "id"),  # not a dead letter
        (api.request("POST", f"{API}/jobs", world.viewer, json_body={"type": "x"}), 403, "token"),
        # a typo in a filter is refused (it listed every job), and so is a body that is not JSON
        (api.request("GET", f"{API}/jobs?stat=pending", world.admin), 422, "stat"),
        (api.request("GET", f"{API}/dead-letters?queue=q&colour=red", world.admin), 422, "colour"),
        (api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "x"},
                     headers={"Content-Type": "text/plain"}), 415, "Content-Type"),
        (api.request("POST", f"{API}/jobs/bulk/cancel", world.admin, json_body={"filter": {"queue": "shared"}},
                     headers={"Content-Type": "text/plain"}), 415, "Content-Type"),
        (api.request("POST", f"{API}/jobs/999999999/cancel", world.admin), 404, "id"),
        (api.request("POST", f"{API}/jobs/bulk/cancel", world.admin, json_body={"filter": {"colour": 1}}), 422,
         "filter.colour"),
        (api.request("POST", f"{API}/dead-letters/redrive", world.admin, json_body={"filter": {"colour": 1}}), 422,
         "filter"),
        (api.request("PATCH", f"{API}/queues/q", world.admin, json_body={"max_attempts": "many"}), 422,
         "max_attempts"),
        (api.request("GET", f"{API}/jobs", None), 401, "token"),
        (api.request("GET", f"{API}/jobs?token={world.admin}", None), 401, "token"),  # never from a URL
        (api.request("GET", f"{API}/jobs", "jq_not_a_real_token"), 401, "token"),
        (api.request("GET", f"{API}/jobs", headers={"Authorization": "Basic abc"}), 401, "token"),
    ]
    for reply, status, field in cases:
        problem(reply, status, field)
    # a malformed body: every entry of invalid_params names the body (not a character position)
    malformed = problem(api.request("POST", f"{API}/jobs", world.admin, raw=b'{"type": "x",'), 422, "body")
    assert {p["field"] for p in malformed["invalid_params"]} == {"body"}, malformed
    expired = api.token("admin", expires="1 second")
    with api.superuser() as su:
        su.execute("UPDATE jobqueue.api_token SET expires_at = now() - interval '1 s' WHERE expires_at IS NOT NULL")
    problem(api.request("GET", f"{API}/jobs", expired), 401, "token")
    revoked = api.token("admin")
    with api.owner() as owner:
        token_id = owner.execute("SELECT max(id) AS id FROM jobqueue.api_token").fetchone()["id"]  # type: ignore[index]
        assert owner.execute("SELECT jobqueue.revoke_token(%s) AS r", [token_id]).fetchone()["r"]  # type: ignore[index]
    problem(api.request("POST", f"{API}/jobs", revoked, json_body={"type": "x"}), 401, "token")
    after = snapshot(api)
    assert {k: v for k, v in after.items() if k != "api_token"} == {k: v for k, v in before.items() if k != "api_token"}


def test_create_job_refuses_a_bad_token_before_it_looks_at_the_body(api_server: ApiServer, world: World) -> None:  # noqa: F811
    """POST /jobs verifies its token in the same round trip as the enqueue; a bad token must
    still get 401, never a 422 about its body, and change nothing (as every other route)."""
    api = api_server
    before = snapshot(api)
    bad_bodies: list[dict[str, Any]] = [  # (malformed JSON is refused before any route runs, as ever)
        {"json_body": {"type": "x", "colour": "red"}},
        {"json_body": {"type": "x", "unique_key": "a"}, "headers": {"Idempotency-Key": "b"}},
        {"json_body": {"type": "x"}, "headers": {"Idempotency-Key": "k" * 300}},
        {"json_body": {"type": "x", "queue": "no spaces allowed"}},
        {"json_body": {"type": "x"}, "headers": {"Content-Type": "text/plain"}},
        {"json_body": {"type": "x"}},
    ]
    clients = iter(range(1, 250))  # each refusal from its own address (X-Forwarded-For from loopback):
    # the module's other tests keep their budget of failures

    def post(token: str | None, body: dict[str, Any], client: str | None = None) -> Reply:
        headers = {**body.get("headers", {}), "X-Forwarded-For": client or f"192.0.2.{next(clients)}"}
        return api.request("POST", f"{API}/jobs", token, **{**body, "headers": headers})

    for body in bad_bodies:
        for token in ("jq_not_a_real_token", None):
            problem(post(token, body), 401, "token")
        basic = {**body, "headers": {**body.get("headers", {}), "Authorization": "Basic abc"}}
        problem(post(None, basic), 401, "token")
    # refusals on this route count towards the client's limit like any other
    statuses = [post("jq_not_a_real_token", {"json_body": {"type": "x"}}, "198.51.100.7").status for _ in range(11)]
    assert statuses == [401] * 10 + [429], statuses
    # a good token with the same bodies: the body's own error (the last one is valid: 201 below)
    refusals = (("colour", 422), ("unique_key", 422), ("idempotency-key", 422), ("queue", 422), ("Content-Type", 415))
    for body, (field, status) in zip(bad_bodies[:-1], refusals, strict=True):
        problem(api.request("POST", f"{API}/jobs", world.admin, **body), status, field)
    assert snapshot(api) == {**before, "api_token": snapshot(api)["api_token"]}
    created = api.request("POST", f"{API}/jobs", world.admin, json_body={"type": "x", "queue": "first"})
    assert created.status == 201 and created.headers["location"] == f"{API}/jobs/{created.json['id']}"
    # committed before the response: another connection sees it at once
    with api.superuser() as su:
        assert su.execute("SELECT queue FROM jobqueue.job WHERE id = %s", [created.json["id"]]).fetchone() == {
            "queue": "first"
        }


def test_cors_is_off_unless_configured(api_server: ApiServer, world: World) -> None:  # noqa: F811
    origin = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    preflight = api_server.request("OPTIONS", f"{API}/jobs", headers=origin)
    assert "access-control-allow-origin" not in preflight.headers
    r = api_server.request("GET", f"{API}/jobs?limit=1", world.admin, headers={"Origin": "https://evil.example"})
    assert r.status == 200 and "access-control-allow-origin" not in r.headers


def test_access_log_only_when_asked(api_server: ApiServer, tmp_path: Path) -> None:  # noqa: F811
    """`--access-log` (this module's server): one line per request, the path without the
    token; the default: none, though the server logs its start and its errors as always."""
    api = api_server
    token = api.token("producer")
    marker = f"/api/v1/jobs?queue=marker-{uuid.uuid4().hex}"  # a queue filter no job matches
    assert api.request("GET", marker, token).status == 200
    lines = [line for line in api.log().splitlines() if marker in line]
    assert len(lines) == 1 and '"GET ' in lines[0] and " 200" in lines[0] and token not in api.log(), lines
    quiet = start_serve(api.web_url, [], tmp_path / "quiet.log", cli_env({"PYTHONUNBUFFERED": "1"}),
                        owner_url=api.owner_url, su_url=api.su_url)  # fmt: skip
    try:
        assert quiet.request("GET", marker, token).status == 200
        posted = quiet.request("POST", f"{API}/jobs", token, json_body={"type": "quiet"})
        assert posted.status == 201, posted.body
        assert quiet.request("GET", "/nowhere").status == 404
    finally:
        stop_serve(quiet)
    log = quiet.log()
    assert "Application startup complete" in log, log
    assert "marker-" not in log and "/api/v1/jobs" not in log and "/nowhere" not in log, log


def test_failed_authentication_is_rate_limited_and_never_logs_the_token(api_server: ApiServer) -> None:  # noqa: F811
    api = api_server
    secret = "jq_wrong_" + "z" * 40
    statuses = [api.request("GET", f"{API}/jobs", secret).status for _ in range(12)]
    # earlier tests of the module spent some of the 10 failures a client may have a minute
    assert 401 in statuses and statuses[-1] == 429, statuses
    blocked = statuses.index(429)
    assert set(statuses[:blocked]) == {401} and set(statuses[blocked:]) == {429}, statuses
    assert secret not in api.log() and "auth" in api.log().lower()
    problem(api.request("GET", f"{API}/jobs", secret), 429, "token")


def test_a_forged_token_setting_gives_nothing(api_server: ApiServer) -> None:  # noqa: F811
    """As jobqueue_web, SET ROLE without act_as_token and with a made-up jobqueue.token: the
    tenant, admin and job checks raise rather than fall back to the web login's memberships."""
    api = api_server
    url = api.owner_url.replace(api.owner_url.split("://", 1)[1].split("@", 1)[0], "jobqueue_web", 1)
    with psycopg.connect(url, autocommit=True) as web:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            web.execute("SELECT count(*) FROM jobqueue.jobs")  # NOINHERIT: nothing of its own
        web.execute("BEGIN")
        web.execute("SELECT set_config('jobqueue.token', 'jq_forged', true)")
        web.execute("SET LOCAL ROLE jobqueue_admin")
        with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):
            web.execute("SELECT count(*) FROM jobqueue.jobs")
        web.execute("ROLLBACK")


def test_serve_stops_on_sigterm_while_a_live_stream_is_open(api_server: ApiServer, tmp_path: Path) -> None:  # noqa: F811
    """A dashboard left open keeps its event stream busy with keep-alives forever; uvicorn on
    its own waits for every connection to end, so `jobqueue serve` never stopped while one was
    open. It now gives requests SHUTDOWN_GRACE_S, then cancels what is left and exits."""
    args = [str(a) for a in api_server.process.args]  # type: ignore[union-attr]
    port = free_port()
    args[args.index("--port") + 1] = str(port)
    token = api_server.token("viewer", name="stop with a stream open")
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=cli_env({}))
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "jobqueue serve did not listen"
                time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as stream:
            stream.sendall(
                f"GET /live/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                "Accept: text/event-stream\r\n\r\n".encode()
            )
            seen = b""
            while b": connected" not in seen:
                chunk = stream.recv(4096)
                assert chunk, seen
                seen += chunk
            assert seen.startswith(b"HTTP/1.1 200"), seen
            proc.send_signal(signal.SIGTERM)
            # the client keeps its connection open throughout: before, this waited forever.
            # (uvicorn re-raises the signal once it has shut down: exit status -SIGTERM.)
            status = proc.wait(timeout=SHUTDOWN_GRACE_S + 25)
            log = (tmp_path / "serve.log").read_text()
            assert status in (0, -signal.SIGTERM) and "Application shutdown complete" in log, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
