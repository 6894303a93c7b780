"""The dashboard in a real headless Chromium (Selenium + Debian's chromedriver) against a
real ``jobqueue serve`` (tests/support/web.py) on a real PostgreSQL.

Jobs are made by *other processes* (a Python subprocess with its own connection), and the
pages must show them appear and finish without a reload. Tenants, viewers and CSRF are
checked through the browser and, for the live stream, over plain HTTP. The main pages are
saved as screenshots into docs/screenshots/ (README shows them).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("selenium")

from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.chromium import ChromiumUnavailable, new_driver
from tests.support.web import ApiServer, api_server  # noqa: F401 - the module's server fixture

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "screenshots"
WAIT_S = 30.0
#: A module server, Chromium and several subprocesses on a loaded 2-core machine.
pytestmark = pytest.mark.timeout(300)


# -- helpers ---------------------------------------------------------------------------------


def other_process(api: ApiServer, code: str, args: Any) -> Any:
    """Run SQL work in a separate Python process with its own connection; returns its JSON."""
    script = (
        "import json, sys, psycopg\n"
        "from psycopg.rows import dict_row\n"
        "conn = psycopg.connect(sys.argv[1], autocommit=True, row_factory=dict_row)\n"
        "args = json.loads(sys.argv[2])\n"
        f"{code}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, api.owner_url, json.dumps(args)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout or "null")


ENQUEUE = (
    "ids = [conn.execute(\"SELECT jobqueue.enqueue(%s, '{\\\"n\\\": 1}', %s, tenant_id => %s, max_attempts => %s) AS id\","  # noqa: E501
    " (args['type'], args['queue'], args.get('tenant'), args.get('max_attempts', 3))).fetchone()['id']"
    " for _ in range(args.get('n', 1))]\n"
    "print(json.dumps(ids))"
)
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "billing/tasks.py", line 41, in charge\n'
    "    gateway.charge(invoice)\n"
    "billing.gateway.CardDeclined: card declined"
)
FINISH = (
    "c = conn.execute('SELECT id, token FROM jobqueue.claim(ARRAY[%s], %s, 100)', (args['queue'], 'browser-w')).fetchall()\n"  # noqa: E501
    "for r in c:\n"
    "    if args['how'] == 'complete':\n"
    "        conn.execute(\"SELECT jobqueue.complete(%s, %s, '{\\\"ok\\\": true}')\", (r['id'], r['token']))\n"
    "    else:\n"
    "        conn.execute('SELECT jobqueue.fail(%s, %s, %s, %s, NULL, %s)', (r['id'], r['token'], 'card declined', 'permanent', args['traceback']))\n"  # noqa: E501
    "print(json.dumps([r['id'] for r in c]))"
)


def enqueue(api: ApiServer, queue: str, type: str = "email.send", n: int = 1, **extra: Any) -> list[int]:
    ids: list[int] = other_process(api, ENQUEUE, {"queue": queue, "type": type, "n": n, **extra})
    return ids


def finish(api: ApiServer, queue: str, how: str = "complete") -> list[int]:
    ids: list[int] = other_process(api, FINISH, {"queue": queue, "how": how, "traceback": TRACEBACK})
    return ids


def state_of(api: ApiServer, job_id: int) -> str:
    with api.owner() as conn:
        row = conn.execute("SELECT state::text AS s FROM jobqueue.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return str(row["s"])


def snapshot(api: ApiServer) -> list[tuple[Any, ...]]:
    with api.owner() as conn:
        return [tuple(r.values()) for r in conn.execute("SELECT id, state::text, attempt FROM jobqueue.jobs ORDER BY id")]  # noqa: E501


@pytest.fixture(scope="module")
def browser(api_server: ApiServer) -> Iterator[WebDriver]:  # noqa: F811
    # (after the server, so it quits first: its open live stream would hold the server's
    # shutdown for 20 s)
    try:
        driver = new_driver(1280, 800)
    except ChromiumUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def tokens(api_server: ApiServer) -> dict[str, str]:  # noqa: F811
    api = api_server
    return {
        "admin": api.token("admin", name="browser admin"),
        "viewer": api.token("viewer", name="browser viewer"),
        "a_op": api.token("operator", "A", name="tenant A operator"),
    }


def url(api: ApiServer, path: str) -> str:
    return f"http://{api.host}:{api.port}{path}"


def sign_in(driver: WebDriver, api: ApiServer, token: str) -> None:
    driver.delete_all_cookies()
    driver.get(url(api, "/login"))
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "sign-in").click()
    WebDriverWait(driver, WAIT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, "header nav"))


def wait_for(driver: WebDriver, check: Callable[[WebDriver], Any], what: str) -> Any:
    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(check)
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what}") from None


def row_state(driver: WebDriver, job_id: int) -> str | None:
    # read in one script: the rows are swapped by live refreshes between two WebDriver calls
    state = driver.execute_script(
        "var r = document.querySelector(arguments[0]); return r ? r.getAttribute('data-state') : null;",
        f"tr[data-job='{job_id}']",
    )
    return None if state is None else str(state)


def shot(driver: WebDriver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def post_form(api: ApiServer, path: str, fields: dict[str, Any], cookie: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(api.host, api.port, timeout=30)
    body = urlencode(fields, doseq=True)
    conn.request("POST", path, body=body, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": f"jobqueue_session={cookie}"})  # fmt: skip
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


# -- tests -----------------------------------------------------------------------------------


def test_sign_in_sets_a_strict_httponly_cookie_and_a_bad_token_is_refused(
    browser: WebDriver, api_server: ApiServer, tokens: dict[str, str]  # noqa: F811
) -> None:
    api = api_server
    browser.delete_all_cookies()
    browser.get(url(api, "/jobs"))
    assert "/login" in browser.current_url  # not signed in: the sign-in page
    browser.find_element(By.ID, "token").send_keys("jq_not_a_real_token")
    browser.find_element(By.ID, "sign-in").click()
    # the refusal is a new page: wait for it (asserting at once raced the page load)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[role=alert]"), "the refusal")
    assert browser.get_cookie("jobqueue_session") is None
    sign_in(browser, api, tokens["admin"])
    cookie = browser.get_cookie("jobqueue_session")
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert browser.execute_script("return document.cookie") == ""  # scripts cannot read it


def test_a_job_enqueued_elsewhere_appears_and_completes_without_a_reload(
    browser: WebDriver, api_server: ApiServer, tokens: dict[str, str]  # noqa: F811
) -> None:
    api = api_server
    sign_in(browser, api, tokens["admin"])
    enqueue(api, "live", "report.build")  # the queue exists, so the filter can name it
    finish(api, "live")
    browser.get(url(api, "/jobs?queue=live"))
    browser.execute_script("window.__not_reloaded = true")
    wait_for(browser, lambda d: "on" in d.find_element(By.ID, "live-state").get_attribute("class"), "the live stream")
    [job_id] = enqueue(api, "live", "report.build")
    assert wait_for(browser, lambda d: row_state(d, job_id) == "pending", f"job {job_id} to appear as pending")
    finish(api, "live")
    assert wait_for(browser, lambda d: row_state(d, job_id) == "completed", f"job {job_id} to show completed")
    assert browser.execute_script("return window.__not_reloaded") is True


def test_open_a_dead_letter_and_redrive_it_after_a_dry_run(
    browser: WebDriver, api_server: ApiServer, tokens: dict[str, str]  # noqa: F811
) -> None:
    api = api_server
    [dead] = enqueue(api, "billing", "invoice.charge", max_attempts=1)
    finish(api, "billing", how="fail")
    assert state_of(api, dead) == "dead_letter"
    sign_in(browser, api, tokens["admin"])
    browser.get(url(api, "/dead-letters?queue=billing"))
    browser.find_element(By.LINK_TEXT, str(dead)).click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "job-state"), "the job page")
    assert browser.find_element(By.ID, "job-state").text == "dead_letter"
    assert "card declined" in browser.find_element(By.CSS_SELECTOR, "details.attempt").text
    browser.get(url(api, "/dead-letters?queue=billing"))
    browser.find_element(By.CSS_SELECTOR, f"input[name=id][value='{dead}']").click()
    browser.find_element(By.ID, "redrive").click()
    would = wait_for(browser, lambda d: d.find_elements(By.ID, "would"), "the dry run")[0].text
    assert "would redrive 1 dead letter" in would and str(dead) in would
    assert state_of(api, dead) == "dead_letter"  # a dry run changes nothing
    browser.find_element(By.ID, "confirm").click()
    assert "1" in wait_for(browser, lambda d: d.find_elements(By.ID, "done"), "the redrive")[0].text
    assert state_of(api, dead) == "pending"


def test_bulk_cancel_a_filtered_set(browser: WebDriver, api_server: ApiServer, tokens: dict[str, str]) -> None:  # noqa: F811
    api = api_server
    doomed = enqueue(api, "bulk-a", "sync.user", n=3)
    kept = enqueue(api, "bulk-b", "sync.user", n=2)
    sign_in(browser, api, tokens["admin"])
    browser.get(url(api, "/jobs?queue=bulk-a&state=pending"))
    wait_for(browser, lambda d: all(row_state(d, i) == "pending" for i in doomed), "the filtered rows")
    browser.find_element(By.ID, "select-all").click()
    browser.find_element(By.ID, "bulk-cancel").click()
    results = wait_for(browser, lambda d: d.find_elements(By.ID, "results"), "the bulk result")[0].text
    assert results.count("cancelled") == 3, results
    assert [state_of(api, i) for i in doomed] == ["cancelled"] * 3
    assert [state_of(api, i) for i in kept] == ["pending"] * 2


def test_a_tenant_sees_only_its_jobs_in_pages_and_in_the_live_stream(
    browser: WebDriver, api_server: ApiServer, tokens: dict[str, str]  # noqa: F811
) -> None:
    api = api_server
    mine = enqueue(api, "shared", "a.job", n=2, tenant="A")
    theirs = enqueue(api, "shared", "b.job", n=2, tenant="B")
    sign_in(browser, api, tokens["a_op"])
    browser.get(url(api, "/jobs?queue=shared"))
    shown = {int(e.get_attribute("data-job")) for e in browser.find_elements(By.CSS_SELECTOR, "tr[data-job]")}
    assert set(mine) <= shown
    assert not shown & set(theirs)
    browser.get(url(api, f"/jobs/{theirs[0]}"))
    assert "job-state" not in browser.page_source  # B's job is not found for A
    # the SSE stream, read as tenant A while both tenants enqueue
    events = read_sse(api, tokens["a_op"], lambda: (enqueue(api, "shared", "b.job", tenant="B"),
                                                    enqueue(api, "shared", "a.job", tenant="A")))
    jobs = {e["job_id"] for e in events if e["job_id"] is not None}
    a_new = max(jobs) if jobs else None
    assert a_new is not None and state_of(api, a_new) == "pending"
    with api.owner() as conn:
        tenants = {r["tenant_id"] for r in conn.execute(
            "SELECT tenant_id FROM jobqueue.jobs WHERE id = ANY(%s)", (list(jobs),))}  # fmt: skip
    assert tenants == {"A"}


def read_sse(api: ApiServer, token: str, during: Callable[[], Any], want_s: float = 4.0) -> list[dict[str, Any]]:
    """Open /live/events as ``token``, run ``during``, and collect the events for a while."""
    conn = http.client.HTTPConnection(api.host, api.port, timeout=want_s + 10)
    conn.request("GET", "/live/events", headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    assert resp.getheader("content-type", "").startswith("text/event-stream")
    resp.fp.readline()  # retry:
    events: list[dict[str, Any]] = []

    def collect() -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            for line in resp.fp:
                if line.startswith(b"data: "):
                    events.extend(json.loads(line[6:]))

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    during()
    time.sleep(want_s)
    conn.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
    reader.join(5)
    conn.close()
    return events


def test_a_producer_signs_in_and_each_page_says_what_its_role_may_not_read(
    browser: WebDriver, api_server: ApiServer  # noqa: F811
) -> None:
    """A producer may enqueue and see its own jobs, not queue figures, workers or alerts: the
    overview answered raw problem JSON, and the alerts and workers pages said "none"."""
    api = api_server
    token = api.token("producer", name="browser producer")
    created = api.request("POST", "/api/v1/jobs", token, json_body={"type": "p.job", "queue": "produced"})
    assert created.status == 201
    mine = created.json["id"]
    sign_in(browser, api, token)  # lands on the overview
    assert browser.find_elements(By.CSS_SELECTOR, "#refused"), browser.page_source[:2000]
    assert "Not for this token" in browser.title and "permission denied" in browser.page_source
    browser.find_element(By.LINK_TEXT, "Jobs").click()
    WebDriverWait(browser, WAIT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, "main h1"))
    assert {int(e.get_attribute("data-job")) for e in browser.find_elements(By.CSS_SELECTOR, "tr[data-job]")} == {mine}
    for path in ("/alerts", "/workers", "/dead-letters"):
        browser.get(url(api, path))
        assert browser.find_elements(By.CSS_SELECTOR, "#refused"), f"{path}: {browser.page_source[:2000]}"
        assert "No workers registered" not in browser.page_source and "No open alerts" not in browser.page_source


def test_a_viewer_sees_no_action_buttons(browser: WebDriver, api_server: ApiServer, tokens: dict[str, str]) -> None:  # noqa: F811
    api = api_server
    [job] = enqueue(api, "viewed", "x.y")
    sign_in(browser, api, tokens["viewer"])
    for path, buttons in (
        ("/jobs", ("bulk-cancel", "bulk-retry", "select-all")),
        (f"/jobs/{job}", ("cancel", "retry")),
        ("/dead-letters", ("redrive", "purge")),
    ):
        browser.get(url(api, path))
        assert browser.find_elements(By.CSS_SELECTOR, "main h1")
        for button in buttons:
            assert not browser.find_elements(By.ID, button), f"{path} shows {button} to a viewer"
        assert not browser.find_elements(By.CSS_SELECTOR, "input[name=id]")
    # and the database refuses it anyway: a viewer's form post with a valid CSRF token
    token = tokens["viewer"]
    from jobqueue.web.dashboard import csrf_token

    resp = post_form(api, "/jobs/bulk", {"action": "cancel", "id": [job], "csrf_token": csrf_token(token)}, token)
    assert resp.status == 200  # the page lists the refusal
    assert state_of(api, job) == "pending"


def test_a_form_post_without_csrf_token_is_refused_and_changes_nothing(
    api_server: ApiServer, tokens: dict[str, str]  # noqa: F811
) -> None:
    api = api_server
    [job] = enqueue(api, "csrf", "x.y")
    before = snapshot(api)
    token = tokens["admin"]
    for fields in ({"action": "cancel", "id": [job]}, {"action": "cancel", "id": [job], "csrf_token": "0" * 64}):
        resp = post_form(api, "/jobs/bulk", fields, token)
        assert resp.status == 403
    assert post_form(api, f"/jobs/{job}/cancel", {}, token).status == 403
    assert post_form(api, "/dead-letters/purge", {"confirm": "yes"}, token).status == 403
    # the API with only the cookie and no X-CSRF-Token header: no credentials at all
    conn = http.client.HTTPConnection(api.host, api.port, timeout=30)
    conn.request("POST", f"/api/v1/jobs/{job}/cancel", body=b"{}",
                 headers={"Content-Type": "application/json", "Cookie": f"jobqueue_session={token}"})  # fmt: skip
    assert conn.getresponse().status == 401
    conn.close()
    assert snapshot(api) == before


def test_screenshots_of_the_main_pages(
    browser: WebDriver, api_server: ApiServer, tokens: dict[str, str], tmp_path: Path  # noqa: F811
) -> None:
    """The main pages at 1280x800 into docs/screenshots/; every page at 1280x800 and at phone
    width (390x844) fits the screen (no sideways scroll of the page itself), and the phone's
    overview shows every queue's figures inside the card (stacked). The phone shots of the
    other pages go to the test's tmp_path, to look at."""
    api = api_server
    for queue, type_ in (("emails", "email.send"), ("reports", "report.build"), ("billing", "invoice.charge")):
        enqueue(api, queue, type_, n=4)
        finish(api, queue)
        enqueue(api, queue, type_, n=3)
    [dead] = enqueue(api, "billing", "invoice.charge", max_attempts=1)
    finish(api, "billing", how="fail")
    with api.owner() as conn:
        conn.execute("SELECT jobqueue.register_worker('worker-1', 'app-host-1', 4242, ARRAY['emails','reports'], 8)")
        conn.execute("SELECT jobqueue.register_worker('worker-2', 'app-host-2', 4243, ARRAY['billing'], 4)")
    sign_in(browser, api, tokens["admin"])
    for name, path in (("overview", "/"), ("jobs", "/jobs"), ("job-detail", f"/jobs/{dead}"),
                       ("dead-letters", "/dead-letters"), ("workers", "/workers")):  # fmt: skip
        browser.get(url(api, path))
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "main h1"), path)
        time.sleep(0.5)  # let the charts draw (a picture, not a verdict)
        shot(browser, name)
    for path, title in (("/schedules", "Schedules"), ("/alerts", "Alerts")):
        browser.get(url(api, path))
        assert browser.find_element(By.CSS_SELECTOR, "main h1").text == title
    pages = ("/", "/jobs", f"/jobs/{dead}", "/dead-letters", "/workers", "/schedules", "/alerts")
    page_width = "return document.documentElement.scrollWidth"
    for path in pages:
        browser.get(url(api, path))
        assert browser.execute_script(page_width) <= 1280, f"{path} scrolls sideways at 1280 px"
    browser.set_window_size(390, 844)
    try:
        for path in pages:
            browser.get(url(api, path))
            wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "main h1"), path)
            width = browser.execute_script(page_width)
            assert width <= 390, f"{path} scrolls sideways at phone width ({width} px)"
            name = path.strip("/").replace("/", "-") or "overview"
            browser.save_screenshot(str(tmp_path / f"{name}-phone.png"))
            if path == "/":
                time.sleep(0.5)
                shot(browser, "overview-phone")
                # every figure of every queue inside the card: nothing cut off at its edge
                clipped = browser.execute_script(
                    "var card = document.querySelector('#queues').closest('.card').getBoundingClientRect();"
                    "return Array.from(document.querySelectorAll('#queues td')).filter(function (td) {"
                    "  var r = td.getBoundingClientRect(); return r.right > card.right + 0.5; }).length;"
                )
                assert clipped == 0, f"{clipped} cells of the queue table stick out of the card at phone width"
    finally:
        browser.set_window_size(1280, 800)
    for name in ("overview", "jobs", "job-detail", "dead-letters", "workers", "overview-phone"):
        assert (SHOTS / f"{name}.png").stat().st_size > 5000


def test_a_burst_larger_than_a_read_streams_whole_and_the_stream_goes_on(
    api_server: ApiServer, tokens: dict[str, str]  # noqa: F811
) -> None:
    """1,200 events in one commit (more than a read's 500): the stream sent the first 500 and
    then froze, reading them again and again; now every one arrives once, then later ones."""
    from websockets.sync.client import connect as ws_connect

    from jobqueue.web.live import BATCH_ROWS

    api = api_server
    auth = {"Authorization": f"Bearer {tokens['admin']}"}
    with ws_connect(f"ws://{api.host}:{api.port}/live/ws", additional_headers=auth, open_timeout=30) as ws:
        assert json.loads(ws.recv(timeout=30))["events"] == []
        with api.owner() as conn:
            burst = [r["id"] for r in conn.execute(
                "SELECT jobqueue.enqueue('burst.job', '{}', 'burst') AS id FROM generate_series(1, %s)",
                (BATCH_ROWS * 2 + 200,),
            ).fetchall()]  # fmt: skip
        [after] = enqueue(api, "after-burst", "after.job")
        got: list[int] = []
        deadline = time.monotonic() + WAIT_S
        while after not in got and time.monotonic() < deadline:
            got += [e["job_id"] for e in json.loads(ws.recv(timeout=WAIT_S))["events"] if e["job_id"]]
    assert after in got, f"{len(got)} events, then the stream stopped"
    assert sorted(got) == sorted([*burst, after]), "each event once"


def test_websocket_streams_events_and_resumes_from_a_cursor(
    api_server: ApiServer, tokens: dict[str, str]  # noqa: F811
) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect as ws_connect

    api = api_server
    base = f"ws://{api.host}:{api.port}/live/ws"
    auth = {"Authorization": f"Bearer {tokens['admin']}"}
    with ws_connect(base, additional_headers=auth, open_timeout=30) as ws:
        first = json.loads(ws.recv(timeout=30))
        assert first["events"] == []
        [job] = enqueue(api, "ws", "ws.job")
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + WAIT_S
        while not any(e["job_id"] == job for e in got) and time.monotonic() < deadline:
            got += json.loads(ws.recv(timeout=WAIT_S))["events"]
    assert any(e["job_id"] == job and e["from"] is None and e["to"] == "pending" for e in got)
    # reconnecting with the first cursor: the event is still there
    with ws_connect(f"{base}?cursor={first['cursor']}", additional_headers=auth, open_timeout=30) as ws:
        ws.recv(timeout=30)
        again: list[dict[str, Any]] = []
        deadline = time.monotonic() + WAIT_S
        while not any(e["job_id"] == job for e in again) and time.monotonic() < deadline:
            again += json.loads(ws.recv(timeout=WAIT_S))["events"]
    assert any(e["job_id"] == job for e in again)
    # a bad cursor, no token, a token the database refuses
    for url, headers, code in (
        (f"{base}?cursor=nonsense", auth, 4400),
        (base, {}, 4401),
        (base, {"Authorization": "Bearer jq_revoked_or_never_made"}, 4401),
    ):
        with (
            ws_connect(url, additional_headers=headers, open_timeout=30) as ws,
            pytest.raises(ConnectionClosed) as closed,
        ):
            while True:
                ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == code, (url, closed.value)


def test_queue_pause_and_resume_reach_the_overview_and_both_streams_live(
    browser: WebDriver, api_server: ApiServer, tokens: dict[str, str]  # noqa: F811
) -> None:
    """Queue changes are streamed like job events: the overview shows a pause and a resume
    made by another client without a reload; a tenant's SSE stream carries them (queues
    are shared by every tenant); a WebSocket resumed from an earlier cursor gets them again."""
    from websockets.sync.client import connect as ws_connect

    api = api_server
    enqueue(api, "pausable", "x.y")
    sign_in(browser, api, tokens["admin"])
    browser.get(url(api, "/"))
    browser.execute_script("window.__not_reloaded = true")
    wait_for(browser, lambda d: "on" in d.find_element(By.ID, "live-state").get_attribute("class"), "the live stream")

    def paused(d: WebDriver) -> Any:
        return d.execute_script(
            "var r = document.querySelector(\"tr[data-queue='pausable']\");"
            "return r ? /paused/.test(r.textContent) : null;"
        )

    assert paused(browser) is False
    ws_url = f"ws://{api.host}:{api.port}/live/ws"
    auth = {"Authorization": f"Bearer {tokens['admin']}"}
    with ws_connect(ws_url, additional_headers=auth, open_timeout=30) as ws:
        cursor = json.loads(ws.recv(timeout=30))["cursor"]
    pause = lambda: api.request("POST", "/api/v1/queues/pausable/pause", tokens["admin"])  # noqa: E731
    events = read_sse(api, tokens["a_op"], pause, want_s=2.5)
    changes = [(e["queue"], e["change"]) for e in events if e["job_id"] is None and e["queue"] == "pausable"]
    assert changes == [("pausable", "paused")]
    wait_for(browser, lambda d: paused(d) is True, "the overview to show the queue paused")
    assert api.request("POST", "/api/v1/queues/pausable/resume", tokens["admin"]).status == 200
    wait_for(browser, lambda d: paused(d) is False, "the overview to show the queue resumed")
    assert browser.execute_script("return window.__not_reloaded") is True
    changes = []
    with ws_connect(f"{ws_url}?cursor={cursor}", additional_headers=auth, open_timeout=30) as ws:
        deadline = time.monotonic() + WAIT_S
        while len(changes) < 2 and time.monotonic() < deadline:
            changes += [(e["queue"], e["change"]) for e in json.loads(ws.recv(timeout=WAIT_S))["events"]
                        if e["job_id"] is None and e["queue"] == "pausable"]
    assert changes == [("pausable", "paused"), ("pausable", "resumed")]


def test_sse_refuses_a_bad_cursor_and_a_bad_token_with_problems_naming_the_field(
    api_server: ApiServer, tokens: dict[str, str]  # noqa: F811
) -> None:
    api = api_server
    r = api.request("GET", "/live/events", tokens["admin"], headers={"Last-Event-ID": "12;drop"})
    assert r.status == 400 and "Last-Event-ID" in r.json["detail"] and r.json["field"] == "Last-Event-ID"
    r = api.request("GET", "/live/events?cursor=x.y", tokens["admin"])
    assert r.status == 400 and "cursor" in r.json["detail"] and r.json["field"] == "cursor"
    assert api.request("GET", "/live/events").status == 401
    r = api.request("GET", "/live/events", "jq_not_a_token")
    assert r.status == 401 and r.headers["content-type"].startswith("application/problem+json")


def test_sign_in_needs_the_forms_own_csrf_value(api_server: ApiServer, tokens: dict[str, str]) -> None:  # noqa: F811
    """Login CSRF: a page on another site could post its own token to /login and sign the
    victim's browser in as the attacker. The form carries a value that must match a
    SameSite=Strict cookie set with it, which a cross-site post does not send."""
    api = api_server
    form = {"token": tokens["admin"], "next": "/"}
    forged = api.request("POST", "/login", raw=urllib.parse.urlencode(form).encode(),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert forged.status == 403 and "login_csrf" in forged.body.decode(), forged
    assert "jobqueue_session=" not in forged.headers.get("set-cookie", "")
    page = api.request("GET", "/login")
    nonce = re.search(r'name="login_csrf" value="([^"]+)"', page.body.decode())
    cookie = re.search(r"jobqueue_login=([^;]+)", page.headers.get("set-cookie", ""))
    assert nonce and cookie and nonce.group(1) == cookie.group(1)
    assert "samesite=strict" in page.headers["set-cookie"].lower() and "httponly" in page.headers["set-cookie"].lower()
    signed = api.request("POST", "/login", raw=urllib.parse.urlencode({**form, "login_csrf": nonce.group(1)}).encode(),
                         headers={"Content-Type": "application/x-www-form-urlencoded",
                                  "Cookie": f"jobqueue_login={cookie.group(1)}"})  # fmt: skip
    assert signed.status == 303 and "jobqueue_session=" in signed.headers.get("set-cookie", ""), signed


def test_a_token_revoked_while_its_stream_is_open_ends_the_stream_cleanly(
    api_server: ApiServer,  # noqa: F811
) -> None:
    """The stream ends with an ``event: refused`` naming the token and a complete response
    (it was cut mid-body with "Exception in ASGI application" in the log)."""
    api = api_server
    token = api.token("operator", name="revoked while streaming")
    with api.owner() as conn:
        token_id = conn.execute("SELECT max(id) AS id FROM jobqueue.api_token").fetchone()["id"]  # type: ignore[index]
    log_before = api.log_path.read_text()
    conn = http.client.HTTPConnection(api.host, api.port, timeout=WAIT_S)
    conn.request("GET", "/live/events", headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.readline().startswith(b"retry:")  # connected: the stream is open
    with api.owner() as owner:
        assert owner.execute("SELECT jobqueue.revoke_token(%s) AS r", [token_id]).fetchone()["r"]  # type: ignore[index]
    body = resp.read().decode()  # the whole rest: the server ends the response (chunked, complete)
    conn.close()
    assert "event: refused" in body, body
    refused = json.loads(body.split("event: refused\ndata: ", 1)[1].split("\n", 1)[0])
    assert refused["status"] == 401 and refused["field"] == "token", refused
    log = api.log_path.read_text()[len(log_before) :]
    assert "Exception in ASGI application" not in log and "Traceback" not in log, log


def test_the_error_chart_draws_a_minute_that_stands_alone(
    browser: WebDriver, api_server: ApiServer, tokens: dict[str, str]  # noqa: F811
) -> None:
    """An error rate known for one minute only (its neighbours had no attempts: null) is
    drawn as a dot; a line alone would draw nothing there."""
    api = api_server
    sign_in(browser, api, tokens["admin"])
    browser.get(url(api, "/"))
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-chart=errors] canvas"), "the error chart")
    red = browser.execute_async_script(
        """
        var now = Math.floor(Date.now() / 60000) * 60, t = [], rate = [], zero = [];
        for (var i = 59; i >= 0; i--) { t.push(now - 60 * i); rate.push(i === 30 ? 40 : null); zero.push(0); }
        document.getElementById("series").textContent =
            JSON.stringify({ t: t, completed: zero, failed: zero, error_rate: rate });
        document.dispatchEvent(new Event("htmx:afterSwap"));
        var done = arguments[arguments.length - 1];
        requestAnimationFrame(function () { requestAnimationFrame(function () {
            var canvas = document.querySelector("[data-chart=errors] canvas");
            var px = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data, n = 0;
            for (var k = 0; k < px.length; k += 4)
                if (px[k] > 150 && px[k + 1] < 110 && px[k + 2] < 110 && px[k + 3] > 200) n++;
            done(n);
        }); });
        """
    )
    assert red > 0, "the lone minute's error rate was not drawn"
