-- Revision 0017: jobqueue.enqueue_as_token, jobqueue serve's POST /jobs in one statement
-- (issue 18). The lean path of POST /jobs sent act_as_token + SET LOCAL ROLE and the
-- enqueue as two statements in one pipeline; one call of this SECURITY INVOKER function
-- does the same (a definer function may not SET ROLE) with one statement to bind and run and
-- no pipeline on the server's side. The token's verification moves into _verify_token,
-- shared by act_as_token and enqueue_as_token, and writes last_used_at only when the row it
-- read says it is due (it ran the UPDATE, matching nothing, on every request). Granted to
-- jobqueue_web only. Schema version 7 (jobqueue serve calls it).

-- Verify an API token (sha256, not revoked, not expired), keep it in the transaction-local
-- setting jobqueue.token for _web_token(), and return its row: what act_as_token and
-- enqueue_as_token do first (granted to jobqueue_web only, as they are). Unknown, expired
-- and revoked tokens raise 28000 with one message (which one is not said), naming field
-- token. last_used_at is written at most once a minute per token (the UPDATE runs only
-- when the row read says it is due).
CREATE FUNCTION jobqueue._verify_token(token text) RETURNS jobqueue.api_token
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    k jobqueue.api_token;
BEGIN
    SELECT t.* INTO k FROM jobqueue.api_token t
    WHERE t.hash = sha256(convert_to(_verify_token.token, 'UTF8'))
      AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now());
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '28000', COLUMN = 'token',
            MESSAGE = 'token: unknown, expired or revoked';
    END IF;
    PERFORM set_config('jobqueue.token', _verify_token.token, true);
    IF k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute' THEN
        UPDATE jobqueue.api_token t SET last_used_at = now()
        WHERE t.id = k.id AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute');
    END IF;
    RETURN k;
END
$$;

-- The web server's first statement of every request (granted to jobqueue_web only):
-- _verify_token, and return what the token may act as.
CREATE OR REPLACE FUNCTION jobqueue.act_as_token(token text)
RETURNS TABLE (token_id bigint, role text, tenant_id text, name text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    k jobqueue.api_token := jobqueue._verify_token(act_as_token.token);
BEGIN
    RETURN QUERY SELECT k.id, k.role, k.tenant_id, k.name;
END
$$;

-- jobqueue serve's POST /jobs in one statement: verify the token as act_as_token does
-- (_verify_token), SET LOCAL ROLE to its database role, then enqueue as that role -- what
-- the server otherwise sends as two statements. SECURITY INVOKER, on purpose: a definer function may not SET ROLE, and the
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
    k jobqueue.api_token := jobqueue._verify_token(token);
BEGIN
    -- SET LOCAL ROLE (the SET clause above restores search_path only, not this)
    PERFORM set_config('role', CASE k.role WHEN 'viewer' THEN 'jobqueue_viewer' WHEN 'producer' THEN 'jobqueue_producer'
                                           WHEN 'operator' THEN 'jobqueue_operator' WHEN 'admin' THEN 'jobqueue_admin' END,
                       true);
    RETURN jobqueue.enqueue(type => type, payload => payload, queue => queue, priority => priority, run_at => run_at,
        delay => delay, max_attempts => max_attempts, retry_policy => retry_policy, unique_key => unique_key,
        expires_at => expires_at, tenant_id => tenant_id, user_id => user_id, tags => tags, metadata => metadata,
        depends_on => depends_on, timeout => timeout, visibility_timeout => visibility_timeout);
END
$$;
COMMENT ON FUNCTION jobqueue.enqueue_as_token(text, text, jsonb, text, anycompatible, timestamptz, interval, integer,
    jsonb, text, timestamptz, text, text, text[], jsonb, bigint[], interval, interval) IS
    'jobqueue serve: act_as_token, SET LOCAL ROLE to the token''s role and enqueue as it, in one statement';

REVOKE EXECUTE ON FUNCTION jobqueue._verify_token(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION jobqueue.enqueue_as_token(text, text, jsonb, text, anycompatible, timestamptz, interval,
    integer, jsonb, text, timestamptz, text, text, text[], jsonb, bigint[], interval, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobqueue._verify_token(text) TO jobqueue_web;
GRANT EXECUTE ON FUNCTION jobqueue.enqueue_as_token(text, text, jsonb, text, anycompatible, timestamptz, interval,
    integer, jsonb, text, timestamptz, text, text, text[], jsonb, bigint[], interval, interval) TO jobqueue_web;

CREATE OR REPLACE FUNCTION jobqueue.schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT 7 $$;
COMMENT ON FUNCTION jobqueue.schema_version() IS
    'The jobqueue schema version (2: health; 3: output caps, per-tenant worker ids; 4: schedules; 5: alerts, '
    'counters, API tokens, jobqueue_viewer, jobqueue_web; 6: jobqueue_operator, queue changes in job_events; '
    '7: enqueue_as_token); clients check it at startup';
