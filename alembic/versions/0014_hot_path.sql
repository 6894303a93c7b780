-- Revision 0014: jobqueue._tenant() and jobqueue._conf() in plpgsql (the hot path, session 3).
--
-- Both were SECURITY DEFINER sql functions, which PostgreSQL never inlines: their body was
-- parsed and planned again at every call (a sql function's plan lives only as long as the
-- calling query). enqueue() calls _tenant() once and _conf() twice per job, and revision
-- 0011 made _tenant()'s body a nested CASE with two sub-selects, doubling its planning:
-- measured in one session, server CPU per enqueue() 119 us before 0010/0011, 175 us after,
-- of which _tenant() 44 us and _conf() 21 us (docs/performance.md, "Hot path after the
-- counters and alerts"). A plpgsql body is planned once per session and its plan reused.
-- Same answers: the web login's token tenant, else the login role's mapped tenant (NULL when
-- unmapped); a setting's numeric value (NULL when unset).

CREATE OR REPLACE FUNCTION jobqueue._tenant() RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    IF session_user = 'jobqueue_web' THEN
        RETURN (jobqueue._web_token()).tenant_id;
    END IF;
    RETURN (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user);
END
$$;

CREATE OR REPLACE FUNCTION jobqueue._conf(key text) RETURNS numeric
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    RETURN (SELECT (s.value #>> '{}')::numeric FROM jobqueue.setting s WHERE s.key = _conf.key);
END
$$;
