-- Revision 0014 down: _tenant() and _conf() as sql functions, as revisions 0011 and 0001 had
-- them; _bucket_counts() as revision 0010 had it.

CREATE OR REPLACE FUNCTION jobqueue._tenant() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                ELSE (SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END) END
$$;

CREATE OR REPLACE FUNCTION jobqueue._conf(key text) RETURNS numeric
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT (s.value #>> '{}')::numeric FROM jobqueue.setting s WHERE s.key = _conf.key $$;

CREATE OR REPLACE FUNCTION jobqueue._bucket_counts(vals double precision[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    bounds constant double precision[] := jobqueue.histogram_buckets();
    nb constant integer := cardinality(bounds);
BEGIN
    IF vals IS NULL OR cardinality(vals) = 0 THEN
        RETURN NULL;
    END IF;
    -- plpgsql, not sql: its query is planned once per session (a sql function's body was
    -- planned again for every statement the counter trigger ran: 0.5 ms each). width_bucket
    -- over the negated bounds in reverse counts the bounds >= v (a binary search): the bucket
    -- of v is then 1 + the number of bounds < v.
    RETURN ARRAY(
        SELECT coalesce(c.n, 0)
        FROM generate_series(1, nb + 1) AS g(i)
        LEFT JOIN (SELECT nb + 1 - width_bucket(-u.v, ARRAY(SELECT -x.bound FROM unnest(bounds) WITH ORDINALITY
                                                                   AS x(bound, o) ORDER BY x.o DESC)) AS k,
                          count(*) AS n
                   FROM unnest(vals) AS u(v) GROUP BY 1) AS c ON c.k = g.i
        ORDER BY g.i);
END
$$;
