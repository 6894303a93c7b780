"""An optional Redis mirror of the queue's figures, for dashboards that should not query PostgreSQL.

Redis is a copy, never a source: nothing in jobqueue reads it back to decide anything, and
no enqueue, claim or acknowledgement goes near it, so a slow, down, emptied or
garbage-filled Redis changes no job's fate (REDIS-01, REDIS-02). ``jobqueue exporter
--redis-url`` refreshes the mirror every ``interval`` seconds from a thread of its own; when
several exporters run, one per interval does it (a ``SET NX`` lease in Redis) and the others
skip. Every Redis call has a 100 ms timeout, and after a failure the mirror rests for
``BREAKER_S`` before trying again (a circuit breaker), logging once per outage. It reads
``queue_stats()`` and ``health()``, so it needs ``jobqueue_admin`` like the exporter.

Keys (``prefix`` defaults to ``jobqueue:``), each expiring after three intervals so that a
mirror nobody refreshes disappears instead of lying:

* ``{prefix}queues``: a set of queue names
* ``{prefix}queue:{name}``: a hash of ``queue_stats()`` (pending, scheduled, retrying,
  processing, dead_letters, oldest_pending_age_s, paused) and ``updated_at`` (Unix seconds,
  the writer's clock)
* ``{prefix}health``: a hash of each ``health()`` check's value and ``{check}:alert`` (0/1)

Only counts, ages, queue names and check names are written: never a payload, an error text
or a job id (SEC-06).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from jobqueue.errors import ConfigurationError, JobQueueError

if TYPE_CHECKING:
    from jobqueue.client import JobQueue

#: Every Redis connect, read and write gives up after this long.
REDIS_TIMEOUT_S = 0.1
#: After a failure, leave Redis alone this long before trying again.
BREAKER_S = 15.0
MIRROR_INTERVAL_S = 5.0
DEFAULT_PREFIX = "jobqueue:"
STAT_FIELDS = ("pending", "scheduled", "retrying", "processing", "dead_letters", "oldest_pending_age_s", "paused")

log = logging.getLogger("jobqueue.mirror")


def _redis() -> Any:
    try:
        import redis
    except ImportError as exc:  # the optional extra is not installed
        raise ConfigurationError("redis_url: the Redis mirror needs redis-py: pip install 'jobqueue[redis]'") from exc
    return redis


def validate_url(url: str) -> str:
    """The URL itself when it is a Redis URL; ConfigurationError naming the field otherwise."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError("redis_url: must be a redis://, rediss:// or unix:// URL")
    return url


class RedisMirror:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        interval_s: float = MIRROR_INTERVAL_S,
        breaker_s: float = BREAKER_S,
        owner: str = "jobqueue",
    ) -> None:
        redis = _redis()
        self.prefix = prefix
        self.interval_s = interval_s
        self.breaker_s = breaker_s
        self.owner = owner
        self.client = redis.Redis.from_url(
            validate_url(url),
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            retry_on_timeout=False,
            decode_responses=True,
        )
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._failing = False
        self.refreshes = 0

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def refresh(self, jq: JobQueue, *, force: bool = False) -> bool:
        """Write the current figures, unless another process refreshed within this interval.

        True when written. Database errors propagate (the caller backs off); Redis errors
        return False and open the breaker."""
        try:
            lease = self.client.set(self.key("mirror", "lease"), self.owner, nx=True, px=int(self.interval_s * 900))
            if not lease and not force:
                self._recovered()
                return False
        except self._errors as exc:
            self._failed(exc)
            return False
        stats, health = jq.stats(), jq.health()
        try:
            self._write(stats, health)
        except self._errors as exc:
            self._failed(exc)
            return False
        self._recovered()
        self.refreshes += 1
        return True

    def _write(self, stats: list[dict[str, Any]], health: list[dict[str, Any]]) -> None:
        ttl = max(1, int(self.interval_s * 3))
        names = [str(row["queue"]) for row in stats]
        try:
            listed = {str(n) for n in self.client.smembers(self.key("queues"))}
        except self._errors[0]:  # not a set (garbage): DEL below replaces it
            listed = set()
        pipe = self.client.pipeline(transaction=True)
        # DEL first: whatever was there (wrong counts, a key of the wrong type, a queue that is
        # gone) is replaced whole.
        gone = sorted(listed - set(names))
        pipe.delete(self.key("queues"), self.key("health"), *(self.key("queue", n) for n in [*names, *gone]))
        if names:
            pipe.sadd(self.key("queues"), *names)
            pipe.expire(self.key("queues"), ttl)
        for row in stats:
            key = self.key("queue", str(row["queue"]))
            pipe.hset(key, mapping={**_numbers(row, STAT_FIELDS), "updated_at": repr(time.time())})
            pipe.expire(key, ttl)
        checks: dict[str, str] = {}
        for row in health:
            name = str(row["check_name"])
            checks[name] = "" if row["value"] is None else repr(float(row["value"]))
            checks[f"{name}:alert"] = "1" if row["alert"] else "0"
        if checks:
            pipe.hset(self.key("health"), mapping=checks)
            pipe.expire(self.key("health"), ttl)
        pipe.execute()

    def read(self) -> list[dict[str, Any]]:
        """The mirrored per-queue figures as written (a dashboard's read); [] when absent."""
        names = sorted(self.client.smembers(self.key("queues")))
        rows = []
        for name in names:
            fields: Mapping[str, str] = self.client.hgetall(self.key("queue", name))
            if fields:
                rows.append({"queue": name, **{k: float(v) for k, v in fields.items()}})
        return rows

    def _failed(self, exc: BaseException) -> None:
        if not self._failing:
            log.warning(
                "Redis mirror unavailable; queue work goes on without it",
                extra={"action": "mirror_down", "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__},
            )
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("Redis mirror back", extra={"action": "mirror_up"})
        self._failing = False

    @property
    def failing(self) -> bool:
        return self._failing

    def run(self, jq: JobQueue, stop: threading.Event) -> None:
        """Refresh every interval until `stop`; rest breaker_s after a Redis failure."""
        while not stop.is_set():
            try:
                self.refresh(jq)
            except JobQueueError as exc:  # the database is the worker's business; retry later
                log.debug("mirror refresh skipped", extra={"action": "mirror_skipped", "error": str(exc)[:200]})
            stop.wait(self.breaker_s if self._failing else self.interval_s)

    def close(self) -> None:
        self.client.close()


def _numbers(row: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for name in fields:
        value = row.get(name)
        out[name] = "1" if value is True else "0" if value is False else repr(float(value or 0))
    return out
