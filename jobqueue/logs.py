"""Structured logs: every record carries a stable ``action`` key; payloads are never logged."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class KeyValueFormatter(logging.Formatter):
    """``2026-11-23T07:00:00Z INFO action=job_completed job_id=42 ... message``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        action = fields.pop("action", "log")
        pairs = " ".join(f"{k}={_value(v)}" for k, v in fields.items())
        line = f"{stamp}.{int(record.msecs):03d}Z {record.levelname} action={action} {pairs} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line.replace("  ", " ")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        doc = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **fields,
        }
        return json.dumps(doc, default=str)


#: The driver's own warnings repeat once per reconnect attempt of every pooled connection
#: while a server is away: each kind is let through once per this many seconds.
DRIVER_REPEAT_WINDOW_S = 30.0


class Repeats(logging.Filter):
    """Lets one record of each kind (logger, message template) through per ``window_s``;
    the next one that passes says how many were held back (``suppressed``)."""

    def __init__(self, window_s: float = DRIVER_REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.window_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.suppressed = held
        if not hasattr(record, "action"):
            record.action = "driver_log"
        return True


def configure(level: str = "INFO", fmt: str = "text") -> None:
    formatter = JsonFormatter() if fmt == "json" else KeyValueFormatter()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger("jobqueue")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # psycopg and psycopg_pool warnings (a connection lost, a reconnect attempt failed) in
    # the same format, and not once per attempt per pooled connection during an outage.
    driver_handler = logging.StreamHandler(sys.stderr)
    driver_handler.setFormatter(formatter)
    driver_handler.addFilter(Repeats())
    driver = logging.getLogger("psycopg")
    driver.handlers[:] = [driver_handler]
    driver.setLevel(logging.WARNING)
    driver.propagate = False


def _value(value: object) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text
