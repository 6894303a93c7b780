-- Revision 0019 undone: the default statistics targets again, and _maintain_partitions
-- without them.
DO $$
DECLARE
    col record;
BEGIN
    FOR col IN
        SELECT n.nspname, c.relname, a.attname
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE a.attrelid IN ('jobqueue.job'::regclass, 'jobqueue.job_history'::regclass, 'jobqueue.job_event'::regclass)
          AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attrelid, a.attnum
    LOOP
        EXECUTE format('ALTER TABLE %I.%I ALTER COLUMN %I SET STATISTICS -1', col.nspname, col.relname, col.attname);
    END LOOP;
END
$$;
DROP FUNCTION jobqueue._set_statistics(regclass);

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
