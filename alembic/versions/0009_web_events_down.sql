-- Down from revision 0009: drop the audit-trail readers; schema version 4.
DROP FUNCTION jobqueue.job_events(bigint, timestamptz, integer, bigint);
DROP FUNCTION jobqueue.event_counts(interval, interval);

CREATE OR REPLACE FUNCTION jobqueue.schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT 4 $$;
COMMENT ON FUNCTION jobqueue.schema_version() IS
    'The jobqueue schema version (2: health; 3: output caps, per-tenant worker ids; 4: schedules); clients check it at startup';
