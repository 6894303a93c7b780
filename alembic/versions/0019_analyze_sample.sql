-- Revision 0019: ANALYZE of jobqueue.job, job_history (every partition) and job_event samples
-- 3,000 rows (statistics target 10) with no statistics on the JSON documents, instead of
-- 30,000 rows with every column (issue 13: autovacuum's analyses took a fifth of the worker's
-- rate in bursts under load). New history partitions get the same.
-- ANALYZE reads 300 rows per unit of a table's largest column statistics target: 30,000 at
-- the default (100), every column of them sorted, the JSON documents included. Autovacuum
-- analyzes jobqueue.job after every 2 % of its rows changed, so under load at every visit;
-- on 2 cores each of those took 0.35-0.5 s of a core, a job_history partition's as much and
-- job_event's half that, in bursts that slowed the worker's rounds beside them by a fifth.
-- A table whose rows turn over every few seconds needs no fine histograms: a sample of 3,000
-- rows (target 10) per column, and no statistics on the documents no query filters on.
-- _maintain_partitions applies it to each history partition it creates.
CREATE FUNCTION jobqueue._set_statistics(tab regclass) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    col record;
BEGIN
    FOR col IN
        SELECT n.nspname, c.relname, a.attname
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE a.attrelid = tab AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
    LOOP
        EXECUTE format('ALTER TABLE %I.%I ALTER COLUMN %I SET STATISTICS %s', col.nspname, col.relname, col.attname,
                       CASE WHEN col.attname IN ('payload', 'output', 'errors', 'detail', 'metadata', 'retry_policy')
                            THEN 0 ELSE 10 END);
    END LOOP;
END
$$;
-- On job_history it reaches every partition there is.
DO $$ BEGIN
    PERFORM jobqueue._set_statistics(t) FROM unnest('{jobqueue.job, jobqueue.job_history, jobqueue.job_event}'::regclass[]) AS t;
END $$;
REVOKE EXECUTE ON FUNCTION jobqueue._set_statistics(regclass) FROM PUBLIC;

CREATE OR REPLACE FUNCTION jobqueue._maintain_partitions(dry_run boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, jobqueue, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
    ahead integer := jobqueue._conf('history_partitions_ahead');
    today date := (now() AT TIME ZONE 'UTC')::date;
    keep interval := make_interval(secs => greatest(
        jobqueue._conf('history_retention_s'),
        coalesce((SELECT max(extract(epoch FROM q.history_retention)) FROM jobqueue.queue q), 0)));
    d date;
    lo timestamptz;
    hi timestamptz;
    part text;
    created integer := 0;
    dropped integer := 0;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('jobqueue._maintain_partitions')) THEN
        RETURN jsonb_build_object('partitions_created', 0, 'partitions_dropped', 0, 'partitions_skipped', true);
    END IF;
    BEGIN
        FOR part, d IN
            SELECT c.relname, to_date(substr(c.relname, 14), 'YYYYMMDD')
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'jobqueue.job_history'::regclass AND c.relname ~ '^job_history_p[0-9]{8}$'
            ORDER BY 1
        LOOP
            hi := (d + 1)::timestamp AT TIME ZONE 'UTC';
            IF hi <= now() - keep THEN
                IF NOT dry_run THEN
                    EXECUTE format('DROP TABLE IF EXISTS jobqueue.%I', part);
                END IF;
                dropped := dropped + 1;
            END IF;
        END LOOP;
        FOR d IN SELECT today + k FROM generate_series(0, ahead) AS k LOOP
            part := 'job_history_p' || to_char(d, 'YYYYMMDD');
            lo := d::timestamp AT TIME ZONE 'UTC';
            hi := (d + 1)::timestamp AT TIME ZONE 'UTC';
            CONTINUE WHEN to_regclass(format('jobqueue.%I', part)) IS NOT NULL;
            -- rows of that day already in the DEFAULT partition (reconcile did not run for a
            -- while): leave the day there; retention prunes it row by row
            CONTINUE WHEN EXISTS (SELECT 1 FROM jobqueue.job_history_default h
                                  WHERE h.finished_at >= lo AND h.finished_at < hi);
            IF NOT dry_run THEN
                EXECUTE format('CREATE TABLE jobqueue.%I PARTITION OF jobqueue.job_history FOR VALUES FROM (%L) TO (%L)',
                               part, lo, hi);
                PERFORM jobqueue._set_statistics(format('jobqueue.%I', part)::regclass);
            END IF;
            created := created + 1;
        END LOOP;
    EXCEPTION WHEN lock_not_available THEN
        RETURN jsonb_build_object('partitions_created', 0, 'partitions_dropped', 0, 'partitions_skipped', true);
    END;
    RETURN jsonb_build_object('partitions_created', created, 'partitions_dropped', dropped,
                              'partitions_skipped', false);
END
$$;
