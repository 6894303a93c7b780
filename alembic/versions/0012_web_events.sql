-- Revision 0012: the audit trail for dashboards and live streams (issue 18): job_events (a job's
-- events, or those after a cursor, as the caller may see them) and event_counts (per-minute
-- completions and failed attempts for charts). Schema version stays 5 (0011 set it).

------------------------------------------------------------------------------------------
-- The audit trail for dashboards and live streams (job_event itself is private)
------------------------------------------------------------------------------------------
-- Row-level security on job_event applies (policies key on session_user, which a definer
-- function keeps), and a producer sees the events of the jobs it enqueued, as in the jobs
-- view. Never the whole trail: a job's events (its index), or those at or after `since`
-- (the BRIN index on at) with an id above `after`. A live stream's cursor is its last
-- safe id plus that id's time (see docs/sql-api.md "Live streams").
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

CREATE FUNCTION jobqueue.event_counts("window" interval DEFAULT '1 hour', step interval DEFAULT '1 minute')
RETURNS TABLE (bucket timestamptz, queue text, completed bigint, failed bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM jobqueue._check_duration('window', "window", false, 86400);
    PERFORM jobqueue._check_duration('step', step, false, 86400);
    IF extract(epoch FROM "window") / extract(epoch FROM step) > 1440 THEN
        PERFORM jobqueue._raise('step', 'gives more than 1440 buckets in the window');
    END IF;
    RETURN QUERY
    SELECT date_bin(step, e.at, timestamptz '2000-01-01 00:00:00+00') AS b, e.queue,
           count(*) FILTER (WHERE e.to_state = 'completed'),
           count(*) FILTER (WHERE e.from_state = 'processing' AND e.to_state IN ('retrying', 'dead_letter'))
    FROM jobqueue.job_event e
    WHERE e.at >= now() - "window" AND e.to_state IN ('completed', 'retrying', 'dead_letter')
      AND ((SELECT jobqueue._sees_all_jobs())
           OR EXISTS (SELECT 1 FROM jobqueue.jobs j WHERE j.id = e.job_id))
    GROUP BY 1, 2
    ORDER BY 1, 2;
END
$$;
COMMENT ON FUNCTION jobqueue.event_counts(interval, interval) IS
    'Per step-wide time bucket and queue over the last window (at most 1 day, 1440 buckets): completions and failed '
    'attempts the caller may see (dashboard throughput and error-rate charts)';

REVOKE EXECUTE ON FUNCTION jobqueue.job_events(bigint, timestamptz, integer, bigint),
    jobqueue.event_counts(interval, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobqueue.job_events(bigint, timestamptz, integer, bigint),
    jobqueue.event_counts(interval, interval)
TO jobqueue_producer, jobqueue_worker, jobqueue_admin, jobqueue_viewer;
