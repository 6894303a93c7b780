-- Revision 0010: counters the database keeps (issue 17, "metrics people chart"): per queue and
-- job type, jobs enqueued, completed, failed, retried, dead-lettered and cancelled, and
-- queue-time and run-time histograms, monotonic across pruning and restarts. Statement-level
-- triggers on job, job_history and dead_letter append one delta row per (queue, type) and
-- statement; fail and reconcile count retries; reconcile folds the deltas into totals
-- (_compact_counters); jobqueue.counters() reads them. Schema version 5.

------------------------------------------------------------------------------------------
-- Counters the database keeps (read through jobqueue.counters(); docs/sql-api.md "Counters")
------------------------------------------------------------------------------------------
-- Transitions counted per (queue, type) since the counters began: monotonic, whatever
-- retention prunes. Each statement that moves jobs appends ONE row per (queue, type) it
-- touched to counter_delta (statement-level triggers on job, job_history and dead_letter;
-- fail and reconcile for retries), so writers never wait on each other's counter rows and
-- a batch of 1,000 completions costs one row, not 1,000. Reconcile folds the deltas into
-- counter_total (jobqueue._compact_counters). Histograms: per-bucket counts (not
-- cumulative) over the bounds of jobqueue.histogram_buckets(), then one bucket above them.
-- No index on counter_delta: it is only appended to and read whole.
CREATE TABLE jobqueue.counter_delta (
    queue          text NOT NULL,
    type           text NOT NULL,
    enqueued       bigint NOT NULL DEFAULT 0,
    completed      bigint NOT NULL DEFAULT 0,
    failed         bigint NOT NULL DEFAULT 0,
    retried        bigint NOT NULL DEFAULT 0,
    dead_lettered  bigint NOT NULL DEFAULT 0,
    cancelled      bigint NOT NULL DEFAULT 0,
    queue_time     bigint[],                          -- NULL: nothing observed
    queue_time_sum double precision NOT NULL DEFAULT 0,
    run_time       bigint[],
    run_time_sum   double precision NOT NULL DEFAULT 0
) WITH (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05
);
COMMENT ON TABLE jobqueue.counter_delta IS
    'Counter increments, one row per statement and (queue, type); private: reconcile folds them into counter_total';

CREATE TABLE jobqueue.counter_total (LIKE jobqueue.counter_delta INCLUDING DEFAULTS);
ALTER TABLE jobqueue.counter_total ADD PRIMARY KEY (queue, type);
COMMENT ON TABLE jobqueue.counter_total IS
    'Counter totals per (queue, type) up to the last compaction; private: read jobqueue.counters()';

------------------------------------------------------------------------------------------
-- Counters: transitions per (queue, type), kept by the database (tables in part 2)
------------------------------------------------------------------------------------------
-- The upper bounds, in seconds, of the histogram buckets (queue time and run time), a last
-- bucket above them all. Fixed: the stored counts are per bucket of these bounds. (plpgsql,
-- not sql: it returns the constant without planning a query at each call.)
CREATE FUNCTION jobqueue.histogram_buckets() RETURNS double precision[]
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ BEGIN RETURN '{0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10,30,60,300,900,3600}'::double precision[]; END $$;
COMMENT ON FUNCTION jobqueue.histogram_buckets() IS
    'Upper bounds (seconds) of the queue-time and run-time histogram buckets of jobqueue.counters()';

-- Per-bucket counts (not cumulative) of durations in seconds: element k counts the values v
-- with bound[k-1] < v <= bound[k] (Prometheus' le), the last element those above every
-- bound. NULL for no values.
CREATE FUNCTION jobqueue._bucket_counts(vals double precision[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    bounds constant double precision[] := jobqueue.histogram_buckets();
    nb constant integer := cardinality(bounds);
BEGIN
    IF vals IS NULL OR cardinality(vals) = 0 THEN
        RETURN NULL;
    END IF;
    -- plpgsql, not sql: its query is planned once per session (a sql function's body was
    -- planned again for every statement the counter trigger ran: 0.5 ms each). width_bucket
    -- over the negated bounds in reverse counts the bounds >= v (a binary search): the bucket
    -- of v is then 1 + the number of bounds < v.
    RETURN ARRAY(
        SELECT coalesce(c.n, 0)
        FROM generate_series(1, nb + 1) AS g(i)
        LEFT JOIN (SELECT nb + 1 - width_bucket(-u.v, ARRAY(SELECT -x.bound FROM unnest(bounds) WITH ORDINALITY
                                                                   AS x(bound, o) ORDER BY x.o DESC)) AS k,
                          count(*) AS n
                   FROM unnest(vals) AS u(v) GROUP BY 1) AS c ON c.k = g.i
        ORDER BY g.i);
END
$$;

-- Element-wise sum of two bucket arrays (STRICT: an aggregate over it skips NULLs).
CREATE FUNCTION jobqueue._add_buckets(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT ARRAY(SELECT coalesce(x.a, 0) + coalesce(x.b, 0) FROM unnest(a, b) AS x(a, b)) $$;

CREATE AGGREGATE jobqueue._sum_buckets(bigint[]) (SFUNC = jobqueue._add_buckets, STYPE = bigint[]);

-- Statement-level triggers: each appends one counter_delta row per (queue, type) of the rows
-- the statement wrote (none when it wrote none). They see only rows that were inserted, so
-- an enqueue that loses a unique_key conflict or a rolled-back statement counts nothing.
-- A job inserted into the hot table was enqueued (enqueue, enqueue_many, enqueue_batch,
-- schedules) or put back from the dead letters (retry, redrive): either way it entered the
-- queue, so enqueued - completed - cancelled - dead_lettered = live jobs.
CREATE FUNCTION jobqueue._count_enqueued() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    INSERT INTO jobqueue.counter_delta (queue, type, enqueued)
    SELECT n.queue, n.type, count(*) FROM new_rows n GROUP BY n.queue, n.type;
    RETURN NULL;
END
$$;

-- A job inserted into job_history finished: completed (complete, complete_many), or cancelled
-- (cancel, fail with cancelled, reconcile, a failed dependency). Completed jobs also give
-- their queue time (claimed_at - run_at: how long the successful attempt waited, once due,
-- for a worker) and run time (finished_at - claimed_at).
CREATE FUNCTION jobqueue._count_finished() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    INSERT INTO jobqueue.counter_delta (queue, type, completed, cancelled, queue_time, queue_time_sum,
                                        run_time, run_time_sum)
    SELECT n.queue, n.type, count(*) FILTER (WHERE n.state = 'completed'), count(*) FILTER (WHERE n.state = 'cancelled'),
           jobqueue._bucket_counts(array_agg(t.queued) FILTER (WHERE t.queued IS NOT NULL)),
           coalesce(sum(t.queued), 0),
           jobqueue._bucket_counts(array_agg(t.ran) FILTER (WHERE t.ran IS NOT NULL)),
           coalesce(sum(t.ran), 0)
    FROM new_rows n
    CROSS JOIN LATERAL (
        SELECT CASE WHEN n.state = 'completed'
                    THEN greatest(extract(epoch FROM n.claimed_at - n.run_at), 0)::float8 END AS queued,
               CASE WHEN n.state = 'completed'
                    THEN greatest(extract(epoch FROM n.finished_at - n.claimed_at), 0)::float8 END AS ran
    ) AS t
    GROUP BY n.queue, n.type;
    RETURN NULL;
END
$$;

-- A job inserted into dead_letter failed for good. Its last attempt failed (a failed attempt
-- counts in failed) when the reason is one only a running job gets; 'expired' jobs were
-- waiting. (Failed attempts that are retried are counted by fail and reconcile.)
CREATE FUNCTION jobqueue._count_dead_lettered() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    INSERT INTO jobqueue.counter_delta (queue, type, dead_lettered, failed)
    SELECT n.queue, n.type, count(*),
           count(*) FILTER (WHERE n.reason IN ('permanent_error', 'max_retries_exceeded',
                                               'visibility_timeout_exceeded', 'output_too_large'))
    FROM new_rows n GROUP BY n.queue, n.type;
    RETURN NULL;
END
$$;

CREATE TRIGGER count_enqueued AFTER INSERT ON jobqueue.job
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION jobqueue._count_enqueued();
CREATE TRIGGER count_finished AFTER INSERT ON jobqueue.job_history
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION jobqueue._count_finished();
CREATE TRIGGER count_dead_lettered AFTER INSERT ON jobqueue.dead_letter
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION jobqueue._count_dead_lettered();

-- Reconcile's step: fold up to batch * 100 delta rows into counter_total, one upsert per
-- (queue, type). Rows are taken with SKIP LOCKED, so concurrent reconciles split the work
-- and never count a row twice; a reader summing totals and deltas in one statement sees a
-- fold either wholly done or not at all.
CREATE FUNCTION jobqueue._compact_counters(batch integer, dry_run boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    IF dry_run THEN
        SELECT count(*) INTO n FROM (SELECT 1 FROM jobqueue.counter_delta LIMIT batch * 100) AS s;
        RETURN jsonb_build_object('counters_compacted', n);
    END IF;
    WITH d AS (
        DELETE FROM jobqueue.counter_delta x
        WHERE x.ctid = ANY (ARRAY(SELECT y.ctid FROM jobqueue.counter_delta y LIMIT batch * 100
                                  FOR UPDATE SKIP LOCKED))
        RETURNING x.*
    ), g AS (
        SELECT d.queue, d.type, sum(d.enqueued)::bigint AS enqueued, sum(d.completed)::bigint AS completed,
               sum(d.failed)::bigint AS failed, sum(d.retried)::bigint AS retried,
               sum(d.dead_lettered)::bigint AS dead_lettered, sum(d.cancelled)::bigint AS cancelled,
               jobqueue._sum_buckets(d.queue_time) AS queue_time, sum(d.queue_time_sum) AS queue_time_sum,
               jobqueue._sum_buckets(d.run_time) AS run_time, sum(d.run_time_sum) AS run_time_sum
        FROM d GROUP BY d.queue, d.type
    ), u AS (
        INSERT INTO jobqueue.counter_total AS t
        SELECT g.* FROM g ORDER BY g.queue, g.type  -- upserts in key order: no deadlock between reconciles
        ON CONFLICT (queue, type) DO UPDATE
        SET enqueued = t.enqueued + EXCLUDED.enqueued, completed = t.completed + EXCLUDED.completed,
            failed = t.failed + EXCLUDED.failed, retried = t.retried + EXCLUDED.retried,
            dead_lettered = t.dead_lettered + EXCLUDED.dead_lettered, cancelled = t.cancelled + EXCLUDED.cancelled,
            queue_time = coalesce(jobqueue._add_buckets(t.queue_time, EXCLUDED.queue_time), t.queue_time,
                                  EXCLUDED.queue_time),
            queue_time_sum = t.queue_time_sum + EXCLUDED.queue_time_sum,
            run_time = coalesce(jobqueue._add_buckets(t.run_time, EXCLUDED.run_time), t.run_time, EXCLUDED.run_time),
            run_time_sum = t.run_time_sum + EXCLUDED.run_time_sum
    )
    SELECT count(*) INTO n FROM d;
    RETURN jsonb_build_object('counters_compacted', n);
END
$$;

-- The counters: totals plus the deltas not yet folded, in one snapshot; running is the
-- current number of processing jobs (a gauge, not a counter). Bucket arrays are per bucket
-- (not cumulative), one element per bound of histogram_buckets() and one above.
CREATE FUNCTION jobqueue.counters()
RETURNS TABLE (queue text, type text, enqueued bigint, completed bigint, failed bigint, retried bigint,
               dead_lettered bigint, cancelled bigint, running bigint,
               queue_time_buckets bigint[], queue_time_sum double precision,
               run_time_buckets bigint[], run_time_sum double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    zeros bigint[] := array_fill(0::bigint, ARRAY[cardinality(jobqueue.histogram_buckets()) + 1]);
BEGIN
    -- counters are per queue and type across tenants: a tenant-mapped role may not read them
    PERFORM jobqueue._require_unmapped('counters');
    RETURN QUERY
    WITH c AS (
        SELECT x.queue, x.type, sum(x.enqueued)::bigint AS enqueued, sum(x.completed)::bigint AS completed,
               sum(x.failed)::bigint AS failed, sum(x.retried)::bigint AS retried,
               sum(x.dead_lettered)::bigint AS dead_lettered, sum(x.cancelled)::bigint AS cancelled,
               jobqueue._sum_buckets(x.queue_time) AS queue_time, sum(x.queue_time_sum) AS queue_time_sum,
               jobqueue._sum_buckets(x.run_time) AS run_time, sum(x.run_time_sum) AS run_time_sum
        FROM (SELECT * FROM jobqueue.counter_total UNION ALL SELECT * FROM jobqueue.counter_delta) AS x
        GROUP BY x.queue, x.type
    ), r AS (
        SELECT j.queue, j.type, count(*) AS running
        FROM jobqueue.job j WHERE j.state = 'processing'
        GROUP BY j.queue, j.type
    )
    SELECT coalesce(c.queue, r.queue), coalesce(c.type, r.type), coalesce(c.enqueued, 0),
           coalesce(c.completed, 0), coalesce(c.failed, 0), coalesce(c.retried, 0), coalesce(c.dead_lettered, 0),
           coalesce(c.cancelled, 0), coalesce(r.running, 0), coalesce(c.queue_time, zeros),
           coalesce(c.queue_time_sum, 0), coalesce(c.run_time, zeros), coalesce(c.run_time_sum, 0)
    FROM c FULL JOIN r ON r.queue = c.queue AND r.type = c.type
    ORDER BY 1, 2;
END
$$;
COMMENT ON FUNCTION jobqueue.counters() IS
    'Per queue and job type: monotonic counts of jobs enqueued, completed, failed (attempts), retried, '
    'dead-lettered, cancelled; running now; queue-time and run-time histograms of completed jobs';

CREATE OR REPLACE FUNCTION jobqueue.fail(
    id bigint,
    token bigint,
    error text DEFAULT NULL,
    error_class text DEFAULT 'transient',
    retry_in interval DEFAULT NULL,
    traceback text DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    j jobqueue.job;
    outcome text;
    why text;
    delay interval;
    entry jsonb;
    earlier text;
BEGIN
    PERFORM jobqueue._check_lease_args(fail.id, fail.token);
    PERFORM jobqueue._check_error_class(fail.error_class);
    IF retry_in IS NOT NULL THEN
        PERFORM jobqueue._check_duration('retry_in', retry_in, true, jobqueue._conf('max_delay_s'));
    END IF;

    SELECT * INTO j FROM jobqueue.job AS x
    WHERE x.id = fail.id AND x.state = 'processing' AND x.token = fail.token
    FOR UPDATE;
    IF NOT FOUND THEN
        -- A repeated fail with the same token answers the first outcome (its error entry says it).
        SELECT e.value->>'outcome' INTO earlier
        FROM (SELECT x.errors FROM jobqueue.job x WHERE x.id = fail.id
              UNION ALL SELECT x.errors FROM jobqueue.dead_letter x WHERE x.id = fail.id
              UNION ALL SELECT x.errors FROM jobqueue.job_history x WHERE x.id = fail.id) AS s
        CROSS JOIN LATERAL jsonb_array_elements(s.errors) AS e
        WHERE e.value->>'token' = fail.token::text AND e.value->>'source' = 'worker'
        LIMIT 1;
        RETURN coalesce(earlier, 'lease_lost');
    END IF;

    IF error_class = 'cancelled' OR j.cancel_requested THEN
        outcome := 'cancelled';
        why := coalesce(j.reason, 'cancelled');
    ELSIF error_class IN ('validation', 'business', 'permanent') THEN
        outcome := 'dead_letter';
        why := 'permanent_error';
    ELSIF j.attempt >= j.max_attempts * (CASE WHEN error_class = 'system' THEN 2 ELSE 1 END) THEN
        outcome := 'dead_letter';
        why := 'max_retries_exceeded';
    ELSE
        outcome := 'retrying';
        delay := coalesce(retry_in,
                          jobqueue.retry_delay(jobqueue._effective_policy(j.queue, j.type, j.retry_policy),
                                               j.attempt, error_class, random()));
    END IF;

    entry := jsonb_build_object(
        'at', now(), 'attempt', j.attempt, 'token', j.token, 'error_class', error_class,
        'message', left(error, jobqueue._conf('error_message_max_chars')::integer),
        'traceback', left(traceback, jobqueue._conf('traceback_max_chars')::integer),
        'worker_id', j.worker_id, 'source', 'worker', 'outcome', outcome);

    IF outcome = 'retrying' THEN
        UPDATE jobqueue.job x
        SET state = 'retrying', run_at = now() + delay, errors = jobqueue._append_error(x.errors, entry),
            worker_id = NULL, lease_expires_at = NULL
        WHERE x.id = j.id AND x.state = 'processing' AND x.token = j.token;
        -- a retry changes no table, so no counter trigger sees it: count it here
        INSERT INTO jobqueue.counter_delta (queue, type, failed, retried) VALUES (j.queue, j.type, 1, 1);
        INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state, detail)
        VALUES (j.id, j.token, j.queue, 'processing', 'retrying',
                jsonb_build_object('error_class', error_class, 'attempt', j.attempt, 'retry_in_s',
                                   extract(epoch FROM delay)));
        IF delay <= interval '0' THEN
            PERFORM jobqueue._notify(ARRAY[j.queue]);
        END IF;
        RETURN outcome;
    END IF;

    WITH d AS (
        DELETE FROM jobqueue.job x
        WHERE x.id = j.id AND x.state = 'processing' AND x.token = j.token
        RETURNING x AS r
    ), moved AS (
        SELECT p.* FROM d, jsonb_populate_record(d.r, jsonb_build_object(
            'state', outcome, 'finished_at', now(), 'reason', why, 'lease_expires_at', NULL,
            'errors', jobqueue._append_error((d.r).errors, entry))) AS p
    ), h AS (
        INSERT INTO jobqueue.job_history SELECT * FROM moved WHERE outcome = 'cancelled'
    ), l AS (
        INSERT INTO jobqueue.dead_letter SELECT * FROM moved WHERE outcome = 'dead_letter'
    )
    INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state, detail)
    SELECT (d.r).id, (d.r).token, (d.r).queue, 'processing', outcome::jobqueue.job_state,
           jsonb_build_object('error_class', error_class, 'attempt', j.attempt, 'reason', why)
    FROM d;
    PERFORM jobqueue._cancel_dependents(ARRAY[j.id]);
    RETURN outcome;
END
$$;
COMMENT ON FUNCTION jobqueue.fail(bigint, bigint, text, text, interval, text) IS
    'Record a failed attempt; retrying | dead_letter | cancelled | lease_lost (a repeat answers the first outcome)';

CREATE OR REPLACE FUNCTION jobqueue.reconcile(batch integer DEFAULT 1000, dry_run boolean DEFAULT false) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    dry boolean := coalesce(dry_run, false);
    leases_retried integer := 0;
    leases_dead integer := 0;
    leases_cancelled integer := 0;
    expired integer := 0;
    dependents integer := 0;
    archived integer;
    pruned integer := 0;
    events_pruned integer := 0;
    logs_pruned integer := 0;
    workers_pruned integer := 0;
    aged integer := 0;
    finished bigint[];
    wake text[];
    parts jsonb;
    history_keep interval := make_interval(secs => jobqueue._conf('history_retention_s'));
    min_keep interval;
    drop_before timestamptz;
    -- cut-offs computed once: a setting read per row made pruning a full scan of the table
    events_before timestamptz := now() - make_interval(secs => jobqueue._conf('event_retention_s'));
    logs_before timestamptz := now() - make_interval(secs => jobqueue._conf('log_retention_s'));
    workers_before timestamptz := now() - make_interval(secs => jobqueue._conf('worker_retention_s'));
BEGIN
    IF batch IS NULL OR batch NOT BETWEEN 1 AND 100000 THEN
        PERFORM jobqueue._raise('batch', 'must be between 1 and 100000');
    END IF;

    -- (1) Expired leases. A job whose lease ran out is a failed attempt of class timeout:
    -- retrying (with the timeout delay), or dead-lettered (visibility_timeout_exceeded) when
    -- its attempts are used up, or cancelled when cancel was requested. Candidates are locked
    -- with SKIP LOCKED and the transition re-asserts state, token and expiry, so a job acked
    -- or heartbeated in the meantime keeps its new state.
    IF dry THEN
        SELECT count(*) FILTER (WHERE NOT s.cancel_requested AND s.attempt < s.max_attempts),
               count(*) FILTER (WHERE NOT s.cancel_requested AND s.attempt >= s.max_attempts),
               count(*) FILTER (WHERE s.cancel_requested)
        INTO leases_retried, leases_dead, leases_cancelled
        FROM (SELECT j.cancel_requested, j.attempt, j.max_attempts FROM jobqueue.job j
              WHERE j.state = 'processing' AND j.lease_expires_at < now() LIMIT batch) AS s;
    ELSE
        WITH c AS (
            SELECT j.id FROM jobqueue.job j
            WHERE j.state = 'processing' AND j.lease_expires_at < now()
            ORDER BY j.lease_expires_at, j.id
            LIMIT batch
            FOR UPDATE SKIP LOCKED
        ), o AS (
            SELECT j.id, j.token, x.outcome,
                   jsonb_build_object('at', now(), 'attempt', j.attempt, 'token', j.token, 'error_class', 'timeout',
                       'message', format('lease expired at %s without acknowledgement', j.lease_expires_at),
                       'traceback', NULL, 'worker_id', j.worker_id, 'source', 'reconcile',
                       'outcome', x.outcome) AS entry,
                   CASE WHEN x.outcome = 'retrying' THEN jobqueue.retry_delay(
                       jobqueue._effective_policy(j.queue, j.type, j.retry_policy), j.attempt, 'timeout', random())
                   END AS delay
            FROM jobqueue.job j JOIN c ON c.id = j.id
            CROSS JOIN LATERAL (SELECT CASE WHEN j.cancel_requested THEN 'cancelled'
                                            WHEN j.attempt >= j.max_attempts THEN 'dead_letter'
                                            ELSE 'retrying' END AS outcome) AS x
        ), u AS (
            UPDATE jobqueue.job j
            SET state = 'retrying', run_at = now() + o.delay, errors = jobqueue._append_error(j.errors, o.entry),
                worker_id = NULL, lease_expires_at = NULL
            FROM o
            WHERE j.id = o.id AND o.outcome = 'retrying'
              AND j.state = 'processing' AND j.token = o.token AND j.lease_expires_at < now()
            RETURNING j.id, j.token, j.queue, j.type, j.attempt, j.run_at
        ), counted AS (
            -- retries change no table, so no counter trigger sees them: one delta per (queue, type)
            INSERT INTO jobqueue.counter_delta (queue, type, failed, retried)
            SELECT u.queue, u.type, count(*), count(*) FROM u GROUP BY u.queue, u.type
        ), d AS (
            DELETE FROM jobqueue.job j USING o
            WHERE j.id = o.id AND o.outcome <> 'retrying'
              AND j.state = 'processing' AND j.token = o.token AND j.lease_expires_at < now()
            RETURNING j AS r, o.outcome, o.entry
        ), moved AS (
            SELECT d.outcome, jsonb_populate_record(d.r, jsonb_build_object(
                       'state', d.outcome, 'finished_at', now(), 'lease_expires_at', NULL,
                       'reason', CASE WHEN d.outcome = 'cancelled' THEN coalesce((d.r).reason, 'cancelled')
                                      ELSE 'visibility_timeout_exceeded' END,
                       'errors', jobqueue._append_error((d.r).errors, d.entry))) AS r
            FROM d
        ), h AS (
            INSERT INTO jobqueue.job_history SELECT (m.r).* FROM moved m WHERE m.outcome = 'cancelled'
        ), l AS (
            INSERT INTO jobqueue.dead_letter SELECT (m.r).* FROM moved m WHERE m.outcome = 'dead_letter'
        ), ev AS (
            INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state, detail)
            SELECT u.id, u.token, u.queue, 'processing'::jobqueue.job_state, 'retrying'::jobqueue.job_state,
                   jsonb_build_object('error_class', 'timeout', 'attempt', u.attempt, 'by', 'reconcile')
            FROM u
            UNION ALL
            SELECT (m.r).id, (m.r).token, (m.r).queue, 'processing'::jobqueue.job_state, (m.r).state,
                   jsonb_build_object('error_class', 'timeout', 'attempt', (m.r).attempt, 'reason', (m.r).reason,
                                      'by', 'reconcile')
            FROM moved m
        )
        SELECT (SELECT count(*) FROM u),
               (SELECT count(*) FROM moved m WHERE m.outcome = 'dead_letter'),
               (SELECT count(*) FROM moved m WHERE m.outcome = 'cancelled'),
               (SELECT array_agg((m.r).id) FROM moved m),
               (SELECT array_agg(DISTINCT u.queue) FROM u WHERE u.run_at <= now())
        INTO leases_retried, leases_dead, leases_cancelled, finished, wake;
        PERFORM jobqueue._notify(wake);
        IF finished IS NOT NULL THEN
            dependents := dependents + jobqueue._cancel_dependents(finished);
        END IF;
    END IF;

    -- (2) Expired jobs: waiting past expires_at (claim no longer picks them) -> dead letter 'expired'.
    IF dry THEN
        SELECT count(*) INTO expired FROM (
            SELECT 1 FROM jobqueue.job j
            WHERE j.expires_at <= now() AND j.state IN ('pending', 'retrying') LIMIT batch) AS s;
    ELSE
        WITH c AS (
            SELECT j.id FROM jobqueue.job j
            WHERE j.expires_at <= now() AND j.state IN ('pending', 'retrying')
            ORDER BY j.expires_at, j.id
            LIMIT batch
            FOR UPDATE SKIP LOCKED
        ), d AS (
            DELETE FROM jobqueue.job j USING c
            WHERE j.id = c.id AND j.state IN ('pending', 'retrying') AND j.expires_at <= now()
            RETURNING j AS r
        ), l AS (
            INSERT INTO jobqueue.dead_letter
            SELECT p.* FROM d, jsonb_populate_record(d.r, jsonb_build_object(
                'state', 'dead_letter', 'finished_at', now(), 'reason', 'expired', 'waiting_on', 0)) AS p
        ), ev AS (
            INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state, detail)
            SELECT (d.r).id, (d.r).token, (d.r).queue, (d.r).state, 'dead_letter',
                   jsonb_build_object('reason', 'expired', 'by', 'reconcile')
            FROM d
        )
        SELECT count(*), array_agg((d.r).id) INTO expired, finished FROM d;
        IF finished IS NOT NULL THEN
            dependents := dependents + jobqueue._cancel_dependents(finished);
        END IF;
    END IF;

    -- (3) Archive old dead letters.
    archived := jobqueue._archive(NULL, batch, dry);

    -- (4) Retention: delete expired history rows batch by batch (per queue retention; wholly
    -- expired partitions are dropped in step 6), old audit events
    -- (the only delete job_event accepts: flagged, as the owner), old log lines, stopped workers.
    min_keep := least(history_keep, coalesce((SELECT min(q.history_retention) FROM jobqueue.queue q), history_keep));
    -- Dated partitions wholly older than the longest retention are dropped in step 6: their
    -- rows are not deleted one by one here (only DEFAULT-partition rows that old are).
    drop_before := (((now() - greatest(history_keep, coalesce((SELECT max(q.history_retention) FROM jobqueue.queue q),
                                                               history_keep))) AT TIME ZONE 'UTC')::date)::timestamp
                   AT TIME ZONE 'UTC';
    IF dry THEN
        SELECT count(*) INTO pruned FROM (
            SELECT 1 FROM jobqueue.job_history h LEFT JOIN jobqueue.queue q ON q.name = h.queue
            WHERE h.finished_at < now() - min_keep
              AND h.finished_at < now() - coalesce(q.history_retention, history_keep)
              AND (h.finished_at >= drop_before OR h.tableoid = 'jobqueue.job_history_default'::regclass)
            LIMIT batch) AS s;
        SELECT count(*) INTO events_pruned FROM (
            SELECT 1 FROM jobqueue.job_event e
            WHERE e.at < events_before LIMIT batch) AS s;
        SELECT count(*) INTO logs_pruned FROM (
            SELECT 1 FROM jobqueue.job_log g
            WHERE g.at < logs_before LIMIT batch) AS s;
        SELECT count(*) INTO workers_pruned FROM jobqueue.worker w
        WHERE w.stopped_at < workers_before;
    ELSE
        WITH c AS (
            SELECT h.id, h.finished_at FROM jobqueue.job_history h LEFT JOIN jobqueue.queue q ON q.name = h.queue
            WHERE h.finished_at < now() - min_keep
              AND h.finished_at < now() - coalesce(q.history_retention, history_keep)
              AND (h.finished_at >= drop_before OR h.tableoid = 'jobqueue.job_history_default'::regclass)
            LIMIT batch
            FOR UPDATE OF h SKIP LOCKED
        ), d AS (
            DELETE FROM jobqueue.job_history h USING c
            WHERE h.id = c.id AND h.finished_at = c.finished_at
            RETURNING 1
        )
        SELECT count(*) INTO pruned FROM d;

        PERFORM set_config('jobqueue.pruning', 'on', true);
        DELETE FROM jobqueue.job_event e
        WHERE e.ctid = ANY (ARRAY(
            SELECT x.ctid FROM jobqueue.job_event x
            WHERE x.at < events_before LIMIT batch));
        GET DIAGNOSTICS events_pruned = ROW_COUNT;
        PERFORM set_config('jobqueue.pruning', 'off', true);

        DELETE FROM jobqueue.job_log g
        WHERE g.ctid = ANY (ARRAY(
            SELECT x.ctid FROM jobqueue.job_log x
            WHERE x.at < logs_before LIMIT batch));
        GET DIAGNOSTICS logs_pruned = ROW_COUNT;

        DELETE FROM jobqueue.worker w
        WHERE w.stopped_at < workers_before;
        GET DIAGNOSTICS workers_pruned = ROW_COUNT;
    END IF;

    -- (5) Priority aging, where a queue enables it (jobqueue._age_priorities).
    aged := jobqueue._age_priorities(batch, dry);

    -- (6) History partitions: create the coming days', drop the wholly expired ones. Last,
    -- because its DDL locks job_history until this transaction commits.
    parts := jobqueue._maintain_partitions(dry);
    IF NOT dry THEN
        UPDATE jobqueue.maintenance m SET last_run_at = now()
        WHERE m.step IN (SELECT x.step FROM jobqueue.maintenance x WHERE x.step = 'reconcile'
                         FOR UPDATE SKIP LOCKED);
    END IF;
    RETURN jsonb_build_object(
        'dry_run', dry,
        'expired_leases', leases_retried + leases_dead + leases_cancelled,
        'leases_retried', leases_retried,
        'leases_dead_lettered', leases_dead,
        'leases_cancelled', leases_cancelled,
        'expired', expired,
        'dependents_cancelled', dependents,
        'dead_letters_archived', archived,
        'history_pruned', pruned,
        'events_pruned', events_pruned,
        'logs_pruned', logs_pruned,
        'workers_pruned', workers_pruned,
        'aged', aged) || parts || jobqueue._fire_schedules(batch, dry)
        || jobqueue._detect_alerts(dry)
        || jobqueue._compact_counters(batch, dry);
END
$$;
COMMENT ON FUNCTION jobqueue.reconcile(integer, boolean) IS
    'Maintenance (expire leases, expire TTL''d jobs, archive, prune, age priorities, partitions, fire schedules, '
    'detect alerts, fold counters); JSON summary';

CREATE OR REPLACE FUNCTION jobqueue.schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT 5 $$;
COMMENT ON FUNCTION jobqueue.schema_version() IS
    'The jobqueue schema version (2: health; 3: output caps, per-tenant worker ids; 4: schedules; 5: alerts, '
    'counters); clients check it at startup';

REVOKE EXECUTE ON FUNCTION jobqueue.histogram_buckets(), jobqueue._bucket_counts(double precision[]),
    jobqueue._add_buckets(bigint[], bigint[]), jobqueue._sum_buckets(bigint[]), jobqueue._count_enqueued(),
    jobqueue._count_finished(), jobqueue._count_dead_lettered(), jobqueue._compact_counters(integer, boolean),
    jobqueue.counters()
FROM PUBLIC;
REVOKE ALL ON jobqueue.counter_delta, jobqueue.counter_total FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobqueue.counters(), jobqueue.histogram_buckets() TO jobqueue_admin;

------------------------------------------------------------------------------------------
-- Seed: the rows present now, counted as the triggers would have counted them (jobs pruned
-- or purged before this revision are not counted). Every job row counts once as enqueued
-- and once in its finished table; failed attempts and retries come from the error entries
-- a job keeps (its last 50) plus the dead letters whose reason says the last attempt failed.
------------------------------------------------------------------------------------------
INSERT INTO jobqueue.counter_delta (queue, type, enqueued, failed, retried)
SELECT x.queue, x.type, count(*),
       sum((SELECT count(*) FROM jsonb_array_elements(x.errors) AS e WHERE e->>'outcome' = 'retrying')),
       sum((SELECT count(*) FROM jsonb_array_elements(x.errors) AS e WHERE e->>'outcome' = 'retrying'))
FROM jobqueue.job x GROUP BY x.queue, x.type;
INSERT INTO jobqueue.counter_delta (queue, type, enqueued, completed, failed, retried, cancelled, queue_time,
                                    queue_time_sum, run_time, run_time_sum)
SELECT x.queue, x.type, count(*), count(*) FILTER (WHERE x.state = 'completed'),
       sum((SELECT count(*) FROM jsonb_array_elements(x.errors) AS e WHERE e->>'outcome' = 'retrying')),
       sum((SELECT count(*) FROM jsonb_array_elements(x.errors) AS e WHERE e->>'outcome' = 'retrying')),
       count(*) FILTER (WHERE x.state = 'cancelled'),
       jobqueue._bucket_counts(array_agg(t.queued) FILTER (WHERE t.queued IS NOT NULL)), coalesce(sum(t.queued), 0),
       jobqueue._bucket_counts(array_agg(t.ran) FILTER (WHERE t.ran IS NOT NULL)), coalesce(sum(t.ran), 0)
FROM jobqueue.job_history x
CROSS JOIN LATERAL (
    SELECT CASE WHEN x.state = 'completed' THEN greatest(extract(epoch FROM x.claimed_at - x.run_at), 0)::float8 END AS queued,
           CASE WHEN x.state = 'completed' THEN greatest(extract(epoch FROM x.finished_at - x.claimed_at), 0)::float8 END AS ran
) AS t
GROUP BY x.queue, x.type;
INSERT INTO jobqueue.counter_delta (queue, type, enqueued, dead_lettered, failed, retried)
SELECT x.queue, x.type, count(*), count(*),
       count(*) FILTER (WHERE x.reason IN ('permanent_error', 'max_retries_exceeded', 'visibility_timeout_exceeded',
                                           'output_too_large'))
       + sum((SELECT count(*) FROM jsonb_array_elements(x.errors) AS e WHERE e->>'outcome' = 'retrying')),
       sum((SELECT count(*) FROM jsonb_array_elements(x.errors) AS e WHERE e->>'outcome' = 'retrying'))
FROM jobqueue.dead_letter x GROUP BY x.queue, x.type;
