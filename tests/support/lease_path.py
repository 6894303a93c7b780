"""SEC-09's lists: what is on the lease path, and how a caller's clock would get in.

Two tests named ``test_no_client_time_in_lease_sql`` had drifted apart (test_clock.py and
test_sql_security.py): one knew register_worker, worker_heartbeat and unregister_worker, the
other retry_delay; one looked for ``time``/``timetz`` arguments, the other for Python code
reading the client's clock. The lists here are their union, checked by the one test left
(tests/integration/test_clock.py).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jobqueue

#: SQL API functions that take, extend, end or schedule a lease or a retry, or stamp a worker.
LEASE_FUNCTIONS = (
    "claim", "heartbeat", "complete", "complete_many", "fail", "snooze", "release", "add_log", "set_progress",
    "reconcile", "next_due", "retry_delay", "register_worker", "worker_heartbeat", "unregister_worker",
)  # fmt: skip
#: Named statements (sql/queries.sql) the worker runs them through.
LEASE_QUERIES = (
    "claim", "heartbeat_many", "complete", "complete_many", "fail", "snooze", "release", "add_log", "set_progress",
    "next_due", "reconcile", "register_worker", "worker_heartbeat", "unregister_worker",
)  # fmt: skip
#: Argument types that carry a point in time (or a time of day).
TIME_ARG_TYPES = ("timestamptz", "timestamp", "date", "time", "timetz")
#: A parameter or literal cast to one of them in a statement.
TIME_CAST = re.compile(r"::\s*(timestamptz|timestamp|date|timetz|time)\b", re.IGNORECASE)
#: Calls that read the client's clock.
CLIENT_CLOCK = {
    ("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today"),
    ("time", "time"), ("time", "time_ns"),
}  # fmt: skip

FUNCTIONS_TAKING_TIME = """
SELECT p.proname, p.oid::regprocedure::text AS signature,
       EXISTS (SELECT 1 FROM unnest(p.proargtypes::oid[]) t(oid)
               WHERE t.oid = ANY(%(types)s::regtype[]::oid[])) AS takes_time
FROM pg_proc p WHERE p.pronamespace = 'jobqueue'::regnamespace AND p.proname = ANY(%(names)s)
"""


def clock_readers(names: tuple[str, ...] = LEASE_QUERIES) -> list[str]:
    """``file:line function`` for every package function that runs one of ``names`` (a string
    constant naming the query) and also reads the client's clock."""
    root = Path(jobqueue.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            strings = {n.value for n in ast.walk(fn) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
            if not strings & set(names):
                continue
            for call in ast.walk(fn):
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and isinstance(call.func.value, ast.Name)
                    and (call.func.value.id, call.func.attr) in CLIENT_CLOCK
                ):
                    offenders.append(f"{path.relative_to(root)}:{call.lineno} {fn.name}")
    return offenders
