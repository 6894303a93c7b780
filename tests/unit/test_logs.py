"""The driver-log filter: psycopg's warnings once per kind per window, with a count of the rest."""

from __future__ import annotations

import logging

from jobqueue.logs import Repeats


def record(msg: str, *args: object, name: str = "psycopg.pool") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)


def test_repeats_pass_once_per_window_and_count_the_rest() -> None:
    now = [0.0]
    gate = Repeats(window_s=30, clock=lambda: now[0])
    first = record("error connecting in %r: %s", "jobqueue", "refused")
    assert gate.filter(first) and not hasattr(first, "suppressed")
    assert first.action == "driver_log"  # type: ignore[attr-defined]
    for second in range(1, 30):  # the same kind, other arguments: held back
        now[0] = float(second)
        assert not gate.filter(record("error connecting in %r: %s", "jobqueue", f"refused {second}"))
    other = record("discarding closed connection: %s", "conn")  # another kind passes at once
    assert gate.filter(other)
    now[0] = 30.0
    later = record("error connecting in %r: %s", "jobqueue", "refused")
    assert gate.filter(later)
    assert later.suppressed == 29  # type: ignore[attr-defined]
    assert gate.filter(record("error connecting in %r: %s", name="psycopg")) is True  # another logger


def test_configure_routes_driver_warnings_through_the_filter() -> None:
    from jobqueue import logs

    loggers = [logging.getLogger("jobqueue"), logging.getLogger("psycopg")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    try:
        logs.configure("INFO", "json")
        driver = loggers[1]
        assert driver.propagate is False and driver.level == logging.WARNING
        assert any(isinstance(f, Repeats) for h in driver.handlers for f in h.filters)
    finally:  # leave logging as the other tests expect it (caplog listens at the root)
        for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            lg.handlers[:], lg.propagate = handlers, propagate
            lg.setLevel(level)
