-- Revision 0011 down: the bodies, views, policies and defaults of revisions 0008/0009; API tokens
-- dropped. The roles jobqueue_viewer and jobqueue_web stay (cluster-wide, never dropped by
-- the schema); their privileges in this database go with the objects.
REVOKE ALL ON SCHEMA jobqueue FROM jobqueue_viewer, jobqueue_web;
REVOKE EXECUTE ON FUNCTION jobqueue.list_alerts(text, integer), jobqueue.get_alert(bigint) FROM jobqueue_viewer;
REVOKE SELECT ON jobqueue.alerts FROM jobqueue_viewer;
REVOKE EXECUTE ON FUNCTION jobqueue.schema_version() FROM jobqueue_viewer, jobqueue_web;
REVOKE EXECUTE ON FUNCTION jobqueue.job_logs(bigint), jobqueue.queue_stats(), jobqueue.metrics(interval),
    jobqueue.list_schedules(), jobqueue.cron_next(text, timestamptz, text, integer) FROM jobqueue_viewer;
REVOKE SELECT ON jobqueue.jobs, jobqueue.queues, jobqueue.workers, jobqueue.dead_letters, jobqueue.schedules
FROM jobqueue_viewer;
REVOKE EXECUTE ON FUNCTION jobqueue._tenant(), jobqueue._sees_all_jobs()
FROM jobqueue_producer, jobqueue_worker, jobqueue_admin, jobqueue_viewer;

CREATE OR REPLACE VIEW jobqueue.alerts AS
    SELECT i.id, i.rule, i.kind, i.severity, i.state, i.queue, i.type, i.subject, i.dedupe_key, i.value, i.threshold,
           i.first_seen, i.last_seen, i.count, i.acknowledged_by, i.acknowledged_at, i.resolved_at, i.resolved_by,
           i.clear_since, i.summary
    FROM jobqueue.alert_incident i
    WHERE NOT EXISTS (SELECT 1 FROM jobqueue.tenant_role m WHERE m.role_name = session_user);

ALTER TABLE jobqueue.job ALTER COLUMN created_by SET DEFAULT session_user;
ALTER TABLE jobqueue.job_history ALTER COLUMN created_by SET DEFAULT session_user;
ALTER TABLE jobqueue.dead_letter ALTER COLUMN created_by SET DEFAULT session_user;

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
    WHERE x.created_by = session_user
       OR (SELECT pg_has_role(session_user, 'jobqueue_worker', 'MEMBER')
                  OR pg_has_role(session_user, 'jobqueue_admin', 'MEMBER')
                  OR session_user = (SELECT pg_get_userbyid(n.nspowner) FROM pg_namespace n
                                     WHERE n.nspname = 'jobqueue'));

CREATE OR REPLACE VIEW jobqueue.tenant_roles AS
    SELECT t.role_name, t.tenant_id, t.created_at, t.created_by
    FROM jobqueue.tenant_role t
    -- a mapped role sees its own tenant's mappings only
    WHERE t.tenant_id = coalesce((SELECT m.tenant_id FROM jobqueue.tenant_role m WHERE m.role_name = session_user),
                                 t.tenant_id);

CREATE OR REPLACE VIEW jobqueue.tenant_rate_limits AS
    SELECT l.tenant_id, l.rate, l.burst,
           least(l.burst, l.tokens + l.rate * greatest(extract(epoch FROM clock_timestamp() - l.refilled_at), 0))
               AS tokens_available,
           l.updated_at
    FROM jobqueue.tenant_limit l
    WHERE l.tenant_id = coalesce((SELECT m.tenant_id FROM jobqueue.tenant_role m WHERE m.role_name = session_user),
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
          coalesce((SELECT m.tenant_id FROM jobqueue.tenant_role m WHERE m.role_name = session_user), s.tenant_id);

DROP POLICY tenant_isolation ON jobqueue.job;
CREATE POLICY tenant_isolation ON jobqueue.job
    USING (tenant_id IS NOT DISTINCT FROM coalesce(
        (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user), tenant_id));
DROP POLICY tenant_isolation ON jobqueue.job_history;
CREATE POLICY tenant_isolation ON jobqueue.job_history
    USING (tenant_id IS NOT DISTINCT FROM coalesce(
        (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user), tenant_id));
DROP POLICY tenant_isolation ON jobqueue.dead_letter;
CREATE POLICY tenant_isolation ON jobqueue.dead_letter
    USING (tenant_id IS NOT DISTINCT FROM coalesce(
        (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user), tenant_id));
DROP POLICY tenant_read ON jobqueue.job_event;
CREATE POLICY tenant_read ON jobqueue.job_event FOR SELECT
    USING ((SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) IS NULL
           OR EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.id = job_event.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.job_history h WHERE h.id = job_event.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.dead_letter d WHERE d.id = job_event.job_id));
DROP POLICY tenant_prune ON jobqueue.job_event;
CREATE POLICY tenant_prune ON jobqueue.job_event FOR DELETE
    USING ((SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) IS NULL
           OR EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.id = job_event.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.job_history h WHERE h.id = job_event.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.dead_letter d WHERE d.id = job_event.job_id));
DROP POLICY tenant_read ON jobqueue.job_log;
CREATE POLICY tenant_read ON jobqueue.job_log FOR SELECT
    USING ((SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) IS NULL
           OR EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.id = job_log.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.job_history h WHERE h.id = job_log.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.dead_letter d WHERE d.id = job_log.job_id));
DROP POLICY tenant_prune ON jobqueue.job_log;
CREATE POLICY tenant_prune ON jobqueue.job_log FOR DELETE
    USING ((SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) IS NULL
           OR EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.id = job_log.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.job_history h WHERE h.id = job_log.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.dead_letter d WHERE d.id = job_log.job_id));
DROP POLICY tenant_isolation ON jobqueue.worker;
CREATE POLICY tenant_isolation ON jobqueue.worker
    USING (tenant_id IS NOT DISTINCT FROM coalesce(
        (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user), tenant_id));

CREATE OR REPLACE FUNCTION jobqueue._tenant() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user $$;

CREATE OR REPLACE FUNCTION jobqueue._is_admin() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT pg_has_role(session_user, 'jobqueue_admin', 'MEMBER')
        OR session_user = (SELECT pg_get_userbyid(n.nspowner) FROM pg_namespace n WHERE n.nspname = 'jobqueue')
$$;

CREATE OR REPLACE FUNCTION jobqueue._sees_all_jobs() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT pg_has_role(session_user, 'jobqueue_worker', 'MEMBER') OR jobqueue._is_admin() $$;

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
    IF j.created_by <> session_user AND NOT jobqueue._is_admin() THEN
        RAISE EXCEPTION USING ERRCODE = '42501', COLUMN = 'id',
            MESSAGE = format('id: job %s was not enqueued by %s; cancelling it needs jobqueue_admin',
                             cancel.id, session_user);
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
        SELECT 1 FROM jobqueue.jobs j WHERE j.id = job_logs.id AND j.created_by = session_user) THEN
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

CREATE OR REPLACE FUNCTION jobqueue.schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT 5 $$;

COMMENT ON FUNCTION jobqueue.schema_version() IS
    'The jobqueue schema version (2: health; 3: output caps, per-tenant worker ids; 4: schedules; 5: alerts); '
    'clients check it at startup';

DROP FUNCTION jobqueue.list_jobs(text[], text, text, text, text, text, timestamptz, timestamptz, timestamptz,
                                 timestamptz, bigint, integer);
DROP FUNCTION jobqueue.delete_job(bigint);
DROP VIEW jobqueue.api_tokens;
DROP FUNCTION jobqueue.act_as_token(text);
DROP FUNCTION jobqueue.revoke_token(bigint);
DROP FUNCTION jobqueue.create_token(text, text, interval, text);
DROP FUNCTION jobqueue._require_token_admin(text);
DROP FUNCTION jobqueue._actor();
DROP FUNCTION jobqueue._web_token();
DROP TABLE jobqueue.api_token;
DROP INDEX jobqueue.job_history_queue_id_idx;
DROP INDEX jobqueue.dead_letter_queue_id_idx;
