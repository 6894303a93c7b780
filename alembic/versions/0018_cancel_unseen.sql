-- Revision 0018: cancel() tells a caller that sees only the jobs it enqueued (a producer, by
-- login role or API token) "no job" for another's job, as every read does, instead of whose
-- job it is; the refusal to others names the operator and admin API tokens too.
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
        IF NOT jobqueue._sees_all_jobs() THEN
            -- a caller that sees only the jobs it enqueued (a producer) learns nothing of others'
            RAISE EXCEPTION USING ERRCODE = 'P0002', COLUMN = 'id',
                MESSAGE = format('id: no job %s', cancel.id);
        END IF;
        RAISE EXCEPTION USING ERRCODE = '42501', COLUMN = 'id',
            MESSAGE = format('id: job %s was not enqueued by %s; cancelling it needs jobqueue_admin '
                             '(or an operator or admin API token)', cancel.id, jobqueue._actor());
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
