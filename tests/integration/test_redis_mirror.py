"""The optional Redis mirror against a real Redis (REDIS-01, REDIS-02, SEC-06's Redis half).

Needs REDIS_URL (tests/conftest.py sets it when Redis answers at 127.0.0.1:6379); skips, saying
so, when it is unset or Redis does not answer. Each test writes under a prefix of its own
and deletes it afterwards, so a shared Redis is fine.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import psycopg
import pytest

from jobqueue import ConfigurationError, JobQueue, WorkerConfig
from tests.chaos.harness import wait_for
from tests.support.proxy import Proxy

redis = pytest.importorskip("redis", reason="redis-py is not installed (the 'redis' extra)")
SECRET = "sk_live_mirror_sentinel_77aa"


@pytest.fixture(scope="module")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL is not set: no Redis to test the mirror against")
    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
    except (redis.RedisError, OSError) as exc:
        pytest.skip(f"Redis at {url} does not answer: {exc}")
    return url


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"jqtest:{uuid.uuid4().hex[:10]}:"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=name + "*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def jq(db_url: str) -> Iterator[JobQueue]:
    with JobQueue(db_url) as handle:
        yield handle


def mirror(url: str, prefix: str, **options: Any) -> Any:
    from jobqueue.mirror import RedisMirror

    return RedisMirror(url, prefix=prefix, **options)


def everything(client: Any, prefix: str) -> list[str]:
    """Every key and value under the prefix, as text."""
    out = []
    for key in client.scan_iter(match=prefix + "*", count=1000):
        out.append(key)
        kind = client.type(key)
        if kind == "hash":
            out += [f"{k}={v}" for k, v in client.hgetall(key).items()]
        elif kind == "set":
            out += list(client.smembers(key))
        elif kind == "string":
            out.append(client.get(key))
    return out


def test_mirror_holds_the_stats_and_health_and_no_secret(
    jq: JobQueue, db: psycopg.Connection[Any], redis_url: str, prefix: str
) -> None:
    for _ in range(3):
        jq.enqueue("t", {"password": SECRET}, queue="mail")
    job = jq.enqueue("t", {"password": SECRET}, queue="billing")
    token = db.execute("SELECT token FROM jobqueue.claim(ARRAY['billing'], 'w', 1)").fetchone()["token"]
    db.execute("SELECT jobqueue.fail(%s, %s, %s, 'permanent')", (job, token, f"declined {SECRET}"))
    m = mirror(redis_url, prefix, interval_s=5)
    assert m.refresh(jq, force=True)
    by_queue = {r["queue"]: r for r in m.read()}
    stats = {r["queue"]: r for r in jq.stats()}
    assert set(by_queue) == set(stats) == {"mail", "billing"}
    for name, row in stats.items():
        for field in ("pending", "scheduled", "retrying", "processing", "dead_letters"):
            assert by_queue[name][field] == row[field], (name, field)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    health = client.hgetall(prefix + "health")
    assert {k for k in health if not k.endswith(":alert")} == {r["check_name"] for r in jq.health()}
    assert health["reconcile_last_run_age_s:alert"] == "1" and health["reconcile_last_run_age_s"] == ""
    assert 0 < client.ttl(prefix + "queue:mail") <= 15  # three intervals: an abandoned mirror vanishes
    text = everything(client, prefix)
    assert len(text) > 10
    assert not [t for t in text if SECRET in t]  # SEC-06: counts and names only


def test_garbage_in_redis_changes_nothing_and_is_replaced(
    jq: JobQueue, db: psycopg.Connection[Any], redis_url: str, prefix: str
) -> None:
    """REDIS-02: wrong counts, unknown queues and keys of the wrong type: the queue behaves
    the same (nothing reads the mirror back), and one refresh replaces all of it."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.sadd(prefix + "queues", "ghost", "mail")
    client.hset(prefix + "queue:ghost", mapping={"pending": "999"})
    client.rpush(prefix + "queue:mail", "not", "a", "hash")  # the wrong type altogether
    client.set(prefix + "health", "garbage")
    ids = [jq.enqueue("t", {}, queue="mail") for _ in range(2)]
    assert [r["id"] for r in db.execute("SELECT id FROM jobqueue.claim(ARRAY['mail'], 'w', 5)").fetchall()] == ids
    m = mirror(redis_url, prefix)
    assert m.refresh(jq, force=True)
    rows = m.read()
    assert [r["queue"] for r in rows] == ["mail"]
    assert rows[0]["processing"] == 2 and rows[0]["pending"] == 0
    assert client.type(prefix + "queue:mail") == "hash" and client.type(prefix + "health") == "hash"
    assert client.exists(prefix + "queue:ghost") == 0  # listed before, not a queue: removed


def test_one_refresher_per_interval(jq: JobQueue, redis_url: str, prefix: str) -> None:
    first, second = mirror(redis_url, prefix, interval_s=30), mirror(redis_url, prefix, interval_s=30)
    assert first.refresh(jq) is True
    assert second.refresh(jq) is False  # another process refreshed within this interval
    assert second.refresh(jq, force=True) is True


def test_redis_blackholed_while_jobs_run(
    jq: JobQueue, redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """REDIS-01: Redis black-holed (connections open, nothing answers) while a worker runs
    300 jobs and the mirror keeps trying: every job completes, the mirror logs one warning
    (not one per try), and after the heal it converges."""
    parsed = urlparse(redis_url)
    proxy = Proxy((parsed.hostname or "127.0.0.1", parsed.port or 6379))
    url = f"redis://127.0.0.1:{proxy.port}{parsed.path or '/0'}"
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="jobqueue.mirror")
    m = mirror(url, prefix, interval_s=0.2, breaker_s=0.5)
    thread = threading.Thread(target=m.run, args=(jq, stop), daemon=True)
    try:
        proxy.blackhole()
        thread.start()

        @jq.task(name="mirror.work")
        def work(n: int) -> int:
            return n

        ids = jq.enqueue_many([{"type": "mirror.work", "payload": {"n": i}} for i in range(300)])
        assert jq.run_worker(WorkerConfig(burst=True, install_signal_handlers=False, reconcile_interval_s=0)) == 0
        assert {jq.get(i).state.value for i in ids} == {"completed"}
        wait_for(lambda: m.failing, 10, "the mirror to notice Redis is gone")
        proxy.heal()
        wait_for(lambda: not m.failing and m.read(), 15, "the mirror to write again after the heal")
        mirrored = {r["queue"]: r["pending"] for r in m.read()}
    finally:
        stop.set()
        thread.join(10)
        proxy.close()
    downs = [r for r in caplog.records if getattr(r, "action", None) == "mirror_down"]
    assert len(downs) == 1, [r.getMessage() for r in downs]
    assert [getattr(r, "action", None) for r in caplog.records].count("mirror_up") == 1
    assert mirrored.get("default") == 0  # converged on the database's figures


def test_bad_redis_url_is_refused_naming_the_field(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^redis_url: must be a redis://"):
        mirror("http://127.0.0.1:6379", "x:")
