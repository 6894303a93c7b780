-- Revision 0011: API tokens for jobqueue serve (issue 18). The server logs in as jobqueue_web
-- (NOINHERIT, no privileges of its own); per request, act_as_token verifies a token and the
-- server does SET LOCAL ROLE to the token's role. _tenant(), _is_admin(), _sees_all_jobs(),
-- the job owner (_actor(): created_by, cancel, job_logs), the jobs/tenant/schedule views and
-- the row-level security policies derive, for session_user jobqueue_web, the tenant and the
-- rights from the verified token, never from the web login's own memberships. Adds the
-- read-only role jobqueue_viewer, (queue, id) indexes on finished jobs and dead letters for
-- the API's job list; the alerts view hides alerts from tenant tokens as from tenant logins.
-- (Revises 0009, alerts: it set schema version 5, which this revision keeps.)

-- The dashboard and API server (jobqueue serve, docs/web.md): jobqueue_viewer reads and
-- changes nothing; jobqueue_web is the server's login (LOGIN is the operator's to grant),
-- NOINHERIT so that it holds no privilege itself: each request does SET LOCAL ROLE to its
-- token's role after jobqueue.act_as_token verified the token.
DO $webroles$
DECLARE
    r text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'jobqueue_viewer') THEN
        BEGIN
            CREATE ROLE jobqueue_viewer NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'jobqueue_web') THEN
        BEGIN
            CREATE ROLE jobqueue_web NOLOGIN NOINHERIT;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    FOREACH r IN ARRAY ARRAY['jobqueue_viewer', 'jobqueue_producer', 'jobqueue_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m
                       WHERE m.roleid = r::regrole AND m.member = 'jobqueue_web'::regrole) THEN
            EXECUTE format('GRANT %I TO jobqueue_web', r);
        END IF;
    END LOOP;
END
$webroles$;

-- API tokens of the HTTP API (jobqueue serve). Only the sha256 of a token is kept; the
-- token itself is shown once, by create_token. role: what the token may do (viewer,
-- producer, operator, admin: docs/web.md); tenant_id: the tenant it is confined to.
CREATE TABLE jobqueue.api_token (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hash         bytea NOT NULL UNIQUE CHECK (length(hash) = 32),
    role         text NOT NULL CHECK (role IN ('viewer', 'producer', 'operator', 'admin')),
    tenant_id    text CHECK (length(tenant_id) BETWEEN 1 AND 255 AND tenant_id !~ '[[:cntrl:]]'),
    name         text CHECK (length(name) BETWEEN 1 AND 200 AND name !~ '[[:cntrl:]]'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL DEFAULT session_user,
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
COMMENT ON TABLE jobqueue.api_token IS
    'API tokens (sha256 only) of jobqueue serve; private: create_token / revoke_token / act_as_token';

-- The API's job list (newest first, by queue): an ordered index scan per history partition
-- and on dead letters instead of reading every finished job of other queues.
CREATE INDEX job_history_queue_id_idx ON jobqueue.job_history (queue, id);
CREATE INDEX dead_letter_queue_id_idx ON jobqueue.dead_letter (queue, id);

-- The API token the current web request acts as: when session_user is the web server's
-- login (jobqueue_web), the token in the transaction-local setting jobqueue.token (set by
-- act_as_token), verified again by its hash, expiry and revocation -- so that a forged
-- setting gives nothing. Raises 28000 when there is no such token: a web session acts for a
-- verified token or for nothing.
CREATE FUNCTION jobqueue._web_token() RETURNS jobqueue.api_token
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    k jobqueue.api_token;
BEGIN
    SELECT t.* INTO k FROM jobqueue.api_token t
    WHERE t.hash = sha256(convert_to(current_setting('jobqueue.token', true), 'UTF8'))
      AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now());
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '28000', COLUMN = 'token',
            MESSAGE = 'token: this session acts for no valid API token (unknown, expired or revoked)';
    END IF;
    RETURN k;
END
$$;

-- Who the caller is, as recorded in jobs.created_by and checked by the "own jobs" rules:
-- session_user, or 'token:<id>' for a web request (jobqueue_web acting as an API token).
CREATE FUNCTION jobqueue._actor() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT CASE WHEN session_user = 'jobqueue_web' THEN 'token:' || (jobqueue._web_token()).id
                ELSE session_user::text END
$$;

CREATE OR REPLACE FUNCTION jobqueue._tenant() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                ELSE (SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END) END
$$;

-- Jobs record their creator: the login role, or the API token of a web request.
ALTER TABLE jobqueue.job ALTER COLUMN created_by
    SET DEFAULT CASE WHEN session_user = 'jobqueue_web' THEN jobqueue._actor() ELSE session_user END;
ALTER TABLE jobqueue.job_history ALTER COLUMN created_by
    SET DEFAULT CASE WHEN session_user = 'jobqueue_web' THEN jobqueue._actor() ELSE session_user END;
ALTER TABLE jobqueue.dead_letter ALTER COLUMN created_by
    SET DEFAULT CASE WHEN session_user = 'jobqueue_web' THEN jobqueue._actor() ELSE session_user END;

CREATE OR REPLACE FUNCTION jobqueue._is_admin() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    -- a web request: its token's role, never the web login's own memberships
    SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).role IN ('operator', 'admin')
                ELSE pg_has_role(session_user, 'jobqueue_admin', 'MEMBER')
                     OR session_user = (SELECT pg_get_userbyid(n.nspowner) FROM pg_namespace n
                                        WHERE n.nspname = 'jobqueue') END
$$;

CREATE OR REPLACE FUNCTION jobqueue._sees_all_jobs() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).role <> 'producer'
                ELSE pg_has_role(session_user, 'jobqueue_worker', 'MEMBER') OR jobqueue._is_admin() END
$$;

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

CREATE OR REPLACE FUNCTION jobqueue.job_logs(id bigint)
RETURNS TABLE (at timestamptz, token bigint, attempt integer, message text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF job_logs.id IS NULL THEN
        PERFORM jobqueue._raise('id', 'must not be null');
    END IF;
    IF NOT jobqueue._sees_all_jobs() AND NOT EXISTS (
        SELECT 1 FROM jobqueue.jobs j WHERE j.id = job_logs.id AND j.created_by = jobqueue._actor()) THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT g.at, g.token,
           (SELECT (e.detail->>'attempt')::integer FROM jobqueue.job_event e
            WHERE e.job_id = g.job_id AND e.token = g.token AND e.to_state = 'processing' LIMIT 1),
           g.message
    FROM jobqueue.job_log g WHERE g.job_id = job_logs.id ORDER BY g.at, g.id;
END
$$;

CREATE OR REPLACE VIEW jobqueue.jobs AS
    SELECT x.id, x.queue, x.type, x.state, x.priority, x.base_priority, x.payload, x.run_at, x.attempt,
           x.max_attempts, x.retry_policy, x.unique_key, x.expires_at, x.tenant_id, x.user_id, x.tags, x.metadata,
           x.depends_on, x.waiting_on, x.timeout, x.visibility_timeout, x.token, x.worker_id, x.claimed_at,
           x.lease_expires_at, x.cancel_requested, x.progress, x.errors, x.errors->-1->>'message' AS last_error,
           x.created_at, x.created_by, x.finished_at, x.output, x.reason, x.archived_at
    FROM (
        SELECT * FROM jobqueue.job
        UNION ALL SELECT * FROM jobqueue.job_history
        UNION ALL SELECT * FROM jobqueue.dead_letter
    ) AS x
    -- (spelled out with pg_catalog functions: a view checks EXECUTE as the querying role)
    WHERE x.created_by = (SELECT CASE WHEN session_user = 'jobqueue_web' THEN jobqueue._actor()
                                      ELSE session_user::text END)
       OR (SELECT CASE WHEN session_user = 'jobqueue_web' THEN jobqueue._sees_all_jobs()
                       ELSE pg_has_role(session_user, 'jobqueue_worker', 'MEMBER')
                            OR pg_has_role(session_user, 'jobqueue_admin', 'MEMBER')
                            OR session_user = (SELECT pg_get_userbyid(n.nspowner) FROM pg_namespace n
                                               WHERE n.nspname = 'jobqueue') END);

CREATE OR REPLACE VIEW jobqueue.tenant_roles AS
    SELECT t.role_name, t.tenant_id, t.created_at, t.created_by
    FROM jobqueue.tenant_role t
    -- a mapped role sees its own tenant's mappings only
    WHERE t.tenant_id = coalesce((SELECT jobqueue._tenant()),
                                 t.tenant_id);

CREATE OR REPLACE VIEW jobqueue.tenant_rate_limits AS
    SELECT l.tenant_id, l.rate, l.burst,
           least(l.burst, l.tokens + l.rate * greatest(extract(epoch FROM clock_timestamp() - l.refilled_at), 0))
               AS tokens_available,
           l.updated_at
    FROM jobqueue.tenant_limit l
    WHERE l.tenant_id = coalesce((SELECT jobqueue._tenant()),
                                 l.tenant_id);

CREATE OR REPLACE VIEW jobqueue.schedules AS
    SELECT s.id, s.name, s.tenant_id, s.cron, s.tz, s.job, s.missed, s.max_backfill, s.paused, s.paused_reason,
           s.declared_by,
           CASE WHEN NOT s.paused THEN s.next_at END AS next_fire_at,
           s.last_tick_at AS last_fire_at, s.last_job_id,
           coalesce(lj.state::text, CASE WHEN s.last_job_id IS NOT NULL THEN 'pruned' END) AS last_job_state,
           s.last_error, s.last_error_at, s.created_at, s.created_by, s.updated_at
    FROM jobqueue.schedule s
    LEFT JOIN LATERAL (
        SELECT j.state FROM jobqueue.job j WHERE j.id = s.last_job_id
        UNION ALL SELECT h.state FROM jobqueue.job_history h WHERE h.id = s.last_job_id
        UNION ALL SELECT d.state FROM jobqueue.dead_letter d WHERE d.id = s.last_job_id
        LIMIT 1) AS lj ON true
    -- a mapped role sees its own tenant's schedules only
    WHERE s.tenant_id IS NOT DISTINCT FROM
          coalesce((SELECT jobqueue._tenant()), s.tenant_id);

DROP POLICY tenant_isolation ON jobqueue.job;
CREATE POLICY tenant_isolation ON jobqueue.job
    USING (tenant_id IS NOT DISTINCT FROM coalesce(
        (SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END), tenant_id));
DROP POLICY tenant_isolation ON jobqueue.job_history;
CREATE POLICY tenant_isolation ON jobqueue.job_history
    USING (tenant_id IS NOT DISTINCT FROM coalesce(
        (SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END), tenant_id));
DROP POLICY tenant_isolation ON jobqueue.dead_letter;
CREATE POLICY tenant_isolation ON jobqueue.dead_letter
    USING (tenant_id IS NOT DISTINCT FROM coalesce(
        (SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END), tenant_id));
DROP POLICY tenant_read ON jobqueue.job_event;
CREATE POLICY tenant_read ON jobqueue.job_event FOR SELECT
    USING ((SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END) IS NULL
           OR EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.id = job_event.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.job_history h WHERE h.id = job_event.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.dead_letter d WHERE d.id = job_event.job_id));
DROP POLICY tenant_prune ON jobqueue.job_event;
CREATE POLICY tenant_prune ON jobqueue.job_event FOR DELETE
    USING ((SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END) IS NULL
           OR EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.id = job_event.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.job_history h WHERE h.id = job_event.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.dead_letter d WHERE d.id = job_event.job_id));
DROP POLICY tenant_read ON jobqueue.job_log;
CREATE POLICY tenant_read ON jobqueue.job_log FOR SELECT
    USING ((SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END) IS NULL
           OR EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.id = job_log.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.job_history h WHERE h.id = job_log.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.dead_letter d WHERE d.id = job_log.job_id));
DROP POLICY tenant_prune ON jobqueue.job_log;
CREATE POLICY tenant_prune ON jobqueue.job_log FOR DELETE
    USING ((SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END) IS NULL
           OR EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.id = job_log.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.job_history h WHERE h.id = job_log.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.dead_letter d WHERE d.id = job_log.job_id));
DROP POLICY tenant_isolation ON jobqueue.worker;
CREATE POLICY tenant_isolation ON jobqueue.worker
    USING (tenant_id IS NOT DISTINCT FROM coalesce(
        (SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END), tenant_id));

------------------------------------------------------------------------------------------
-- API tokens (jobqueue serve: docs/web.md "Authentication")
------------------------------------------------------------------------------------------
-- Create an API token: 256 random bits (gen_random_uuid draws on the server's strong random
-- source), returned once; only its sha256 is stored. role: viewer, producer, operator or
-- admin; tenant_id confines it to one tenant (needs a schema owner that row-level security
-- binds, as set_tenant_role); expires_in: its lifetime (NULL: none); name: a label. Needs
-- jobqueue_admin mapped to no tenant (through the API: an admin token).
CREATE FUNCTION jobqueue.create_token(role text, tenant_id text DEFAULT NULL, expires_in interval DEFAULT NULL,
                                      name text DEFAULT NULL)
RETURNS TABLE (id bigint, token text, expires_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    secret text := 'jq_' || replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
    bypass text;
    made jobqueue.api_token;
BEGIN
    PERFORM jobqueue._require_unmapped('create_token');
    PERFORM jobqueue._require_token_admin('create_token');
    IF create_token.role IS NULL OR create_token.role NOT IN ('viewer', 'producer', 'operator', 'admin') THEN
        PERFORM jobqueue._raise('role', format('must be viewer, producer, operator or admin (got %s)',
                                               coalesce(quote_literal(left(create_token.role, 100)), 'null')));
    END IF;
    IF create_token.tenant_id IS NOT NULL THEN
        PERFORM jobqueue._check_tenant_id(create_token.tenant_id);
        bypass := jobqueue._rls_bypassing_owners();
        IF bypass IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = '55000', COLUMN = 'tenant_id',
                MESSAGE = format('tenant_id: a tenant token needs the jobqueue schema owned by a role without '
                                 'SUPERUSER or BYPASSRLS, but %s owns jobqueue objects (row-level security would '
                                 'never apply); install it as such a role (docs/sql-api.md "Multi-tenant mode")',
                                 bypass);
        END IF;
    END IF;
    IF create_token.expires_in IS NOT NULL AND create_token.expires_in <= interval '0' THEN
        PERFORM jobqueue._raise('expires_in', 'must be more than 0');
    END IF;
    IF create_token.name = '' OR length(create_token.name) > 200 OR create_token.name ~ '[[:cntrl:]]' THEN
        PERFORM jobqueue._raise('name', CASE WHEN length(create_token.name) > 200 THEN 'longer than 200 characters'
                                             ELSE 'must be a non-empty string without control characters' END);
    END IF;
    INSERT INTO jobqueue.api_token AS t (hash, role, tenant_id, name, expires_at)
    VALUES (sha256(convert_to(secret, 'UTF8')), create_token.role, create_token.tenant_id, create_token.name,
            now() + create_token.expires_in)
    RETURNING t.* INTO made;
    RETURN QUERY SELECT made.id, secret, made.expires_at;
END
$$;
COMMENT ON FUNCTION jobqueue.create_token(text, text, interval, text) IS
    'Create an API token for jobqueue serve (returned once; only its sha256 is kept)';

-- Raise 42501 when a web request whose token is not an admin token manages tokens.
CREATE FUNCTION jobqueue._require_token_admin(action text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    IF session_user = 'jobqueue_web' AND (jobqueue._web_token()).role <> 'admin' THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('%s: API tokens are managed by admin tokens only', action);
    END IF;
END
$$;

-- Revoke a token at once (its next request is refused); false when it was already revoked.
-- Unknown ids raise P0002. Needs jobqueue_admin mapped to no tenant.
CREATE FUNCTION jobqueue.revoke_token(id bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM jobqueue._require_unmapped('revoke_token');
    PERFORM jobqueue._require_token_admin('revoke_token');
    IF revoke_token.id IS NULL THEN
        PERFORM jobqueue._raise('id', 'must not be null');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM jobqueue.api_token t WHERE t.id = revoke_token.id) THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', COLUMN = 'id',
            MESSAGE = format('id: no API token %s', revoke_token.id);
    END IF;
    UPDATE jobqueue.api_token t SET revoked_at = now() WHERE t.id = revoke_token.id AND t.revoked_at IS NULL;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION jobqueue.revoke_token(bigint) IS 'Revoke an API token at once; false when already revoked';

-- The web server's first statement of every request (granted to jobqueue_web only): verify
-- the token (sha256, not revoked, not expired), keep it in the transaction-local setting
-- jobqueue.token for _web_token(), and return what it may act as. Unknown, expired and
-- revoked tokens raise 28000 with one message (which one is not said), naming field token.
-- last_used_at is written at most once a minute per token.
CREATE FUNCTION jobqueue.act_as_token(token text)
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
COMMENT ON FUNCTION jobqueue.act_as_token(text) IS
    'jobqueue serve: verify an API token and act as it for the rest of the transaction';

CREATE VIEW jobqueue.api_tokens AS
    SELECT t.id, t.name, t.role, t.tenant_id, t.created_at, t.created_by, t.expires_at, t.last_used_at, t.revoked_at,
           t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now()) AS active
    FROM jobqueue.api_token t
    -- a tenant's caller sees its own tenant's tokens only
    WHERE t.tenant_id IS NOT DISTINCT FROM coalesce((SELECT jobqueue._tenant()), t.tenant_id);
COMMENT ON VIEW jobqueue.api_tokens IS 'API tokens of jobqueue serve (never the token or its hash)';

-- Delete one finished (completed, cancelled) or dead (dead_letter, archived) job; returns the
-- state it had. Its audit events and log lines stay until reconcile prunes them by age. A live job raises 55000 (cancel it first);
-- an id the caller cannot see (another tenant's, or none) raises P0002. jobqueue_admin.
CREATE FUNCTION jobqueue.delete_job(id bigint) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    gone text;
BEGIN
    IF delete_job.id IS NULL THEN
        PERFORM jobqueue._raise('id', 'must not be null');
    END IF;
    SELECT x.state::text INTO gone FROM jobqueue.job x WHERE x.id = delete_job.id;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '55000', COLUMN = 'id',
            MESSAGE = format('id: job %s is %s; only finished or dead jobs are deleted (cancel it first)',
                             delete_job.id, gone);
    END IF;
    DELETE FROM jobqueue.job_history x WHERE x.id = delete_job.id RETURNING x.state::text INTO gone;
    IF NOT FOUND THEN
        DELETE FROM jobqueue.dead_letter x WHERE x.id = delete_job.id RETURNING x.state::text INTO gone;
    END IF;
    IF gone IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', COLUMN = 'id', MESSAGE = format('id: no job %s', delete_job.id);
    END IF;
    RETURN gone;
END
$$;
COMMENT ON FUNCTION jobqueue.delete_job(bigint) IS
    'Delete a finished or dead job (its events and logs age out); returns the state it had';

-- Jobs newest first, as jobqueue.jobs shows them to the caller (a producer its own jobs,
-- row-level security its tenant's), filtered by every argument given (NULL: any) and
-- keyset-paged by before_id: states, queue, type, tenant_id, tag (jobs carrying it),
-- created_by, created_after/created_before and finished_after/finished_before (half-open
-- ranges), lim (1..10001) rows. The statement is a constant text run by EXECUTE so that it
-- is planned for each call's values: a given queue becomes an ordered (queue, id) index
-- scan per table, the filters left NULL fold away, and 50 jobs out of a million read about
-- 50 rows (the view's owner check, two sub-selects, would make the planner guess badly).
CREATE FUNCTION jobqueue.list_jobs(states text[] DEFAULT NULL, queue text DEFAULT NULL, type text DEFAULT NULL,
                                   tenant_id text DEFAULT NULL, tag text DEFAULT NULL, created_by text DEFAULT NULL,
                                   created_after timestamptz DEFAULT NULL, created_before timestamptz DEFAULT NULL,
                                   finished_after timestamptz DEFAULT NULL, finished_before timestamptz DEFAULT NULL,
                                   before_id bigint DEFAULT NULL, lim integer DEFAULT 50)
RETURNS SETOF jobqueue.jobs
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    wanted jobqueue.job_state[];
BEGIN
    IF lim IS NULL OR lim < 1 OR lim > 10001 THEN
        PERFORM jobqueue._raise('limit', 'must be between 1 and 10001');
    END IF;
    BEGIN
        -- compared as the enum, so that the planner uses the column's statistics
        wanted := states::jobqueue.job_state[];
    EXCEPTION WHEN invalid_text_representation THEN
        PERFORM jobqueue._raise('states', format('unknown state in %s (known: %s)', states,
                                                 enum_range(NULL::jobqueue.job_state)));
    END;
    RETURN QUERY EXECUTE $q$
        SELECT x.id, x.queue, x.type, x.state, x.priority, x.base_priority, x.payload, x.run_at, x.attempt,
               x.max_attempts, x.retry_policy, x.unique_key, x.expires_at, x.tenant_id, x.user_id, x.tags,
               x.metadata, x.depends_on, x.waiting_on, x.timeout, x.visibility_timeout, x.token, x.worker_id,
               x.claimed_at, x.lease_expires_at, x.cancel_requested, x.progress, x.errors,
               x.errors->-1->>'message' AS last_error, x.created_at, x.created_by, x.finished_at, x.output, x.reason,
               x.archived_at
        FROM (
            SELECT * FROM jobqueue.job
            UNION ALL SELECT * FROM jobqueue.job_history
            UNION ALL SELECT * FROM jobqueue.dead_letter
        ) AS x
        WHERE ($1 OR x.created_by = $2)
          AND ($3::jobqueue.job_state[] IS NULL OR x.state = ANY($3))
          AND ($4::text IS NULL OR x.queue = $4)
          AND ($5::text IS NULL OR x.type = $5)
          AND ($6::text IS NULL OR x.tenant_id = $6)
          AND ($7::text IS NULL OR x.tags @> ARRAY[$7::text])
          AND ($8::text IS NULL OR x.created_by = $8)
          AND ($9::timestamptz IS NULL OR x.created_at >= $9)
          AND ($10::timestamptz IS NULL OR x.created_at < $10)
          AND ($11::timestamptz IS NULL OR x.finished_at >= $11)
          AND ($12::timestamptz IS NULL OR x.finished_at < $12)
          AND ($13::bigint IS NULL OR x.id < $13)
        ORDER BY x.id DESC
        LIMIT $14
    $q$ USING jobqueue._sees_all_jobs(), jobqueue._actor(), wanted, queue, type, tenant_id, tag, created_by,
              created_after, created_before, finished_after, finished_before, before_id, lim;
END
$$;
COMMENT ON FUNCTION jobqueue.list_jobs(text[], text, text, text, text, text, timestamptz, timestamptz, timestamptz,
                                       timestamptz, bigint, integer) IS
    'Jobs newest first as jobqueue.jobs shows them, filtered and keyset-paged (index-backed)';

CREATE OR REPLACE FUNCTION jobqueue.schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT 5 $$;

COMMENT ON FUNCTION jobqueue.schema_version() IS
    'The jobqueue schema version (2: health; 3: output caps, per-tenant worker ids; 4: schedules; 5: alerts, API tokens, '
    'jobqueue_viewer, jobqueue_web); clients check it at startup';

CREATE OR REPLACE VIEW jobqueue.alerts AS
    SELECT i.id, i.rule, i.kind, i.severity, i.state, i.queue, i.type, i.subject, i.dedupe_key, i.value, i.threshold,
           i.first_seen, i.last_seen, i.count, i.acknowledged_by, i.acknowledged_at, i.resolved_at, i.resolved_by,
           i.clear_since, i.summary
    FROM jobqueue.alert_incident i
    -- no tenant's caller (a mapped login role or a tenant's API token) sees alerts
    WHERE (SELECT jobqueue._tenant()) IS NULL;

GRANT USAGE ON SCHEMA jobqueue TO jobqueue_viewer, jobqueue_web;
GRANT EXECUTE ON FUNCTION jobqueue.schema_version() TO jobqueue_viewer, jobqueue_web;
GRANT EXECUTE ON FUNCTION jobqueue.act_as_token(text) TO jobqueue_web;
GRANT EXECUTE ON FUNCTION jobqueue._web_token(), jobqueue._actor(), jobqueue._tenant(), jobqueue._sees_all_jobs()
TO jobqueue_producer, jobqueue_worker, jobqueue_admin, jobqueue_viewer;
GRANT EXECUTE ON FUNCTION
    jobqueue.job_logs(bigint),
    jobqueue.queue_stats(),
    jobqueue.metrics(interval),
    jobqueue.list_schedules(),
    jobqueue.cron_next(text, timestamptz, text, integer)
TO jobqueue_viewer;
GRANT SELECT ON jobqueue.jobs, jobqueue.queues, jobqueue.workers, jobqueue.dead_letters, jobqueue.schedules
TO jobqueue_viewer;
GRANT EXECUTE ON FUNCTION
    jobqueue.create_token(text, text, interval, text),
    jobqueue.revoke_token(bigint),
    jobqueue.delete_job(bigint)
TO jobqueue_admin;
GRANT SELECT ON jobqueue.api_tokens TO jobqueue_admin;
GRANT EXECUTE ON FUNCTION
    jobqueue.list_jobs(text[], text, text, text, text, text, timestamptz, timestamptz, timestamptz, timestamptz,
                       bigint, integer)
TO jobqueue_producer, jobqueue_worker, jobqueue_admin, jobqueue_viewer;
GRANT EXECUTE ON FUNCTION jobqueue.list_alerts(text, integer), jobqueue.get_alert(bigint) TO jobqueue_viewer;
GRANT SELECT ON jobqueue.alerts TO jobqueue_viewer;
