-- Revision 0017 down: no enqueue_as_token; act_as_token verifies the token itself again;
-- schema version 6.
DROP FUNCTION jobqueue.enqueue_as_token(text, text, jsonb, text, anycompatible, timestamptz, interval, integer, jsonb,
    text, timestamptz, text, text, text[], jsonb, bigint[], interval, interval);

-- The web server's first statement of every request (granted to jobqueue_web only): verify
-- the token (sha256, not revoked, not expired), keep it in the transaction-local setting
-- jobqueue.token for _web_token(), and return what it may act as. Unknown, expired and
-- revoked tokens raise 28000 with one message (which one is not said), naming field token.
-- last_used_at is written at most once a minute per token.
CREATE OR REPLACE FUNCTION jobqueue.act_as_token(token text)
RETURNS TABLE (token_id bigint, role text, tenant_id text, name text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    k jobqueue.api_token;
BEGIN
    SELECT t.* INTO k FROM jobqueue.api_token t
    WHERE t.hash = sha256(convert_to(act_as_token.token, 'UTF8'))
      AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now());
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '28000', COLUMN = 'token',
            MESSAGE = 'token: unknown, expired or revoked';
    END IF;
    PERFORM set_config('jobqueue.token', act_as_token.token, true);
    UPDATE jobqueue.api_token t SET last_used_at = now()
    WHERE t.id = k.id AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute');
    RETURN QUERY SELECT k.id, k.role, k.tenant_id, k.name;
END
$$;

DROP FUNCTION jobqueue._verify_token(text);

CREATE OR REPLACE FUNCTION jobqueue.schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT 6 $$;
COMMENT ON FUNCTION jobqueue.schema_version() IS
    'The jobqueue schema version (2: health; 3: output caps, per-tenant worker ids; 4: schedules; 5: alerts, '
    'counters, API tokens, jobqueue_viewer, jobqueue_web; 6: jobqueue_operator, queue changes in job_events); '
    'clients check it at startup';
