-- jobqueue schema, version 1: the queue core and its public SQL API.
--
-- The whole current schema: types, private tables, indexes, public functions, views,
-- roles and grants. It applies to an empty database in one transaction
-- (psql -X -v ON_ERROR_STOP=1 -1 -f sql/schema.sql) on PostgreSQL 15 and later.
-- Public reference: docs/sql-api.md. Tables are private; other services call the
-- functions and read the views.
--
-- Conventions:
--   * every API function is SECURITY DEFINER with a pinned search_path and still
--     schema-qualifies every table; EXECUTE is revoked from PUBLIC and granted per role;
--   * every state transition names the state and the lease token it expects in its WHERE;
--     zero rows changed means "someone else owns it now" and is answered, never guessed;
--   * every clock reading is the database's: now() for decisions, clock_timestamp() for audit;
--   * queue names and job types are data, never identifiers; the only dynamic SQL builds
--     history partition names from dates (format('%I')), never from input;
--   * bad arguments raise 22023 (22001: too long) with the message starting with the field
--     name and COLUMN = the field; unknown job ids raise P0002; a full queue raises 53400.

-- The migration runner creates the schema first, to hold jobqueue.alembic_version.
CREATE SCHEMA IF NOT EXISTS jobqueue;
COMMENT ON SCHEMA jobqueue IS 'jobqueue: a job queue whose whole state lives in PostgreSQL (schema version 1)';

------------------------------------------------------------------------------------------
-- Roles (cluster-wide: created only when missing; never dropped by this schema)
------------------------------------------------------------------------------------------
DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['jobqueue_producer', 'jobqueue_worker', 'jobqueue_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- another database's migration created it at the same moment
            END;
        END IF;
    END LOOP;
    IF NOT pg_catalog.pg_has_role('jobqueue_admin', 'jobqueue_producer', 'MEMBER') THEN
        GRANT jobqueue_producer TO jobqueue_admin;
    END IF;
    IF NOT pg_catalog.pg_has_role('jobqueue_admin', 'jobqueue_worker', 'MEMBER') THEN
        GRANT jobqueue_worker TO jobqueue_admin;
    END IF;
END
$roles$;

-- Functions are executable by PUBLIC by default. The per-schema form of ALTER DEFAULT
-- PRIVILEGES cannot revoke that global default, so the global form is used (it applies to
-- functions the installing role creates in this database), and every jobqueue function is
-- also revoked explicitly at the end of this file.
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
REVOKE ALL ON SCHEMA jobqueue FROM PUBLIC;

------------------------------------------------------------------------------------------
-- Types
------------------------------------------------------------------------------------------
-- A job's state. Each value says who moves jobs into it.
CREATE TYPE jobqueue.job_state AS ENUM (
    'pending',      -- enqueue, retry/redrive, snooze, release: waiting to run (maybe scheduled or blocked)
    'processing',   -- claim: leased to a worker until lease_expires_at
    'retrying',     -- fail (retryable) or reconcile (lease expired): waiting for the next attempt
    'completed',    -- complete / complete_many: finished successfully (table job_history)
    'dead_letter',  -- fail (permanent or attempts exhausted), reconcile (lease expired on the last
                    -- attempt, or expires_at passed): failed for good (table dead_letter)
    'cancelled',    -- cancel, fail(error_class => 'cancelled'), reconcile (cancel requested and lease
                    -- expired), or a dependency failed (table job_history)
    'archived'      -- archive_dead_letters / reconcile: an old dead letter kept for inspection
);
COMMENT ON TYPE jobqueue.job_state IS 'State of a job; see docs/sql-api.md "States"';

------------------------------------------------------------------------------------------
-- Sequences
------------------------------------------------------------------------------------------
-- Job ids are shared by the hot table, the history and the dead letters: a job keeps its id
-- for life (a redriven dead letter comes back with the same id).
CREATE SEQUENCE jobqueue.job_id_seq AS bigint;
-- Lease tokens: every claim takes nextval, so tokens only grow, per job and globally. Never
-- reset, not even by redrive.
CREATE SEQUENCE jobqueue.lease_token_seq AS bigint;
COMMENT ON SEQUENCE jobqueue.lease_token_seq IS 'Fencing tokens: one nextval per claim; never reset';

------------------------------------------------------------------------------------------
-- Settings (one row per knob; the schema owner may UPDATE them)
------------------------------------------------------------------------------------------
CREATE TABLE jobqueue.setting (
    key         text PRIMARY KEY,
    value       jsonb NOT NULL,
    description text NOT NULL
);
INSERT INTO jobqueue.setting (key, value, description) VALUES
    ('max_payload_bytes', '262144', 'largest payload accepted by enqueue, in bytes of JSON text (at most 1048576)'),
    ('max_metadata_bytes', '65536', 'largest metadata object accepted by enqueue, in bytes of JSON text'),
    ('default_visibility_timeout_s', '30', 'lease length when neither the claim, the job nor the queue sets one'),
    ('max_lease_s', '43200', 'longest visibility timeout and longest total lease since claimed_at (heartbeat cap)'),
    ('default_max_attempts', '25', 'attempts allowed when neither the job, its policies nor the queue set one'),
    ('max_delay_s', '2592000', 'longest delay / run_at horizon / retry delay accepted (30 days)'),
    ('history_retention_s', '604800', 'how long completed and cancelled jobs stay in job_history (7 days)'),
    ('dead_letter_max_age_days', '14', 'dead letters older than this are archived by reconcile'),
    ('event_retention_s', '2592000', 'how long job_event audit rows are kept (30 days)'),
    ('log_retention_s', '604800', 'how long job_log lines are kept (7 days)'),
    ('worker_retention_s', '604800', 'how long rows of stopped workers are kept (7 days)'),
    ('history_partitions_ahead', '3', 'daily job_history partitions reconcile creates ahead of today'),
    ('error_message_max_chars', '8192', 'error messages longer than this are truncated'),
    ('traceback_max_chars', '32768', 'tracebacks longer than this are truncated'),
    ('log_message_max_chars', '8192', 'job log lines longer than this are truncated');

------------------------------------------------------------------------------------------
-- Queues (a row per configured queue; enqueue registers unknown queues with defaults)
------------------------------------------------------------------------------------------
CREATE TABLE jobqueue.queue (
    name                     text PRIMARY KEY
                             CHECK (name ~ '^[A-Za-z0-9_.:-]{1,128}$'),
    paused                   boolean NOT NULL DEFAULT false,
    max_size                 integer CHECK (max_size >= 1),
    visibility_timeout       interval CHECK (visibility_timeout > interval '0'),
    max_attempts             integer CHECK (max_attempts BETWEEN 1 AND 1000),
    retry_policy             jsonb,
    dead_letter_max_age_days integer CHECK (dead_letter_max_age_days >= 1),
    history_retention        interval CHECK (history_retention > interval '0'),
    aging_interval           interval CHECK (aging_interval > interval '0'),
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);

-- Retry policy per job type (set_retry_policy).
CREATE TABLE jobqueue.retry_policy (
    type       text PRIMARY KEY,
    policy     jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

------------------------------------------------------------------------------------------
-- Jobs. Three tables with the same columns in the same order:
--   job          the hot table: live jobs only (pending, retrying, processing)
--   job_history  finished jobs (completed, cancelled), partitioned by day of finished_at
--   dead_letter  jobs that failed for good (dead_letter, archived)
-- A job is in exactly one of them; a transition that changes table is one statement.
------------------------------------------------------------------------------------------
CREATE TABLE jobqueue.job (
    id                 bigint PRIMARY KEY DEFAULT nextval('jobqueue.job_id_seq'),
    queue              text NOT NULL,
    type               text NOT NULL,
    payload            jsonb NOT NULL,
    state              jobqueue.job_state NOT NULL DEFAULT 'pending',
    priority           smallint NOT NULL DEFAULT 5,      -- effective (aging raises it)
    base_priority      smallint NOT NULL DEFAULT 5,      -- as enqueued
    run_at             timestamptz NOT NULL DEFAULT now(),  -- runnable from (next attempt's time when retrying)
    attempt            integer NOT NULL DEFAULT 0,       -- attempts started (counted at claim)
    max_attempts       integer NOT NULL,
    retry_policy       jsonb,                            -- per-job override
    unique_key         text,
    expires_at         timestamptz,
    tenant_id          text,
    user_id            text,
    tags               text[],
    metadata           jsonb,
    depends_on         bigint[],
    waiting_on         integer NOT NULL DEFAULT 0,       -- dependencies not yet completed
    has_dependents     boolean NOT NULL DEFAULT false,
    timeout            interval,
    visibility_timeout interval,
    token              bigint,                           -- last lease token issued (never reset)
    worker_id          text,
    claimed_at         timestamptz,
    lease_expires_at   timestamptz,
    cancel_requested   boolean NOT NULL DEFAULT false,
    progress           numeric(5,2),
    errors             jsonb NOT NULL DEFAULT '[]',      -- last 50 failed attempts
    created_at         timestamptz NOT NULL DEFAULT now(),
    created_by         text NOT NULL DEFAULT session_user,
    finished_at        timestamptz,
    output             jsonb,
    reason             text,                             -- cancel or dead-letter reason
    archived_at        timestamptz,
    CONSTRAINT job_state_live CHECK (state IN ('pending', 'processing', 'retrying')),
    CONSTRAINT job_priority_range CHECK (priority BETWEEN 0 AND 10 AND base_priority BETWEEN 0 AND 10),
    CONSTRAINT job_payload_object CHECK (jsonb_typeof(payload) = 'object'),
    CONSTRAINT job_payload_hard_cap CHECK (pg_column_size(payload) <= 1048576),
    CONSTRAINT job_attempts CHECK (attempt >= 0 AND max_attempts BETWEEN 1 AND 1000),
    CONSTRAINT job_lease CHECK (state <> 'processing' OR (token IS NOT NULL AND lease_expires_at IS NOT NULL))
) WITH (
    -- High churn: every job is inserted, updated at claim and deleted at completion.
    -- Room on each page for HOT updates (progress, cancel flag), and vacuum early and fast.
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 500,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_limit = 2000,
    autovacuum_vacuum_cost_delay = 1
);
COMMENT ON TABLE jobqueue.job IS 'Live jobs (pending, retrying, processing); private, read jobqueue.jobs';

-- The claim index: exactly the claim's WHERE and ORDER BY, so claim is an ordered index scan
-- with no sort. Rows leave it when claimed, finished or blocked by dependencies.
CREATE INDEX job_claim_idx ON jobqueue.job (queue, priority DESC, run_at, id)
    WHERE state IN ('pending', 'retrying') AND waiting_on = 0;
-- One live job per unique key (ON CONFLICT target of enqueue).
CREATE UNIQUE INDEX job_unique_key_idx ON jobqueue.job (unique_key) WHERE unique_key IS NOT NULL;
-- Reconcile step 1: expired leases.
CREATE INDEX job_lease_idx ON jobqueue.job (lease_expires_at) WHERE state = 'processing';
-- Reconcile step 2: TTL'd jobs.
CREATE INDEX job_expires_idx ON jobqueue.job (expires_at) WHERE expires_at IS NOT NULL;
-- Dependents of a job (released on completion, cancelled on failure).
CREATE INDEX job_depends_on_idx ON jobqueue.job USING gin (depends_on) WHERE depends_on IS NOT NULL;

CREATE TABLE jobqueue.job_history (LIKE jobqueue.job INCLUDING DEFAULTS)
    PARTITION BY RANGE (finished_at);
ALTER TABLE jobqueue.job_history
    ALTER COLUMN finished_at SET NOT NULL,
    ADD CONSTRAINT job_history_state CHECK (state IN ('completed', 'cancelled'));
COMMENT ON TABLE jobqueue.job_history IS
    'Finished jobs (completed, cancelled), daily partitions by finished_at plus a DEFAULT partition; private';
CREATE INDEX job_history_id_idx ON jobqueue.job_history (id);
CREATE INDEX job_history_finished_idx ON jobqueue.job_history USING brin (finished_at);
CREATE TABLE jobqueue.job_history_default PARTITION OF jobqueue.job_history DEFAULT;

CREATE TABLE jobqueue.dead_letter (LIKE jobqueue.job INCLUDING DEFAULTS);
ALTER TABLE jobqueue.dead_letter
    ALTER COLUMN finished_at SET NOT NULL,
    ALTER COLUMN reason SET NOT NULL,
    ADD PRIMARY KEY (id),
    ADD CONSTRAINT dead_letter_state CHECK (state IN ('dead_letter', 'archived'));
COMMENT ON TABLE jobqueue.dead_letter IS
    'Jobs that failed for good, with input, every error and the reason; private, read jobqueue.dead_letters';

------------------------------------------------------------------------------------------
-- Audit trail: one row per transition, append-only
------------------------------------------------------------------------------------------
CREATE TABLE jobqueue.job_event (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     bigint NOT NULL,
    token      bigint,
    queue      text NOT NULL,
    from_state jobqueue.job_state,            -- NULL: the job was created
    to_state   jobqueue.job_state,            -- NULL: the job was deleted (purge)
    actor      text NOT NULL DEFAULT session_user,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    detail     jsonb                          -- never the payload
) WITH (autovacuum_vacuum_insert_scale_factor = 0.05);
COMMENT ON TABLE jobqueue.job_event IS
    'Append-only audit trail: one row per job state transition; UPDATE/DELETE rejected except by retention pruning';
CREATE INDEX job_event_job_idx ON jobqueue.job_event (job_id);
CREATE INDEX job_event_at_idx ON jobqueue.job_event USING brin (at);

-- Log lines a worker attaches to a running job (add_log).
CREATE TABLE jobqueue.job_log (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id  bigint NOT NULL,
    token   bigint NOT NULL,
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    message text NOT NULL
);
CREATE INDEX job_log_job_idx ON jobqueue.job_log (job_id);
CREATE INDEX job_log_at_idx ON jobqueue.job_log USING brin (at);

-- Worker processes (register_worker / worker_heartbeat / unregister_worker).
CREATE TABLE jobqueue.worker (
    worker_id    text PRIMARY KEY CHECK (length(worker_id) BETWEEN 1 AND 255),
    db_user      text NOT NULL DEFAULT session_user,
    host         text,
    pid          integer,
    queues       text[],
    concurrency  integer,
    metadata     jsonb NOT NULL DEFAULT '{}',
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    jobs_done    bigint NOT NULL DEFAULT 0,
    stopped_at   timestamptz
) WITH (fillfactor = 70);

------------------------------------------------------------------------------------------
-- Internal helpers
--
-- Two kinds: plpgsql helpers (SECURITY DEFINER like everything else), and a few pure
-- expressions (_queue_error, _type_error, _priority_of) written as SQL-standard bodies
-- without SECURITY DEFINER so that the planner inlines them into the set-based enqueue
-- (a non-inlined function call per row would cost more than the row). They read no table,
-- are parsed at creation (immune to search_path) and nobody but the owner may call them.
------------------------------------------------------------------------------------------

-- Raise a bad-argument error: SQLSTATE 22023, or 22001 when the message says something is
-- too long/large; MESSAGE '<label>: <message>'; COLUMN = field. Returns boolean so that it
-- can sit in a CASE or WHERE of a set-based statement (it never returns).
CREATE FUNCTION jobqueue._raise(field text, message text, label text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = CASE WHEN message LIKE 'longer than%' OR message LIKE 'larger than%'
                       THEN '22001' ELSE '22023' END,
        MESSAGE = coalesce(label, field) || ': ' || message,
        COLUMN = field;
END
$$;

-- A numeric setting (jobqueue.setting).
CREATE FUNCTION jobqueue._conf(key text) RETURNS numeric
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT (s.value #>> '{}')::numeric FROM jobqueue.setting s WHERE s.key = _conf.key $$;

-- Why a queue name is invalid, or NULL when it is valid.
CREATE FUNCTION jobqueue._queue_error(queue text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT CASE
        WHEN queue IS NULL OR queue = '' OR queue !~ '^[A-Za-z0-9_.:-]+$'
            THEN 'must be 1-128 characters of A-Z a-z 0-9 _ . : -'
        WHEN length(queue) > 128 THEN 'longer than 128 characters'
    END;
END;

-- Why a job type is invalid, or NULL when it is valid.
CREATE FUNCTION jobqueue._type_error(type text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT CASE
        WHEN type IS NULL OR type = '' THEN 'must be a non-empty string'
        WHEN length(type) > 255 THEN 'longer than 255 characters'
        WHEN type ~ '[[:cntrl:]]' THEN 'must not contain control characters'
    END;
END;

-- A priority given as a JSON number (0..10, integral) or name (low, normal, high, critical,
-- any case; or a digit string); NULL when invalid. JSON null / SQL NULL mean normal (5).
CREATE FUNCTION jobqueue._priority_of(value jsonb) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT CASE jsonb_typeof(value)
        WHEN 'number' THEN CASE
            WHEN value::numeric BETWEEN 0 AND 10 AND value::numeric = trunc(value::numeric)
                THEN value::numeric::integer END
        WHEN 'string' THEN CASE lower(value #>> '{}')
            WHEN 'low' THEN 0 WHEN 'normal' THEN 5 WHEN 'high' THEN 8 WHEN 'critical' THEN 10
            WHEN '0' THEN 0 WHEN '1' THEN 1 WHEN '2' THEN 2 WHEN '3' THEN 3 WHEN '4' THEN 4
            WHEN '5' THEN 5 WHEN '6' THEN 6 WHEN '7' THEN 7 WHEN '8' THEN 8 WHEN '9' THEN 9
            WHEN '10' THEN 10 END
        WHEN 'null' THEN 5
        ELSE CASE WHEN value IS NULL THEN 5 END
    END;
END;

-- Seconds from a JSON duration: a number of seconds or a PostgreSQL interval string
-- ('5 minutes', 'PT5M'); NULL when it is neither.
CREATE FUNCTION jobqueue._seconds_of(value jsonb) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(value) = 'number' THEN
        RETURN value::numeric;
    ELSIF jsonb_typeof(value) = 'string' THEN
        RETURN extract(epoch FROM (value #>> '{}')::interval);
    END IF;
    RETURN NULL;
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow
             OR invalid_parameter_value OR numeric_value_out_of_range THEN
    RETURN NULL;
END
$$;

-- A timestamp from a JSON string with an explicit zone (Z or +hh[:mm]); NULL otherwise.
-- Naive timestamps are refused: they would be read in the session's TimeZone.
CREATE FUNCTION jobqueue._timestamptz_of(value jsonb) RETURNS timestamptz
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    t text := value #>> '{}';
    r timestamptz;
BEGIN
    IF jsonb_typeof(value) <> 'string' OR t !~* '^\d{4}-\d{2}-\d{2}[T ].*(z|[+-]\d{2}(:?\d{2}){0,2})$' THEN
        RETURN NULL;
    END IF;
    r := t::timestamptz;
    RETURN CASE WHEN isfinite(r) THEN r END;
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR invalid_parameter_value THEN
    RETURN NULL;
END
$$;

-- Raise unless a duration is within (0 or more, or more than 0) .. max.
CREATE FUNCTION jobqueue._check_duration(field text, value interval, allow_zero boolean, max_s numeric,
                                         label text DEFAULT NULL)
RETURNS interval
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    s numeric := extract(epoch FROM value);
BEGIN
    IF value IS NULL OR s < 0 OR (s = 0 AND NOT allow_zero) OR s > max_s THEN
        PERFORM jobqueue._raise(field,
            format('must be %s and at most %s', CASE WHEN allow_zero THEN 'at least 0' ELSE 'more than 0' END,
                   jobqueue._human_seconds(max_s)), label);
    END IF;
    RETURN value;
END
$$;

-- '12 hours', '30 days', '45 seconds': for error messages.
CREATE FUNCTION jobqueue._human_seconds(s numeric) RETURNS text
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT CASE
        WHEN s % 86400 = 0 THEN (s / 86400)::bigint || ' days'
        WHEN s % 3600 = 0 THEN (s / 3600)::bigint || ' hours'
        WHEN s % 60 = 0 THEN (s / 60)::bigint || ' minutes'
        ELSE s::text || ' seconds' END
$$;

-- Raise unless a queue name is valid; returns it.
CREATE FUNCTION jobqueue._check_queue(queue text, field text DEFAULT 'queue') RETURNS text
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    problem text := jobqueue._queue_error(queue);
BEGIN
    IF problem IS NOT NULL THEN
        PERFORM jobqueue._raise(field, problem);
    END IF;
    RETURN queue;
END
$$;

-- Raise unless a job type is valid; returns it.
CREATE FUNCTION jobqueue._check_type(type text, field text DEFAULT 'type') RETURNS text
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    problem text := jobqueue._type_error(type);
BEGIN
    IF problem IS NOT NULL THEN
        PERFORM jobqueue._raise(field, problem);
    END IF;
    RETURN type;
END
$$;

-- Why a retry policy is malformed, or NULL when it is valid. See retry_delay for the keys.
CREATE FUNCTION jobqueue._policy_error(policy jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    k text;
    v jsonb;
    max_s constant numeric := 2592000;  -- 30 days
BEGIN
    IF policy IS NULL OR jsonb_typeof(policy) = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(policy) <> 'object' THEN
        RETURN 'must be a JSON object';
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(policy) LOOP
        CASE k
        WHEN 'strategy' THEN
            IF jsonb_typeof(v) <> 'string' OR (v #>> '{}') NOT IN ('exponential', 'linear', 'fixed', 'custom') THEN
                RETURN 'strategy must be one of exponential, linear, fixed, custom';
            END IF;
        WHEN 'initial_delay', 'increment', 'max_delay' THEN
            IF jsonb_typeof(v) <> 'number' OR v::numeric < 0 OR v::numeric > max_s THEN
                RETURN format('%s must be a number of seconds between 0 and %s', k, max_s);
            END IF;
        WHEN 'multiplier' THEN
            IF jsonb_typeof(v) <> 'number' OR v::numeric < 1 OR v::numeric > 100 THEN
                RETURN 'multiplier must be a number between 1 and 100';
            END IF;
        WHEN 'delays' THEN
            IF jsonb_typeof(v) <> 'array' OR jsonb_array_length(v) NOT BETWEEN 1 AND 100
               OR EXISTS (SELECT 1 FROM jsonb_array_elements(v) d
                          WHERE jsonb_typeof(d) <> 'number' OR d::numeric < 0 OR d::numeric > max_s) THEN
                RETURN format('delays must be a list of 1 to 100 numbers of seconds between 0 and %s', max_s);
            END IF;
        WHEN 'jitter' THEN
            IF jsonb_typeof(v) <> 'boolean' THEN
                RETURN 'jitter must be true or false';
            END IF;
        WHEN 'jitter_ratio' THEN
            IF jsonb_typeof(v) <> 'number' OR v::numeric < 0 OR v::numeric > 1 THEN
                RETURN 'jitter_ratio must be a number between 0 and 1';
            END IF;
        WHEN 'max_attempts' THEN
            IF jsonb_typeof(v) <> 'number' OR v::numeric <> trunc(v::numeric) OR v::numeric NOT BETWEEN 1 AND 1000 THEN
                RETURN 'max_attempts must be an integer between 1 and 1000';
            END IF;
        ELSE
            RETURN format('unknown key "%s" (known: strategy, initial_delay, multiplier, increment, '
                          'max_delay, delays, jitter, jitter_ratio, max_attempts)', k);
        END CASE;
    END LOOP;
    IF policy->>'strategy' = 'custom' AND NOT policy ? 'delays' THEN
        RETURN 'delays is required when strategy is custom';
    END IF;
    RETURN NULL;
END
$$;

-- Raise unless an error class is known; returns it.
CREATE FUNCTION jobqueue._check_error_class(error_class text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    IF error_class IS NULL OR error_class NOT IN
       ('transient', 'timeout', 'system', 'validation', 'business', 'permanent', 'cancelled') THEN
        PERFORM jobqueue._raise('error_class',
            'must be one of transient, timeout, system, validation, business, permanent, cancelled');
    END IF;
    RETURN error_class;
END
$$;

-- Argument checks of retry_delay (kept out of its pure body).
CREATE FUNCTION jobqueue._check_retry_delay_args(policy jsonb, attempt integer, error_class text,
                                                 jitter_unit double precision)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    problem text := jobqueue._policy_error(policy);
BEGIN
    IF problem IS NOT NULL THEN
        PERFORM jobqueue._raise('retry_policy', problem);
    END IF;
    IF attempt IS NULL OR attempt < 1 THEN
        PERFORM jobqueue._raise('attempt', 'must be at least 1');
    END IF;
    PERFORM jobqueue._check_error_class(error_class);
    IF jitter_unit < 0 OR jitter_unit >= 1 OR jitter_unit = 'NaN' THEN
        PERFORM jobqueue._raise('jitter_unit', 'must be at least 0 and less than 1');
    END IF;
    RETURN true;
END
$$;

------------------------------------------------------------------------------------------
-- Public: priority names, schema version, retry delay
------------------------------------------------------------------------------------------
CREATE FUNCTION jobqueue.schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT 1 $$;
COMMENT ON FUNCTION jobqueue.schema_version() IS 'The jobqueue schema version (1); clients check it at startup';

CREATE FUNCTION jobqueue.priority(name text) RETURNS integer
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    p integer := jobqueue._priority_of(to_jsonb(name));
BEGIN
    IF p IS NULL OR name IS NULL THEN
        PERFORM jobqueue._raise('priority', 'must be between 0 and 10 or one of low, normal, high, critical');
    END IF;
    RETURN p;
END
$$;
COMMENT ON FUNCTION jobqueue.priority(text) IS
    'Priority number of a name: low 0, normal 5, high 8, critical 10 (higher runs first). 22023 for others.';

CREATE FUNCTION jobqueue.retry_delay(policy jsonb, attempt integer, error_class text DEFAULT 'transient',
                                     jitter_unit double precision DEFAULT NULL)
RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT CASE
        WHEN error_class IN ('validation', 'business', 'permanent', 'cancelled') THEN NULL
        ELSE make_interval(secs => CASE
            WHEN c.jitter THEN least(c.capped * (1 + c.ratio * (2 * c.u - 1)), c.cap)
            ELSE c.capped END)
    END
    FROM (
        SELECT least(b.base * CASE WHEN error_class = 'timeout' THEN 2 ELSE 1 END, b.cap) AS capped,
               b.cap, b.jitter, b.ratio, b.u
        FROM (
            SELECT CASE a.strategy
                       WHEN 'exponential' THEN CASE
                           WHEN a.multiplier = 1 THEN a.initial
                           ELSE a.initial * power(a.multiplier, least(a.n - 1, floor(600 / ln(a.multiplier)))) END
                       WHEN 'linear' THEN a.initial + a.increment * (a.n - 1)
                       WHEN 'fixed' THEN a.initial
                       WHEN 'custom' THEN (a.p->'delays'->>(least(attempt, jsonb_array_length(a.p->'delays')) - 1))::float8
                   END AS base,
                   coalesce((a.p->>'max_delay')::float8,
                            CASE WHEN a.strategy IN ('exponential', 'linear') THEN 3600 ELSE 2592000 END) AS cap,
                   coalesce((a.p->>'jitter')::boolean, true) AS jitter,
                   coalesce((a.p->>'jitter_ratio')::float8, 0.1) AS ratio,
                   coalesce(jitter_unit, 0.5) AS u
            FROM (
                SELECT p.p,
                       coalesce(p.p->>'strategy', 'exponential') AS strategy,
                       coalesce((p.p->>'initial_delay')::float8, 1) AS initial,
                       coalesce((p.p->>'multiplier')::float8, 2) AS multiplier,
                       coalesce((p.p->>'increment')::float8, (p.p->>'initial_delay')::float8, 1) AS increment,
                       attempt::float8 AS n
                FROM (SELECT coalesce(policy, '{}'::jsonb) AS p) p
                WHERE jobqueue._check_retry_delay_args(policy, attempt, error_class, jitter_unit)
            ) a
        ) b
    ) c
$$;
COMMENT ON FUNCTION jobqueue.retry_delay(jsonb, integer, text, double precision) IS $c$
Delay before the next attempt after attempt n (>= 1) failed with error_class, under a retry policy.
Pure: the same arguments always give the same result (jitter comes from jitter_unit in [0,1);
NULL means 0.5, i.e. no jitter offset). Policy keys (all optional; JSON numbers are seconds):
strategy (exponential | linear | fixed | custom; default exponential), initial_delay (1),
multiplier (2), increment (= initial_delay), delays (custom: list, the last repeats),
max_delay (3600 for exponential and linear; 2592000 = 30 days for fixed and custom),
jitter (true), jitter_ratio (0.1), max_attempts (read by enqueue, not here).
Formula:
  exponential: base = initial_delay * multiplier^(n-1)
  linear:      base = initial_delay + increment * (n-1)
  fixed:       base = initial_delay
  custom:      base = delays[min(n, len(delays))]
  base = 2 * base when error_class = 'timeout'
  b = min(base, max_delay)
  delay = jitter ? min(b * (1 + jitter_ratio * (2 * jitter_unit - 1)), max_delay) : b
so a jittered delay lies in [b * (1 - jitter_ratio), min(max_delay, b * (1 + jitter_ratio))].
NULL for the classes that never retry (validation, business, permanent, cancelled).
22023 for a malformed policy, attempt < 1, an unknown error_class or jitter_unit outside [0,1).$c$;

------------------------------------------------------------------------------------------
-- Audit trail guard: job_event is append-only. UPDATE, DELETE and TRUNCATE are refused
-- unless the retention step is running: it sets the transaction-local flag
-- jobqueue.pruning and runs as the schema owner. This trigger function is SECURITY
-- INVOKER on purpose: it must see the caller's current_user.
------------------------------------------------------------------------------------------
CREATE FUNCTION jobqueue._job_event_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND current_setting('jobqueue.pruning', true) = 'on'
       AND current_user = (SELECT n.nspowner::regrole::text FROM pg_catalog.pg_namespace n
                           WHERE n.nspname = 'jobqueue') THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION USING ERRCODE = '42501',
        MESSAGE = format('jobqueue.%s is append-only: %s refused', TG_TABLE_NAME, TG_OP);
END
$$;
CREATE TRIGGER job_event_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON jobqueue.job_event
    FOR EACH STATEMENT EXECUTE FUNCTION jobqueue._job_event_append_only();

------------------------------------------------------------------------------------------
-- Enqueue
--
-- One set-based core (_enqueue) serves enqueue (one job, typed arguments turned into a JSON
-- object) and enqueue_many (a JSON array). Every element is parsed and validated in the
-- same INSERT ... SELECT that writes it, so a bad element aborts the statement and nothing
-- is written; errors name the element (jobs[i].field) and the field (COLUMN).
------------------------------------------------------------------------------------------
CREATE FUNCTION jobqueue._enqueue(jobs jsonb, single boolean) RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    known constant text[] := ARRAY['type', 'payload', 'queue', 'priority', 'run_at', 'delay', 'max_attempts',
        'retry_policy', 'unique_key', 'expires_at', 'tenant_id', 'user_id', 'tags', 'metadata', 'depends_on',
        'timeout', 'visibility_timeout'];
    max_jobs constant integer := 100000;
    n integer;
    max_payload numeric := jobqueue._conf('max_payload_bytes');
    max_meta numeric := jobqueue._conf('max_metadata_bytes');
    max_delay numeric := jobqueue._conf('max_delay_s');
    max_lease numeric := jobqueue._conf('max_lease_s');
    default_attempts integer := jobqueue._conf('default_max_attempts');
    dep_idx integer[];        -- per element with dependencies: its index,
    dep_wait integer[];       -- how many dependencies are still live,
    dep_failed boolean[];     -- whether one of them already failed for good
    dep_ids bigint[];
    bad record;
    ids bigint[];             -- the id allotted to each element (index + 1)
    result bigint[];          -- the id returned for each element
    todo integer[];           -- elements still to insert (NULL: all)
    ins_ids bigint[];
    ins_queues text[];
    notify_queues text[];
    got bigint[];
    lost integer[];
    rounds integer := 0;
BEGIN
    IF jobs IS NULL OR jsonb_typeof(jobs) <> 'array' OR jsonb_array_length(jobs) = 0 THEN
        PERFORM jobqueue._raise('jobs', 'must be a non-empty JSON array of job objects');
    END IF;
    n := jsonb_array_length(jobs);
    IF n > max_jobs THEN
        PERFORM jobqueue._raise('jobs', format('longer than %s jobs', max_jobs));
    END IF;

    -- Dependencies. Lock every live prerequisite (in id order) and flag it, so that its
    -- completion, which must delete the row, waits for this transaction and then releases
    -- the new dependents in a later statement that sees them. Then count what is still
    -- live; a prerequisite already dead-lettered or cancelled makes the job born cancelled.
    IF jsonb_path_exists(jobs, '$[*].depends_on ? (@ != null)') THEN
        WITH d AS (
            SELECT DISTINCT (t.o - 1)::integer AS idx, x.v::numeric::bigint AS dep
            FROM jsonb_array_elements(jobs) WITH ORDINALITY AS t(e, o)
            CROSS JOIN LATERAL jsonb_array_elements(
                CASE WHEN jsonb_typeof(t.e->'depends_on') = 'array' THEN t.e->'depends_on' ELSE '[]' END) AS x(v)
            WHERE jsonb_typeof(x.v) = 'number' AND x.v::numeric = trunc(x.v::numeric)
              AND x.v::numeric BETWEEN 1 AND 9223372036854775807
        )
        SELECT array_agg(d.idx), array_agg(d.dep) INTO dep_idx, dep_ids FROM d;
        PERFORM 1 FROM jobqueue.job j WHERE j.id = ANY (dep_ids) ORDER BY j.id FOR NO KEY UPDATE;
        UPDATE jobqueue.job j SET has_dependents = true WHERE j.id = ANY (dep_ids) AND NOT j.has_dependents;
        SELECT x.idx, x.dep INTO bad
        FROM unnest(dep_idx, dep_ids) AS x(idx, dep)
        WHERE NOT EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.id = x.dep)
          AND NOT EXISTS (SELECT 1 FROM jobqueue.job_history h WHERE h.id = x.dep)
          AND NOT EXISTS (SELECT 1 FROM jobqueue.dead_letter l WHERE l.id = x.dep)
        ORDER BY x.idx, x.dep LIMIT 1;
        IF FOUND THEN
            PERFORM jobqueue._raise('depends_on', format('unknown job id %s', bad.dep),
                CASE WHEN single THEN 'depends_on' ELSE format('jobs[%s].depends_on', bad.idx) END);
        END IF;
        SELECT array_agg(s.idx), array_agg(s.wait), array_agg(s.failed)
        INTO dep_idx, dep_wait, dep_failed
        FROM (
            SELECT x.idx,
                   count(*) FILTER (WHERE EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.id = x.dep))::integer AS wait,
                   bool_or(EXISTS (SELECT 1 FROM jobqueue.dead_letter l WHERE l.id = x.dep)
                           OR EXISTS (SELECT 1 FROM jobqueue.job_history h
                                      WHERE h.id = x.dep AND h.state = 'cancelled')) AS failed
            FROM unnest(dep_idx, dep_ids) AS x(idx, dep)
            GROUP BY x.idx
        ) s;
    END IF;

    ids := ARRAY(SELECT nextval('jobqueue.job_id_seq') FROM generate_series(1, n));
    result := array_fill(NULL::bigint, ARRAY[n]);
    LOOP
        rounds := rounds + 1;
        WITH ins AS (
            INSERT INTO jobqueue.job AS j (id, queue, type, payload, state, priority, base_priority, run_at,
                max_attempts, retry_policy, unique_key, expires_at, tenant_id, user_id, tags, metadata,
                depends_on, waiting_on, timeout, visibility_timeout)
            SELECT ids[c.idx + 1], c.queue, c.type, c.payload, 'pending', c.priority, c.priority,
                   coalesce(c.run_at, now() + make_interval(secs => c.delay_s), now()),
                   coalesce(c.max_attempts, (c.retry_policy->>'max_attempts')::integer,
                            (tp.policy->>'max_attempts')::integer, q.max_attempts,
                            (q.retry_policy->>'max_attempts')::integer, default_attempts),
                   c.retry_policy, c.unique_key, c.expires_at, c.tenant_id, c.user_id, c.tags, c.metadata,
                   c.depends_on,
                   -- a job whose dependency already failed is held (+1) and cancelled below
                   coalesce(dp.wait, 0) + CASE WHEN dp.failed THEN 1 ELSE 0 END,
                   make_interval(secs => c.timeout_s), make_interval(secs => c.vt_s)
            FROM (
                SELECT b.*,
                    CASE
                    WHEN NOT b.is_object THEN ARRAY['jobs', 'must be a JSON object']
                    WHEN b.extra_key IS NOT NULL THEN ARRAY['jobs', format('unknown key "%s"', b.extra_key)]
                    WHEN jobqueue._type_error(b.type) IS NOT NULL THEN ARRAY['type', jobqueue._type_error(b.type)]
                    WHEN jsonb_typeof(b.payload) IS DISTINCT FROM 'object' THEN ARRAY['payload', 'must be a JSON object']
                    WHEN octet_length(b.payload::text) > max_payload
                        THEN ARRAY['payload', format('larger than %s bytes', max_payload)]
                    WHEN jobqueue._queue_error(b.queue) IS NOT NULL THEN ARRAY['queue', jobqueue._queue_error(b.queue)]
                    WHEN b.priority IS NULL
                        THEN ARRAY['priority', 'must be between 0 and 10 or one of low, normal, high, critical']
                    WHEN b.run_at_j IS NOT NULL AND b.delay_j IS NOT NULL
                        THEN ARRAY['run_at', 'give run_at or delay, not both']
                    WHEN b.run_at_j IS NOT NULL AND b.run_at IS NULL
                        THEN ARRAY['run_at', 'must be a timestamp with a time zone, e.g. 2030-01-31T12:00:00Z']
                    WHEN b.run_at > now() + make_interval(secs => max_delay)
                        THEN ARRAY['run_at', format('must be at most %s ahead', jobqueue._human_seconds(max_delay))]
                    WHEN b.delay_j IS NOT NULL AND (b.delay_s IS NULL OR b.delay_s < 0 OR b.delay_s > max_delay)
                        THEN ARRAY['delay', format('must be between 0 and %s', jobqueue._human_seconds(max_delay))]
                    WHEN b.max_attempts_j IS NOT NULL AND b.max_attempts IS NULL
                        THEN ARRAY['max_attempts', 'must be an integer between 1 and 1000']
                    WHEN b.policy_error IS NOT NULL THEN ARRAY['retry_policy', b.policy_error]
                    WHEN b.unique_key_j IS NOT NULL AND (jsonb_typeof(b.unique_key_j) <> 'string' OR b.unique_key = '')
                        THEN ARRAY['unique_key', 'must be a non-empty string']
                    WHEN length(b.unique_key) > 255 THEN ARRAY['unique_key', 'longer than 255 characters']
                    WHEN b.expires_at_j IS NOT NULL AND b.expires_at IS NULL
                        THEN ARRAY['expires_at', 'must be a timestamp with a time zone, e.g. 2030-01-31T12:00:00Z']
                    WHEN b.expires_at <= now() THEN ARRAY['expires_at', 'must be in the future']
                    WHEN b.expires_at <= coalesce(b.run_at, now() + make_interval(secs => b.delay_s))
                        THEN ARRAY['expires_at', 'must be later than the run time (run_at or now + delay)']
                    WHEN b.tenant_id_j IS NOT NULL AND jsonb_typeof(b.tenant_id_j) <> 'string'
                        THEN ARRAY['tenant_id', 'must be a string']
                    WHEN length(b.tenant_id) > 255 THEN ARRAY['tenant_id', 'longer than 255 characters']
                    WHEN b.user_id_j IS NOT NULL AND jsonb_typeof(b.user_id_j) <> 'string'
                        THEN ARRAY['user_id', 'must be a string']
                    WHEN length(b.user_id) > 255 THEN ARRAY['user_id', 'longer than 255 characters']
                    WHEN b.tags_j IS NOT NULL AND jsonb_typeof(b.tags_j) <> 'array'
                        THEN ARRAY['tags', 'must be a list of strings']
                    WHEN jsonb_array_length(b.tags_j) > 32 THEN ARRAY['tags', 'too many tags (at most 32)']
                    WHEN b.tags_j IS NOT NULL AND b.tags IS NULL
                        THEN ARRAY['tags', 'each tag must be a string of 1-100 characters without control characters']
                    WHEN b.metadata_j IS NOT NULL AND jsonb_typeof(b.metadata_j) <> 'object'
                        THEN ARRAY['metadata', 'must be a JSON object']
                    WHEN octet_length(b.metadata_j::text) > max_meta
                        THEN ARRAY['metadata', format('larger than %s bytes', max_meta)]
                    WHEN b.depends_on_j IS NOT NULL AND b.depends_on IS NULL
                        THEN ARRAY['depends_on', 'must be a list of at most 100 job ids']
                    WHEN b.timeout_j IS NOT NULL AND (b.timeout_s IS NULL OR b.timeout_s <= 0 OR b.timeout_s > max_lease)
                        THEN ARRAY['timeout', format('must be more than 0 and at most %s', jobqueue._human_seconds(max_lease))]
                    WHEN b.vt_j IS NOT NULL AND (b.vt_s IS NULL OR b.vt_s <= 0 OR b.vt_s > max_lease)
                        THEN ARRAY['visibility_timeout',
                                   format('must be more than 0 and at most %s', jobqueue._human_seconds(max_lease))]
                    END AS err
                FROM (
                    SELECT a.*,
                        CASE WHEN a.run_at_j IS NOT NULL THEN jobqueue._timestamptz_of(a.run_at_j) END AS run_at,
                        CASE WHEN a.delay_j IS NOT NULL THEN jobqueue._seconds_of(a.delay_j) END AS delay_s,
                        CASE WHEN jsonb_typeof(a.max_attempts_j) = 'number'
                                  AND a.max_attempts_j::numeric = trunc(a.max_attempts_j::numeric)
                                  AND a.max_attempts_j::numeric BETWEEN 1 AND 1000
                             THEN a.max_attempts_j::numeric::integer END AS max_attempts,
                        CASE WHEN a.retry_policy IS NOT NULL THEN jobqueue._policy_error(a.retry_policy) END AS policy_error,
                        a.unique_key_j #>> '{}' AS unique_key,
                        CASE WHEN a.expires_at_j IS NOT NULL THEN jobqueue._timestamptz_of(a.expires_at_j) END AS expires_at,
                        CASE WHEN jsonb_typeof(a.tenant_id_j) = 'string' THEN a.tenant_id_j #>> '{}' END AS tenant_id,
                        CASE WHEN jsonb_typeof(a.user_id_j) = 'string' THEN a.user_id_j #>> '{}' END AS user_id,
                        CASE WHEN jsonb_typeof(a.tags_j) = 'array' AND NOT EXISTS (
                                  SELECT 1 FROM jsonb_array_elements(a.tags_j) AS g(t)
                                  WHERE jsonb_typeof(g.t) <> 'string' OR length(g.t #>> '{}') NOT BETWEEN 1 AND 100
                                     OR (g.t #>> '{}') ~ '[[:cntrl:]]')
                             THEN ARRAY(SELECT jsonb_array_elements_text(a.tags_j)) END AS tags,
                        CASE WHEN jsonb_typeof(a.metadata_j) = 'object' THEN a.metadata_j END AS metadata,
                        CASE WHEN jsonb_typeof(a.depends_on_j) = 'array' AND jsonb_array_length(a.depends_on_j) <= 100
                                  AND NOT EXISTS (
                                      SELECT 1 FROM jsonb_array_elements(a.depends_on_j) AS g(d)
                                      WHERE jsonb_typeof(g.d) <> 'number' OR g.d::numeric <> trunc(g.d::numeric)
                                         OR g.d::numeric NOT BETWEEN 1 AND 9223372036854775807)
                             THEN ARRAY(SELECT DISTINCT g.d::numeric::bigint
                                        FROM jsonb_array_elements(a.depends_on_j) AS g(d) ORDER BY 1) END AS depends_on,
                        CASE WHEN a.timeout_j IS NOT NULL THEN jobqueue._seconds_of(a.timeout_j) END AS timeout_s,
                        CASE WHEN a.vt_j IS NOT NULL THEN jobqueue._seconds_of(a.vt_j) END AS vt_s
                    FROM (
                        SELECT s.idx,
                            jsonb_typeof(s.e) = 'object' AS is_object,
                            CASE WHEN jsonb_typeof(s.e) = 'object' AND s.e - known <> '{}'
                                 THEN (SELECT min(k) FROM jsonb_object_keys(s.e - known) AS k) END AS extra_key,
                            CASE WHEN jsonb_typeof(s.e->'type') = 'string' THEN s.e->>'type' END AS type,
                            CASE WHEN s.e ? 'payload' THEN s.e->'payload' ELSE '{}'::jsonb END AS payload,
                            CASE WHEN NOT s.e ? 'queue' THEN 'default'
                                 WHEN jsonb_typeof(s.e->'queue') = 'string' THEN s.e->>'queue' END AS queue,
                            jobqueue._priority_of(s.e->'priority') AS priority,
                            nullif(s.e->'run_at', 'null') AS run_at_j,
                            nullif(s.e->'delay', 'null') AS delay_j,
                            nullif(s.e->'max_attempts', 'null') AS max_attempts_j,
                            nullif(s.e->'retry_policy', 'null') AS retry_policy,
                            nullif(s.e->'unique_key', 'null') AS unique_key_j,
                            nullif(s.e->'expires_at', 'null') AS expires_at_j,
                            nullif(s.e->'tenant_id', 'null') AS tenant_id_j,
                            nullif(s.e->'user_id', 'null') AS user_id_j,
                            nullif(s.e->'tags', 'null') AS tags_j,
                            nullif(s.e->'metadata', 'null') AS metadata_j,
                            nullif(s.e->'depends_on', 'null') AS depends_on_j,
                            nullif(s.e->'timeout', 'null') AS timeout_j,
                            nullif(s.e->'visibility_timeout', 'null') AS vt_j
                        FROM (SELECT (t.o - 1)::integer AS idx, t.e
                              FROM jsonb_array_elements(jobs) WITH ORDINALITY AS t(e, o)) AS s
                        WHERE todo IS NULL OR s.idx = ANY (todo)
                    ) a
                ) b
            ) c
            LEFT JOIN jobqueue.queue q ON q.name = c.queue
            LEFT JOIN jobqueue.retry_policy tp ON tp.type = c.type
            LEFT JOIN unnest(dep_idx, dep_wait, dep_failed) AS dp(idx, wait, failed) ON dp.idx = c.idx
            WHERE c.err IS NULL
               OR jobqueue._raise(c.err[1], c.err[2],
                      CASE WHEN single THEN c.err[1]
                           WHEN c.err[1] = 'jobs' THEN format('jobs[%s]', c.idx)
                           ELSE format('jobs[%s].%s', c.idx, c.err[1]) END)
            ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
            RETURNING j.id, j.queue, j.waiting_on = 0 AND j.run_at <= now() AS runnable
        ), ev AS (
            INSERT INTO jobqueue.job_event (job_id, queue, from_state, to_state)
            SELECT i.id, i.queue, NULL, 'pending' FROM ins i
        )
        SELECT array_agg(i.id), array_agg(DISTINCT i.queue), array_agg(DISTINCT i.queue) FILTER (WHERE i.runnable)
        INTO ins_ids, ins_queues, notify_queues
        FROM ins i;

        IF ins_queues IS NOT NULL THEN
            INSERT INTO jobqueue.queue (name)
            SELECT x FROM unnest(ins_queues) AS x
            WHERE NOT EXISTS (SELECT 1 FROM jobqueue.queue q WHERE q.name = x)
            ON CONFLICT DO NOTHING;
            PERFORM pg_notify('jobqueue', x) FROM unnest(notify_queues) AS x
            WHERE NOT EXISTS (SELECT 1 FROM jobqueue.queue q WHERE q.name = x AND q.paused);
        END IF;
        IF todo IS NULL AND coalesce(array_length(ins_ids, 1), 0) = n THEN
            result := ids;  -- everything inserted (the common case)
            EXIT;
        END IF;
        -- Elements not inserted lost a unique_key conflict: answer with the live job's id.
        -- If that job finished in between (no live holder any more), insert them again.
        SELECT array_agg(coalesce(m.id, l.id) ORDER BY g.idx),
               array_agg(g.idx ORDER BY g.idx) FILTER (WHERE m.id IS NULL AND l.id IS NULL)
        INTO got, lost
        FROM unnest(coalesce(todo, ARRAY(SELECT generate_series(0, n - 1)))) AS g(idx)
        LEFT JOIN unnest(ins_ids) AS m(id) ON m.id = ids[g.idx + 1]
        LEFT JOIN LATERAL (
            SELECT j.id FROM jobqueue.job j
            WHERE m.id IS NULL AND j.unique_key = jobs->g.idx->>'unique_key'
        ) AS l ON true;
        result := ARRAY(
            SELECT coalesce(t.v, r.v)
            FROM unnest(result) WITH ORDINALITY AS r(v, o)
            LEFT JOIN unnest(coalesce(todo, ARRAY(SELECT generate_series(0, n - 1))), got) AS t(idx, v)
                   ON t.idx = r.o - 1
            ORDER BY r.o);
        EXIT WHEN lost IS NULL;
        IF rounds >= 20 THEN
            RAISE EXCEPTION USING ERRCODE = '40001',
                MESSAGE = 'unique_key: the live job holding this key kept finishing during enqueue; retry';
        END IF;
        todo := lost;
        -- fresh ids for the elements tried again (few: only lost races)
        ids := ARRAY(
            SELECT CASE WHEN r.o - 1 = ANY (todo) THEN nextval('jobqueue.job_id_seq') ELSE r.v END
            FROM unnest(ids) WITH ORDINALITY AS r(v, o) ORDER BY r.o);
    END LOOP;
    -- Jobs born with a dependency that already failed: cancel them (dependency_failed).
    IF dep_failed IS NOT NULL AND true = ANY (dep_failed) THEN
        PERFORM jobqueue._finish_waiting(
            ARRAY(SELECT ids[x.idx + 1] FROM unnest(dep_idx, dep_failed) AS x(idx, failed)
                  WHERE x.failed AND ids[x.idx + 1] = result[x.idx + 1]),
            'cancelled', 'dependency_failed');
    END IF;
    RETURN QUERY SELECT r FROM unnest(result) AS r;
END
$$;

-- Move waiting jobs (pending or retrying) out of the hot table: to job_history as
-- 'cancelled', or to dead_letter with a reason. Then cancel their dependents with reason
-- dependency_failed, level by level (one statement per level, not per job). Rows are locked
-- in id order and the state is re-asserted, so a job claimed meanwhile is left alone.
-- (job, job_history and dead_letter have the same columns in the same order, so a row of
-- one is inserted into another by position; jsonb_populate_record patches the changed
-- columns. A later migration must add columns to all three tables in the same order.)
CREATE FUNCTION jobqueue._finish_waiting(ids bigint[], to_state jobqueue.job_state, reason text,
                                         detail jsonb DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    moved bigint[];
    total integer := 0;
    patch jsonb;
BEGIN
    WHILE ids IS NOT NULL AND cardinality(ids) > 0 LOOP
        patch := jsonb_build_object('state', to_state, 'finished_at', now(), 'reason', reason,
                                    'lease_expires_at', NULL, 'waiting_on', 0);
        WITH c AS (
            SELECT j.id FROM jobqueue.job j
            WHERE j.id = ANY (ids) AND j.state IN ('pending', 'retrying')
            ORDER BY j.id FOR UPDATE
        ), d AS (
            DELETE FROM jobqueue.job j USING c
            WHERE j.id = c.id AND j.state IN ('pending', 'retrying')
            RETURNING j AS r
        ), h AS (
            INSERT INTO jobqueue.job_history
            SELECT p.* FROM d, jsonb_populate_record(d.r, patch) AS p WHERE to_state = 'cancelled'
        ), l AS (
            INSERT INTO jobqueue.dead_letter
            SELECT p.* FROM d, jsonb_populate_record(d.r, patch) AS p WHERE to_state = 'dead_letter'
        ), ev AS (
            INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state, detail)
            SELECT (d.r).id, (d.r).token, (d.r).queue, (d.r).state, to_state,
                   jsonb_build_object('reason', reason) || coalesce(detail, '{}')
            FROM d
        )
        SELECT array_agg((d.r).id) FILTER (WHERE (d.r).has_dependents), count(*) INTO moved, total FROM d;
        -- next level: the dependents of what was just moved
        ids := ARRAY(SELECT j.id FROM jobqueue.job j
                     WHERE j.depends_on && moved AND j.state IN ('pending', 'retrying'));
        to_state := 'cancelled';
        reason := 'dependency_failed';
        detail := NULL;
    END LOOP;
    RETURN total;
END
$$;

CREATE FUNCTION jobqueue.enqueue(
    type text,
    payload jsonb DEFAULT '{}',
    queue text DEFAULT 'default',
    priority anycompatible DEFAULT 5,
    run_at timestamptz DEFAULT NULL,
    delay interval DEFAULT NULL,
    max_attempts integer DEFAULT NULL,
    retry_policy jsonb DEFAULT NULL,
    unique_key text DEFAULT NULL,
    expires_at timestamptz DEFAULT NULL,
    tenant_id text DEFAULT NULL,
    user_id text DEFAULT NULL,
    tags text[] DEFAULT NULL,
    metadata jsonb DEFAULT NULL,
    depends_on bigint[] DEFAULT NULL,
    timeout interval DEFAULT NULL,
    visibility_timeout interval DEFAULT NULL
) RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT id FROM jobqueue._enqueue(jsonb_build_array(jsonb_build_object(
        'type', enqueue.type, 'payload', enqueue.payload, 'queue', enqueue.queue,
        'priority', to_jsonb(enqueue.priority), 'run_at', enqueue.run_at,
        'delay', extract(epoch FROM enqueue.delay), 'max_attempts', enqueue.max_attempts,
        'retry_policy', enqueue.retry_policy, 'unique_key', enqueue.unique_key,
        'expires_at', enqueue.expires_at, 'tenant_id', enqueue.tenant_id, 'user_id', enqueue.user_id,
        'tags', enqueue.tags, 'metadata', enqueue.metadata, 'depends_on', enqueue.depends_on,
        'timeout', extract(epoch FROM enqueue.timeout),
        'visibility_timeout', extract(epoch FROM enqueue.visibility_timeout))), true) AS id
$$;
COMMENT ON FUNCTION jobqueue.enqueue(text, jsonb, text, anycompatible, timestamptz, interval, integer, jsonb, text,
    timestamptz, text, text, text[], jsonb, bigint[], interval, interval) IS
    'Enqueue one job; returns its id (the live job''s id for a duplicate unique_key). See docs/sql-api.md.';

CREATE FUNCTION jobqueue.enqueue_many(jobs jsonb) RETURNS SETOF bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT id FROM jobqueue._enqueue(jobs, false) AS id $$;
COMMENT ON FUNCTION jobqueue.enqueue_many(jsonb) IS
    'Enqueue a JSON array of jobs (keys as enqueue''s parameters), all or nothing; returns ids in input order';
