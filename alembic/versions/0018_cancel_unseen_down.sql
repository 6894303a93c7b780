-- Revision 0018 down: cancel() refuses another's job with 42501 naming its creator, to every caller;
-- the tenant refusals name the login role.
CREATE OR REPLACE FUNCTION jobqueue.cancel(id bigint, reason text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    j record;
    why text := coalesce(cancel.reason, 'cancelled');
BEGIN
    IF cancel.id IS NULL THEN
        PERFORM jobqueue._raise('id', 'must not be null');
    END IF;
    IF length(cancel.reason) > 1000 THEN
        PERFORM jobqueue._raise('reason', 'longer than 1000 characters');
    END IF;
    SELECT x.state, x.created_by, x.token, x.queue INTO j
    FROM jobqueue.job x WHERE x.id = cancel.id FOR UPDATE;
    IF NOT FOUND THEN
        SELECT x.state, x.created_by INTO j FROM jobqueue.job_history x WHERE x.id = cancel.id
        UNION ALL SELECT x.state, x.created_by FROM jobqueue.dead_letter x WHERE x.id = cancel.id
        LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'P0002', COLUMN = 'id',
                MESSAGE = format('id: no job %s', cancel.id);
        END IF;
    END IF;
    IF j.created_by <> jobqueue._actor() AND NOT jobqueue._is_admin() THEN
        RAISE EXCEPTION USING ERRCODE = '42501', COLUMN = 'id',
            MESSAGE = format('id: job %s was not enqueued by %s; cancelling it needs jobqueue_admin',
                             cancel.id, jobqueue._actor());
    END IF;
    IF j.state IN ('pending', 'retrying') THEN
        PERFORM jobqueue._finish_waiting(ARRAY[cancel.id], 'cancelled', why);
        RETURN 'cancelled';
    ELSIF j.state = 'processing' THEN
        -- The worker learns it from heartbeat and acknowledges with fail(error_class => 'cancelled');
        -- if it never does, reconcile finishes the job as cancelled when the lease expires. (Not a
        -- state transition, so no job_event row: the cancelled transition records the reason.)
        UPDATE jobqueue.job x SET cancel_requested = true, reason = why
        WHERE x.id = cancel.id AND x.state = 'processing' AND NOT x.cancel_requested;
        RETURN 'cancel_requested';
    END IF;
    RETURN 'already_finished';
END
$$;

CREATE OR REPLACE FUNCTION jobqueue._require_unmapped(action text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    t text := jobqueue._tenant();
BEGIN
    IF t IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('%s: login role %s acts for tenant %s; %s changes what every tenant shares and '
                             'needs a jobqueue_admin role mapped to no tenant', action, session_user, t, action);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION jobqueue._admit(jobs jsonb, single boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    t text := jobqueue._tenant();
    bad record;
    b record;
    at timestamptz;
    capped text[];
BEGIN
    IF jsonb_typeof(jobs) IS DISTINCT FROM 'array' THEN
        RETURN jobs;  -- _enqueue names the problem
    END IF;
    IF t IS NOT NULL THEN
        SELECT (x.o - 1)::integer AS idx, x.e->'tenant_id' AS given INTO bad
        FROM jsonb_array_elements(jobs) WITH ORDINALITY AS x(e, o)
        WHERE jsonb_typeof(x.e) = 'object' AND nullif(x.e->'tenant_id', 'null') IS NOT NULL
          AND x.e->'tenant_id' IS DISTINCT FROM to_jsonb(t)
        ORDER BY x.o LIMIT 1;
        IF FOUND THEN
            PERFORM jobqueue._raise('tenant_id',
                format('login role %s enqueues for tenant %s only (got %s); leave tenant_id out',
                       session_user, to_jsonb(t), left(bad.given::text, 300)),
                CASE WHEN single THEN 'tenant_id' ELSE format('jobs[%s].tenant_id', bad.idx) END);
        END IF;
        jobs := (SELECT jsonb_agg(CASE WHEN jsonb_typeof(x.e) = 'object'
                                       THEN x.e || jsonb_build_object('tenant_id', t) ELSE x.e END ORDER BY x.o)
                 FROM jsonb_array_elements(jobs) WITH ORDINALITY AS x(e, o));
    END IF;

    IF EXISTS (SELECT 1 FROM jobqueue.tenant_limit) THEN
        FOR b IN
            SELECT l.tenant_id, a.n
            FROM (SELECT x.e->>'tenant_id' AS tenant_id, count(*) AS n
                  FROM jsonb_array_elements(jobs) AS x(e)
                  WHERE jsonb_typeof(x.e->'tenant_id') = 'string'
                  GROUP BY 1) AS a
            JOIN jobqueue.tenant_limit l ON l.tenant_id = a.tenant_id
            ORDER BY l.tenant_id
        LOOP
            at := clock_timestamp();
            UPDATE jobqueue.tenant_limit l
            SET tokens = least(l.burst, l.tokens + l.rate * greatest(extract(epoch FROM at - l.refilled_at), 0)) - b.n,
                refilled_at = at
            WHERE l.tenant_id = b.tenant_id
            RETURNING l.tokens + b.n AS available, l.rate, l.burst INTO bad;
            IF bad.available < b.n THEN
                RAISE EXCEPTION USING ERRCODE = 'JQ429', COLUMN = 'tenant_id',
                    MESSAGE = format('tenant_id: tenant %s is over its enqueue rate limit (%s jobs/s, burst %s): '
                                     '%s jobs asked, %s available; nothing was enqueued, retry later',
                                     to_jsonb(b.tenant_id), bad.rate, bad.burst, b.n,
                                     floor(greatest(bad.available, 0))),
                    HINT = CASE WHEN b.n > bad.burst
                                THEN format('a batch larger than the burst (%s) is never admitted; split it', bad.burst)
                                ELSE 'tokens come back at the rate above' END;
            END IF;
        END LOOP;
    END IF;

    IF EXISTS (SELECT 1 FROM jobqueue.queue q WHERE q.max_size IS NOT NULL) THEN
        capped := ARRAY(
            SELECT q.name FROM jobqueue.queue q
            WHERE q.max_size IS NOT NULL
              AND q.name IN (SELECT CASE WHEN nullif(x.e->'queue', 'null') IS NULL THEN 'default'
                                         ELSE x.e->>'queue' END
                             FROM jsonb_array_elements(jobs) AS x(e))
            ORDER BY q.name
            FOR NO KEY UPDATE);
        IF cardinality(capped) > 0 THEN
            UPDATE jobqueue.queue q SET max_size = q.max_size WHERE q.name = ANY (capped);
        END IF;
    END IF;
    RETURN jobs;
END
$$;
