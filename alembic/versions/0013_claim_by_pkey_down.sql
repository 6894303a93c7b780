-- Revision 0013 down: claim as revision 0008 had it (the UPDATE re-checks state and waiting_on).

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
    -- planned once per connection: re-planning the claim statement cost more than running it
    SET plan_cache_mode = force_generic_plan
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
            -- the ANY(ARRAY) makes even a generic plan fetch the locked rows by primary key
            WHERE j.id = ANY (ARRAY(SELECT c2.id FROM c c2)) AND j.id = c.id
              AND j.state IN ('pending', 'retrying') AND j.waiting_on = 0
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
            -- the ANY(ARRAY) makes even a generic plan fetch the locked rows by primary key
            WHERE j.id = ANY (ARRAY(SELECT c2.id FROM c c2)) AND j.id = c.id
              AND j.state IN ('pending', 'retrying') AND j.waiting_on = 0
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
COMMENT ON FUNCTION jobqueue.claim(text[], text, integer, interval, text[]) IS
    'Lease up to batch runnable jobs (highest priority, then oldest run time, then id); each gets a new token';
