-- Revision 0017: jobqueue.enqueue_as_token, jobqueue serve's POST /jobs in one statement
-- (issue 18). The lean path of POST /jobs sent act_as_token + SET LOCAL ROLE and the
-- enqueue as two statements in one pipeline; one call of this SECURITY INVOKER function
-- does the same (a definer function may not SET ROLE) with one statement to bind and run and
-- no pipeline on the server's side. Granted to jobqueue_web only. Schema version 7 (jobqueue
-- serve calls it).

-- jobqueue serve's POST /jobs in one statement: act_as_token(token), SET LOCAL ROLE to the
-- token's database role, then enqueue as that role -- what the server otherwise sends as two
-- statements. SECURITY INVOKER, on purpose: a definer function may not SET ROLE, and the
-- enqueue must run as the token's role so that the database checks its grant (a viewer token
-- gets 42501) while _tenant(), _actor() and the row-level security policies see the token
-- (session_user jobqueue_web, current role the token's). Granted to jobqueue_web only, which
-- the token's role is not a member of: once the role is taken, nothing more in the
-- transaction can call it again. A refused token raises 28000 naming token before anything
-- is done; any error rolls back the whole statement (last_used_at included).
CREATE FUNCTION jobqueue.enqueue_as_token(
    token text,
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
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    acts_as text;
BEGIN
    SELECT CASE t.role WHEN 'viewer' THEN 'jobqueue_viewer' WHEN 'producer' THEN 'jobqueue_producer'
                       WHEN 'operator' THEN 'jobqueue_operator' WHEN 'admin' THEN 'jobqueue_admin' END
    INTO acts_as FROM jobqueue.act_as_token(token) AS t;
    -- SET LOCAL ROLE (a SET clause on this function would not undo it: it sets search_path only)
    PERFORM set_config('role', acts_as, true);
    RETURN jobqueue.enqueue(type => type, payload => payload, queue => queue, priority => priority, run_at => run_at,
        delay => delay, max_attempts => max_attempts, retry_policy => retry_policy, unique_key => unique_key,
        expires_at => expires_at, tenant_id => tenant_id, user_id => user_id, tags => tags, metadata => metadata,
        depends_on => depends_on, timeout => timeout, visibility_timeout => visibility_timeout);
END
$$;
COMMENT ON FUNCTION jobqueue.enqueue_as_token(text, text, jsonb, text, anycompatible, timestamptz, interval, integer,
    jsonb, text, timestamptz, text, text, text[], jsonb, bigint[], interval, interval) IS
    'jobqueue serve: act_as_token, SET LOCAL ROLE to the token''s role and enqueue as it, in one statement';
REVOKE EXECUTE ON FUNCTION jobqueue.enqueue_as_token(text, text, jsonb, text, anycompatible, timestamptz, interval,
    integer, jsonb, text, timestamptz, text, text, text[], jsonb, bigint[], interval, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobqueue.enqueue_as_token(text, text, jsonb, text, anycompatible, timestamptz, interval,
    integer, jsonb, text, timestamptz, text, text, text[], jsonb, bigint[], interval, interval) TO jobqueue_web;

CREATE OR REPLACE FUNCTION jobqueue.schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT 7 $$;
COMMENT ON FUNCTION jobqueue.schema_version() IS
    'The jobqueue schema version (2: health; 3: output caps, per-tenant worker ids; 4: schedules; 5: alerts, '
    'counters, API tokens, jobqueue_viewer, jobqueue_web; 6: jobqueue_operator, queue changes in job_events; '
    '7: enqueue_as_token); clients check it at startup';
