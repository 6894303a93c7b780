-- Revision 0005 down: back to revision 0004 (frozen). Outputs already refused stay dead
-- letters; run times already clamped stay as they are; of several workers of the same id in
-- different tenants, the one seen last is kept.
DROP FUNCTION jobqueue._refuse_large_outputs(bigint[], bigint[], jsonb[], numeric);

CREATE OR REPLACE FUNCTION jobqueue.schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT 2 $$;
COMMENT ON FUNCTION jobqueue.schema_version() IS 'The jobqueue schema version (2: health); clients check it at startup';

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
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    q_name text := coalesce(queue, 'default');
    body jsonb := coalesce(nullif(payload, 'null'), '{}');
    prio integer := jobqueue._priority_of(to_jsonb(priority));
    max_payload numeric;
    max_delay numeric;
    err text;
    q record;
    attempts integer;
    new_id bigint;
    runnable boolean;
BEGIN
    -- Options that need the set-based core (unique keys, dependencies, policies, TTLs, tags,
    -- metadata, per-job leases) go there, and so does admission control (a tenant-mapped
    -- caller, tenant rate limits, a capped queue: jobqueue._admit). The common job takes
    -- this lean path: the same checks in the same order with the same messages, one INSERT.
    IF unique_key IS NOT NULL OR depends_on IS NOT NULL OR retry_policy IS NOT NULL OR expires_at IS NOT NULL
       OR tags IS NOT NULL OR metadata IS NOT NULL OR timeout IS NOT NULL OR visibility_timeout IS NOT NULL
       OR jobqueue._tenant() IS NOT NULL OR EXISTS (SELECT 1 FROM jobqueue.tenant_limit)
       OR EXISTS (SELECT 1 FROM jobqueue.queue x WHERE x.name = q_name AND x.max_size IS NOT NULL) THEN
        RETURN (SELECT e.id FROM jobqueue._enqueue(jobqueue._admit(jsonb_build_array(jsonb_build_object(
            'type', enqueue.type, 'payload', enqueue.payload, 'queue', enqueue.queue,
            'priority', to_jsonb(enqueue.priority), 'run_at', enqueue.run_at,
            'delay', extract(epoch FROM enqueue.delay), 'max_attempts', enqueue.max_attempts,
            'retry_policy', enqueue.retry_policy, 'unique_key', enqueue.unique_key,
            'expires_at', enqueue.expires_at, 'tenant_id', enqueue.tenant_id, 'user_id', enqueue.user_id,
            'tags', enqueue.tags, 'metadata', enqueue.metadata, 'depends_on', enqueue.depends_on,
            'timeout', extract(epoch FROM enqueue.timeout),
            'visibility_timeout', extract(epoch FROM enqueue.visibility_timeout))), true), true) AS e(id));
    END IF;

    err := jobqueue._type_error(type);
    IF err IS NOT NULL THEN
        PERFORM jobqueue._raise('type', err);
    END IF;
    IF jsonb_typeof(body) <> 'object' THEN
        PERFORM jobqueue._raise('payload', 'must be a JSON object');
    END IF;
    max_payload := jobqueue._conf('max_payload_bytes');
    IF pg_column_size(body) * 8 > max_payload AND octet_length(body::text) > max_payload THEN
        PERFORM jobqueue._raise('payload', format('larger than %s bytes', max_payload));
    END IF;
    err := jobqueue._queue_error(q_name);
    IF err IS NOT NULL THEN
        PERFORM jobqueue._raise('queue', err);
    END IF;
    IF prio IS NULL THEN
        PERFORM jobqueue._raise('priority', 'must be between 0 and 10 or one of low, normal, high, critical');
    END IF;
    IF run_at IS NOT NULL OR delay IS NOT NULL THEN
        max_delay := jobqueue._conf('max_delay_s');
        IF run_at IS NOT NULL AND delay IS NOT NULL THEN
            PERFORM jobqueue._raise('run_at', 'give run_at or delay, not both');
        ELSIF run_at IS NOT NULL AND NOT isfinite(run_at) THEN
            PERFORM jobqueue._raise('run_at', 'must be a timestamp with a time zone, e.g. 2030-01-31T12:00:00Z');
        ELSIF run_at > now() + make_interval(secs => max_delay) THEN
            PERFORM jobqueue._raise('run_at', format('must be at most %s ahead', jobqueue._human_seconds(max_delay)));
        ELSIF extract(epoch FROM delay) < 0 OR extract(epoch FROM delay) > max_delay THEN
            PERFORM jobqueue._raise('delay', format('must be between 0 and %s', jobqueue._human_seconds(max_delay)));
        END IF;
    END IF;
    IF max_attempts IS NOT NULL AND max_attempts NOT BETWEEN 1 AND 1000 THEN
        PERFORM jobqueue._raise('max_attempts', 'must be an integer between 1 and 1000');
    END IF;
    IF length(tenant_id) > 255 THEN
        PERFORM jobqueue._raise('tenant_id', 'longer than 255 characters');
    END IF;
    IF length(user_id) > 255 THEN
        PERFORM jobqueue._raise('user_id', 'longer than 255 characters');
    END IF;

    SELECT x.max_attempts, x.retry_policy, x.paused INTO q FROM jobqueue.queue x WHERE x.name = q_name;
    attempts := coalesce(max_attempts,
                         (SELECT (tp.policy->>'max_attempts')::integer FROM jobqueue.retry_policy tp
                          WHERE tp.type = enqueue.type),
                         q.max_attempts, (q.retry_policy->>'max_attempts')::integer,
                         jobqueue._conf('default_max_attempts'));
    INSERT INTO jobqueue.job AS j (queue, type, payload, priority, base_priority, run_at, max_attempts,
                                   tenant_id, user_id)
    VALUES (q_name, type, body, prio, prio, coalesce(run_at, now() + delay, now()), attempts, tenant_id, user_id)
    RETURNING j.id, j.run_at <= now() INTO new_id, runnable;
    INSERT INTO jobqueue.job_event (job_id, queue, from_state, to_state) VALUES (new_id, q_name, NULL, 'pending');
    IF q.paused IS NULL THEN  -- no queue row yet (paused is NOT NULL in every row)
        INSERT INTO jobqueue.queue (name) VALUES (q_name) ON CONFLICT DO NOTHING;
    END IF;
    IF runnable AND NOT coalesce(q.paused, false) THEN
        PERFORM pg_notify('jobqueue', q_name);
    END IF;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION jobqueue.enqueue(text, jsonb, text, anycompatible, timestamptz, interval, integer, jsonb, text,
    timestamptz, text, text, text[], jsonb, bigint[], interval, interval) IS
    'Enqueue one job; returns its id (the live job''s id for a duplicate unique_key). See docs/sql-api.md.';

CREATE OR REPLACE FUNCTION jobqueue._enqueue(jobs jsonb, single boolean) RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    known constant text[] := ARRAY['type', 'payload', 'queue', 'priority', 'run_at', 'delay', 'max_attempts',
        'retry_policy', 'unique_key', 'expires_at', 'tenant_id', 'user_id', 'tags', 'metadata', 'depends_on',
        'timeout', 'visibility_timeout'];
    max_jobs constant integer := 100000;
    n integer;
    max_payload numeric := jobqueue._conf('max_payload_bytes');
    max_meta numeric := jobqueue._conf('max_metadata_bytes');
    max_delay numeric := jobqueue._conf('max_delay_s');
    max_lease numeric := jobqueue._conf('max_lease_s');
    default_attempts integer := jobqueue._conf('default_max_attempts');
    dep_idx integer[];        -- (element index, dependency id) pairs
    dep_ids bigint[];
    dep_wait integer[];       -- per element (index + 1): dependencies still live
    dep_failed boolean[];     -- per element: a dependency already failed for good
    bad record;
    ids bigint[];             -- the id allotted to each element (index + 1)
    result bigint[];          -- the id returned for each element
    todo integer[];           -- elements still to insert (NULL: all)
    ins_ids bigint[];
    ins_queues text[];
    notify_queues text[];
    got bigint[];
    all_queues text[] := '{}';
    full_queue record;
    lost integer[];
    rounds integer := 0;
BEGIN
    IF jobs IS NULL OR jsonb_typeof(jobs) <> 'array' OR jsonb_array_length(jobs) = 0 THEN
        PERFORM jobqueue._raise('jobs', 'must be a non-empty JSON array of job objects');
    END IF;
    n := jsonb_array_length(jobs);
    IF n > max_jobs THEN
        PERFORM jobqueue._raise('jobs', format('longer than %s jobs', max_jobs));
    END IF;

    -- Dependencies. Lock every live prerequisite (in id order) and flag it, so that its
    -- completion, which must delete the row, waits for this transaction and then releases
    -- the new dependents in a later statement that sees them. Then count what is still
    -- live; a prerequisite already dead-lettered or cancelled makes the job born cancelled.
    IF jsonb_path_exists(jobs, '$[*].depends_on ? (@ != null)') THEN
        WITH d AS (
            SELECT DISTINCT (t.o - 1)::integer AS idx, x.v::numeric::bigint AS dep
            FROM jsonb_array_elements(jobs) WITH ORDINALITY AS t(e, o)
            CROSS JOIN LATERAL jsonb_array_elements(
                CASE WHEN jsonb_typeof(t.e->'depends_on') = 'array' THEN t.e->'depends_on' ELSE '[]' END) AS x(v)
            WHERE jsonb_typeof(x.v) = 'number' AND x.v::numeric = trunc(x.v::numeric)
              AND x.v::numeric BETWEEN 1 AND 9223372036854775807
        )
        SELECT array_agg(d.idx), array_agg(d.dep) INTO dep_idx, dep_ids FROM d;
        PERFORM 1 FROM jobqueue.job j WHERE j.id = ANY (dep_ids) ORDER BY j.id FOR NO KEY UPDATE;
        UPDATE jobqueue.job j SET has_dependents = true WHERE j.id = ANY (dep_ids) AND NOT j.has_dependents;
        SELECT x.idx, x.dep INTO bad
        FROM unnest(dep_idx, dep_ids) AS x(idx, dep)
        WHERE NOT EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.id = x.dep)
          AND NOT EXISTS (SELECT 1 FROM jobqueue.job_history h WHERE h.id = x.dep)
          AND NOT EXISTS (SELECT 1 FROM jobqueue.dead_letter l WHERE l.id = x.dep)
        ORDER BY x.idx, x.dep LIMIT 1;
        IF FOUND THEN
            PERFORM jobqueue._raise('depends_on', format('unknown job id %s', bad.dep),
                CASE WHEN single THEN 'depends_on' ELSE format('jobs[%s].depends_on', bad.idx) END);
        END IF;
        -- dense arrays indexed by element (idx + 1): a subscript per row, not a join
        SELECT array_agg(s.wait ORDER BY g.idx), array_agg(s.failed ORDER BY g.idx)
        INTO dep_wait, dep_failed
        FROM generate_series(0, n - 1) AS g(idx)
        LEFT JOIN (
            SELECT x.idx,
                   count(*) FILTER (WHERE EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.id = x.dep))::integer AS wait,
                   bool_or(EXISTS (SELECT 1 FROM jobqueue.dead_letter l WHERE l.id = x.dep)
                           OR EXISTS (SELECT 1 FROM jobqueue.job_history h
                                      WHERE h.id = x.dep AND h.state = 'cancelled')) AS failed
            FROM unnest(dep_idx, dep_ids) AS x(idx, dep)
            GROUP BY x.idx
        ) s ON s.idx = g.idx;
    END IF;

    ids := ARRAY(SELECT nextval('jobqueue.job_id_seq') FROM generate_series(1, n));
    result := array_fill(NULL::bigint, ARRAY[n]);
    LOOP
        rounds := rounds + 1;
        WITH ins AS (
            INSERT INTO jobqueue.job AS j (id, queue, type, payload, state, priority, base_priority, run_at,
                max_attempts, retry_policy, unique_key, expires_at, tenant_id, user_id, tags, metadata,
                depends_on, waiting_on, timeout, visibility_timeout)
            SELECT ids[c.idx + 1], c.queue, c.type, c.payload, 'pending', c.priority, c.priority,
                   coalesce(c.run_at, now() + make_interval(secs => c.delay_s), now()),
                   coalesce(c.max_attempts, (c.retry_policy->>'max_attempts')::integer,
                            (tp.policy->>'max_attempts')::integer, q.max_attempts,
                            (q.retry_policy->>'max_attempts')::integer, default_attempts),
                   c.retry_policy, c.unique_key, c.expires_at, c.tenant_id, c.user_id, c.tags, c.metadata,
                   c.depends_on,
                   -- a job whose dependency already failed is held (+1) and cancelled below
                   coalesce(dep_wait[c.idx + 1], 0) + CASE WHEN dep_failed[c.idx + 1] THEN 1 ELSE 0 END,
                   make_interval(secs => c.timeout_s), make_interval(secs => c.vt_s)
            FROM (
                SELECT b.*,
                    CASE
                    WHEN NOT b.is_object THEN ARRAY['jobs', 'must be a JSON object']
                    WHEN b.extra_key IS NOT NULL THEN ARRAY['jobs', format('unknown key "%s"', b.extra_key)]
                    WHEN jobqueue._type_error(b.type) IS NOT NULL THEN ARRAY['type', jobqueue._type_error(b.type)]
                    WHEN jsonb_typeof(b.payload) IS DISTINCT FROM 'object' THEN ARRAY['payload', 'must be a JSON object']
                    -- JSON text is at most ~6x the binary size (escaped control characters), so
                    -- small documents skip the text conversion
                    WHEN pg_column_size(b.payload) * 8 > max_payload AND octet_length(b.payload::text) > max_payload
                        THEN ARRAY['payload', format('larger than %s bytes', max_payload)]
                    WHEN jobqueue._queue_error(b.queue) IS NOT NULL THEN ARRAY['queue', jobqueue._queue_error(b.queue)]
                    WHEN b.priority IS NULL
                        THEN ARRAY['priority', 'must be between 0 and 10 or one of low, normal, high, critical']
                    WHEN b.run_at_j IS NOT NULL AND b.delay_j IS NOT NULL
                        THEN ARRAY['run_at', 'give run_at or delay, not both']
                    WHEN b.run_at_j IS NOT NULL AND b.run_at IS NULL
                        THEN ARRAY['run_at', 'must be a timestamp with a time zone, e.g. 2030-01-31T12:00:00Z']
                    WHEN b.run_at > now() + make_interval(secs => max_delay)
                        THEN ARRAY['run_at', format('must be at most %s ahead', jobqueue._human_seconds(max_delay))]
                    WHEN b.delay_j IS NOT NULL AND (b.delay_s IS NULL OR b.delay_s < 0 OR b.delay_s > max_delay)
                        THEN ARRAY['delay', format('must be between 0 and %s', jobqueue._human_seconds(max_delay))]
                    WHEN b.max_attempts_j IS NOT NULL AND b.max_attempts IS NULL
                        THEN ARRAY['max_attempts', 'must be an integer between 1 and 1000']
                    WHEN b.policy_error IS NOT NULL THEN ARRAY['retry_policy', b.policy_error]
                    WHEN b.unique_key_j IS NOT NULL AND (jsonb_typeof(b.unique_key_j) <> 'string' OR b.unique_key = '')
                        THEN ARRAY['unique_key', 'must be a non-empty string']
                    WHEN length(b.unique_key) > 255 THEN ARRAY['unique_key', 'longer than 255 characters']
                    WHEN b.expires_at_j IS NOT NULL AND b.expires_at IS NULL
                        THEN ARRAY['expires_at', 'must be a timestamp with a time zone, e.g. 2030-01-31T12:00:00Z']
                    WHEN b.expires_at <= now() THEN ARRAY['expires_at', 'must be in the future']
                    WHEN b.expires_at <= coalesce(b.run_at, now() + make_interval(secs => b.delay_s))
                        THEN ARRAY['expires_at', 'must be later than the run time (run_at or now + delay)']
                    WHEN b.tenant_id_j IS NOT NULL AND jsonb_typeof(b.tenant_id_j) <> 'string'
                        THEN ARRAY['tenant_id', 'must be a string']
                    WHEN length(b.tenant_id) > 255 THEN ARRAY['tenant_id', 'longer than 255 characters']
                    WHEN b.user_id_j IS NOT NULL AND jsonb_typeof(b.user_id_j) <> 'string'
                        THEN ARRAY['user_id', 'must be a string']
                    WHEN length(b.user_id) > 255 THEN ARRAY['user_id', 'longer than 255 characters']
                    WHEN b.tags_j IS NOT NULL AND jsonb_typeof(b.tags_j) <> 'array'
                        THEN ARRAY['tags', 'must be a list of strings']
                    WHEN jsonb_array_length(b.tags_j) > 32 THEN ARRAY['tags', 'too many tags (at most 32)']
                    WHEN b.tags_j IS NOT NULL AND b.tags IS NULL
                        THEN ARRAY['tags', 'each tag must be a string of 1-100 characters without control characters']
                    WHEN b.metadata_j IS NOT NULL AND jsonb_typeof(b.metadata_j) <> 'object'
                        THEN ARRAY['metadata', 'must be a JSON object']
                    WHEN pg_column_size(b.metadata_j) * 8 > max_meta AND octet_length(b.metadata_j::text) > max_meta
                        THEN ARRAY['metadata', format('larger than %s bytes', max_meta)]
                    WHEN b.depends_on_j IS NOT NULL AND b.depends_on IS NULL
                        THEN ARRAY['depends_on', 'must be a list of at most 100 job ids']
                    WHEN b.timeout_j IS NOT NULL AND (b.timeout_s IS NULL OR b.timeout_s <= 0 OR b.timeout_s > max_lease)
                        THEN ARRAY['timeout', format('must be more than 0 and at most %s', jobqueue._human_seconds(max_lease))]
                    WHEN b.vt_j IS NOT NULL AND (b.vt_s IS NULL OR b.vt_s <= 0 OR b.vt_s > max_lease)
                        THEN ARRAY['visibility_timeout',
                                   format('must be more than 0 and at most %s', jobqueue._human_seconds(max_lease))]
                    END AS err
                FROM (
                    SELECT a.*,
                        CASE WHEN a.run_at_j IS NOT NULL THEN jobqueue._timestamptz_of(a.run_at_j) END AS run_at,
                        CASE WHEN a.delay_j IS NOT NULL THEN jobqueue._seconds_of(a.delay_j) END AS delay_s,
                        CASE WHEN jsonb_typeof(a.max_attempts_j) = 'number'
                                  AND a.max_attempts_j::numeric = trunc(a.max_attempts_j::numeric)
                                  AND a.max_attempts_j::numeric BETWEEN 1 AND 1000
                             THEN a.max_attempts_j::numeric::integer END AS max_attempts,
                        CASE WHEN a.retry_policy IS NOT NULL THEN jobqueue._policy_error(a.retry_policy) END AS policy_error,
                        a.unique_key_j #>> '{}' AS unique_key,
                        CASE WHEN a.expires_at_j IS NOT NULL THEN jobqueue._timestamptz_of(a.expires_at_j) END AS expires_at,
                        CASE WHEN jsonb_typeof(a.tenant_id_j) = 'string' THEN a.tenant_id_j #>> '{}' END AS tenant_id,
                        CASE WHEN jsonb_typeof(a.user_id_j) = 'string' THEN a.user_id_j #>> '{}' END AS user_id,
                        CASE WHEN jsonb_typeof(a.tags_j) = 'array' AND NOT EXISTS (
                                  SELECT 1 FROM jsonb_array_elements(a.tags_j) AS g(t)
                                  WHERE jsonb_typeof(g.t) <> 'string' OR length(g.t #>> '{}') NOT BETWEEN 1 AND 100
                                     OR (g.t #>> '{}') ~ '[[:cntrl:]]')
                             THEN ARRAY(SELECT jsonb_array_elements_text(a.tags_j)) END AS tags,
                        CASE WHEN jsonb_typeof(a.metadata_j) = 'object' THEN a.metadata_j END AS metadata,
                        CASE WHEN jsonb_typeof(a.depends_on_j) = 'array' AND jsonb_array_length(a.depends_on_j) <= 100
                                  AND NOT EXISTS (
                                      SELECT 1 FROM jsonb_array_elements(a.depends_on_j) AS g(d)
                                      WHERE jsonb_typeof(g.d) <> 'number' OR g.d::numeric <> trunc(g.d::numeric)
                                         OR g.d::numeric NOT BETWEEN 1 AND 9223372036854775807)
                             THEN ARRAY(SELECT DISTINCT g.d::numeric::bigint
                                        FROM jsonb_array_elements(a.depends_on_j) AS g(d) ORDER BY 1) END AS depends_on,
                        CASE WHEN a.timeout_j IS NOT NULL THEN jobqueue._seconds_of(a.timeout_j) END AS timeout_s,
                        CASE WHEN a.vt_j IS NOT NULL THEN jobqueue._seconds_of(a.vt_j) END AS vt_s
                    FROM (
                        SELECT s.idx,
                            jsonb_typeof(s.e) = 'object' AS is_object,
                            CASE WHEN jsonb_typeof(s.e) = 'object' AND s.e - known <> '{}'
                                 THEN (SELECT min(k) FROM jsonb_object_keys(s.e - known) AS k) END AS extra_key,
                            CASE WHEN jsonb_typeof(s.e->'type') = 'string' THEN s.e->>'type' END AS type,
                            -- absent or JSON null: the default, for every key (SQL NULL arguments too)
                            coalesce(nullif(s.e->'payload', 'null'), '{}'::jsonb) AS payload,
                            CASE WHEN nullif(s.e->'queue', 'null') IS NULL THEN 'default'
                                 WHEN jsonb_typeof(s.e->'queue') = 'string' THEN s.e->>'queue' END AS queue,
                            jobqueue._priority_of(s.e->'priority') AS priority,
                            nullif(s.e->'run_at', 'null') AS run_at_j,
                            nullif(s.e->'delay', 'null') AS delay_j,
                            nullif(s.e->'max_attempts', 'null') AS max_attempts_j,
                            nullif(s.e->'retry_policy', 'null') AS retry_policy,
                            nullif(s.e->'unique_key', 'null') AS unique_key_j,
                            nullif(s.e->'expires_at', 'null') AS expires_at_j,
                            nullif(s.e->'tenant_id', 'null') AS tenant_id_j,
                            nullif(s.e->'user_id', 'null') AS user_id_j,
                            nullif(s.e->'tags', 'null') AS tags_j,
                            nullif(s.e->'metadata', 'null') AS metadata_j,
                            nullif(s.e->'depends_on', 'null') AS depends_on_j,
                            nullif(s.e->'timeout', 'null') AS timeout_j,
                            nullif(s.e->'visibility_timeout', 'null') AS vt_j
                        FROM (SELECT (t.o - 1)::integer AS idx, t.e
                              FROM jsonb_array_elements(jobs) WITH ORDINALITY AS t(e, o)) AS s
                        WHERE todo IS NULL OR s.idx = ANY (todo)
                        OFFSET 0  -- OFFSET 0 fences each layer: every parsed value is computed once
                    ) a OFFSET 0
                ) b OFFSET 0
            ) c
            LEFT JOIN jobqueue.queue q ON q.name = c.queue
            LEFT JOIN jobqueue.retry_policy tp ON tp.type = c.type
            WHERE c.err IS NULL
               OR jobqueue._raise(c.err[1], c.err[2],
                      CASE WHEN single THEN c.err[1]
                           WHEN c.err[1] = 'jobs' THEN format('jobs[%s]', c.idx)
                           ELSE format('jobs[%s].%s', c.idx, c.err[1]) END)
            ON CONFLICT (unique_key, tenant_id) WHERE unique_key IS NOT NULL DO NOTHING
            RETURNING j.id, j.queue, j.waiting_on = 0 AND j.run_at <= now() AS runnable
        ), ev AS (
            INSERT INTO jobqueue.job_event (job_id, queue, from_state, to_state)
            SELECT i.id, i.queue, NULL, 'pending' FROM ins i
        )
        SELECT (SELECT array_agg(i.id) FROM ins i),
               (SELECT array_agg(x.queue) FROM (SELECT DISTINCT i.queue FROM ins i) AS x),
               (SELECT array_agg(x.queue) FROM (SELECT DISTINCT i.queue FROM ins i WHERE i.runnable) AS x)
        INTO ins_ids, ins_queues, notify_queues;

        IF ins_queues IS NOT NULL THEN
            all_queues := all_queues || ins_queues;
            INSERT INTO jobqueue.queue (name)
            SELECT x FROM unnest(ins_queues) AS x
            WHERE NOT EXISTS (SELECT 1 FROM jobqueue.queue q WHERE q.name = x)
            ON CONFLICT DO NOTHING;
            PERFORM pg_notify('jobqueue', x) FROM unnest(notify_queues) AS x
            WHERE NOT EXISTS (SELECT 1 FROM jobqueue.queue q WHERE q.name = x AND q.paused);
        END IF;
        IF todo IS NULL AND coalesce(array_length(ins_ids, 1), 0) = n THEN
            result := ids;  -- everything inserted (the common case)
            EXIT;
        END IF;
        -- Elements not inserted lost a unique_key conflict: answer with the live job's id.
        -- If that job finished in between (no live holder any more), insert them again.
        SELECT array_agg(coalesce(m.id, l.id) ORDER BY g.idx),
               array_agg(g.idx ORDER BY g.idx) FILTER (WHERE m.id IS NULL AND l.id IS NULL)
        INTO got, lost
        FROM unnest(coalesce(todo, ARRAY(SELECT generate_series(0, n - 1)))) AS g(idx)
        LEFT JOIN unnest(ins_ids) AS m(id) ON m.id = ids[g.idx + 1]
        LEFT JOIN LATERAL (
            SELECT j.id FROM jobqueue.job j
            WHERE m.id IS NULL AND j.unique_key = jobs->g.idx->>'unique_key'
              AND j.tenant_id IS NOT DISTINCT FROM jobs->g.idx->>'tenant_id'
        ) AS l ON true;
        result := ARRAY(
            SELECT coalesce(t.v, r.v)
            FROM unnest(result) WITH ORDINALITY AS r(v, o)
            LEFT JOIN unnest(coalesce(todo, ARRAY(SELECT generate_series(0, n - 1))), got) AS t(idx, v)
                   ON t.idx = r.o - 1
            ORDER BY r.o);
        EXIT WHEN lost IS NULL;
        IF rounds >= 20 THEN
            RAISE EXCEPTION USING ERRCODE = '40001',
                MESSAGE = 'unique_key: the live job holding this key kept finishing during enqueue; retry';
        END IF;
        todo := lost;
        -- fresh ids for the elements tried again (few: only lost races)
        ids := ARRAY(
            SELECT CASE WHEN r.o - 1 = ANY (todo) THEN nextval('jobqueue.job_id_seq') ELSE r.v END
            FROM unnest(ids) WITH ORDINALITY AS r(v, o) ORDER BY r.o);
    END LOOP;
    -- Backlog caps: count the waiting jobs of each capped queue we wrote to, through the
    -- claim index and with a LIMIT, so the check costs O(max_size), not O(table). Concurrent
    -- enqueuers can overshoot by their own batches (each sees only committed jobs and its own).
    SELECT q.name, q.max_size INTO full_queue
    FROM jobqueue.queue q
    WHERE q.name = ANY (all_queues) AND q.max_size IS NOT NULL
      AND (SELECT count(*) FROM (
               SELECT 1 FROM jobqueue.job j
               WHERE j.queue = q.name AND j.state IN ('pending', 'retrying') AND j.waiting_on = 0
               LIMIT q.max_size + 1) AS w) > q.max_size
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '53400', COLUMN = 'queue',
            MESSAGE = format('queue: queue "%s" is full (max_size %s waiting jobs); nothing was enqueued',
                             full_queue.name, full_queue.max_size);
    END IF;
    -- Jobs born with a dependency that already failed: cancel them (dependency_failed).
    IF true = ANY (dep_failed) THEN
        PERFORM jobqueue._finish_waiting(
            ARRAY(SELECT ids[x.o] FROM unnest(dep_failed) WITH ORDINALITY AS x(failed, o)
                  WHERE x.failed AND ids[x.o] = result[x.o]),
            'cancelled', 'dependency_failed');
    END IF;
    RETURN QUERY SELECT r FROM unnest(result) AS r;
END
$$;

CREATE OR REPLACE FUNCTION jobqueue.enqueue_batch(
    types text[],
    payloads jsonb[],
    queues text[] DEFAULT NULL,
    priorities integer[] DEFAULT NULL,
    max_attempts integer[] DEFAULT NULL
) RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    max_jobs constant integer := 100000;
    n integer := cardinality(types);
    max_payload numeric := jobqueue._conf('max_payload_bytes');
    default_attempts integer := jobqueue._conf('default_max_attempts');
    bad record;
    ids bigint[];
    ins_queues text[];
    full_queue record;
BEGIN
    IF types IS NULL OR n = 0 THEN
        PERFORM jobqueue._raise('types', 'must be a non-empty array of job types');
    END IF;
    IF n > max_jobs THEN
        PERFORM jobqueue._raise('types', format('longer than %s jobs', max_jobs));
    END IF;
    IF payloads IS NULL OR cardinality(payloads) <> n THEN
        PERFORM jobqueue._raise('payloads', 'must hold one payload per type');
    END IF;
    IF queues IS NOT NULL AND cardinality(queues) <> n THEN
        PERFORM jobqueue._raise('queues', 'must hold one queue per type (or be NULL for default)');
    END IF;
    IF priorities IS NOT NULL AND cardinality(priorities) <> n THEN
        PERFORM jobqueue._raise('priorities', 'must hold one priority per type (or be NULL for 5)');
    END IF;
    IF max_attempts IS NOT NULL AND cardinality(max_attempts) <> n THEN
        PERFORM jobqueue._raise('max_attempts', 'must hold one value per type (or be NULL)');
    END IF;

    SELECT x.idx, x.err INTO bad FROM (
        SELECT (i.o - 1)::integer AS idx,
            CASE
            WHEN jobqueue._type_error(i.type) IS NOT NULL THEN ARRAY['type', jobqueue._type_error(i.type)]
            WHEN jsonb_typeof(coalesce(nullif(i.payload, 'null'), '{}')) <> 'object'
                THEN ARRAY['payload', 'must be a JSON object']
            WHEN pg_column_size(i.payload) * 8 > max_payload AND octet_length(i.payload::text) > max_payload
                THEN ARRAY['payload', format('larger than %s bytes', max_payload)]
            WHEN jobqueue._queue_error(coalesce(i.queue, 'default')) IS NOT NULL
                THEN ARRAY['queue', jobqueue._queue_error(coalesce(i.queue, 'default'))]
            WHEN i.priority NOT BETWEEN 0 AND 10
                THEN ARRAY['priority', 'must be between 0 and 10 or one of low, normal, high, critical']
            WHEN i.attempts NOT BETWEEN 1 AND 1000
                THEN ARRAY['max_attempts', 'must be an integer between 1 and 1000']
            END AS err
        FROM unnest(types, payloads, queues, priorities, max_attempts)
             WITH ORDINALITY AS i(type, payload, queue, priority, attempts, o)
    ) x
    WHERE x.err IS NOT NULL
    ORDER BY x.idx LIMIT 1;
    IF FOUND THEN
        PERFORM jobqueue._raise(bad.err[1], bad.err[2], format('jobs[%s].%s', bad.idx, bad.err[1]));
    END IF;

    -- Admission control (a tenant-mapped caller, tenant rate limits, capped queues) lives in
    -- jobqueue._admit on the JSON path: such batches take it, checked values and all.
    IF jobqueue._tenant() IS NOT NULL OR EXISTS (SELECT 1 FROM jobqueue.tenant_limit)
       OR EXISTS (SELECT 1 FROM jobqueue.queue x
                  WHERE x.max_size IS NOT NULL AND x.name IN (SELECT coalesce(u, 'default') FROM unnest(queues) AS u)
                     OR x.max_size IS NOT NULL AND queues IS NULL AND x.name = 'default') THEN
        RETURN QUERY SELECT e.id FROM jobqueue._enqueue(jobqueue._admit(
            (SELECT jsonb_agg(jsonb_build_object('type', u.type, 'payload', u.payload,
                                                                   'queue', u.queue, 'priority', u.priority,
                                                                   'max_attempts', u.attempts) ORDER BY u.o)
             FROM unnest(types, payloads, queues, priorities, max_attempts)
                  WITH ORDINALITY AS u(type, payload, queue, priority, attempts, o)), false), false) AS e(id);
        RETURN;
    END IF;

    ids := ARRAY(SELECT nextval('jobqueue.job_id_seq') FROM generate_series(1, n));
    WITH ins AS (
        INSERT INTO jobqueue.job AS j (id, queue, type, payload, priority, base_priority, max_attempts)
        SELECT ids[i.o], i.queue, i.type, i.payload, i.priority, i.priority,
               coalesce(i.attempts, (tp.policy->>'max_attempts')::integer, q.max_attempts,
                        (q.retry_policy->>'max_attempts')::integer, default_attempts)
        FROM (
            SELECT u.o, u.type, coalesce(nullif(u.payload, 'null'), '{}') AS payload,
                   coalesce(u.queue, 'default') AS queue, coalesce(u.priority, 5) AS priority, u.attempts
            FROM unnest(types, payloads, queues, priorities, max_attempts)
                 WITH ORDINALITY AS u(type, payload, queue, priority, attempts, o)
        ) i
        LEFT JOIN jobqueue.queue q ON q.name = i.queue
        LEFT JOIN jobqueue.retry_policy tp ON tp.type = i.type
        RETURNING j.id, j.queue
    ), ev AS (
        INSERT INTO jobqueue.job_event (job_id, queue, from_state, to_state)
        SELECT ins.id, ins.queue, NULL, 'pending' FROM ins
    )
    SELECT array_agg(DISTINCT ins.queue) INTO ins_queues FROM ins;

    INSERT INTO jobqueue.queue (name)
    SELECT x FROM unnest(ins_queues) AS x
    WHERE NOT EXISTS (SELECT 1 FROM jobqueue.queue q WHERE q.name = x)
    ON CONFLICT DO NOTHING;
    PERFORM jobqueue._notify(ins_queues);
    SELECT q.name, q.max_size INTO full_queue
    FROM jobqueue.queue q
    WHERE q.name = ANY (ins_queues) AND q.max_size IS NOT NULL
      AND (SELECT count(*) FROM (
               SELECT 1 FROM jobqueue.job w
               WHERE w.queue = q.name AND w.state IN ('pending', 'retrying') AND w.waiting_on = 0
               LIMIT q.max_size + 1) AS c) > q.max_size
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '53400', COLUMN = 'queue',
            MESSAGE = format('queue: queue "%s" is full (max_size %s waiting jobs); nothing was enqueued',
                             full_queue.name, full_queue.max_size);
    END IF;
    RETURN QUERY SELECT r FROM unnest(ids) AS r;
END
$$;
COMMENT ON FUNCTION jobqueue.enqueue_batch(text[], jsonb[], text[], integer[], integer[]) IS
    'Enqueue plain jobs as parallel arrays (types, payloads, queues, priorities, max_attempts), all or nothing; ids in input order';

CREATE OR REPLACE FUNCTION jobqueue._complete(ids bigint[], tokens bigint[], outputs jsonb[])
RETURNS TABLE (id bigint, status text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
    SET plan_cache_mode = force_generic_plan
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
        -- By primary key: written as plainly as `j.state = 'processing'`, the state test lets
        -- the planner scan all of job_lease_idx (every running job) once stale statistics say
        -- it is tiny; a sub-select's value proves nothing about that partial index.
        DELETE FROM jobqueue.job j USING input i
        WHERE j.id = ANY (ids) AND j.id = i.id AND j.state = (SELECT 'processing'::jobqueue.job_state)
          AND j.token = i.token
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

CREATE OR REPLACE FUNCTION jobqueue._queue_settings(queue text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT jsonb_build_object(
        'queue', q.name, 'paused', q.paused, 'max_size', q.max_size,
        'visibility_timeout', extract(epoch FROM q.visibility_timeout), 'max_attempts', q.max_attempts,
        'retry_policy', q.retry_policy, 'dead_letter_max_age_days', q.dead_letter_max_age_days,
        'history_retention', extract(epoch FROM q.history_retention),
        'aging_interval', extract(epoch FROM q.aging_interval))
    FROM jobqueue.queue q WHERE q.name = _queue_settings.queue
$$;

CREATE OR REPLACE FUNCTION jobqueue.configure_queue(queue text, settings jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    k text;
    v jsonb;
    n numeric;
    max_lease numeric := jobqueue._conf('max_lease_s');
    problem text;
BEGIN
    PERFORM jobqueue._require_unmapped('configure_queue');
    PERFORM jobqueue._check_queue(configure_queue.queue);
    IF settings IS NULL OR jsonb_typeof(settings) <> 'object' THEN
        PERFORM jobqueue._raise('settings', 'must be a JSON object');
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(settings) LOOP
        CONTINUE WHEN jsonb_typeof(v) = 'null';  -- JSON null clears the setting
        n := CASE WHEN jsonb_typeof(v) = 'number' THEN v::numeric END;
        CASE k
        WHEN 'max_size' THEN
            IF n IS NULL OR n <> trunc(n) OR n NOT BETWEEN 1 AND 100000000 THEN
                PERFORM jobqueue._raise('max_size', 'must be an integer between 1 and 100000000 (or null)');
            END IF;
        WHEN 'visibility_timeout' THEN
            IF n IS NULL OR n <= 0 OR n > max_lease THEN
                PERFORM jobqueue._raise('visibility_timeout',
                    format('must be a number of seconds more than 0 and at most %s (or null)', max_lease));
            END IF;
        WHEN 'max_attempts' THEN
            IF n IS NULL OR n <> trunc(n) OR n NOT BETWEEN 1 AND 1000 THEN
                PERFORM jobqueue._raise('max_attempts', 'must be an integer between 1 and 1000 (or null)');
            END IF;
        WHEN 'retry_policy' THEN
            problem := jobqueue._policy_error(v);
            IF problem IS NOT NULL THEN
                PERFORM jobqueue._raise('retry_policy', problem);
            END IF;
        WHEN 'dead_letter_max_age_days' THEN
            IF n IS NULL OR n <> trunc(n) OR n NOT BETWEEN 1 AND 36500 THEN
                PERFORM jobqueue._raise('dead_letter_max_age_days', 'must be an integer between 1 and 36500 (or null)');
            END IF;
        WHEN 'history_retention' THEN
            IF n IS NULL OR n <= 0 OR n > 315360000 THEN
                PERFORM jobqueue._raise('history_retention',
                    'must be a number of seconds more than 0 and at most 315360000 (or null)');
            END IF;
        WHEN 'aging_interval' THEN
            IF n IS NULL OR n <= 0 OR n > 2592000 THEN
                PERFORM jobqueue._raise('aging_interval',
                    'must be a number of seconds more than 0 and at most 2592000 (or null)');
            END IF;
        ELSE
            PERFORM jobqueue._raise('settings', format('unknown key "%s" (known: max_size, visibility_timeout, '
                'max_attempts, retry_policy, dead_letter_max_age_days, history_retention, aging_interval)', k));
        END CASE;
    END LOOP;
    INSERT INTO jobqueue.queue (name) VALUES (configure_queue.queue) ON CONFLICT DO NOTHING;
    UPDATE jobqueue.queue q SET
        max_size = CASE WHEN settings ? 'max_size' THEN (settings->>'max_size')::numeric::integer ELSE q.max_size END,
        visibility_timeout = CASE WHEN settings ? 'visibility_timeout'
            THEN make_interval(secs => (settings->>'visibility_timeout')::float8) ELSE q.visibility_timeout END,
        max_attempts = CASE WHEN settings ? 'max_attempts'
            THEN (settings->>'max_attempts')::numeric::integer ELSE q.max_attempts END,
        retry_policy = CASE WHEN settings ? 'retry_policy' THEN nullif(settings->'retry_policy', 'null') ELSE q.retry_policy END,
        dead_letter_max_age_days = CASE WHEN settings ? 'dead_letter_max_age_days'
            THEN (settings->>'dead_letter_max_age_days')::numeric::integer ELSE q.dead_letter_max_age_days END,
        history_retention = CASE WHEN settings ? 'history_retention'
            THEN make_interval(secs => (settings->>'history_retention')::float8) ELSE q.history_retention END,
        aging_interval = CASE WHEN settings ? 'aging_interval'
            THEN make_interval(secs => (settings->>'aging_interval')::float8) ELSE q.aging_interval END,
        updated_at = now()
    WHERE q.name = configure_queue.queue;
    RETURN jobqueue._queue_settings(configure_queue.queue);
END
$$;
COMMENT ON FUNCTION jobqueue.configure_queue(text, jsonb) IS
    'Set queue settings (max_size, visibility_timeout, max_attempts, retry_policy, dead_letter_max_age_days, '
    'history_retention, aging_interval; JSON null clears); returns the resulting settings';

CREATE OR REPLACE FUNCTION jobqueue.health(
    max_xmin_age interval DEFAULT '5 minutes',
    max_xmin_xids bigint DEFAULT 100000000,
    max_reconcile_age interval DEFAULT '1 minute',
    max_lease_overdue interval DEFAULT '1 minute',
    max_notify_queue_usage double precision DEFAULT 0.5,
    max_pending_age interval DEFAULT NULL,
    max_dead_letters bigint DEFAULT NULL,
    max_expired_leases bigint DEFAULT NULL
)
RETURNS TABLE (check_name text, value double precision, threshold double precision, alert boolean, detail text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    xmin_s double precision;
    xmin_s_who text;
    xmin_x bigint;
    xmin_x_who text;
    snap_x bigint := age(pg_snapshot_xmin(pg_current_snapshot())::text::xid);
    last_reconcile timestamptz;
    overdue double precision;
    overdue_n bigint;
    pending_s double precision;
    pending_q text;
    dead bigint;
BEGIN
    -- Sessions and slots are the cluster's, not a tenant's: for the operator only.
    PERFORM jobqueue._require_unmapped('health');
    -- NULL means the default (as everywhere in the API); the last three are off by default.
    max_xmin_age := coalesce(max_xmin_age, interval '5 minutes');
    max_xmin_xids := coalesce(max_xmin_xids, 100000000);
    max_reconcile_age := coalesce(max_reconcile_age, interval '1 minute');
    max_lease_overdue := coalesce(max_lease_overdue, interval '1 minute');
    max_notify_queue_usage := coalesce(max_notify_queue_usage, 0.5);
    PERFORM jobqueue._check_duration('max_xmin_age', max_xmin_age, false, 31 * 86400);
    IF max_xmin_xids NOT BETWEEN 1 AND 2000000000 THEN
        PERFORM jobqueue._raise('max_xmin_xids', 'must be between 1 and 2000000000');
    END IF;
    PERFORM jobqueue._check_duration('max_reconcile_age', max_reconcile_age, false, 31 * 86400);
    PERFORM jobqueue._check_duration('max_lease_overdue', max_lease_overdue, true, 31 * 86400);
    IF NOT (max_notify_queue_usage > 0 AND max_notify_queue_usage <= 1) THEN
        PERFORM jobqueue._raise('max_notify_queue_usage', 'must be more than 0 and at most 1');
    END IF;
    IF max_pending_age IS NOT NULL THEN
        PERFORM jobqueue._check_duration('max_pending_age', max_pending_age, false, 366 * 86400);
    END IF;
    IF max_dead_letters < 0 THEN
        PERFORM jobqueue._raise('max_dead_letters', 'must be at least 0');
    END IF;
    IF max_expired_leases < 0 THEN
        PERFORM jobqueue._raise('max_expired_leases', 'must be at least 0');
    END IF;

    -- Every vacuum horizon holder but this call: sessions, prepared transactions, slots.
    WITH holder AS (
        SELECT greatest(age(a.backend_xid), age(a.backend_xmin))::bigint AS xids,
               extract(epoch FROM clock_timestamp() - a.xact_start)::float8 AS secs,
               format('pid %s (%s)', a.pid,
                      CASE WHEN a.state IS NULL THEN format('user %s; more needs pg_read_all_stats', a.usename)
                           ELSE format('%s, %s, user %s', coalesce(nullif(a.application_name, ''), a.backend_type),
                                       a.state, a.usename) END) AS who
        FROM pg_stat_activity a
        WHERE a.pid <> pg_backend_pid() AND (a.backend_xid IS NOT NULL OR a.backend_xmin IS NOT NULL)
        UNION ALL
        SELECT age(p.transaction)::bigint, extract(epoch FROM clock_timestamp() - p.prepared)::float8,
               format('prepared transaction %L', p.gid)
        FROM pg_prepared_xacts p
        UNION ALL
        SELECT greatest(age(r.xmin), age(r.catalog_xmin))::bigint, NULL, format('replication slot %L', r.slot_name)
        FROM pg_replication_slots r WHERE r.xmin IS NOT NULL OR r.catalog_xmin IS NOT NULL
    )
    SELECT (SELECT h.secs FROM holder h WHERE h.secs IS NOT NULL ORDER BY h.secs DESC LIMIT 1),
           (SELECT h.who FROM holder h WHERE h.secs IS NOT NULL ORDER BY h.secs DESC LIMIT 1),
           (SELECT h.xids FROM holder h WHERE h.xids IS NOT NULL ORDER BY h.xids DESC LIMIT 1),
           (SELECT h.who FROM holder h WHERE h.xids IS NOT NULL ORDER BY h.xids DESC LIMIT 1)
    INTO xmin_s, xmin_s_who, xmin_x, xmin_x_who;
    IF coalesce(snap_x, 0) > coalesce(xmin_x, 0) THEN
        xmin_x := snap_x;
        xmin_x_who := 'the oldest running transaction (its session is not visible to the schema owner)';
    END IF;

    SELECT m.last_run_at INTO last_reconcile FROM jobqueue.maintenance m WHERE m.step = 'reconcile';
    SELECT extract(epoch FROM now() - min(j.lease_expires_at))::float8, count(*)
    INTO overdue, overdue_n
    FROM jobqueue.job j WHERE j.state = 'processing' AND j.lease_expires_at < now();
    SELECT extract(epoch FROM now() - j.run_at)::float8, j.queue INTO pending_s, pending_q
    FROM jobqueue.job j
    WHERE j.state IN ('pending', 'retrying') AND j.run_at <= now() AND j.waiting_on = 0
    ORDER BY j.run_at LIMIT 1;
    SELECT count(*) INTO dead FROM jobqueue.dead_letter d WHERE d.state = 'dead_letter';

    RETURN QUERY VALUES
        ('oldest_xmin_age_s', coalesce(xmin_s, 0), extract(epoch FROM max_xmin_age)::float8,
         coalesce(xmin_s, 0) > extract(epoch FROM max_xmin_age), coalesce(xmin_s_who, 'no open transaction')),
        ('oldest_xmin_age_xids', coalesce(xmin_x, 0)::float8, max_xmin_xids::float8,
         coalesce(xmin_x, 0) > max_xmin_xids, coalesce(xmin_x_who, 'no open transaction')),
        ('reconcile_last_run_age_s', extract(epoch FROM now() - last_reconcile)::float8,
         extract(epoch FROM max_reconcile_age)::float8,
         last_reconcile IS NULL OR now() - last_reconcile > max_reconcile_age,
         CASE WHEN last_reconcile IS NULL THEN 'reconcile has never run' ELSE 'last run ' || last_reconcile END),
        ('lease_overdue_s', coalesce(overdue, 0), extract(epoch FROM max_lease_overdue)::float8,
         coalesce(overdue, 0) > extract(epoch FROM max_lease_overdue),
         format('%s expired leases waiting for reconcile', overdue_n)),
        ('expired_leases', overdue_n::float8, max_expired_leases::float8,
         coalesce(overdue_n > max_expired_leases, false), 'leases past their expiry, not yet reclaimed'),
        ('notify_queue_usage', pg_notification_queue_usage(), max_notify_queue_usage,
         pg_notification_queue_usage() > max_notify_queue_usage, 'share of the NOTIFY queue in use'),
        ('oldest_pending_age_s', coalesce(pending_s, 0), extract(epoch FROM max_pending_age)::float8,
         coalesce(pending_s > extract(epoch FROM max_pending_age), false),
         coalesce('queue ' || pending_q, 'no runnable job waiting')),
        ('dead_letters', dead::float8, max_dead_letters::float8, coalesce(dead > max_dead_letters, false),
         'jobs in the dead-letter queue');
END
$$;
COMMENT ON FUNCTION jobqueue.health(interval, bigint, interval, interval, double precision, interval, bigint, bigint) IS
    'Alert checks: oldest xmin age (s, xids), reconcile last-run age, overdue and expired leases, NOTIFY queue usage, '
    'oldest runnable job age, dead letters; one row each with value, threshold, alert, detail';

CREATE OR REPLACE FUNCTION jobqueue.register_worker(worker_id text, host text DEFAULT NULL, pid integer DEFAULT NULL,
                                         queues text[] DEFAULT NULL, concurrency integer DEFAULT NULL,
                                         metadata jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF worker_id IS NULL OR worker_id = '' THEN
        PERFORM jobqueue._raise('worker_id', 'must be a non-empty string');
    ELSIF length(worker_id) > 255 THEN
        PERFORM jobqueue._raise('worker_id', 'longer than 255 characters');
    END IF;
    IF length(host) > 255 THEN
        PERFORM jobqueue._raise('host', 'longer than 255 characters');
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(queues) AS x WHERE jobqueue._queue_error(x) IS NOT NULL)
       OR cardinality(queues) > 100 THEN
        PERFORM jobqueue._raise('queues', 'must be at most 100 valid queue names');
    END IF;
    IF concurrency IS NOT NULL AND concurrency NOT BETWEEN 1 AND 100000 THEN
        PERFORM jobqueue._raise('concurrency', 'must be between 1 and 100000');
    END IF;
    IF metadata IS NOT NULL AND jsonb_typeof(metadata) <> 'object' THEN
        PERFORM jobqueue._raise('metadata', 'must be a JSON object');
    END IF;
    INSERT INTO jobqueue.worker AS w (worker_id, db_user, host, pid, queues, concurrency, metadata)
    VALUES (register_worker.worker_id, session_user, register_worker.host, register_worker.pid,
            register_worker.queues, register_worker.concurrency, coalesce(register_worker.metadata, '{}'))
    ON CONFLICT (worker_id) DO UPDATE
    SET db_user = EXCLUDED.db_user, host = EXCLUDED.host, pid = EXCLUDED.pid, queues = EXCLUDED.queues,
        concurrency = EXCLUDED.concurrency, metadata = EXCLUDED.metadata, started_at = now(),
        last_seen_at = now(), jobs_done = 0, stopped_at = NULL;
END
$$;
COMMENT ON FUNCTION jobqueue.register_worker(text, text, integer, text[], integer, jsonb) IS
    'Register (or re-register) a worker process';

CREATE OR REPLACE FUNCTION jobqueue.worker_heartbeat(worker_id text, jobs_done bigint DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF jobs_done < 0 THEN
        PERFORM jobqueue._raise('jobs_done', 'must be at least 0');
    END IF;
    UPDATE jobqueue.worker w
    SET last_seen_at = now(), jobs_done = coalesce(worker_heartbeat.jobs_done, w.jobs_done)
    WHERE w.worker_id = worker_heartbeat.worker_id AND w.stopped_at IS NULL;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION jobqueue.worker_heartbeat(text, bigint) IS
    'A registered worker is alive (false: unknown or unregistered, register again)';

CREATE OR REPLACE FUNCTION jobqueue.unregister_worker(worker_id text) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    UPDATE jobqueue.worker w SET stopped_at = now(), last_seen_at = now()
    WHERE w.worker_id = unregister_worker.worker_id AND w.stopped_at IS NULL
$$;
COMMENT ON FUNCTION jobqueue.unregister_worker(text) IS 'A worker stopped (kept for worker_retention_s)';

COMMENT ON FUNCTION jobqueue.complete(bigint, bigint, jsonb) IS
    'Finish a job successfully: completed | already_completed (same token again) | lease_lost';
COMMENT ON FUNCTION jobqueue.complete_many(bigint[], bigint[], jsonb[]) IS
    'Complete a batch of jobs in one statement; one (id, status) row per input, in input order';

DROP VIEW jobqueue.queues;
CREATE VIEW jobqueue.queues AS
    SELECT q.name, q.paused, q.max_size, q.visibility_timeout, q.max_attempts, q.retry_policy,
           q.dead_letter_max_age_days, q.history_retention, q.aging_interval, q.created_at, q.updated_at
    FROM jobqueue.queue q;
COMMENT ON VIEW jobqueue.queues IS 'Every queue configured or used (enqueue registers new queues) and its settings';
GRANT SELECT ON jobqueue.queues TO jobqueue_producer, jobqueue_worker, jobqueue_admin;
DROP VIEW jobqueue.workers;
CREATE VIEW jobqueue.workers AS
    SELECT w.worker_id, w.db_user, w.host, w.pid, w.queues, w.concurrency, w.metadata, w.started_at,
           w.last_seen_at, w.jobs_done, w.stopped_at,
           CASE WHEN w.stopped_at IS NOT NULL THEN 'stopped'
                WHEN w.last_seen_at > now() - interval '60 seconds' THEN 'healthy'
                WHEN w.last_seen_at > now() - interval '5 minutes' THEN 'degraded'
                ELSE 'unhealthy' END AS status,
           (SELECT count(*) FROM jobqueue.job j WHERE j.state = 'processing' AND j.worker_id = w.worker_id) AS running
    FROM jobqueue.worker w;
COMMENT ON VIEW jobqueue.workers IS
    'Worker processes: healthy (seen < 60 s ago), degraded (< 5 min), unhealthy, or stopped; running jobs';
GRANT SELECT ON jobqueue.workers TO jobqueue_worker, jobqueue_admin;

ALTER POLICY tenant_isolation ON jobqueue.worker
    USING ((SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) IS NULL
           OR db_user IN (SELECT m.role_name FROM jobqueue.tenant_role m
                          WHERE m.tenant_id = (SELECT t.tenant_id FROM jobqueue.tenant_role t
                                               WHERE t.role_name = session_user)));

DELETE FROM jobqueue.worker w USING jobqueue.worker x
WHERE x.worker_id = w.worker_id AND x.ctid <> w.ctid
  AND (x.last_seen_at > w.last_seen_at OR (x.last_seen_at = w.last_seen_at AND x.ctid > w.ctid));
ALTER TABLE jobqueue.worker DROP CONSTRAINT worker_id_tenant_key;
ALTER TABLE jobqueue.worker DROP COLUMN tenant_id;
ALTER TABLE jobqueue.worker ADD PRIMARY KEY (worker_id);

DROP INDEX jobqueue.queue_output_capped_idx;
ALTER TABLE jobqueue.queue DROP COLUMN max_output_bytes;
DELETE FROM jobqueue.setting WHERE key = 'max_output_bytes';
