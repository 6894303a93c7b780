"""The worker's round -- acknowledge what finished, claim into the free slots -- as one
libpq pipeline: both statements and their Sync in **one** write, committed together at the
Sync (an implicit transaction: an error in either rolls back both).

psycopg's ``pipeline()`` sends each statement as it is executed (a flush per statement,
plus BEGIN and COMMIT of ``transaction()``): measured on 2 cores, a round of 32 took
2.6-3.1 ms and 0.47-0.50 ms of the worker's CPU that way, 1.75-1.9 ms and 0.08-0.10 ms this
way (docs/performance.md, issue 13). The parameters are dumped and the rows loaded by
psycopg's own Transformer, so the types on the wire are those psycopg's cursor would send.
Statements are not prepared (pooler-friendly, as psycopg's cursor with
``prepare_threshold=None``).
"""

from __future__ import annotations

import select
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer

#: The statements, with positional parameters (sql/queries.sql, worker_round_*).
Statement = tuple[bytes, Sequence[str], Mapping[str, Any]]

_POLL_IN = select.POLLIN | select.POLLERR | select.POLLHUP
_POLL_OUT = select.POLLOUT | select.POLLERR | select.POLLHUP


def run_round(conn: psycopg.Connection[Any], statements: Sequence[Statement]) -> list[list[tuple[Any, ...]]]:
    """Run ``statements`` (query, parameter names in order, parameters) on ``conn`` (idle)
    in one pipeline; each one's rows, as tuples. A database error raises it (the psycopg
    error class of its SQLSTATE) and nothing of the round is committed; the pipeline was
    read to its Sync, so the connection is idle again. Any other failure (a connection
    lost: ``psycopg.OperationalError``) closes the connection, and the pool replaces it: a
    pipeline left half read must not be handed out again."""
    pgconn = conn.pgconn
    tx = Transformer(conn)
    try:
        pgconn.enter_pipeline_mode()
        for sql, names, params in statements:
            values = tx.dump_sequence([params[n] for n in names], [PyFormat.AUTO] * len(names))
            pgconn.send_query_params(sql, values, param_types=tx.types, param_formats=tx.formats)
        pgconn.pipeline_sync()
        results = _exchange(pgconn)
        pgconn.exit_pipeline_mode()
    except BaseException:
        conn.close()
        raise
    out: list[list[tuple[Any, ...]]] = []
    for result in results:
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
        tx.set_pgresult(result)
        out.append(tx.load_rows(0, result.ntuples, tuple))
    return out


def _exchange(pgconn: pq.abc.PGconn) -> list[pq.abc.PGresult]:
    """Send what libpq holds, then read every result up to the pipeline's Sync: the first
    result of each statement (an error, or an aborted statement after one, included)."""
    poller = select.poll()
    fd = pgconn.socket
    while pgconn.flush():
        poller.register(fd, _POLL_OUT)
        poller.poll()
        poller.unregister(fd)
    poller.register(fd, _POLL_IN)
    results: list[pq.abc.PGresult] = []
    first: pq.abc.PGresult | None = None
    while True:
        while pgconn.is_busy():
            poller.poll()
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:  # the end of one statement's results
            if first is not None:
                results.append(first)
                first = None
            continue
        if result.status == pq.ExecStatus.PIPELINE_SYNC:
            return results
        if first is None:
            first = result
