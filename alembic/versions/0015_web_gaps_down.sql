-- Revision 0015 down: back to revision 0013 (roles are cluster-wide and stay: jobqueue_operator
-- keeps its memberships but no privilege in this database).

REVOKE EXECUTE ON FUNCTION
    jobqueue.retry(bigint),
    jobqueue.redrive(jsonb, integer, boolean),
    jobqueue.pause_queue(text),
    jobqueue.resume_queue(text),
    jobqueue.pause_schedule(text),
    jobqueue.resume_schedule(text),
    jobqueue.schedule_next(text, integer),
    jobqueue.ack_alert(bigint, text),
    jobqueue.resolve_alert(bigint, text),
    jobqueue.counters(),
    jobqueue.histogram_buckets()
FROM jobqueue_operator;
REVOKE USAGE ON SCHEMA jobqueue FROM jobqueue_operator;

DROP TRIGGER queue_changed ON jobqueue.queue;
DROP TRIGGER queue_created_paused ON jobqueue.queue;
DROP FUNCTION jobqueue._queue_changed();

DROP FUNCTION jobqueue.job_events(bigint, timestamptz, integer, bigint, boolean);
CREATE FUNCTION jobqueue.job_events(after bigint DEFAULT NULL, since timestamptz DEFAULT NULL,
                                    max_rows integer DEFAULT 500, of_job bigint DEFAULT NULL)
RETURNS TABLE (id bigint, job_id bigint, queue text, from_state jobqueue.job_state, to_state jobqueue.job_state,
               actor text, at timestamptz, detail jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 10000 THEN
        PERFORM jobqueue._raise('max_rows', 'must be between 1 and 10000');
    END IF;
    IF of_job IS NULL AND since IS NULL THEN
        PERFORM jobqueue._raise('since', 'is required unless of_job is given (the whole trail is never read)');
    END IF;
    RETURN QUERY
    SELECT e.id, e.job_id, e.queue, e.from_state, e.to_state, e.actor, e.at, e.detail
    FROM jobqueue.job_event e
    WHERE (of_job IS NULL OR e.job_id = of_job)
      AND (since IS NULL OR e.at >= since)
      AND (after IS NULL OR e.id > after)
      AND ((SELECT jobqueue._sees_all_jobs())
           OR EXISTS (SELECT 1 FROM jobqueue.jobs j WHERE j.id = e.job_id))
    ORDER BY e.id
    LIMIT max_rows;
END
$$;
COMMENT ON FUNCTION jobqueue.job_events(bigint, timestamptz, integer, bigint) IS
    'Audit-trail rows the caller may see (its tenant; a producer: its jobs): one job''s, or those at or after since '
    'with id above after, in id order, at most max_rows';
REVOKE EXECUTE ON FUNCTION jobqueue.job_events(bigint, timestamptz, integer, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobqueue.job_events(bigint, timestamptz, integer, bigint)
TO jobqueue_producer, jobqueue_worker, jobqueue_admin, jobqueue_viewer;

DROP POLICY tenant_read ON jobqueue.job_event;
CREATE POLICY tenant_read ON jobqueue.job_event FOR SELECT
    USING ((SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END) IS NULL
           OR EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.id = job_event.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.job_history h WHERE h.id = job_event.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.dead_letter d WHERE d.id = job_event.job_id));

-- the queue changes go (the only delete job_event accepts: flagged, as the owner)
SELECT set_config('jobqueue.pruning', 'on', true);
DELETE FROM jobqueue.job_event e WHERE e.job_id IS NULL;
SELECT set_config('jobqueue.pruning', 'off', true);
ALTER TABLE jobqueue.job_event ALTER COLUMN job_id SET NOT NULL;
COMMENT ON COLUMN jobqueue.job_event.job_id IS NULL;
COMMENT ON TABLE jobqueue.job_event IS
    'Append-only audit trail: one row per job state transition; UPDATE/DELETE rejected except by retention pruning';

CREATE OR REPLACE FUNCTION jobqueue.schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT 5 $$;
COMMENT ON FUNCTION jobqueue.schema_version() IS
    'The jobqueue schema version (2: health; 3: output caps, per-tenant worker ids; 4: schedules; 5: alerts, '
    'counters, API tokens, jobqueue_viewer, jobqueue_web); clients check it at startup';

CREATE OR REPLACE FUNCTION jobqueue._web_token() RETURNS jobqueue.api_token
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
