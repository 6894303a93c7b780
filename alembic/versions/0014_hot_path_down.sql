-- Revision 0014 down: _tenant() and _conf() as sql functions, as revisions 0011 and 0001 had them.

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
