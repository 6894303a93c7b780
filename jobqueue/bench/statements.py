"""Every statement the bench runs on the server, by name (the bench's own queries.sql).

The baseline (plain SQL on a plain table, no library) and what the bench reads back from
the server (counters, activity, the history it fills).
"""

# -- the baseline: plain SQL on a plain table, no library ------------------------------------

BASELINE_DDL = """
DROP SCHEMA IF EXISTS bench CASCADE;
CREATE SCHEMA bench;
CREATE TABLE bench.job (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL DEFAULT 'default',
    type text NOT NULL,
    payload jsonb NOT NULL,
    priority smallint NOT NULL DEFAULT 5,
    run_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_claim_idx ON bench.job (queue, priority DESC, run_at, id);
CREATE UNLOGGED TABLE bench.latency (job_id bigint PRIMARY KEY, started double precision NOT NULL);
"""
BASELINE_COPY = "COPY bench.job (type, payload) FROM STDIN"
BASELINE_INSERT = (
    "WITH j AS (INSERT INTO bench.job (type, payload) VALUES (%s, %s) RETURNING id) "
    "SELECT id, pg_notify('bench', 'default') FROM j"
)
#: The claim the issue names: a CTE that locks with SKIP LOCKED, evaluated once.
BASELINE_CLAIM_CTE = """
WITH c AS (
    SELECT id FROM bench.job WHERE queue = 'default'
    ORDER BY priority DESC, run_at, id
    LIMIT %s FOR UPDATE SKIP LOCKED
)
DELETE FROM bench.job j USING c WHERE j.id = c.id RETURNING j.id, j.type, j.payload
"""
#: The same with id = ANY(ARRAY(...)), the other single-evaluation form (DESIGN.md).
BASELINE_CLAIM_ANY = """
DELETE FROM bench.job WHERE id = ANY(ARRAY(
    SELECT id FROM bench.job WHERE queue = 'default'
    ORDER BY priority DESC, run_at, id
    LIMIT %s FOR UPDATE SKIP LOCKED
)) RETURNING id, type, payload
"""
CLAIM_SQL = {"cte": BASELINE_CLAIM_CTE, "any": BASELINE_CLAIM_ANY}
NOOP_TYPE = "bench.noop"
#: Named on every enqueue, as the baseline names it in its rows.
QUEUE = "default"
LATENCY_TYPE = "bench.latency"

# -- what the bench reads from the server ---------------------------------------------------

COUNTERS = """
SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s) AS xacts,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next_xid,
       pg_current_wal_lsn()::text AS lsn
"""
WAL_SINCE = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint"
FUNCTION_CALLS = "SELECT funcname, calls FROM pg_stat_user_functions WHERE schemaname = 'jobqueue'"
STATEMENT_CALLS = "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE dbid = %s AND toplevel"
#: Autovacuum's own transactions would count as the client's: off while costs are measured.
AUTOVACUUM_OFF = """
DO $$
DECLARE t regclass;
BEGIN
    FOR t IN SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname IN ('jobqueue', 'bench') AND c.relkind IN ('r', 'm')
    LOOP
        EXECUTE format('ALTER TABLE %s SET (autovacuum_enabled = off)', t);
    END LOOP;
END $$
"""
BACKENDS = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
LISTENING_WORKERS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name LIKE 'jobqueue-listen:%%'"
)
LIVE_JOBS = "SELECT count(*) FROM jobqueue.job"
DRAINED = """
SELECT count(*) AS done,
       extract(epoch FROM max(finished_at) - min(claimed_at))::float8 AS seconds
FROM jobqueue.job_history WHERE state = 'completed' AND type = 'bench.noop'
"""
#: Finished jobs straight into the history (as its owner), finished within the last hour so
#: that no retention step prunes them during the run.
HISTORY_INSERT = """
INSERT INTO jobqueue.job_history
    (queue, type, payload, state, attempt, max_attempts, token, worker_id, created_at, claimed_at, finished_at)
SELECT 'default', 'bench.retained', jsonb_build_object('i', g), 'completed', 1, 3, g, 'bench',
       t - interval '2 seconds', t - interval '5 milliseconds', t
FROM generate_series(%s::bigint, %s::bigint) AS g,
     LATERAL (SELECT now() - (g %% 3000000) * interval '1 millisecond' AS t) AS f
"""

# -- the counters scenario: the counter triggers of issue 17 switched off in a scratch database --

COUNTER_TRIGGERS_OFF = (
    "ALTER TABLE jobqueue.job DISABLE TRIGGER count_enqueued",
    "ALTER TABLE jobqueue.job_history DISABLE TRIGGER count_finished",
    "ALTER TABLE jobqueue.dead_letter DISABLE TRIGGER count_dead_lettered",
)
COUNTER_TALLY = (
    "SELECT (SELECT coalesce(sum(completed), 0) FROM jobqueue.counters()),"
    " (SELECT count(*) FROM jobqueue.counter_delta)"
)
COUNTER_TRIGGERS_ON = tuple(s.replace("DISABLE", "ENABLE") for s in COUNTER_TRIGGERS_OFF)
#: The statement measured with the triggers off and on: one complete_many of a claimed batch.
CLAIM_BATCH = "SELECT id, token FROM jobqueue.claim(ARRAY['default'], 'bench', %s)"
COMPLETE_BATCH = "SELECT count(*) FROM jobqueue.complete_many(%s, %s)"
