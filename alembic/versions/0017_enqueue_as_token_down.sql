-- Revision 0017 down: no enqueue_as_token; schema version 6.
DROP FUNCTION jobqueue.enqueue_as_token(text, text, jsonb, text, anycompatible, timestamptz, interval, integer, jsonb,
    text, timestamptz, text, text, text[], jsonb, bigint[], interval, interval);

CREATE OR REPLACE FUNCTION jobqueue.schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT 6 $$;
COMMENT ON FUNCTION jobqueue.schema_version() IS
    'The jobqueue schema version (2: health; 3: output caps, per-tenant worker ids; 4: schedules; 5: alerts, '
    'counters, API tokens, jobqueue_viewer, jobqueue_web; 6: jobqueue_operator, queue changes in job_events); '
    'clients check it at startup';
