"""Structured logs: every record carries a stable ``action`` key; payloads are never logged."""

from __future__ import annotations

import json
import logging
import sys
import time

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


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger("jobqueue")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def _value(value: object) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text
