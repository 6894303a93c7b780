"""POST /api/v1/jobs's lean path (jobqueue/web/fastpost.py) against the real PostgreSQL of a
database owned by a plain role (row-level security binds): the plain case is answered by
the lean path itself, as the token's role and tenant; everything else reaches the FastAPI
route with the body it sent; the errors it answers itself are the app's problem+json."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from jobqueue.config import DatabaseTarget
from jobqueue.web.app import BodySizeLimit
from jobqueue.web.auth import AUTH_FAILURES_PER_WINDOW, WebDatabase
from jobqueue.web.dashboard import COOKIE, csrf_token
from jobqueue.web.fastpost import FastPost
from tests.support.web import ApiServer, api_server  # noqa: F401 - the module's server fixture

pytestmark = pytest.mark.timeout(300)

PATH = "/api/v1/jobs"


class Inner:
    """The app behind the lean path: records what reached it (and its body), answers 299."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def web_url(api: ApiServer) -> str:
    return api.owner_url.replace(api.owner_url.split("://", 1)[1].split("@", 1)[0], "jobqueue_web", 1)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def db(api_server: ApiServer, loop: asyncio.AbstractEventLoop) -> Iterator[WebDatabase]:  # noqa: F811
    db = WebDatabase(DatabaseTarget(web_url(api_server), "test"), pool_size=2)
    db.open()
    loop.run_until_complete(db.aopen())
    yield db
    loop.run_until_complete(db.aclose())
    db.close()


def call(
    loop: asyncio.AbstractEventLoop,
    app: Any,
    body: bytes | list[bytes],
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    client: str = "198.51.100.1",
    path: str = PATH,
    method: str = "POST",
    on_receive: Any = None,
) -> Answer:
    """One request through ``app`` as uvicorn would make it (body in one or several chunks)."""
    hdrs = {"content-type": "application/json", **({"authorization": f"Bearer {token}"} if token else {}),
            **{k.lower(): v for k, v in (headers or {}).items()}}  # fmt: skip
    chunks = [body] if isinstance(body, bytes) else body
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    scope = {"type": "http", "method": method, "path": path, "client": (client, 5555),
             "headers": [(k.encode(), v.encode()) for k, v in hdrs.items()]}  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            if on_receive is not None:
                on_receive(len(messages))
            return messages.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    loop.run_until_complete(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, out)


def jobs(api: ApiServer) -> list[dict[str, Any]]:
    with api.superuser() as su:
        return su.execute("SELECT id, type, queue, tenant_id, created_by FROM jobqueue.job ORDER BY id").fetchall()


def token_id(api: ApiServer) -> int:
    with api.superuser() as su:
        return int(su.execute("SELECT max(id) AS id FROM jobqueue.api_token").fetchone()["id"])  # type: ignore[index]


def problem(answer: Answer, status: int, field: str | None) -> dict[str, Any]:
    assert answer.status == status, (answer.status, answer.body)
    assert answer.headers["content-type"].startswith("application/problem+json"), answer.headers
    body = answer.json
    assert body["status"] == status and body["detail"] and body.get("field") == field, body
    return dict(body)


def test_the_plain_post_is_answered_by_the_lean_path_as_its_token(
    api_server: ApiServer,  # noqa: F811
    db: WebDatabase,
    loop: asyncio.AbstractEventLoop,
) -> None:
    api, inner = api_server, Inner()
    app = FastPost(inner, db, PATH)
    admin = api.token("admin")
    admin_id = token_id(api)
    plain = {"type": "fp.plain", "payload": {"n": 1}, "queue": "fp", "priority": "high", "max_attempts": 3,
             "user_id": "u1", "tenant_id": None}  # fmt: skip
    a = call(loop, app, json.dumps(plain).encode(), token=admin)
    assert a.status == 201 and a.headers["content-type"] == "application/json", a.body
    job_id = a.json["id"]
    assert a.headers["location"] == f"{PATH}/{job_id}" and inner.bodies == []
    created = [j for j in jobs(api) if j["id"] == job_id]
    assert created == [{"id": job_id, "type": "fp.plain", "queue": "fp", "tenant_id": None,
                        "created_by": f"token:{admin_id}"}]  # fmt: skip
    # Idempotency-Key: the live job's id again, still on the lean path
    again = [call(loop, app, b'{"type": "fp.key"}', token=admin, headers={"Idempotency-Key": "fp-k"}) for _ in "ab"]
    assert again[0].status == again[1].status == 201 and again[0].json == again[1].json and inner.bodies == []
    # a tenant's producer: its job is its tenant's, whatever the body says of tenant_id
    a_prod = api.token("producer", "A")
    mine = call(loop, app, b'{"type": "fp.tenant"}', token=a_prod)
    assert mine.status == 201 and inner.bodies == []
    assert [j["tenant_id"] for j in jobs(api) if j["id"] == mine.json["id"]] == ["A"]
    before = jobs(api)
    problem(call(loop, app, b'{"type": "fp.tenant", "tenant_id": "B"}', token=a_prod), 422, "tenant_id")
    # and tenant B's token does not see it through the API (row-level security, not web code)
    b_op = api.token("operator", "B")
    assert api.request("GET", f"{PATH}/{mine.json['id']}", b_op).status == 404
    assert api.request("GET", f"{PATH}/{mine.json['id']}", admin).status == 200
    assert jobs(api) == before and inner.bodies == []


def test_refusals_on_the_lean_path_are_the_apps_problems_and_change_nothing(
    api_server: ApiServer,  # noqa: F811
    db: WebDatabase,
    loop: asyncio.AbstractEventLoop,
) -> None:
    api, inner = api_server, Inner()
    app = FastPost(inner, db, PATH)
    before = jobs(api)
    revoked = api.token("producer")
    with api.owner() as owner:
        assert owner.execute("SELECT jobqueue.revoke_token(%s) AS r", [token_id(api)]).fetchone()["r"]  # type: ignore[index]
    expired = api.token("producer", expires="1 second")
    with api.superuser() as su:
        su.execute("UPDATE jobqueue.api_token SET expires_at = now() - interval '1 s' WHERE id = %s", [token_id(api)])
    good = b'{"type": "fp.refused"}'
    for n, bad in enumerate((revoked, expired, "jq_not_a_real_token")):
        a = call(loop, app, good, token=bad, client=f"203.0.113.{n}")
        problem(a, 401, "token")
        assert a.headers["www-authenticate"].startswith("Bearer")
    viewer = api.token("viewer")
    problem(call(loop, app, good, token=viewer), 403, "token")  # the grant of the token's role refuses it
    admin = api.token("admin")
    admin_id = token_id(api)
    problem(call(loop, app, b'{"type": "fp.x", "queue": "no spaces allowed"}', token=admin), 422, "queue")
    # one transaction: act_as_token's own write (last_used_at) went with the refused enqueue
    assert last_used(api, admin_id) is None
    # failures count towards the client's limit, then 429 with Retry-After, on this path too
    statuses = [call(loop, app, good, token="jq_wrong", client="203.0.113.99").status
                for _ in range(AUTH_FAILURES_PER_WINDOW + 1)]  # fmt: skip
    assert statuses == [401] * AUTH_FAILURES_PER_WINDOW + [429], statuses
    limited = call(loop, app, good, token=admin, client="203.0.113.99")
    assert problem(limited, 429, "token") and int(limited.headers["retry-after"]) >= 1
    assert inner.bodies == [] and jobs(api) == before
    assert call(loop, app, good, token=admin).status == 201 and last_used(api, admin_id) is not None


SIGNATURE = ("jobqueue.enqueue_as_token(text, text, jsonb, text, anycompatible, timestamptz, interval, integer, jsonb, "
             "text, timestamptz, text, text, text[], jsonb, bigint[], interval, interval)")  # fmt: skip


def test_enqueue_as_token_acts_as_the_token_in_the_database(api_server: ApiServer) -> None:  # noqa: F811
    """The one statement of the lean path, as jobqueue_web: the job is the token's (created_by,
    tenant), the rest of its transaction runs as the token's role under row-level security,
    and nothing else can call it: not the roles tokens act as (so not twice in a
    transaction), not the other jobqueue roles."""
    api = api_server
    a_op = api.token("operator", "A")
    a_id = token_id(api)
    b_prod = api.token("producer", "B")
    with psycopg.connect(web_url(api), autocommit=True, row_factory=dict_row) as web:
        theirs = web.execute("SELECT jobqueue.enqueue_as_token(%s, 'fp.sql.b') AS id", [b_prod]).fetchone()
        assert theirs is not None
        # outside a transaction block: one transaction, the role back to none after it
        assert web.execute("SELECT current_user AS u, current_setting('role') AS r").fetchone() == {
            "u": "jobqueue_web", "r": "none"}  # fmt: skip
        with web.transaction():
            row = web.execute("SELECT jobqueue.enqueue_as_token(%s, 'fp.sql', priority => 'high') AS id", [a_op])
            mine = row.fetchone()["id"]  # type: ignore[index]
            # the token's role for the rest of the transaction, and its tenant through RLS
            assert web.execute("SELECT current_user AS u").fetchone() == {"u": "jobqueue_operator"}
            seen = {r["id"] for r in web.execute("SELECT id FROM jobqueue.jobs WHERE type LIKE 'fp.sql%%'")}
            assert seen == {mine}, seen  # B's job is not there for tenant A's token
            with pytest.raises(psycopg.errors.InsufficientPrivilege):  # not as the token's role
                web.execute("SELECT jobqueue.enqueue_as_token(%s, 'fp.sql.again')", [a_op])
            raise psycopg.Rollback
        made = web.execute("SELECT jobqueue.enqueue_as_token(%s, 'fp.sql', priority => 'high') AS id", [a_op])
        mine = made.fetchone()["id"]  # type: ignore[index]
        # refused: unknown token (28000 naming token), a tenant's token for another tenant
        with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification) as bad:
            web.execute("SELECT jobqueue.enqueue_as_token('jq_nothing', 'fp.sql.bad')")
        assert bad.value.diag.column_name == "token"
        with pytest.raises(psycopg.errors.InvalidParameterValue) as other:
            web.execute("SELECT jobqueue.enqueue_as_token(%s, 'fp.sql.bad', tenant_id => 'B')", [a_op])
        assert other.value.diag.column_name == "tenant_id"
        viewer = api.token("viewer")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the viewer's role has no enqueue
            web.execute("SELECT jobqueue.enqueue_as_token(%s, 'fp.sql.bad')", [viewer])
        # last_used_at: written when due (a minute), not on every request
        with api.superuser() as su:
            su.execute("UPDATE jobqueue.api_token SET last_used_at = now() - interval '2 min' WHERE id = %s", [a_id])
            due = last_used(api, a_id)
            web.execute("SELECT jobqueue.enqueue_as_token(%s, 'fp.sql.used', queue => 'fp-used')", [a_op])
            written = last_used(api, a_id)
            web.execute("SELECT jobqueue.enqueue_as_token(%s, 'fp.sql.used', queue => 'fp-used')", [a_op])
            assert due < written == last_used(api, a_id)
            su.execute("DELETE FROM jobqueue.job WHERE queue = 'fp-used'")
    created = {j["id"]: j for j in jobs(api) if j["type"].startswith("fp.sql")}
    assert set(created) == {theirs["id"], mine}
    assert (created[mine]["tenant_id"], created[mine]["created_by"]) == ("A", f"token:{a_id}")
    assert created[theirs["id"]]["tenant_id"] == "B"
    with api.superuser() as su:
        may = su.execute(
            f"SELECT r AS role, has_function_privilege(r, '{SIGNATURE}', 'EXECUTE') AS may FROM unnest(ARRAY["
            "'jobqueue_web', 'jobqueue_viewer', 'jobqueue_producer', 'jobqueue_operator', 'jobqueue_admin', "
            "'jobqueue_worker']) AS r"
        ).fetchall()
    assert {r["role"] for r in may if r["may"]} == {"jobqueue_web"}, may


def test_the_lean_path_prepares_again_or_not_at_all(
    api_server: ApiServer,  # noqa: F811
    db: WebDatabase,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """The statement is prepared per connection: prepared again when it went (DEALLOCATE),
    never with a target that refuses prepared statements (a pooler in transaction mode)."""
    api, inner = api_server, Inner()
    admin = api.tokens.setdefault("admin", api.token("admin"))
    app = FastPost(inner, db, PATH)
    assert call(loop, app, b'{"type": "fp.prep"}', token=admin).status == 201
    assert db.apool is not None

    async def deallocate() -> list[int]:
        assert db.apool is not None
        async with db.apool.connection() as c1, db.apool.connection() as c2:  # the pool's 2
            for c in (c1, c2):
                await c.execute("DEALLOCATE ALL")
            return [len(await (await c.execute("SELECT * FROM pg_prepared_statements")).fetchall()) for c in (c1, c2)]

    assert loop.run_until_complete(deallocate()) == [0, 0]
    again = [call(loop, app, b'{"type": "fp.prep"}', token=admin) for _ in range(3)]
    assert [a.status for a in again] == [201] * 3, [a.body for a in again]
    unprepared = WebDatabase(DatabaseTarget(web_url(api), "test", prepared_statements=False), pool_size=1)
    loop.run_until_complete(unprepared.aopen())
    try:
        plain = FastPost(inner, unprepared, PATH)
        assert [call(loop, plain, b'{"type": "fp.unprep"}', token=admin).status for _ in "ab"] == [201, 201]
        problem(call(loop, plain, b'{"type": "fp.unprep"}', token="jq_no"), 401, "token")

        async def prepared() -> list[Any]:
            assert unprepared.apool is not None
            async with unprepared.apool.connection() as c:
                return await (await c.execute("SELECT name FROM pg_prepared_statements")).fetchall()

        assert loop.run_until_complete(prepared()) == []
    finally:
        loop.run_until_complete(unprepared.aclose())
    assert [j["type"] for j in jobs(api)].count("fp.unprep") == 2 and inner.bodies == []


def last_used(api: ApiServer, token: int) -> Any:
    with api.superuser() as su:
        return su.execute("SELECT last_used_at FROM jobqueue.api_token WHERE id = %s", [token]).fetchone()[
            "last_used_at"
        ]  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"type": "x",', {}),  # malformed JSON
        (b'["x"]', {}),  # not an object
        (b'{"type": "x", "colour": "red"}', {}),  # unknown field
        (b'{"type": 5}', {}),  # wrong type
        (b'{"payload": {}}', {}),  # no type
        (b'{"type": ""}', {}),  # too short
        (json.dumps({"type": "x" * 256}).encode(), {}),  # too long
        (b'{"type": "x", "payload": [1]}', {}),
        (b'{"type": "x", "payload": null}', {}),
        (b'{"type": "x", "max_attempts": true}', {}),  # a bool is not an int here
        (b'{"type": "x", "priority": 1.5}', {}),
        (b'{"type": "x", "priority": false}', {}),
        (b'{"type": "x", "payload": {"v": NaN}}', {}),  # not JSON the database takes
        (b'{"type": "x", "tags": ["a"]}', {}),  # a field the lean path leaves to the route
        (b'{"type": "x", "delay": 5}', {}),
        (b'{"type": "x", "unique_key": "a"}', {"Idempotency-Key": "b"}),  # which one?
        (b'{"type": "x"}', {"Idempotency-Key": "k" * 256}),
        (b'{"type": "x"}', {"Content-Type": "text/plain"}),
        (b'{"type": "x"}', {"Origin": "https://elsewhere.example"}),  # CORS: the app's middleware
        (b'{"type": "x"}', {"Authorization": "Basic abc"}),
        (b'{"type": "x"}', {"Authorization": None}),  # no credentials, or a cookie session
        (b'{"type": "x"}', {"Authorization": None, "Cookie": f"{COOKIE}=jq_session_token"}),
        # what libpq's text parameters cannot carry as they are: the route answers
        (b'{"type": "x\\u0000y"}', {}),  # NUL
        (b'{"type": "x", "queue": "\\ud800"}', {}),  # a lone surrogate
        (b'{"type": "x", "max_attempts": 2147483648}', {}),  # beyond the integer parameter
    ],
)
def test_everything_but_the_plain_case_reaches_the_route_with_its_body(
    api_server: ApiServer,  # noqa: F811
    db: WebDatabase,
    loop: asyncio.AbstractEventLoop,
    body: bytes,
    headers: dict[str, Any],
) -> None:
    api, inner = api_server, Inner()
    app = FastPost(inner, db, PATH)
    before = jobs(api)
    token = api.tokens.setdefault("admin", api.token("admin"))
    sent = {k: v for k, v in headers.items() if v is not None}
    if headers.get("Authorization", "") is None:
        token = None
    a = call(loop, app, [body[:3], body[3:]], token=token, headers=sent)
    assert a.status == 299 and inner.bodies == [body], (a.status, a.body)
    assert jobs(api) == before


def test_other_methods_and_paths_pass_through(
    api_server: ApiServer,  # noqa: F811
    db: WebDatabase,
    loop: asyncio.AbstractEventLoop,
) -> None:
    inner = Inner()
    app = FastPost(inner, db, PATH)
    token = api_server.tokens.setdefault("admin", api_server.token("admin"))
    for method, path in (("GET", PATH), ("POST", f"{PATH}/bulk/cancel"), ("POST", "/api/v1/jobs/")):
        assert call(loop, app, b'{"type": "x"}', token=token, method=method, path=path).status == 299
    assert len(inner.bodies) == 3


def test_an_oversize_body_is_413_before_the_lean_path_reads_it_all(
    api_server: ApiServer,  # noqa: F811
    db: WebDatabase,
    loop: asyncio.AbstractEventLoop,
) -> None:
    api, inner = api_server, Inner()
    app = FastPost(inner, db, PATH, max_body_bytes=1000)
    before = jobs(api)
    token = api.tokens.setdefault("admin", api.token("admin"))
    body = json.dumps({"type": "fp.big", "payload": {"x": "y" * 2000}}).encode()
    read: list[int] = []
    chunks = [body[i : i + 500] for i in range(0, len(body), 500)]  # streamed: no Content-Length
    answer = call(loop, app, chunks, token=token, on_receive=read.append)
    problem(answer, 413, "body")
    assert "app;dur=" in answer.headers["server-timing"]
    assert len(read) == 3 < len(chunks) and inner.bodies == [] and jobs(api) == before
    # a Content-Length over the limit (or not a number): the app's BodySizeLimit answers, unread
    limited = BodySizeLimit(app, max_bytes=1000)
    for length in (str(len(body)), "12x"):
        problem(call(loop, limited, body, token=token, headers={"Content-Length": length}), 413, "body")
    assert inner.bodies == [] and jobs(api) == before
    assert call(loop, app, [b'{"type": "fp.small"}'], token=token).status == 201


def test_over_http_the_lean_path_keeps_the_routes_contract(api_server: ApiServer) -> None:  # noqa: F811
    """Through the real server: 201 with Location and a committed job, 413 for a streamed
    oversize body, and a cookie session needs its CSRF header on this route (the lean path
    takes no cookies; the dashboard's middleware decides)."""
    api = api_server
    token = api.tokens.setdefault("admin", api.token("admin"))
    created = api.request("POST", PATH, token, json_body={"type": "fp.http", "queue": "fp-http"})
    assert created.status == 201 and created.headers["location"] == f"{PATH}/{created.json['id']}"
    assert "server-timing" in created.headers
    assert [j["queue"] for j in jobs(api) if j["id"] == created.json["id"]] == ["fp-http"]
    before = jobs(api)
    import http.client

    conn = http.client.HTTPConnection(api.host, api.port, timeout=30)
    try:
        big = json.dumps({"type": "fp.big", "payload": {"x": "y" * 1_300_000}}).encode()
        conn.request("POST", PATH, body=iter([big[i : i + 65536] for i in range(0, len(big), 65536)]),
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                     encode_chunked=True)  # fmt: skip
        resp = conn.getresponse()
        assert resp.status == 413 and json.loads(resp.read())["field"] == "body"
    finally:
        conn.close()
    cookie = {"Cookie": f"{COOKIE}={token}"}
    refused = api.request("POST", PATH, None, json_body={"type": "fp.cookie"}, headers=cookie)
    assert refused.status == 401 and refused.json["field"] == "token"
    assert jobs(api) == before
    allowed = api.request("POST", PATH, None, json_body={"type": "fp.cookie"},
                          headers={**cookie, "X-CSRF-Token": csrf_token(token)})  # fmt: skip
    assert allowed.status == 201, allowed.body


def test_a_bug_on_the_lean_path_is_a_logged_500_problem(
    api_server: ApiServer,  # noqa: F811
    db: WebDatabase,
    loop: asyncio.AbstractEventLoop,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """FastPost runs before the app's ServerErrorMiddleware: an unexpected exception is
    answered as that middleware would, a 500 (problem+json here), and logged with its trace."""

    class Broken(WebDatabase):
        async def enqueue_as_async(self, *args: Any, **kwargs: Any) -> int:
            raise RuntimeError("boom")

    broken = Broken(db.target)
    broken.apool = db.apool
    token = api_server.tokens.setdefault("admin", api_server.token("admin"))
    with caplog.at_level("ERROR", logger="jobqueue.web"):
        answer = call(loop, FastPost(Inner(), broken, PATH), b'{"type": "fp.bug"}', token=token)
    problem(answer, 500, None)
    assert "boom" not in answer.body.decode() and "server-timing" in answer.headers
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)


def test_the_lean_path_survives_its_connections_being_killed(
    api_server: ApiServer,  # noqa: F811
    db: WebDatabase,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """pg_terminate_backend of every pool connection (a failover, an idle-session reaper): the
    next POST is a 503 problem naming no job (nothing written) or a 201; the pool then hands
    out new connections and POSTs are 201 again, each job written once."""
    api = api_server
    token = api.tokens.setdefault("admin", api.token("admin"))
    app = FastPost(Inner(), db, PATH)
    assert call(loop, app, b'{"type": "fp.kill", "queue": "fp-kill"}', token=token).status == 201
    with api.superuser() as su:
        killed = su.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'jobqueue-web' AND pid <> pg_backend_pid()"
        ).fetchone()
    assert killed is not None and killed["n"] >= 1
    statuses = []
    for _ in range(3):
        answer = call(loop, app, b'{"type": "fp.kill", "queue": "fp-kill"}', token=token)
        statuses.append(answer.status)
        if answer.status != 201:
            problem(answer, 503, None)
    assert statuses[-1] == 201 and set(statuses) <= {201, 503}, statuses
    created = [j for j in jobs(api) if j["queue"] == "fp-kill"]
    assert len(created) == 1 + statuses.count(201), (created, statuses)
