"""LISTEN loop with reconnect: NOTIFY is only a hint that wakes the worker sooner.

A dedicated autocommit connection listens on channel ``jobqueue`` (payload: a queue name).
It pings every PING_INTERVAL_S, so a silently dead connection is found; TCP keepalives and
``tcp_user_timeout`` bound how long a half-open socket can hang a ping. After every
(re)connect it wakes the worker once, to catch up on notifications missed while away.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Collection
from typing import Any

import psycopg

from jobqueue.config import CONNECT_TIMEOUT_S

CHANNEL = "jobqueue"
PING_INTERVAL_S = 5.0
#: How often the loop looks at the stop flag while waiting for notifications.
STOP_CHECK_S = 0.5
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 10.0
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
    ) -> None:
        self.url = url
        self.queues = frozenset(queues)
        self.wake = wake
        self.application_name = application_name
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
        ) as conn:
            conn.execute(f"LISTEN {CHANNEL}")  # a constant, never input
            if self.reconnects:
                log.info("listener reconnected", extra={"action": "listener_reconnected"})
            self.reconnects += 1
            self.connected.set()
            self.wake()  # catch up on anything missed while disconnected
            since_ping = 0.0
            while not self._stop.is_set():
                for notify in conn.notifies(timeout=STOP_CHECK_S):
                    if notify.payload in self.queues:
                        self.wake()
                since_ping += STOP_CHECK_S
                if since_ping >= PING_INTERVAL_S:
                    conn.execute("SELECT 1")
                    since_ping = 0.0
        self.connected.clear()


def _is_tcp(url: str) -> bool:
    from psycopg.conninfo import conninfo_to_dict

    host = str(conninfo_to_dict(url).get("host") or "")
    return bool(host) and not host.startswith("/")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
