-- Revision 0015: the web layer's gaps (issue 18).
--
-- * jobqueue_operator: operator tokens act as their own database role instead of
--   jobqueue_admin, so the database itself refuses them what only an admin token may do
--   (purge and archive dead letters, delete jobs, queue settings, retry policies, tenants,
--   schedule and alert definitions, API tokens), not only the web code; _web_token() refuses
--   a web session whose role is not its token's role's, so not even a server that took
--   jobqueue_admin for an operator token gets more.
-- * Queue changes on the live streams: pause, resume and configure write a job_event row
--   with job_id NULL (a trigger on jobqueue.queue), read by job_events(queue_changes => true)
--   with the same cursor as job events; the tenant_read policy lets every caller read them
--   (queue names and settings are shared by every tenant).
-- * (_tenant()'s redundant inner CASE went with revision 0014, which made it plpgsql.)
-- * Schema version 6 (jobqueue serve needs jobqueue_operator and queue_changes).

-- jobqueue_operator: the database role operator tokens act as (jobqueue serve). A member of
-- jobqueue_viewer (every read) and jobqueue_producer (enqueue, cancel), with the day-to-day
-- actions granted below; jobqueue_web may SET ROLE to it.
DO $oprole$
DECLARE
    r text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'jobqueue_operator') THEN
        BEGIN
            CREATE ROLE jobqueue_operator NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    FOREACH r IN ARRAY ARRAY['jobqueue_viewer', 'jobqueue_producer'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m
                       WHERE m.roleid = r::regrole AND m.member = 'jobqueue_operator'::regrole) THEN
            EXECUTE format('GRANT %I TO jobqueue_operator', r);
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m
                   WHERE m.roleid = 'jobqueue_operator'::regrole AND m.member = 'jobqueue_web'::regrole) THEN
        GRANT jobqueue_operator TO jobqueue_web;
    END IF;
END
$oprole$;

-- A web session acts for its token only under that token's own database role.
CREATE OR REPLACE FUNCTION jobqueue._web_token() RETURNS jobqueue.api_token
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    k jobqueue.api_token;
    acts_as text;
BEGIN
    SELECT t.* INTO k FROM jobqueue.api_token t
    WHERE t.hash = sha256(convert_to(current_setting('jobqueue.token', true), 'UTF8'))
      AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now());
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '28000', COLUMN = 'token',
            MESSAGE = 'token: this session acts for no valid API token (unknown, expired or revoked)';
    END IF;
    -- The session must have taken exactly its token's database role (SET ROLE, which a
    -- definer function does not change): an operator token in a session that took
    -- jobqueue_admin (a fault of the web server) acts for nothing.
    acts_as := CASE k.role WHEN 'viewer' THEN 'jobqueue_viewer' WHEN 'producer' THEN 'jobqueue_producer'
                           WHEN 'operator' THEN 'jobqueue_operator' WHEN 'admin' THEN 'jobqueue_admin' END;
    IF current_setting('role') IS DISTINCT FROM acts_as THEN
        RAISE EXCEPTION USING ERRCODE = '42501', COLUMN = 'token',
            MESSAGE = format('token: an API token of role %s acts as %s, but this session took role %s', k.role, acts_as,
                             current_setting('role'));
    END IF;
    RETURN k;
END
$$;

REVOKE EXECUTE ON FUNCTION jobqueue.job_events(bigint, timestamptz, integer, bigint) FROM jobqueue_producer,
    jobqueue_worker, jobqueue_admin, jobqueue_viewer;
DROP FUNCTION jobqueue.job_events(bigint, timestamptz, integer, bigint);
CREATE FUNCTION jobqueue.job_events(after bigint DEFAULT NULL, since timestamptz DEFAULT NULL,
                                    max_rows integer DEFAULT 500, of_job bigint DEFAULT NULL,
                                    queue_changes boolean DEFAULT false)
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
      -- queue changes (job_id NULL) only when asked for: queues are shared by every tenant
      AND CASE WHEN e.job_id IS NULL THEN coalesce(queue_changes, false)
               ELSE (SELECT jobqueue._sees_all_jobs())
                    OR EXISTS (SELECT 1 FROM jobqueue.jobs j WHERE j.id = e.job_id) END
    ORDER BY e.id
    LIMIT max_rows;
END
$$;
COMMENT ON FUNCTION jobqueue.job_events(bigint, timestamptz, integer, bigint, boolean) IS
    'Audit-trail rows the caller may see (its tenant; a producer: its jobs): one job''s, or those at or after since '
    'with id above after, in id order, at most max_rows; queue_changes: also queue pauses, resumes and '
    'configuration changes (job_id NULL)';
REVOKE EXECUTE ON FUNCTION jobqueue.job_events(bigint, timestamptz, integer, bigint, boolean) FROM PUBLIC;

ALTER TABLE jobqueue.job_event ALTER COLUMN job_id DROP NOT NULL;
COMMENT ON TABLE jobqueue.job_event IS
    'Append-only audit trail: one row per job state transition, and per queue change (job_id NULL); '
    'UPDATE/DELETE rejected except by retention pruning';
COMMENT ON COLUMN jobqueue.job_event.job_id IS
    'NULL: a queue change (pause, resume, configure); detail.change says which';

-- Queue changes on the live streams: pausing, resuming or configuring a queue writes a
-- job_event row with job_id NULL (detail.change: paused, resumed or configured), so that a
-- stream reads them with the job events, resumable from the same cursor. Fired only when a
-- queue row really changes (enqueue's lock on a capped queue rewrites the row unchanged,
-- and the WHEN clause keeps that free of any call); a repeated pause or a configure that
-- sets what is already set writes nothing.
CREATE FUNCTION jobqueue._queue_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.paused = NEW.paused
       AND to_jsonb(OLD) - 'updated_at' = to_jsonb(NEW) - 'updated_at' THEN
        RETURN NULL;
    END IF;
    INSERT INTO jobqueue.job_event (job_id, queue, actor, detail)
    VALUES (NULL, NEW.name,
            CASE WHEN session_user = 'jobqueue_web' THEN jobqueue._actor() ELSE session_user::text END,
            jsonb_build_object('change', CASE WHEN TG_OP = 'INSERT' OR OLD.paused <> NEW.paused
                                              THEN CASE WHEN NEW.paused THEN 'paused' ELSE 'resumed' END
                                              ELSE 'configured' END,
                               'paused', NEW.paused));
    RETURN NULL;
END
$$;
CREATE TRIGGER queue_created_paused
    AFTER INSERT ON jobqueue.queue
    FOR EACH ROW WHEN (NEW.paused) EXECUTE FUNCTION jobqueue._queue_changed();
CREATE TRIGGER queue_changed
    AFTER UPDATE ON jobqueue.queue
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION jobqueue._queue_changed();
REVOKE EXECUTE ON FUNCTION jobqueue._queue_changed() FROM PUBLIC;

DROP POLICY tenant_read ON jobqueue.job_event;
CREATE POLICY tenant_read ON jobqueue.job_event FOR SELECT
    USING ((SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END) IS NULL
           OR job_event.job_id IS NULL
           OR EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.id = job_event.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.job_history h WHERE h.id = job_event.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.dead_letter d WHERE d.id = job_event.job_id));

CREATE OR REPLACE FUNCTION jobqueue.schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT 6 $$;
COMMENT ON FUNCTION jobqueue.schema_version() IS
    'The jobqueue schema version (2: health; 3: output caps, per-tenant worker ids; 4: schedules; 5: alerts, '
    'counters, API tokens, jobqueue_viewer, jobqueue_web; 6: jobqueue_operator, queue changes in job_events); '
    'clients check it at startup';

GRANT EXECUTE ON FUNCTION jobqueue.job_events(bigint, timestamptz, integer, bigint, boolean)
TO jobqueue_producer, jobqueue_worker, jobqueue_admin, jobqueue_viewer;
-- An operator token (jobqueue serve) acts as jobqueue_operator: a viewer's reads, a
-- producer's enqueue and cancel, and the day-to-day actions below. Not: purging or archiving
-- dead letters, deleting jobs, queue settings, retry policies, tenants, schedules' and
-- alerts' definitions, API tokens -- those stay with jobqueue_admin (an admin token).
GRANT USAGE ON SCHEMA jobqueue TO jobqueue_operator;
GRANT EXECUTE ON FUNCTION
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
TO jobqueue_operator;
