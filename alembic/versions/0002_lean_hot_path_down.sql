-- Generated from the difference between sql/schema.sql and the previous revision; frozen.
CREATE OR REPLACE FUNCTION jobqueue.enqueue(
    type text,
    payload jsonb DEFAULT '{}',
    queue text DEFAULT 'default',
    priority anycompatible DEFAULT 5,
    run_at timestamptz DEFAULT NULL,
    delay interval DEFAULT NULL,
    max_attempts integer DEFAULT NULL,
    retry_policy jsonb DEFAULT NULL,
    unique_key text DEFAULT NULL,
    expires_at timestamptz DEFAULT NULL,
    tenant_id text DEFAULT NULL,
    user_id text DEFAULT NULL,
    tags text[] DEFAULT NULL,
    metadata jsonb DEFAULT NULL,
    depends_on bigint[] DEFAULT NULL,
    timeout interval DEFAULT NULL,
    visibility_timeout interval DEFAULT NULL
) RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT id FROM jobqueue._enqueue(jsonb_build_array(jsonb_build_object(
        'type', enqueue.type, 'payload', enqueue.payload, 'queue', enqueue.queue,
        'priority', to_jsonb(enqueue.priority), 'run_at', enqueue.run_at,
        'delay', extract(epoch FROM enqueue.delay), 'max_attempts', enqueue.max_attempts,
        'retry_policy', enqueue.retry_policy, 'unique_key', enqueue.unique_key,
        'expires_at', enqueue.expires_at, 'tenant_id', enqueue.tenant_id, 'user_id', enqueue.user_id,
        'tags', enqueue.tags, 'metadata', enqueue.metadata, 'depends_on', enqueue.depends_on,
        'timeout', extract(epoch FROM enqueue.timeout),
        'visibility_timeout', extract(epoch FROM enqueue.visibility_timeout))), true) AS id
$$;

CREATE OR REPLACE FUNCTION jobqueue.claim(
    queues text[] DEFAULT '{default}',
    worker_id text DEFAULT NULL,
    batch integer DEFAULT 1,
    visibility_timeout interval DEFAULT NULL,
    types text[] DEFAULT NULL
) RETURNS TABLE (id bigint, token bigint, queue text, type text, payload jsonb, priority integer,
                 attempt integer, max_attempts integer, timeout interval, lease_expires_at timestamptz,
                 metadata jsonb, lease_duration interval)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    open_queues text[];
    vt interval := claim.visibility_timeout;
    default_vt interval := make_interval(secs => jobqueue._conf('default_visibility_timeout_s'));
    bad text;
BEGIN
    IF queues IS NULL OR cardinality(queues) NOT BETWEEN 1 AND 100 THEN
        PERFORM jobqueue._raise('queues', 'must name 1 to 100 queues');
    END IF;
    SELECT x INTO bad FROM unnest(queues) AS x WHERE jobqueue._queue_error(x) IS NOT NULL LIMIT 1;
    IF FOUND THEN
        PERFORM jobqueue._raise('queues', format('%s is not a queue name: %s', coalesce(quote_literal(bad), 'NULL'),
                                                 jobqueue._queue_error(bad)));
    END IF;
    IF types IS NOT NULL THEN
        IF cardinality(types) NOT BETWEEN 1 AND 100 THEN
            PERFORM jobqueue._raise('types', 'must name 1 to 100 job types (or be NULL for all)');
        END IF;
        SELECT x INTO bad FROM unnest(types) AS x WHERE jobqueue._type_error(x) IS NOT NULL LIMIT 1;
        IF FOUND THEN
            PERFORM jobqueue._raise('types', 'each type must be 1-255 characters without control characters');
        END IF;
    END IF;
    IF batch IS NULL OR batch NOT BETWEEN 1 AND 1000 THEN
        PERFORM jobqueue._raise('batch', 'must be between 1 and 1000');
    END IF;
    IF vt IS NOT NULL THEN
        PERFORM jobqueue._check_duration('visibility_timeout', vt, false, jobqueue._conf('max_lease_s'));
    END IF;
    IF length(worker_id) > 255 THEN
        PERFORM jobqueue._raise('worker_id', 'longer than 255 characters');
    END IF;

    open_queues := ARRAY(SELECT DISTINCT x FROM unnest(queues) AS x
                         WHERE NOT EXISTS (SELECT 1 FROM jobqueue.queue q WHERE q.name = x AND q.paused));
    IF cardinality(open_queues) = 0 THEN
        RETURN;
    END IF;

    -- The locking SELECT is a CTE: a CTE is evaluated exactly once, so at most `batch` rows are
    -- locked and claimed. (A plain `id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)` may be
    -- re-evaluated by the planner and claim more rows than asked: PostgreSQL bug #15715.)
    -- One queue: an ordered scan of job_claim_idx, no sort. Several queues: the same scan per
    -- queue (LATERAL), merged; it may lock up to batch rows per queue for this short
    -- transaction, but claims only the best `batch`.
    IF cardinality(open_queues) = 1 THEN
        RETURN QUERY
        WITH c AS MATERIALIZED (
            SELECT j.id, j.state
            FROM jobqueue.job j
            WHERE j.queue = open_queues[1]
              AND j.state IN ('pending', 'retrying') AND j.waiting_on = 0
              AND j.run_at <= now()
              AND (j.expires_at IS NULL OR j.expires_at > now())
              AND (types IS NULL OR j.type = ANY (types))
            ORDER BY j.priority DESC, j.run_at, j.id
            LIMIT batch
            FOR UPDATE SKIP LOCKED
        ), u AS (
            UPDATE jobqueue.job j
            SET state = 'processing',
                attempt = j.attempt + 1,
                token = nextval('jobqueue.lease_token_seq'),
                worker_id = claim.worker_id,
                claimed_at = now(),
                lease_expires_at = now() + coalesce(vt, j.visibility_timeout,
                    (SELECT q.visibility_timeout FROM jobqueue.queue q WHERE q.name = j.queue), default_vt)
            FROM c
            WHERE j.id = c.id AND j.state IN ('pending', 'retrying') AND j.waiting_on = 0
            RETURNING j.id, j.token, j.queue, j.type, j.payload, j.priority::integer AS priority, j.attempt,
                      j.max_attempts, j.timeout, j.lease_expires_at, j.metadata, j.run_at, c.state AS from_state,
                      j.lease_expires_at - j.claimed_at AS lease
        ), ev AS (
            INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state, detail)
            SELECT u.id, u.token, u.queue, u.from_state, 'processing',
                   jsonb_build_object('attempt', u.attempt, 'worker_id', claim.worker_id)
            FROM u
        )
        SELECT u.id, u.token, u.queue, u.type, u.payload, u.priority, u.attempt, u.max_attempts, u.timeout,
               u.lease_expires_at, u.metadata, u.lease
        FROM u ORDER BY u.priority DESC, u.run_at, u.id;
    ELSE
        RETURN QUERY
        WITH c AS MATERIALIZED (
            SELECT x.id, x.state
            FROM unnest(open_queues) AS oq(name)
            CROSS JOIN LATERAL (
                SELECT j.id, j.state, j.priority, j.run_at
                FROM jobqueue.job j
                WHERE j.queue = oq.name
                  AND j.state IN ('pending', 'retrying') AND j.waiting_on = 0
                  AND j.run_at <= now()
                  AND (j.expires_at IS NULL OR j.expires_at > now())
                  AND (types IS NULL OR j.type = ANY (types))
                ORDER BY j.priority DESC, j.run_at, j.id
                LIMIT batch
                FOR UPDATE SKIP LOCKED
            ) AS x
            ORDER BY x.priority DESC, x.run_at, x.id
            LIMIT batch
        ), u AS (
            UPDATE jobqueue.job j
            SET state = 'processing',
                attempt = j.attempt + 1,
                token = nextval('jobqueue.lease_token_seq'),
                worker_id = claim.worker_id,
                claimed_at = now(),
                lease_expires_at = now() + coalesce(vt, j.visibility_timeout,
                    (SELECT q.visibility_timeout FROM jobqueue.queue q WHERE q.name = j.queue), default_vt)
            FROM c
            WHERE j.id = c.id AND j.state IN ('pending', 'retrying') AND j.waiting_on = 0
            RETURNING j.id, j.token, j.queue, j.type, j.payload, j.priority::integer AS priority, j.attempt,
                      j.max_attempts, j.timeout, j.lease_expires_at, j.metadata, j.run_at, c.state AS from_state,
                      j.lease_expires_at - j.claimed_at AS lease
        ), ev AS (
            INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state, detail)
            SELECT u.id, u.token, u.queue, u.from_state, 'processing',
                   jsonb_build_object('attempt', u.attempt, 'worker_id', claim.worker_id)
            FROM u
        )
        SELECT u.id, u.token, u.queue, u.type, u.payload, u.priority, u.attempt, u.max_attempts, u.timeout,
               u.lease_expires_at, u.metadata, u.lease
        FROM u ORDER BY u.priority DESC, u.run_at, u.id;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION jobqueue._complete(ids bigint[], tokens bigint[], outputs jsonb[])
RETURNS TABLE (id bigint, status text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    r_ids bigint[];
    r_status text[];
    with_dependents bigint[];
BEGIN
    WITH input AS (
        SELECT x.id, x.token, x.output, x.ord
        FROM unnest(ids, tokens, outputs) WITH ORDINALITY AS x(id, token, output, ord)
    ), d AS (
        DELETE FROM jobqueue.job j USING input i
        WHERE j.id = i.id AND j.state = 'processing' AND j.token = i.token
        RETURNING j.*, i.output AS new_output
    ), h AS (
        INSERT INTO jobqueue.job_history
        SELECT d.id, d.queue, d.type, d.payload, 'completed', d.priority, d.base_priority, d.run_at, d.attempt,
               d.max_attempts, d.retry_policy, d.unique_key, d.expires_at, d.tenant_id, d.user_id, d.tags,
               d.metadata, d.depends_on, d.waiting_on, d.has_dependents, d.timeout, d.visibility_timeout, d.token,
               d.worker_id, d.claimed_at, NULL, d.cancel_requested, d.progress, d.errors, d.created_at,
               d.created_by, now(), d.new_output, d.reason, NULL
        FROM d
    ), ev AS (
        INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state)
        SELECT d.id, d.token, d.queue, 'processing', 'completed' FROM d
    )
    SELECT array_agg(i.id ORDER BY i.ord),
           array_agg(CASE WHEN dd.id IS NOT NULL THEN 'completed'
                          WHEN EXISTS (SELECT 1 FROM jobqueue.job_history hh
                                       WHERE hh.id = i.id AND hh.token = i.token AND hh.state = 'completed')
                              THEN 'already_completed'
                          ELSE 'lease_lost' END ORDER BY i.ord),
           array_agg(dd.id) FILTER (WHERE dd.has_dependents)
    INTO r_ids, r_status, with_dependents
    FROM input i
    LEFT JOIN (SELECT DISTINCT d.id, d.token, d.has_dependents FROM d) AS dd ON dd.id = i.id AND dd.token = i.token;
    IF with_dependents IS NOT NULL THEN
        PERFORM jobqueue._release_dependents(with_dependents);
    END IF;
    RETURN QUERY SELECT x.id, x.status FROM unnest(r_ids, r_status) AS x(id, status);
END
$$;

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
            RETURNING j.id, j.token, j.queue, j.attempt, j.run_at
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
            WHERE e.at < now() - make_interval(secs => jobqueue._conf('event_retention_s')) LIMIT batch) AS s;
        SELECT count(*) INTO logs_pruned FROM (
            SELECT 1 FROM jobqueue.job_log g
            WHERE g.at < now() - make_interval(secs => jobqueue._conf('log_retention_s')) LIMIT batch) AS s;
        SELECT count(*) INTO workers_pruned FROM jobqueue.worker w
        WHERE w.stopped_at < now() - make_interval(secs => jobqueue._conf('worker_retention_s'));
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
            WHERE x.at < now() - make_interval(secs => jobqueue._conf('event_retention_s')) LIMIT batch));
        GET DIAGNOSTICS events_pruned = ROW_COUNT;
        PERFORM set_config('jobqueue.pruning', 'off', true);

        DELETE FROM jobqueue.job_log g
        WHERE g.ctid = ANY (ARRAY(
            SELECT x.ctid FROM jobqueue.job_log x
            WHERE x.at < now() - make_interval(secs => jobqueue._conf('log_retention_s')) LIMIT batch));
        GET DIAGNOSTICS logs_pruned = ROW_COUNT;

        DELETE FROM jobqueue.worker w
        WHERE w.stopped_at < now() - make_interval(secs => jobqueue._conf('worker_retention_s'));
        GET DIAGNOSTICS workers_pruned = ROW_COUNT;
    END IF;

    -- (5) Priority aging, where a queue enables it: +1 per aging_interval waited since run_at,
    -- up to 10, never down; so a steady stream of high priorities cannot starve the rest.
    IF dry THEN
        SELECT count(*) INTO aged FROM (
            SELECT 1 FROM jobqueue.job j JOIN jobqueue.queue q ON q.name = j.queue
            WHERE q.aging_interval IS NOT NULL AND j.state IN ('pending', 'retrying')
              AND j.run_at <= now() - q.aging_interval
              AND j.priority < least(10, j.base_priority
                    + floor(extract(epoch FROM now() - j.run_at) / extract(epoch FROM q.aging_interval)))
            LIMIT batch) AS s;
    ELSE
        WITH c AS (
            SELECT j.id FROM jobqueue.job j JOIN jobqueue.queue q ON q.name = j.queue
            WHERE q.aging_interval IS NOT NULL AND j.state IN ('pending', 'retrying')
              AND j.run_at <= now() - q.aging_interval
              AND j.priority < least(10, j.base_priority
                    + floor(extract(epoch FROM now() - j.run_at) / extract(epoch FROM q.aging_interval)))
            ORDER BY j.id
            LIMIT batch
            FOR UPDATE OF j SKIP LOCKED
        ), u AS (
            UPDATE jobqueue.job j
            SET priority = greatest(j.priority, least(10, j.base_priority
                    + floor(extract(epoch FROM now() - j.run_at) / extract(epoch FROM q.aging_interval))))::smallint
            FROM c, jobqueue.queue q
            WHERE j.id = c.id AND q.name = j.queue AND j.state IN ('pending', 'retrying')
            RETURNING 1
        )
        SELECT count(*) INTO aged FROM u;
    END IF;

    -- (6) History partitions: create the coming days', drop the wholly expired ones. Last,
    -- because its DDL locks job_history until this transaction commits.
    parts := jobqueue._maintain_partitions(dry);
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
        'aged', aged) || parts;
END
$$;

DROP FUNCTION jobqueue.enqueue_batch(text[], jsonb[], text[], integer[], integer[]);
