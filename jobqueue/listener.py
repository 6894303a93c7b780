"""LISTEN loop with reconnect: NOTIFY is only a hint that wakes the worker sooner.

A dedicated autocommit connection listens on channel ``jobqueue`` (payload: a queue name).
It pings every PING_INTERVAL_S and gives up on a ping that gets no answer within
PING_TIMEOUT_S, so a silently dead connection is found even when the path still ACKs at
the TCP level (a hung proxy or pooler: keepalives alone cannot see that). After every
(re)connect it wakes the worker once, to catch up on notifications missed while away.

A LISTEN that goes through a transaction pooler (PgBouncer ``pool_mode = transaction``)
succeeds but hears nothing: the server connection that ran it is handed to other clients.
So after its first LISTEN the listener sends a test NOTIFY of its own through ``probe``
(the worker's pool, the path producers use) and, when it has not heard it within
PROBE_TIMEOUT_S and a ping has gone through since, warns once, naming ``--listen-url``.
"""

from __future__ import annotations

import logging
import random
import select
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from typing import Any

import psycopg
from psycopg import pq

from jobqueue.config import CONNECT_TIMEOUT_S

CHANNEL = "jobqueue"
PING_INTERVAL_S = 5.0
PING_TIMEOUT_S = 5.0
#: How often the loop looks at the stop flag while waiting for notifications.
STOP_CHECK_S = 0.5
RECONNECT_MIN_S = 0.2
#: As the worker's own back-off: LISTEN is back within this long of the server.
RECONNECT_MAX_S = 5.0
#: How long the listener waits to hear its own test NOTIFY before it warns.
PROBE_TIMEOUT_S = 5.0
PROBE_PREFIX = "jobqueue-probe:"
#: libpq options that detect a dead peer within ~15 s on TCP (ignored on Unix sockets).
TCP_OPTIONS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}

log = logging.getLogger("jobqueue.listener")


class Listener:
    """Runs in its own thread; calls ``wake()`` on a notification for one of ``queues``."""

    def __init__(
        self,
        url: str,
        queues: Collection[str],
        wake: Callable[[], None],
        *,
        application_name: str = "jobqueue-listener",
        connect_kwargs: Mapping[str, Any] | None = None,
        probe: Callable[[str], None] | None = None,
        on_queue: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.queues = frozenset(queues)
        self.wake = wake
        self.application_name = application_name
        self.connect_kwargs = dict(connect_kwargs or {})
        #: Sends NOTIFY jobqueue, <payload> by the data path; None: no check.
        self.probe = probe
        #: Told which of ``queues`` a notification was for, before ``wake()``.
        self.on_queue = on_queue
        self._probe_payload: str | None = None
        self._probe_sent = 0.0
        #: None until known; "heard" or "not_heard" (the listener warned).
        self.probe_result: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobqueue-listener", daemon=True)
        #: Set while a LISTEN connection is established (tests and health use it).
        self.connected = threading.Event()
        self.reconnects = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        delay = RECONNECT_MIN_S
        while not self._stop.is_set():
            try:
                self._listen()
                delay = RECONNECT_MIN_S
            except (psycopg.Error, OSError) as exc:
                self.connected.clear()
                log.warning(
                    "listener connection lost; reconnecting",
                    extra={"action": "listener_lost", "error": _one_line(exc), "retry_in_s": round(delay, 2)},
                )
                self._stop.wait(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, RECONNECT_MAX_S)

    def _listen(self) -> None:
        with psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=self.application_name,
            **(TCP_OPTIONS if _is_tcp(self.url) else {}),
            **self.connect_kwargs,
        ) as conn:
            self._execute(conn, f"LISTEN {CHANNEL}".encode())  # a constant, never input
            if self.reconnects:
                log.info("listener reconnected", extra={"action": "listener_reconnected"})
            self.reconnects += 1
            self.connected.set()
            self.wake()  # catch up on anything missed while disconnected
            self._send_probe()
            since_ping = 0.0
            while not self._stop.is_set():
                for notify in conn.notifies(timeout=STOP_CHECK_S):
                    self._notified(notify.payload)
                since_ping += STOP_CHECK_S
                if since_ping >= PING_INTERVAL_S:
                    self._execute(conn, b"SELECT 1")
                    since_ping = 0.0
                if self._probe_payload is not None and time.monotonic() - self._probe_sent >= PROBE_TIMEOUT_S:
                    self._execute(conn, b"SELECT 1")  # the connection answers: not a dead peer
                    self._judge_probe()
        self.connected.clear()

    def _notified(self, payload: str) -> None:
        if payload in self.queues:
            if self.on_queue is not None:
                self.on_queue(payload)
            self.wake()
        elif self._probe_payload is not None and payload == self._probe_payload:
            self._probe_payload = None
            self.probe_result = "heard"
            log.debug("LISTEN hears this worker's test NOTIFY", extra={"action": "listen_verified"})

    def _send_probe(self) -> None:
        """After a LISTEN, until a verdict: NOTIFY a payload of our own by the data path."""
        self._probe_payload = None  # one sent before a reconnect cannot be heard any more
        if self.probe is None or self.probe_result is not None:
            return
        payload = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        try:
            self.probe(payload)
        except Exception as exc:  # the database is away: try again after the next (re)connect
            log.debug("test NOTIFY failed", extra={"action": "listen_probe_error", "error": _one_line(exc)})
            return
        self._probe_payload = payload
        self._probe_sent = time.monotonic()

    def _judge_probe(self) -> None:
        if self._probe_payload is None:
            return
        self._probe_payload = None
        self.probe_result = "not_heard"
        log.warning(
            f"LISTEN did not hear this worker's own test NOTIFY within {PROBE_TIMEOUT_S:g} s: notifications do "
            "not reach this worker, which finds new jobs by polling only. The LISTEN connection probably goes "
            "through a transaction pooler (PgBouncer pool_mode=transaction); give LISTEN a direct connection "
            "with --listen-url (JOBQUEUE_LISTEN_URL), or turn it off with --no-listen",
            extra={"action": "listen_unverified", "timeout_s": PROBE_TIMEOUT_S},
        )

    def _execute(self, conn: psycopg.Connection[Any], statement: bytes) -> None:
        """Run a statement with a deadline, on the libpq connection (psycopg has no query timeout).

        Every statement on this connection goes through here: a peer that stops answering
        mid-statement (LISTEN included) must not hang the listener. Notifications that arrive
        while waiting are delivered, not dropped.
        """
        pgconn = conn.pgconn
        pgconn.send_query(statement)
        deadline = time.monotonic() + PING_TIMEOUT_S
        while pgconn.flush():
            self._wait(pgconn.socket, deadline, write=True)
        while True:
            pgconn.consume_input()
            if not pgconn.is_busy():
                break
            self._wait(pgconn.socket, deadline)
        while (result := pgconn.get_result()) is not None:
            if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
                message = result.error_message.decode(errors="replace")
                raise psycopg.OperationalError(f"listener statement failed: {message}")
        while (notify := pgconn.notifies()) is not None:
            self._notified(notify.extra.decode(errors="replace"))

    @staticmethod
    def _wait(fileno: int, deadline: float, *, write: bool = False) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise psycopg.OperationalError(f"listener connection got no answer within {PING_TIMEOUT_S:g} s")
        if write:
            select.select([], [fileno], [], remaining)
        else:
            select.select([fileno], [], [], remaining)


def _is_tcp(url: str) -> bool:
    from psycopg.conninfo import conninfo_to_dict

    host = str(conninfo_to_dict(url).get("host") or "")
    return bool(host) and not host.startswith("/")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
