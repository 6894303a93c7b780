"""SEC-09 (static half): nothing on the lease path takes a caller's clock.

Every decision about a lease (claim, heartbeat, acknowledgements, reconcile) compares with the
database's ``now()``; a worker passes durations (intervals), never timestamps, so a worker
whose clock is wrong cannot lengthen, shorten or back-date a lease. The runtime half (a
worker started with a skewed clock, CHAOS-06) belongs to the chaos suite.
"""

from __future__ import annotations

from typing import Any

import psycopg

from jobqueue.sql import queries
from tests.support.lease_path import (
    FUNCTIONS_TAKING_TIME,
    LEASE_FUNCTIONS,
    LEASE_QUERIES,
    TIME_ARG_TYPES,
    TIME_CAST,
    clock_readers,
)


def test_no_client_time_in_lease_sql(db: psycopg.Connection[Any]) -> None:
    """SEC-09: lease and retry SQL take durations, never the client's datetimes (the one copy).

    The lists are tests/support/lease_path.py's: the union of the two copies that had drifted.
    """
    rows = db.execute(FUNCTIONS_TAKING_TIME, {"types": list(TIME_ARG_TYPES), "names": list(LEASE_FUNCTIONS)})
    found = rows.fetchall()
    assert {r["proname"] for r in found} == set(LEASE_FUNCTIONS), "a lease-path function is missing"
    assert [r["signature"] for r in found if r["takes_time"]] == []
    # the statements the worker runs bind no timestamp either
    named = queries()
    assert set(LEASE_QUERIES) <= set(named)
    binds_time = {name: TIME_CAST.findall(named[name]) for name in LEASE_QUERIES if TIME_CAST.search(named[name])}
    assert binds_time == {}
    # and no Python function that runs one of them reads the client's clock
    assert clock_readers() == []
    # the checks see a timestamp where there is one: enqueue's run_at, enqueue's SQL function
    assert TIME_CAST.search(named["enqueue"])
    enqueue = db.execute(FUNCTIONS_TAKING_TIME, {"types": list(TIME_ARG_TYPES), "names": ["enqueue"]}).fetchall()
    assert any(r["takes_time"] for r in enqueue)
