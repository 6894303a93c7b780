CREATE SCHEMA IF NOT EXISTS jobqueue;
-- jobqueue schema, version 1: the queue core and its public SQL API.
--
-- The whole current schema: types, private tables, indexes, public functions, views,
-- roles and grants. It applies to an empty database in one transaction
-- (psql -X -v ON_ERROR_STOP=1 -1 -f sql/schema.sql) on PostgreSQL 15 and later.
-- Public reference: docs/sql-api.md. Tables are private; other services call the
-- functions and read the views.
--
-- Contents: the parts follow a job's path. Search for "== N." to jump to part N.
--    0. Setup               roles, default privileges
--    1. Types               job_state; sequences (job ids, lease tokens)
--    2. Tables              setting, queue, retry_policy; job, job_history, dead_letter; job_event,
--                           job_log, worker; tenant_role, tenant_limit, maintenance; counter_delta,
--                           counter_total; their indexes
--    3. Internal helpers    argument checks and parsing; priority, schema_version, retry_delay; the
--                           audit-trail guard; the tenant checks every call makes (_tenant, _admit)
--    4. Enqueue             enqueue, enqueue_many, enqueue_batch (one set-based path: _enqueue);
--                           the dependency, NOTIFY, error and lease helpers the next parts share
--    5. Claim               claim (FOR UPDATE SKIP LOCKED), heartbeat
--    6. Acknowledge         complete, complete_many; fail (retry or dead letter); snooze, release;
--                           add_log, set_progress
--    7. Retry and dead      cancel, retry, redrive, archive_dead_letters, purge_dead_letters
--       letters
--    8. Maintenance         reconcile and its steps, history partitions; cron expressions and
--                           periodic schedules (the schedule table, set_schedule, ...: reconcile
--                           fires them); alerts (rules, incidents, channels, routes: reconcile
--                           detects and enqueues notification jobs); queue settings and retry
--                           policies (pause_queue,
--                           configure_queue, set_retry_policy)
--    9. Observability       queue_stats, metrics, counters (and their triggers), health; workers
--                           (register_worker, ...); the views
--   10. Tenancy             tenant mapping, rate limits, row-level security
--   11. Grants              the first history partitions; privileges per role
-- Order matters where a LANGUAGE sql body names another function (parsed at creation): a
-- part only uses what is above it.
--
-- Conventions:
--   * every function is SECURITY DEFINER with a pinned search_path and still schema-qualifies
--     every table (two deliberate exceptions, both still pinned or parsed at creation: the
--     audit trigger function runs as the invoker because it must see current_user, and three
--     pure expressions are plain SQL bodies so that they inline into the set-based enqueue);
--     EXECUTE is revoked from PUBLIC and granted per role;
--   * every state transition names the state and the lease token it expects in its WHERE;
--     zero rows changed means "someone else owns it now" and is answered, never guessed;
--   * every clock reading is the database's: now() for decisions, clock_timestamp() for audit;
--   * queue names and job types are data, never identifiers; the only dynamic SQL builds
--     history partition names from dates (format('%I')) and the three role names (constants),
--     never anything from input;
--   * bad arguments raise 22023 (22001: too long) with the message starting with the field
--     name and COLUMN = the field; unknown job ids raise P0002; a full queue raises 53400.

-- The migration runner creates the schema first, to hold jobqueue.alembic_version (never
-- touched here), hence IF NOT EXISTS on the first line.
COMMENT ON SCHEMA jobqueue IS 'jobqueue: a job queue whose whole state lives in PostgreSQL (schema version 1)';

-- =======================================================================================
-- == 0. SETUP ==
-- The roles the grants name, and the default privileges the functions are created under.
-- =======================================================================================

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

-- The dashboard and API server (jobqueue serve, docs/web.md): jobqueue_viewer reads and
-- changes nothing; jobqueue_web is the server's login (LOGIN is the operator's to grant),
-- NOINHERIT so that it holds no privilege itself: each request does SET LOCAL ROLE to its
-- token's role after jobqueue.act_as_token verified the token.
DO $webroles$
DECLARE
    r text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'jobqueue_viewer') THEN
        BEGIN
            CREATE ROLE jobqueue_viewer NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'jobqueue_web') THEN
        BEGIN
            CREATE ROLE jobqueue_web NOLOGIN NOINHERIT;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    FOREACH r IN ARRAY ARRAY['jobqueue_viewer', 'jobqueue_producer', 'jobqueue_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m
                       WHERE m.roleid = r::regrole AND m.member = 'jobqueue_web'::regrole) THEN
            EXECUTE format('GRANT %I TO jobqueue_web', r);
        END IF;
    END LOOP;
END
$webroles$;

-- jobqueue_operator: the database role operator tokens act as (jobqueue serve). A member of
-- jobqueue_viewer (every read) and jobqueue_producer (enqueue, cancel), with the day-to-day
-- actions granted below; jobqueue_web may SET ROLE to it.
DO $oprole$
DECLARE
    r text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'jobqueue_operator') THEN
        BEGIN
            CREATE ROLE jobqueue_operator NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    FOREACH r IN ARRAY ARRAY['jobqueue_viewer', 'jobqueue_producer'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m
                       WHERE m.roleid = r::regrole AND m.member = 'jobqueue_operator'::regrole) THEN
            EXECUTE format('GRANT %I TO jobqueue_operator', r);
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m
                   WHERE m.roleid = 'jobqueue_operator'::regrole AND m.member = 'jobqueue_web'::regrole) THEN
        GRANT jobqueue_operator TO jobqueue_web;
    END IF;
END
$oprole$;

-- Functions are executable by PUBLIC by default. The per-schema form of ALTER DEFAULT
-- PRIVILEGES cannot revoke that global default, so the global form is used (it applies to
-- functions the installing role creates in this database), and every jobqueue function is
-- also revoked explicitly at the end of this file.
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
REVOKE ALL ON SCHEMA jobqueue FROM PUBLIC;

-- =======================================================================================
-- == 1. TYPES ==
-- The states a job moves through, and the sequences that number jobs and leases.
-- =======================================================================================

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

-- =======================================================================================
-- == 2. TABLES ==
-- Private: other services call the functions (parts 4 to 10) and read the views (part 9).
-- =======================================================================================

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
    ('max_output_bytes', '1048576', 'largest output complete/complete_many store, in bytes of JSON text, unless '
                                    'the queue sets max_output_bytes (at most 16777216)'),
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
    updated_at               timestamptz NOT NULL DEFAULT now(),
    -- largest output complete stores for this queue's jobs (NULL: the max_output_bytes setting)
    max_output_bytes         integer CHECK (max_output_bytes BETWEEN 1 AND 16777216)
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
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_limit = 2000,
    autovacuum_vacuum_cost_delay = 1,
    -- Claimed jobs' dead entries sit at the head of job_claim_idx, where each claim starts,
    -- until a vacuum removes them; neither setting may let their number grow with the
    -- backlog (revision 0020, issue 13): vacuum after a fixed count of dead rows, not a
    -- share of the table, and never skip the index pass (the default skips it while the
    -- dead rows are on under 2 % of the pages).
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 20000,
    vacuum_index_cleanup = on
);
COMMENT ON TABLE jobqueue.job IS 'Live jobs (pending, retrying, processing); private, read jobqueue.jobs';

-- The claim index: exactly the claim's WHERE and ORDER BY, so claim is an ordered index scan
-- with no sort. Rows leave it when claimed, finished or blocked by dependencies.
CREATE INDEX job_claim_idx ON jobqueue.job (queue, priority DESC, run_at, id)
    WHERE state IN ('pending', 'retrying') AND waiting_on = 0;
-- One live job per unique key and tenant (ON CONFLICT target of enqueue). Per tenant, so that
-- one tenant's key can neither collide with nor reveal another tenant's job; NULLS NOT
-- DISTINCT keeps single-tenant installs (tenant_id NULL) at one live job per key.
CREATE UNIQUE INDEX job_unique_key_idx ON jobqueue.job (unique_key, tenant_id) NULLS NOT DISTINCT
    WHERE unique_key IS NOT NULL;
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
-- The API's job list (newest first, by queue): an ordered index scan per history partition
-- and on dead letters instead of reading every finished job of other queues.
CREATE INDEX job_history_queue_id_idx ON jobqueue.job_history (queue, id);
CREATE INDEX dead_letter_queue_id_idx ON jobqueue.dead_letter (queue, id);

------------------------------------------------------------------------------------------
-- Audit trail: one row per transition, append-only
------------------------------------------------------------------------------------------
-- id orders events; it is deliberately not indexed (nothing looks an event up by id, and
-- an index would cost every transition: enqueue_many writes 100k events at a time).
CREATE TABLE jobqueue.job_event (
    id         bigint GENERATED ALWAYS AS IDENTITY,
    job_id     bigint,                        -- NULL: a queue change (detail.change)
    token      bigint,
    queue      text NOT NULL,
    from_state jobqueue.job_state,            -- NULL: the job was created
    to_state   jobqueue.job_state,            -- NULL: the job was deleted (purge)
    actor      text NOT NULL DEFAULT session_user,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    detail     jsonb                          -- never the payload
) WITH (autovacuum_vacuum_insert_scale_factor = 0.05);
COMMENT ON TABLE jobqueue.job_event IS
    'Append-only audit trail: one row per job state transition, and per queue change (job_id NULL); '
    'UPDATE/DELETE rejected except by retention pruning';
COMMENT ON COLUMN jobqueue.job_event.job_id IS
    'NULL: a queue change (pause, resume, configure); detail.change says which';
CREATE INDEX job_event_job_idx ON jobqueue.job_event (job_id);
CREATE INDEX job_event_at_idx ON jobqueue.job_event USING brin (at);

------------------------------------------------------------------------------------------
-- What ANALYZE samples of the hot tables (issue 13)
------------------------------------------------------------------------------------------
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
-- On job_history it reaches every partition there is (the DEFAULT one here).
DO $$ BEGIN
    PERFORM jobqueue._set_statistics(t) FROM unnest('{jobqueue.job, jobqueue.job_history, jobqueue.job_event}'::regclass[]) AS t;
END $$;

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

-- Worker processes (register_worker / worker_heartbeat / unregister_worker). A worker id is
-- unique per tenant (the registering login role's, NULL for unmapped roles), so that one
-- tenant's worker names can neither collide with nor reveal another tenant's.
CREATE TABLE jobqueue.worker (
    worker_id    text NOT NULL CHECK (length(worker_id) BETWEEN 1 AND 255),
    db_user      text NOT NULL DEFAULT session_user,
    host         text,
    pid          integer,
    queues       text[],
    concurrency  integer,
    metadata     jsonb NOT NULL DEFAULT '{}',
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    jobs_done    bigint NOT NULL DEFAULT 0,
    stopped_at   timestamptz,
    tenant_id    text,                         -- the registering role's tenant (NULL: unmapped)
    CONSTRAINT worker_id_tenant_key UNIQUE NULLS NOT DISTINCT (worker_id, tenant_id)
) WITH (fillfactor = 70);

------------------------------------------------------------------------------------------
-- Multi-tenancy and admission control (private; written only through the admin functions)
------------------------------------------------------------------------------------------
-- Which tenant a login role acts for. The key is the login role (session_user), which SET
-- ROLE cannot change and which stays the caller's inside SECURITY DEFINER functions. A
-- mapped role sees and touches only its tenant's jobs (row-level security, below); an
-- unmapped role is not restricted (single-tenant installs map nobody and behave as before).
CREATE TABLE jobqueue.tenant_role (
    role_name  text PRIMARY KEY CHECK (length(role_name) BETWEEN 1 AND 63),
    tenant_id  text NOT NULL CHECK (length(tenant_id) BETWEEN 1 AND 255 AND tenant_id !~ '[[:cntrl:]]'),
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL DEFAULT session_user
);
COMMENT ON TABLE jobqueue.tenant_role IS
    'Login role -> tenant; a mapped role is confined to its tenant''s jobs. Private: set_tenant_role/unset_tenant_role';

-- API tokens of the HTTP API (jobqueue serve). Only the sha256 of a token is kept; the
-- token itself is shown once, by create_token. role: what the token may do (viewer,
-- producer, operator, admin: docs/web.md); tenant_id: the tenant it is confined to.
CREATE TABLE jobqueue.api_token (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hash         bytea NOT NULL UNIQUE CHECK (length(hash) = 32),
    role         text NOT NULL CHECK (role IN ('viewer', 'producer', 'operator', 'admin')),
    tenant_id    text CHECK (length(tenant_id) BETWEEN 1 AND 255 AND tenant_id !~ '[[:cntrl:]]'),
    name         text CHECK (length(name) BETWEEN 1 AND 200 AND name !~ '[[:cntrl:]]'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL DEFAULT session_user,
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
COMMENT ON TABLE jobqueue.api_token IS
    'API tokens (sha256 only) of jobqueue serve; private: create_token / revoke_token / act_as_token';

-- Enqueue rate limit per tenant: a token bucket (rate tokens per second, at most burst), one
-- token per job, refilled lazily by the enqueue that reads it. Only enqueues of tenants with
-- a row pay for it (and then contend on that row until they commit).
CREATE TABLE jobqueue.tenant_limit (
    tenant_id   text PRIMARY KEY CHECK (length(tenant_id) BETWEEN 1 AND 255 AND tenant_id !~ '[[:cntrl:]]'),
    rate        double precision NOT NULL CHECK (rate > 0 AND rate <= 1000000),
    burst       integer NOT NULL CHECK (burst BETWEEN 1 AND 100000000),
    tokens      double precision NOT NULL,
    refilled_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE jobqueue.tenant_limit IS
    'Token bucket per tenant for enqueue (rate jobs/s, burst); private: set_tenant_rate_limit/clear_tenant_rate_limit';

-- When each maintenance step last ran (health() alerts when reconcile stops running). One
-- row per step, created here; reconcile stamps its row unless another reconcile holds it at
-- that moment (that one is stamping the same time), so concurrent runners never wait.
CREATE TABLE jobqueue.maintenance (
    step        text PRIMARY KEY,
    last_run_at timestamptz
);
COMMENT ON TABLE jobqueue.maintenance IS 'When each maintenance step last ran; private: reconcile stamps it, health() reads it';
INSERT INTO jobqueue.maintenance (step) VALUES ('reconcile');

------------------------------------------------------------------------------------------
-- Counters the database keeps (read through jobqueue.counters(); docs/sql-api.md "Counters")
------------------------------------------------------------------------------------------
-- Transitions counted per (queue, type) since the counters began: monotonic, whatever
-- retention prunes. Each statement that moves jobs appends ONE row per (queue, type) it
-- touched to counter_delta (statement-level triggers on job, job_history and dead_letter;
-- fail and reconcile for retries), so writers never wait on each other's counter rows and
-- a batch of 1,000 completions costs one row, not 1,000. Reconcile folds the deltas into
-- counter_total (jobqueue._compact_counters). Histograms: per-bucket counts (not
-- cumulative) over the bounds of jobqueue.histogram_buckets(), then one bucket above them.
-- No index on counter_delta: it is only appended to and read whole.
CREATE TABLE jobqueue.counter_delta (
    queue          text NOT NULL,
    type           text NOT NULL,
    enqueued       bigint NOT NULL DEFAULT 0,
    completed      bigint NOT NULL DEFAULT 0,
    failed         bigint NOT NULL DEFAULT 0,
    retried        bigint NOT NULL DEFAULT 0,
    dead_lettered  bigint NOT NULL DEFAULT 0,
    cancelled      bigint NOT NULL DEFAULT 0,
    queue_time     bigint[],                          -- NULL: nothing observed
    queue_time_sum double precision NOT NULL DEFAULT 0,
    run_time       bigint[],
    run_time_sum   double precision NOT NULL DEFAULT 0
) WITH (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05
);
COMMENT ON TABLE jobqueue.counter_delta IS
    'Counter increments, one row per statement and (queue, type); private: reconcile folds them into counter_total';

CREATE TABLE jobqueue.counter_total (LIKE jobqueue.counter_delta INCLUDING DEFAULTS);
ALTER TABLE jobqueue.counter_total ADD PRIMARY KEY (queue, type);
COMMENT ON TABLE jobqueue.counter_total IS
    'Counter totals per (queue, type) up to the last compaction; private: read jobqueue.counters()';

-- Queues with a backlog cap: enqueue probes this (empty when no queue is capped) instead of
-- the whole queue table.
CREATE INDEX queue_capped_idx ON jobqueue.queue (name) WHERE max_size IS NOT NULL;
-- Queues with their own output cap: complete reads the lowest one through this (one probe).
CREATE INDEX queue_output_capped_idx ON jobqueue.queue (max_output_bytes) WHERE max_output_bytes IS NOT NULL;

-- =======================================================================================
-- == 3. INTERNAL HELPERS ==
-- What every call below uses: argument checks, parsing, the public pure functions
-- (priority, schema_version, retry_delay), the audit-trail guard and the tenant checks.
-- =======================================================================================

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

-- A numeric setting (jobqueue.setting). plpgsql, not sql: a definer sql function is never
-- inlined and its body was planned again at every call (enqueue makes two; revision 0014).
CREATE FUNCTION jobqueue._conf(key text) RETURNS numeric
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    RETURN (SELECT (s.value #>> '{}')::numeric FROM jobqueue.setting s WHERE s.key = _conf.key);
END
$$;

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
            IF jsonb_typeof(v) NOT IN ('boolean', 'number') OR (jsonb_typeof(v) = 'number' AND v::numeric NOT BETWEEN 0 AND 1) THEN
                RETURN 'jitter must be true, false or a ratio between 0 and 1';
            END IF;
        WHEN 'max_attempts' THEN
            IF jsonb_typeof(v) <> 'number' OR v::numeric <> trunc(v::numeric) OR v::numeric NOT BETWEEN 1 AND 1000 THEN
                RETURN 'max_attempts must be an integer between 1 and 1000';
            END IF;
        ELSE
            RETURN format('unknown key "%s" (known: strategy, initial_delay, multiplier, increment, '
                          'max_delay, delays, jitter, max_attempts)', k);
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
AS $$ SELECT 7 $$;
COMMENT ON FUNCTION jobqueue.schema_version() IS
    'The jobqueue schema version (2: health; 3: output caps, per-tenant worker ids; 4: schedules; 5: alerts, '
    'counters, API tokens, jobqueue_viewer, jobqueue_web; 6: jobqueue_operator, queue changes in job_events; '
    '7: enqueue_as_token); clients check it at startup';

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
        -- a ratio under 1e-9 is 0: its offset is below a microsecond of any delay, and a float
        -- product that rounds to 0 (a ratio of 5e-324) would raise an underflow error
        ELSE make_interval(secs => least(c.capped * (1 + CASE WHEN c.ratio < 1e-9 THEN 0
                                                         ELSE c.ratio * (2 * c.u - 1) END), c.cap))
    END
    FROM (
        SELECT least(b.base * CASE WHEN error_class = 'timeout' THEN 2 ELSE 1 END, b.cap) AS capped,
               b.cap, b.ratio, b.u
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
                   -- jitter: true = 0.1, false = 0, or the ratio itself
                   CASE jsonb_typeof(a.p->'jitter') WHEN 'number' THEN (a.p->>'jitter')::float8
                        WHEN 'boolean' THEN CASE WHEN (a.p->>'jitter')::boolean THEN 0.1 ELSE 0 END
                        ELSE 0.1 END AS ratio,
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
jitter (true = ratio 0.1; false = 0; or the ratio r in [0,1]), max_attempts (read by enqueue).
Formula:
  exponential: base = initial_delay * multiplier^(n-1)
  linear:      base = initial_delay + increment * (n-1)
  fixed:       base = initial_delay
  custom:      base = delays[min(n, len(delays))]
  base = 2 * base when error_class = 'timeout'
  b = min(base, max_delay)
  delay = min(b * (1 + r * (2 * jitter_unit - 1)), max_delay)
so a delay lies in [b * (1 - r), min(max_delay, b * (1 + r))]; r = 0 gives exactly b, and a ratio
under 1e-9 counts as 0 (its offset is below a microsecond).
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
       AND current_user = (SELECT pg_get_userbyid(n.nspowner) FROM pg_catalog.pg_namespace n
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

-- Queue changes on the live streams: pausing, resuming or configuring a queue writes a
-- job_event row with job_id NULL (detail.change: paused, resumed or configured), so that a
-- stream reads them with the job events, resumable from the same cursor. Fired only when a
-- queue row really changes (enqueue's lock on a capped queue rewrites the row unchanged,
-- and the WHEN clause keeps that free of any call); a repeated pause or a configure that
-- sets what is already set writes nothing.
CREATE FUNCTION jobqueue._queue_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.paused = NEW.paused
       AND to_jsonb(OLD) - 'updated_at' = to_jsonb(NEW) - 'updated_at' THEN
        RETURN NULL;
    END IF;
    INSERT INTO jobqueue.job_event (job_id, queue, actor, detail)
    VALUES (NULL, NEW.name,
            CASE WHEN session_user = 'jobqueue_web' THEN jobqueue._actor() ELSE session_user::text END,
            jsonb_build_object('change', CASE WHEN TG_OP = 'INSERT' OR OLD.paused <> NEW.paused
                                              THEN CASE WHEN NEW.paused THEN 'paused' ELSE 'resumed' END
                                              ELSE 'configured' END,
                               'paused', NEW.paused));
    RETURN NULL;
END
$$;
CREATE TRIGGER queue_created_paused
    AFTER INSERT ON jobqueue.queue
    FOR EACH ROW WHEN (NEW.paused) EXECUTE FUNCTION jobqueue._queue_changed();
CREATE TRIGGER queue_changed
    AFTER UPDATE ON jobqueue.queue
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION jobqueue._queue_changed();

------------------------------------------------------------------------------------------
-- Tenancy and admission (multi-tenant mode: docs/sql-api.md "Multi-tenant mode")
------------------------------------------------------------------------------------------
-- The API token the current web request acts as: when session_user is the web server's
-- login (jobqueue_web), the token in the transaction-local setting jobqueue.token (set by
-- act_as_token), verified again by its hash, expiry and revocation -- so that a forged
-- setting gives nothing. Raises 28000 when there is no such token: a web session acts for a
-- verified token or for nothing; 42501 when the session's role is not its token's role's.
CREATE FUNCTION jobqueue._web_token() RETURNS jobqueue.api_token
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    k jobqueue.api_token;
    acts_as text;
BEGIN
    SELECT t.* INTO k FROM jobqueue.api_token t
    WHERE t.hash = sha256(convert_to(current_setting('jobqueue.token', true), 'UTF8'))
      AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now());
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '28000', COLUMN = 'token',
            MESSAGE = 'token: this session acts for no valid API token (unknown, expired or revoked)';
    END IF;
    -- The session must have taken exactly its token's database role (SET ROLE, which a
    -- definer function does not change): an operator token in a session that took
    -- jobqueue_admin (a fault of the web server) acts for nothing.
    acts_as := CASE k.role WHEN 'viewer' THEN 'jobqueue_viewer' WHEN 'producer' THEN 'jobqueue_producer'
                           WHEN 'operator' THEN 'jobqueue_operator' WHEN 'admin' THEN 'jobqueue_admin' END;
    IF current_setting('role') IS DISTINCT FROM acts_as THEN
        RAISE EXCEPTION USING ERRCODE = '42501', COLUMN = 'token',
            MESSAGE = format('token: an API token of role %s acts as %s, but this session took role %s', k.role, acts_as,
                             current_setting('role'));
    END IF;
    RETURN k;
END
$$;

-- Who the caller is, as recorded in jobs.created_by and checked by the "own jobs" rules:
-- session_user, or 'token:<id>' for a web request (jobqueue_web acting as an API token).
CREATE FUNCTION jobqueue._actor() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT CASE WHEN session_user = 'jobqueue_web' THEN 'token:' || (jobqueue._web_token()).id
                ELSE session_user::text END
$$;

-- Jobs record their creator: the login role, or the API token of a web request.
ALTER TABLE jobqueue.job ALTER COLUMN created_by
    SET DEFAULT CASE WHEN session_user = 'jobqueue_web' THEN jobqueue._actor() ELSE session_user END;
ALTER TABLE jobqueue.job_history ALTER COLUMN created_by
    SET DEFAULT CASE WHEN session_user = 'jobqueue_web' THEN jobqueue._actor() ELSE session_user END;
ALTER TABLE jobqueue.dead_letter ALTER COLUMN created_by
    SET DEFAULT CASE WHEN session_user = 'jobqueue_web' THEN jobqueue._actor() ELSE session_user END;

-- The calling login role's tenant, or NULL when the role is not mapped (not restricted).
-- For a web request (session_user jobqueue_web), the tenant of its verified API token.
-- Never a setting or an argument: a caller can SET any GUC, but not its session_user. The
-- row-level security policies spell the same lookup as a scalar sub-select, so that it is
-- an InitPlan evaluated once per statement (a function call there would cost more).
-- plpgsql, not sql: planned once per session; as a sql function its body was planned again
-- at every call, which enqueue makes once per job (revision 0014).
CREATE FUNCTION jobqueue._tenant() RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    IF session_user = 'jobqueue_web' THEN
        RETURN (jobqueue._web_token()).tenant_id;
    END IF;
    RETURN (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user);
END
$$;

-- Raise 42501 unless the caller acts for no tenant: queue settings, retry policies, the
-- tenant mapping and rate limits are shared by every tenant, so only unmapped roles change them.
CREATE FUNCTION jobqueue._require_unmapped(action text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    t text := jobqueue._tenant();
BEGIN
    IF t IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('%s: %s acts for tenant %s; %s is shared by every tenant and needs a '
                             'jobqueue_admin role (or an admin API token) mapped to no tenant', action,
                             CASE WHEN session_user = 'jobqueue_web' THEN 'API token ' || (jobqueue._web_token()).id
                                  ELSE 'login role ' || session_user END, t, action);
    END IF;
END
$$;

-- Admission of a batch, before _enqueue writes anything (raising here changes nothing):
--   1. tenant: a mapped caller's jobs get its tenant_id; naming another tenant is an error
--      (jobs[i].tenant_id). Unmapped callers pass tenant_id through, as before.
--   2. rate limit: each tenant with a bucket (tenant_limit) pays one token per job, in
--      tenant order; short of tokens -> SQLSTATE JQ429 naming the tenant and its limit.
--   3. backlog caps: the capped queues the batch writes to are locked (in name order) and
--      touched, so enqueues into one capped queue run one at a time and the cap check in
--      _enqueue counts every committed job: the depth never exceeds max_size (under
--      REPEATABLE READ a concurrent admission surfaces as 40001, retry).
-- Each step costs one index probe on an empty table/index when it is not in use.
CREATE FUNCTION jobqueue._admit(jobs jsonb, single boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    t text := jobqueue._tenant();
    bad record;
    b record;
    at timestamptz;
    capped text[];
BEGIN
    IF jsonb_typeof(jobs) IS DISTINCT FROM 'array' THEN
        RETURN jobs;  -- _enqueue names the problem
    END IF;
    IF t IS NOT NULL THEN
        SELECT (x.o - 1)::integer AS idx, x.e->'tenant_id' AS given INTO bad
        FROM jsonb_array_elements(jobs) WITH ORDINALITY AS x(e, o)
        WHERE jsonb_typeof(x.e) = 'object' AND nullif(x.e->'tenant_id', 'null') IS NOT NULL
          AND x.e->'tenant_id' IS DISTINCT FROM to_jsonb(t)
        ORDER BY x.o LIMIT 1;
        IF FOUND THEN
            PERFORM jobqueue._raise('tenant_id',
                format('%s enqueues for tenant %s only (got %s); leave tenant_id out',
                       CASE WHEN session_user = 'jobqueue_web' THEN 'API token ' || (jobqueue._web_token()).id
                            ELSE 'login role ' || session_user END, to_jsonb(t), left(bad.given::text, 300)),
                CASE WHEN single THEN 'tenant_id' ELSE format('jobs[%s].tenant_id', bad.idx) END);
        END IF;
        jobs := (SELECT jsonb_agg(CASE WHEN jsonb_typeof(x.e) = 'object'
                                       THEN x.e || jsonb_build_object('tenant_id', t) ELSE x.e END ORDER BY x.o)
                 FROM jsonb_array_elements(jobs) WITH ORDINALITY AS x(e, o));
    END IF;

    IF EXISTS (SELECT 1 FROM jobqueue.tenant_limit) THEN
        FOR b IN
            SELECT l.tenant_id, a.n
            FROM (SELECT x.e->>'tenant_id' AS tenant_id, count(*) AS n
                  FROM jsonb_array_elements(jobs) AS x(e)
                  WHERE jsonb_typeof(x.e->'tenant_id') = 'string'
                  GROUP BY 1) AS a
            JOIN jobqueue.tenant_limit l ON l.tenant_id = a.tenant_id
            ORDER BY l.tenant_id
        LOOP
            at := clock_timestamp();
            UPDATE jobqueue.tenant_limit l
            SET tokens = least(l.burst, l.tokens + l.rate * greatest(extract(epoch FROM at - l.refilled_at), 0)) - b.n,
                refilled_at = at
            WHERE l.tenant_id = b.tenant_id
            RETURNING l.tokens + b.n AS available, l.rate, l.burst INTO bad;
            IF bad.available < b.n THEN
                RAISE EXCEPTION USING ERRCODE = 'JQ429', COLUMN = 'tenant_id',
                    MESSAGE = format('tenant_id: tenant %s is over its enqueue rate limit (%s jobs/s, burst %s): '
                                     '%s jobs asked, %s available; nothing was enqueued, retry later',
                                     to_jsonb(b.tenant_id), bad.rate, bad.burst, b.n,
                                     floor(greatest(bad.available, 0))),
                    HINT = CASE WHEN b.n > bad.burst
                                THEN format('a batch larger than the burst (%s) is never admitted; split it', bad.burst)
                                ELSE 'tokens come back at the rate above' END;
            END IF;
        END LOOP;
    END IF;

    IF EXISTS (SELECT 1 FROM jobqueue.queue q WHERE q.max_size IS NOT NULL) THEN
        capped := ARRAY(
            SELECT q.name FROM jobqueue.queue q
            WHERE q.max_size IS NOT NULL
              AND q.name IN (SELECT CASE WHEN nullif(x.e->'queue', 'null') IS NULL THEN 'default'
                                         ELSE x.e->>'queue' END
                             FROM jsonb_array_elements(jobs) AS x(e))
            ORDER BY q.name
            FOR NO KEY UPDATE);
        IF cardinality(capped) > 0 THEN
            UPDATE jobqueue.queue q SET max_size = q.max_size WHERE q.name = ANY (capped);
        END IF;
    END IF;
    RETURN jobs;
END
$$;

-- =======================================================================================
-- == 4. ENQUEUE ==
-- A job enters: enqueue, enqueue_many and enqueue_batch, one set-based path.
-- =======================================================================================

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
    -- generic plans (revision 0016): with the default, the statements whose arrays are
    -- parameters (the queue-cap check, the id allotment) got a custom plan at every call,
    -- planning costing more than running them (0.1 of ~0.7 ms server time of an enqueue_many)
    SET plan_cache_mode = force_generic_plan
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
    dep_idx integer[];        -- (element index, dependency id) pairs
    dep_ids bigint[];
    dep_wait integer[];       -- per element (index + 1): dependencies still live
    dep_failed boolean[];     -- per element: a dependency already failed for good
    bad record;
    ids bigint[];             -- the id allotted to each element (index + 1)
    result bigint[];          -- the id returned for each element
    todo integer[];           -- elements still to insert (NULL: all)
    ins_ids bigint[];
    ins_queues text[];
    notify_queues text[];
    got bigint[];
    all_queues text[] := '{}';
    full_queue record;
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
        -- dense arrays indexed by element (idx + 1): a subscript per row, not a join
        SELECT array_agg(s.wait ORDER BY g.idx), array_agg(s.failed ORDER BY g.idx)
        INTO dep_wait, dep_failed
        FROM generate_series(0, n - 1) AS g(idx)
        LEFT JOIN (
            SELECT x.idx,
                   count(*) FILTER (WHERE EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.id = x.dep))::integer AS wait,
                   bool_or(EXISTS (SELECT 1 FROM jobqueue.dead_letter l WHERE l.id = x.dep)
                           OR EXISTS (SELECT 1 FROM jobqueue.job_history h
                                      WHERE h.id = x.dep AND h.state = 'cancelled')) AS failed
            FROM unnest(dep_idx, dep_ids) AS x(idx, dep)
            GROUP BY x.idx
        ) s ON s.idx = g.idx;
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
                   -- a run time in the past is now: it must not jump ahead of earlier jobs
                   -- of its priority, nor be aged from the past (reconcile ages from run_at)
                   greatest(coalesce(c.run_at, now() + make_interval(secs => c.delay_s)), now()),
                   coalesce(c.max_attempts, (c.retry_policy->>'max_attempts')::integer,
                            (tp.policy->>'max_attempts')::integer, q.max_attempts,
                            (q.retry_policy->>'max_attempts')::integer, default_attempts),
                   c.retry_policy, c.unique_key, c.expires_at, c.tenant_id, c.user_id, c.tags, c.metadata,
                   c.depends_on,
                   -- a job whose dependency already failed is held (+1) and cancelled below
                   coalesce(dep_wait[c.idx + 1], 0) + CASE WHEN dep_failed[c.idx + 1] THEN 1 ELSE 0 END,
                   make_interval(secs => c.timeout_s), make_interval(secs => c.vt_s)
            FROM (
                SELECT b.*,
                    CASE
                    WHEN NOT b.is_object THEN ARRAY['jobs', 'must be a JSON object']
                    WHEN b.extra_key IS NOT NULL THEN ARRAY['jobs', format('unknown key "%s"', b.extra_key)]
                    WHEN jobqueue._type_error(b.type) IS NOT NULL THEN ARRAY['type', jobqueue._type_error(b.type)]
                    WHEN b.payload = 'null' THEN ARRAY['payload', 'must be a JSON object, not null']
                    WHEN jsonb_typeof(b.payload) IS DISTINCT FROM 'object' THEN ARRAY['payload', 'must be a JSON object']
                    -- JSON text is at most ~6x the binary size (escaped control characters), so
                    -- small documents skip the text conversion
                    WHEN pg_column_size(b.payload) * 8 > max_payload AND octet_length(b.payload::text) > max_payload
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
                    WHEN pg_column_size(b.metadata_j) * 8 > max_meta AND octet_length(b.metadata_j::text) > max_meta
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
                            -- absent or JSON null: the default, for every key (SQL NULL arguments too),
                            -- but payload: absent is {}, JSON null is refused (a payload is an object)
                            coalesce(s.e->'payload', '{}'::jsonb) AS payload,
                            CASE WHEN nullif(s.e->'queue', 'null') IS NULL THEN 'default'
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
                        OFFSET 0  -- OFFSET 0 fences each layer: every parsed value is computed once
                    ) a OFFSET 0
                ) b OFFSET 0
            ) c
            LEFT JOIN jobqueue.queue q ON q.name = c.queue
            LEFT JOIN jobqueue.retry_policy tp ON tp.type = c.type
            WHERE c.err IS NULL
               OR jobqueue._raise(c.err[1], c.err[2],
                      CASE WHEN single THEN c.err[1]
                           WHEN c.err[1] = 'jobs' THEN format('jobs[%s]', c.idx)
                           ELSE format('jobs[%s].%s', c.idx, c.err[1]) END)
            ON CONFLICT (unique_key, tenant_id) WHERE unique_key IS NOT NULL DO NOTHING
            RETURNING j.id, j.queue, j.waiting_on = 0 AND j.run_at <= now() AS runnable
        ), ev AS (
            INSERT INTO jobqueue.job_event (job_id, queue, from_state, to_state)
            SELECT i.id, i.queue, NULL, 'pending' FROM ins i
        )
        SELECT (SELECT array_agg(i.id) FROM ins i),
               (SELECT array_agg(x.queue) FROM (SELECT DISTINCT i.queue FROM ins i) AS x),
               (SELECT array_agg(x.queue) FROM (SELECT DISTINCT i.queue FROM ins i WHERE i.runnable) AS x)
        INTO ins_ids, ins_queues, notify_queues;

        IF ins_queues IS NOT NULL THEN
            all_queues := all_queues || ins_queues;
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
              AND j.tenant_id IS NOT DISTINCT FROM jobs->g.idx->>'tenant_id'
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
    -- Backlog caps: count the waiting jobs of each capped queue we wrote to, through the
    -- claim index and with a LIMIT, so the check costs O(max_size), not O(table). Concurrent
    -- enqueuers can overshoot by their own batches (each sees only committed jobs and its own).
    SELECT q.name, q.max_size INTO full_queue
    FROM jobqueue.queue q
    WHERE q.name = ANY (all_queues) AND q.max_size IS NOT NULL
      AND (SELECT count(*) FROM (
               SELECT 1 FROM jobqueue.job j
               WHERE j.queue = q.name AND j.state IN ('pending', 'retrying') AND j.waiting_on = 0
               LIMIT q.max_size + 1) AS w) > q.max_size
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '53400', COLUMN = 'queue',
            MESSAGE = format('queue: queue "%s" is full (max_size %s waiting jobs); nothing was enqueued',
                             full_queue.name, full_queue.max_size);
    END IF;
    -- Jobs born with a dependency that already failed: cancel them (dependency_failed).
    IF true = ANY (dep_failed) THEN
        PERFORM jobqueue._finish_waiting(
            ARRAY(SELECT ids[x.o] FROM unnest(dep_failed) WITH ORDINALITY AS x(failed, o)
                  WHERE x.failed AND ids[x.o] = result[x.o]),
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
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    q_name text := coalesce(queue, 'default');
    body jsonb := payload;  -- NULL and JSON null are refused: a payload is an object (leave it out for {})
    prio integer := jobqueue._priority_of(to_jsonb(priority));
    max_payload numeric;
    max_delay numeric;
    err text;
    q record;
    attempts integer;
    new_id bigint;
    runnable boolean;
BEGIN
    -- Options that need the set-based core (unique keys, dependencies, policies, TTLs, tags,
    -- metadata, per-job leases) go there, and so does admission control (a tenant-mapped
    -- caller, tenant rate limits, a capped queue: jobqueue._admit). The common job takes
    -- this lean path: the same checks in the same order with the same messages, one INSERT.
    IF unique_key IS NOT NULL OR depends_on IS NOT NULL OR retry_policy IS NOT NULL OR expires_at IS NOT NULL
       OR tags IS NOT NULL OR metadata IS NOT NULL OR timeout IS NOT NULL OR visibility_timeout IS NOT NULL
       OR jobqueue._tenant() IS NOT NULL OR EXISTS (SELECT 1 FROM jobqueue.tenant_limit)
       OR EXISTS (SELECT 1 FROM jobqueue.queue x WHERE x.name = q_name AND x.max_size IS NOT NULL) THEN
        RETURN (SELECT e.id FROM jobqueue._enqueue(jobqueue._admit(jsonb_build_array(jsonb_build_object(
            'type', enqueue.type, 'payload', enqueue.payload, 'queue', enqueue.queue,
            'priority', to_jsonb(enqueue.priority), 'run_at', enqueue.run_at,
            'delay', extract(epoch FROM enqueue.delay), 'max_attempts', enqueue.max_attempts,
            'retry_policy', enqueue.retry_policy, 'unique_key', enqueue.unique_key,
            'expires_at', enqueue.expires_at, 'tenant_id', enqueue.tenant_id, 'user_id', enqueue.user_id,
            'tags', enqueue.tags, 'metadata', enqueue.metadata, 'depends_on', enqueue.depends_on,
            'timeout', extract(epoch FROM enqueue.timeout),
            'visibility_timeout', extract(epoch FROM enqueue.visibility_timeout))), true), true) AS e(id));
    END IF;

    err := jobqueue._type_error(type);
    IF err IS NOT NULL THEN
        PERFORM jobqueue._raise('type', err);
    END IF;
    IF body IS NULL OR body = 'null' THEN
        PERFORM jobqueue._raise('payload', 'must be a JSON object, not null');
    ELSIF jsonb_typeof(body) <> 'object' THEN
        PERFORM jobqueue._raise('payload', 'must be a JSON object');
    END IF;
    max_payload := jobqueue._conf('max_payload_bytes');
    IF pg_column_size(body) * 8 > max_payload AND octet_length(body::text) > max_payload THEN
        PERFORM jobqueue._raise('payload', format('larger than %s bytes', max_payload));
    END IF;
    err := jobqueue._queue_error(q_name);
    IF err IS NOT NULL THEN
        PERFORM jobqueue._raise('queue', err);
    END IF;
    IF prio IS NULL THEN
        PERFORM jobqueue._raise('priority', 'must be between 0 and 10 or one of low, normal, high, critical');
    END IF;
    IF run_at IS NOT NULL OR delay IS NOT NULL THEN
        max_delay := jobqueue._conf('max_delay_s');
        IF run_at IS NOT NULL AND delay IS NOT NULL THEN
            PERFORM jobqueue._raise('run_at', 'give run_at or delay, not both');
        ELSIF run_at IS NOT NULL AND NOT isfinite(run_at) THEN
            PERFORM jobqueue._raise('run_at', 'must be a timestamp with a time zone, e.g. 2030-01-31T12:00:00Z');
        ELSIF run_at > now() + make_interval(secs => max_delay) THEN
            PERFORM jobqueue._raise('run_at', format('must be at most %s ahead', jobqueue._human_seconds(max_delay)));
        ELSIF extract(epoch FROM delay) < 0 OR extract(epoch FROM delay) > max_delay THEN
            PERFORM jobqueue._raise('delay', format('must be between 0 and %s', jobqueue._human_seconds(max_delay)));
        END IF;
    END IF;
    IF max_attempts IS NOT NULL AND max_attempts NOT BETWEEN 1 AND 1000 THEN
        PERFORM jobqueue._raise('max_attempts', 'must be an integer between 1 and 1000');
    END IF;
    IF length(tenant_id) > 255 THEN
        PERFORM jobqueue._raise('tenant_id', 'longer than 255 characters');
    END IF;
    IF length(user_id) > 255 THEN
        PERFORM jobqueue._raise('user_id', 'longer than 255 characters');
    END IF;

    SELECT x.max_attempts, x.retry_policy, x.paused INTO q FROM jobqueue.queue x WHERE x.name = q_name;
    attempts := coalesce(max_attempts,
                         (SELECT (tp.policy->>'max_attempts')::integer FROM jobqueue.retry_policy tp
                          WHERE tp.type = enqueue.type),
                         q.max_attempts, (q.retry_policy->>'max_attempts')::integer,
                         jobqueue._conf('default_max_attempts'));
    INSERT INTO jobqueue.job AS j (queue, type, payload, priority, base_priority, run_at, max_attempts,
                                   tenant_id, user_id)
    VALUES (q_name, type, body, prio, prio, greatest(coalesce(run_at, now() + delay), now()), attempts, tenant_id,
            user_id)
    RETURNING j.id, j.run_at <= now() INTO new_id, runnable;
    INSERT INTO jobqueue.job_event (job_id, queue, from_state, to_state) VALUES (new_id, q_name, NULL, 'pending');
    IF q.paused IS NULL THEN  -- no queue row yet (paused is NOT NULL in every row)
        INSERT INTO jobqueue.queue (name) VALUES (q_name) ON CONFLICT DO NOTHING;
    END IF;
    IF runnable AND NOT coalesce(q.paused, false) THEN
        PERFORM pg_notify('jobqueue', q_name);
    END IF;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION jobqueue.enqueue(text, jsonb, text, anycompatible, timestamptz, interval, integer, jsonb, text,
    timestamptz, text, text, text[], jsonb, bigint[], interval, interval) IS
    'Enqueue one job; returns its id (the live job''s id for a duplicate unique_key). See docs/sql-api.md.';

CREATE FUNCTION jobqueue.enqueue_many(jobs jsonb) RETURNS SETOF bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT id FROM jobqueue._enqueue(jobqueue._admit(jobs, false), false) AS id $$;
COMMENT ON FUNCTION jobqueue.enqueue_many(jsonb) IS
    'Enqueue a JSON array of jobs (keys as enqueue''s parameters), all or nothing; returns ids in input order';

-- Enqueue many plain jobs given as parallel arrays, all or nothing; ids in input order. The
-- column-wise twin of enqueue_many for bulk loads (the Python library feeds it from COPY):
-- no JSON document per job to build and take apart, one INSERT for the batch. Jobs that
-- need more options (unique keys, dependencies, delays, ...) go through enqueue_many.
CREATE FUNCTION jobqueue.enqueue_batch(
    types text[],
    payloads jsonb[],
    queues text[] DEFAULT NULL,
    priorities integer[] DEFAULT NULL,
    max_attempts integer[] DEFAULT NULL
) RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    max_jobs constant integer := 100000;
    n integer := cardinality(types);
    max_payload numeric := jobqueue._conf('max_payload_bytes');
    default_attempts integer := jobqueue._conf('default_max_attempts');
    bad record;
    ids bigint[];
    ins_queues text[];
    full_queue record;
BEGIN
    IF types IS NULL OR n = 0 THEN
        PERFORM jobqueue._raise('types', 'must be a non-empty array of job types');
    END IF;
    IF n > max_jobs THEN
        PERFORM jobqueue._raise('types', format('longer than %s jobs', max_jobs));
    END IF;
    IF payloads IS NULL OR cardinality(payloads) <> n THEN
        PERFORM jobqueue._raise('payloads', 'must hold one payload per type');
    END IF;
    IF queues IS NOT NULL AND cardinality(queues) <> n THEN
        PERFORM jobqueue._raise('queues', 'must hold one queue per type (or be NULL for default)');
    END IF;
    IF priorities IS NOT NULL AND cardinality(priorities) <> n THEN
        PERFORM jobqueue._raise('priorities', 'must hold one priority per type (or be NULL for 5)');
    END IF;
    IF max_attempts IS NOT NULL AND cardinality(max_attempts) <> n THEN
        PERFORM jobqueue._raise('max_attempts', 'must hold one value per type (or be NULL)');
    END IF;

    SELECT x.idx, x.err INTO bad FROM (
        SELECT (i.o - 1)::integer AS idx,
            CASE
            WHEN jobqueue._type_error(i.type) IS NOT NULL THEN ARRAY['type', jobqueue._type_error(i.type)]
            WHEN i.payload IS NULL OR i.payload = 'null' THEN ARRAY['payload', 'must be a JSON object, not null']
            WHEN jsonb_typeof(i.payload) <> 'object' THEN ARRAY['payload', 'must be a JSON object']
            WHEN pg_column_size(i.payload) * 8 > max_payload AND octet_length(i.payload::text) > max_payload
                THEN ARRAY['payload', format('larger than %s bytes', max_payload)]
            WHEN jobqueue._queue_error(coalesce(i.queue, 'default')) IS NOT NULL
                THEN ARRAY['queue', jobqueue._queue_error(coalesce(i.queue, 'default'))]
            WHEN i.priority NOT BETWEEN 0 AND 10
                THEN ARRAY['priority', 'must be between 0 and 10 or one of low, normal, high, critical']
            WHEN i.attempts NOT BETWEEN 1 AND 1000
                THEN ARRAY['max_attempts', 'must be an integer between 1 and 1000']
            END AS err
        FROM unnest(types, payloads, queues, priorities, max_attempts)
             WITH ORDINALITY AS i(type, payload, queue, priority, attempts, o)
    ) x
    WHERE x.err IS NOT NULL
    ORDER BY x.idx LIMIT 1;
    IF FOUND THEN
        PERFORM jobqueue._raise(bad.err[1], bad.err[2], format('jobs[%s].%s', bad.idx, bad.err[1]));
    END IF;

    -- Admission control (a tenant-mapped caller, tenant rate limits, capped queues) lives in
    -- jobqueue._admit on the JSON path: such batches take it, checked values and all.
    IF jobqueue._tenant() IS NOT NULL OR EXISTS (SELECT 1 FROM jobqueue.tenant_limit)
       OR EXISTS (SELECT 1 FROM jobqueue.queue x
                  WHERE x.max_size IS NOT NULL AND x.name IN (SELECT coalesce(u, 'default') FROM unnest(queues) AS u)
                     OR x.max_size IS NOT NULL AND queues IS NULL AND x.name = 'default') THEN
        RETURN QUERY SELECT e.id FROM jobqueue._enqueue(jobqueue._admit(
            (SELECT jsonb_agg(jsonb_build_object('type', u.type, 'payload', u.payload,
                                                                   'queue', u.queue, 'priority', u.priority,
                                                                   'max_attempts', u.attempts) ORDER BY u.o)
             FROM unnest(types, payloads, queues, priorities, max_attempts)
                  WITH ORDINALITY AS u(type, payload, queue, priority, attempts, o)), false), false) AS e(id);
        RETURN;
    END IF;

    ids := ARRAY(SELECT nextval('jobqueue.job_id_seq') FROM generate_series(1, n));
    WITH ins AS (
        INSERT INTO jobqueue.job AS j (id, queue, type, payload, priority, base_priority, max_attempts)
        SELECT ids[i.o], i.queue, i.type, i.payload, i.priority, i.priority,
               coalesce(i.attempts, (tp.policy->>'max_attempts')::integer, q.max_attempts,
                        (q.retry_policy->>'max_attempts')::integer, default_attempts)
        FROM (
            SELECT u.o, u.type, u.payload,
                   coalesce(u.queue, 'default') AS queue, coalesce(u.priority, 5) AS priority, u.attempts
            FROM unnest(types, payloads, queues, priorities, max_attempts)
                 WITH ORDINALITY AS u(type, payload, queue, priority, attempts, o)
        ) i
        LEFT JOIN jobqueue.queue q ON q.name = i.queue
        LEFT JOIN jobqueue.retry_policy tp ON tp.type = i.type
        RETURNING j.id, j.queue
    ), ev AS (
        INSERT INTO jobqueue.job_event (job_id, queue, from_state, to_state)
        SELECT ins.id, ins.queue, NULL, 'pending' FROM ins
    )
    SELECT array_agg(DISTINCT ins.queue) INTO ins_queues FROM ins;

    INSERT INTO jobqueue.queue (name)
    SELECT x FROM unnest(ins_queues) AS x
    WHERE NOT EXISTS (SELECT 1 FROM jobqueue.queue q WHERE q.name = x)
    ON CONFLICT DO NOTHING;
    PERFORM jobqueue._notify(ins_queues);
    SELECT q.name, q.max_size INTO full_queue
    FROM jobqueue.queue q
    WHERE q.name = ANY (ins_queues) AND q.max_size IS NOT NULL
      AND (SELECT count(*) FROM (
               SELECT 1 FROM jobqueue.job w
               WHERE w.queue = q.name AND w.state IN ('pending', 'retrying') AND w.waiting_on = 0
               LIMIT q.max_size + 1) AS c) > q.max_size
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '53400', COLUMN = 'queue',
            MESSAGE = format('queue: queue "%s" is full (max_size %s waiting jobs); nothing was enqueued',
                             full_queue.name, full_queue.max_size);
    END IF;
    RETURN QUERY SELECT r FROM unnest(ids) AS r;
END
$$;
COMMENT ON FUNCTION jobqueue.enqueue_batch(text[], jsonb[], text[], integer[], integer[]) IS
    'Enqueue plain jobs as parallel arrays (types, payloads, queues, priorities, max_attempts), all or nothing; ids in input order';

------------------------------------------------------------------------------------------
-- Shared by claim, acknowledge and cancel: dependencies, NOTIFY, error entries, lease arguments
------------------------------------------------------------------------------------------
-- Cancel (dependency_failed) every waiting job that depends on one of these jobs, recursively.
CREATE FUNCTION jobqueue._cancel_dependents(ids bigint[]) RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT jobqueue._finish_waiting(
        ARRAY(SELECT j.id FROM jobqueue.job j
              WHERE j.depends_on && ids AND j.state IN ('pending', 'retrying')),
        'cancelled', 'dependency_failed')
$$;

-- Completed jobs release their dependents: one statement, then one notification per queue
-- whose dependents became runnable.
CREATE FUNCTION jobqueue._release_dependents(done bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    runnable text[];
BEGIN
    WITH x AS (
        SELECT j.id, count(*)::integer AS n
        FROM jobqueue.job j CROSS JOIN LATERAL unnest(j.depends_on) AS p(dep)
        WHERE j.depends_on && done AND p.dep = ANY (done) AND j.state IN ('pending', 'retrying')
        GROUP BY j.id
    ), u AS (
        UPDATE jobqueue.job j SET waiting_on = greatest(j.waiting_on - x.n, 0)
        FROM x WHERE j.id = x.id AND j.state IN ('pending', 'retrying')
        RETURNING j.queue, j.waiting_on, j.run_at
    )
    SELECT array_agg(DISTINCT u.queue) FILTER (WHERE u.waiting_on = 0 AND u.run_at <= now()) INTO runnable FROM u;
    PERFORM jobqueue._notify(runnable);
END
$$;

-- Wake the workers of these queues (hint only): pg_notify('jobqueue', queue) once per queue
-- that is not paused. PostgreSQL folds duplicates within a transaction.
CREATE FUNCTION jobqueue._notify(queues text[]) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT pg_notify('jobqueue', x) FROM (SELECT DISTINCT x FROM unnest(queues) AS x) AS d(x)
    WHERE NOT EXISTS (SELECT 1 FROM jobqueue.queue q WHERE q.name = d.x AND q.paused)
$$;

-- errors || entry, keeping the last 50 entries.
CREATE FUNCTION jobqueue._append_error(errors jsonb, entry jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT CASE WHEN jsonb_array_length(errors) < 50 THEN errors || entry
           ELSE (SELECT jsonb_agg(x.e ORDER BY x.o) FROM jsonb_array_elements(errors || entry) WITH ORDINALITY AS x(e, o)
                 WHERE x.o > jsonb_array_length(errors) + 1 - 50) END
$$;

-- Raise unless the lease arguments are present.
CREATE FUNCTION jobqueue._check_lease_args(id bigint, token bigint) RETURNS void
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    IF id IS NULL THEN
        PERFORM jobqueue._raise('id', 'must not be null');
    END IF;
    IF token IS NULL THEN
        PERFORM jobqueue._raise('token', 'must not be null');
    END IF;
END
$$;

-- =======================================================================================
-- == 5. CLAIM ==
-- A worker takes jobs under a fenced lease and keeps it alive.
-- =======================================================================================

------------------------------------------------------------------------------------------
-- Claim and acknowledge (the hot path)
------------------------------------------------------------------------------------------
CREATE FUNCTION jobqueue.claim(
    queues text[] DEFAULT '{default}',
    worker_id text DEFAULT NULL,
    batch integer DEFAULT 1,
    visibility_timeout interval DEFAULT NULL,
    types text[] DEFAULT NULL
) RETURNS TABLE (id bigint, token bigint, queue text, type text, payload jsonb, priority integer,
                 attempt integer, max_attempts integer, timeout interval, lease_expires_at timestamptz,
                 metadata jsonb, lease_duration interval)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
    -- planned once per connection: re-planning the claim statement cost more than running it
    SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    open_queues text[];
    vt interval := claim.visibility_timeout;
    default_vt interval := make_interval(secs => jobqueue._conf('default_visibility_timeout_s'));
    bad text;
BEGIN
    IF queues IS NULL OR cardinality(queues) NOT BETWEEN 1 AND 100 THEN
        PERFORM jobqueue._raise('queues', 'must name 1 to 100 queues');
    END IF;
    SELECT x INTO bad FROM unnest(queues) AS x WHERE jobqueue._queue_error(x) IS NOT NULL LIMIT 1;
    IF FOUND THEN
        PERFORM jobqueue._raise('queues', format('%s is not a queue name: %s', coalesce(quote_literal(bad), 'NULL'),
                                                 jobqueue._queue_error(bad)));
    END IF;
    IF types IS NOT NULL THEN
        IF cardinality(types) NOT BETWEEN 1 AND 100 THEN
            PERFORM jobqueue._raise('types', 'must name 1 to 100 job types (or be NULL for all)');
        END IF;
        SELECT x INTO bad FROM unnest(types) AS x WHERE jobqueue._type_error(x) IS NOT NULL LIMIT 1;
        IF FOUND THEN
            PERFORM jobqueue._raise('types', 'each type must be 1-255 characters without control characters');
        END IF;
    END IF;
    IF batch IS NULL OR batch NOT BETWEEN 1 AND 1000 THEN
        PERFORM jobqueue._raise('batch', 'must be between 1 and 1000');
    END IF;
    IF vt IS NOT NULL THEN
        PERFORM jobqueue._check_duration('visibility_timeout', vt, false, jobqueue._conf('max_lease_s'));
    END IF;
    IF length(worker_id) > 255 THEN
        PERFORM jobqueue._raise('worker_id', 'longer than 255 characters');
    END IF;

    open_queues := ARRAY(SELECT DISTINCT x FROM unnest(queues) AS x
                         WHERE NOT EXISTS (SELECT 1 FROM jobqueue.queue q WHERE q.name = x AND q.paused));
    IF cardinality(open_queues) = 0 THEN
        RETURN;
    END IF;

    -- The locking SELECT is a CTE: a CTE is evaluated exactly once, so at most `batch` rows are
    -- locked and claimed. (A plain `id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)` may be
    -- re-evaluated by the planner and claim more rows than asked: PostgreSQL bug #15715.)
    -- One queue: an ordered scan of job_claim_idx, no sort. Several queues: the same scan per
    -- queue (LATERAL), merged; it may lock up to batch rows per queue for this short
    -- transaction, but claims only the best `batch`.
    IF cardinality(open_queues) = 1 THEN
        RETURN QUERY
        WITH c AS MATERIALIZED (
            SELECT j.id, j.state
            FROM jobqueue.job j
            WHERE j.queue = open_queues[1]
              AND j.state IN ('pending', 'retrying') AND j.waiting_on = 0
              AND j.run_at <= now()
              AND (j.expires_at IS NULL OR j.expires_at > now())
              AND (types IS NULL OR j.type = ANY (types))
            ORDER BY j.priority DESC, j.run_at, j.id
            LIMIT batch
            FOR UPDATE SKIP LOCKED
        ), u AS (
            UPDATE jobqueue.job j
            SET state = 'processing',
                attempt = j.attempt + 1,
                token = nextval('jobqueue.lease_token_seq'),
                worker_id = claim.worker_id,
                claimed_at = now(),
                lease_expires_at = now() + coalesce(vt, j.visibility_timeout,
                    (SELECT q.visibility_timeout FROM jobqueue.queue q WHERE q.name = j.queue), default_vt)
            FROM c
            -- The rows are fetched by primary key: the ANY(ARRAY) gives even a generic plan an
            -- index condition on id, and nothing here names the claim index's predicate. (A
            -- re-check of state and waiting_on would: a generic plan made while the table was
            -- small then fetched the rows through job_claim_idx, by its last column, reading
            -- the whole index on every claim, as long as the backlog; issue 13.) None is needed:
            -- c locked each row after checking those columns on its newest version, and the
            -- lock holds to the end of this transaction.
            WHERE j.id = ANY (ARRAY(SELECT c2.id FROM c c2)) AND j.id = c.id
            RETURNING j.id, j.token, j.queue, j.type, j.payload, j.priority::integer AS priority, j.attempt,
                      j.max_attempts, j.timeout, j.lease_expires_at, j.metadata, j.run_at, c.state AS from_state,
                      j.lease_expires_at - j.claimed_at AS lease
        ), ev AS (
            INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state, detail)
            SELECT u.id, u.token, u.queue, u.from_state, 'processing',
                   jsonb_build_object('attempt', u.attempt, 'worker_id', claim.worker_id)
            FROM u
        )
        SELECT u.id, u.token, u.queue, u.type, u.payload, u.priority, u.attempt, u.max_attempts, u.timeout,
               u.lease_expires_at, u.metadata, u.lease
        FROM u ORDER BY u.priority DESC, u.run_at, u.id;
    ELSE
        RETURN QUERY
        WITH c AS MATERIALIZED (
            SELECT x.id, x.state
            FROM unnest(open_queues) AS oq(name)
            CROSS JOIN LATERAL (
                SELECT j.id, j.state, j.priority, j.run_at
                FROM jobqueue.job j
                WHERE j.queue = oq.name
                  AND j.state IN ('pending', 'retrying') AND j.waiting_on = 0
                  AND j.run_at <= now()
                  AND (j.expires_at IS NULL OR j.expires_at > now())
                  AND (types IS NULL OR j.type = ANY (types))
                ORDER BY j.priority DESC, j.run_at, j.id
                LIMIT batch
                FOR UPDATE SKIP LOCKED
            ) AS x
            ORDER BY x.priority DESC, x.run_at, x.id
            LIMIT batch
        ), u AS (
            UPDATE jobqueue.job j
            SET state = 'processing',
                attempt = j.attempt + 1,
                token = nextval('jobqueue.lease_token_seq'),
                worker_id = claim.worker_id,
                claimed_at = now(),
                lease_expires_at = now() + coalesce(vt, j.visibility_timeout,
                    (SELECT q.visibility_timeout FROM jobqueue.queue q WHERE q.name = j.queue), default_vt)
            FROM c
            -- The rows are fetched by primary key: the ANY(ARRAY) gives even a generic plan an
            -- index condition on id, and nothing here names the claim index's predicate. (A
            -- re-check of state and waiting_on would: a generic plan made while the table was
            -- small then fetched the rows through job_claim_idx, by its last column, reading
            -- the whole index on every claim, as long as the backlog; issue 13.) None is needed:
            -- c locked each row after checking those columns on its newest version, and the
            -- lock holds to the end of this transaction.
            WHERE j.id = ANY (ARRAY(SELECT c2.id FROM c c2)) AND j.id = c.id
            RETURNING j.id, j.token, j.queue, j.type, j.payload, j.priority::integer AS priority, j.attempt,
                      j.max_attempts, j.timeout, j.lease_expires_at, j.metadata, j.run_at, c.state AS from_state,
                      j.lease_expires_at - j.claimed_at AS lease
        ), ev AS (
            INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state, detail)
            SELECT u.id, u.token, u.queue, u.from_state, 'processing',
                   jsonb_build_object('attempt', u.attempt, 'worker_id', claim.worker_id)
            FROM u
        )
        SELECT u.id, u.token, u.queue, u.type, u.payload, u.priority, u.attempt, u.max_attempts, u.timeout,
               u.lease_expires_at, u.metadata, u.lease
        FROM u ORDER BY u.priority DESC, u.run_at, u.id;
    END IF;
END
$$;
COMMENT ON FUNCTION jobqueue.claim(text[], text, integer, interval, text[]) IS
    'Lease up to batch runnable jobs (highest priority, then oldest run time, then id); each gets a new token';

CREATE FUNCTION jobqueue.heartbeat(id bigint, token bigint, extend_by interval DEFAULT NULL)
RETURNS TABLE (status text, lease_expires_at timestamptz, cancel_requested boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    max_lease numeric := jobqueue._conf('max_lease_s');
BEGIN
    PERFORM jobqueue._check_lease_args(heartbeat.id, heartbeat.token);
    IF extend_by IS NOT NULL THEN
        PERFORM jobqueue._check_duration('extend_by', extend_by, false, max_lease);
    END IF;
    RETURN QUERY
    UPDATE jobqueue.job j
    SET lease_expires_at = least(
            now() + coalesce(extend_by, j.visibility_timeout,
                             (SELECT q.visibility_timeout FROM jobqueue.queue q WHERE q.name = j.queue),
                             make_interval(secs => jobqueue._conf('default_visibility_timeout_s'))),
            j.claimed_at + make_interval(secs => max_lease))
    WHERE j.id = heartbeat.id AND j.state = 'processing' AND j.token = heartbeat.token
    RETURNING 'ok'::text, j.lease_expires_at, j.cancel_requested;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'lease_lost'::text, NULL::timestamptz, false;
    END IF;
END
$$;
COMMENT ON FUNCTION jobqueue.heartbeat(bigint, bigint, interval) IS
    'Renew a lease from now() (capped at claimed_at + 12 h); returns ok | lease_lost and cancel_requested';

-- Outputs over their queue's cap (the queue's max_output_bytes, else the setting; bytes of
-- JSON text) are not stored: each such job, if still processing under the given token, is
-- dead-lettered with reason output_too_large and an error entry of that class (rerunning
-- a handler that already did its work would most likely produce the same output again), and
-- its dependents are cancelled. Called by _complete only when some output may be too large.
CREATE FUNCTION jobqueue._refuse_large_outputs(ids bigint[], tokens bigint[], outputs jsonb[], lowest_cap numeric)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    default_cap numeric := jobqueue._conf('max_output_bytes');
    moved bigint[];
BEGIN
    WITH input AS (
        -- JSON text is at most ~6x the binary size, so small outputs skip the text conversion
        SELECT x.id, x.token, x.output
        FROM unnest(ids, tokens, outputs) AS x(id, token, output)
        WHERE pg_column_size(x.output) * 8 > lowest_cap
    ), big AS (
        SELECT i.id, i.token, s.size, s.cap
        FROM input i
        JOIN jobqueue.job j ON j.id = i.id AND j.token = i.token AND j.state = 'processing'
        CROSS JOIN LATERAL (
            SELECT coalesce((SELECT q.max_output_bytes FROM jobqueue.queue q WHERE q.name = j.queue), default_cap) AS cap
        ) AS c
        CROSS JOIN LATERAL (
            SELECT CASE WHEN pg_column_size(i.output) * 8 > c.cap THEN octet_length(i.output::text) END AS size,
                   c.cap
        ) AS s
        WHERE s.size > s.cap
    ), d AS (
        DELETE FROM jobqueue.job j USING big b
        WHERE j.id = b.id AND j.state = 'processing' AND j.token = b.token
        RETURNING j AS r, b.size, b.cap
    ), dead AS (
        SELECT p.* FROM d, jsonb_populate_record(d.r, jsonb_build_object(
            'state', 'dead_letter', 'finished_at', now(), 'reason', 'output_too_large', 'lease_expires_at', NULL,
            'errors', jobqueue._append_error((d.r).errors, jsonb_build_object(
                'at', now(), 'attempt', (d.r).attempt, 'token', (d.r).token, 'error_class', 'output_too_large',
                'message', format('output: larger than %s bytes (%s bytes of JSON text); not stored', d.cap, d.size),
                'traceback', NULL, 'worker_id', (d.r).worker_id, 'source', 'worker',
                'outcome', 'dead_letter')))) AS p
    ), l AS (
        INSERT INTO jobqueue.dead_letter SELECT * FROM dead
    ), ev AS (
        INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state, detail)
        SELECT (d.r).id, (d.r).token, (d.r).queue, 'processing', 'dead_letter',
               jsonb_build_object('error_class', 'output_too_large', 'attempt', (d.r).attempt,
                                  'reason', 'output_too_large', 'output_bytes', d.size)
        FROM d
    )
    SELECT array_agg((d.r).id) INTO moved FROM d;
    IF moved IS NOT NULL THEN
        PERFORM jobqueue._cancel_dependents(moved);
    END IF;
END
$$;

-- =======================================================================================
-- == 6. ACKNOWLEDGE ==
-- The worker reports what happened, naming the lease it holds: complete, fail (then
-- retry or dead letter), snooze, release; logs and progress while it runs.
-- =======================================================================================

-- Complete a batch in one set-based statement: each (id, token) is accepted only while the job
-- is processing under that token. Not accepted: already_completed when job_history holds the
-- job completed with that very token (a repeated ack); output_too_large when its output was
-- over the cap (_refuse_large_outputs dead-lettered it, now or at an earlier try); else
-- lease_lost.
CREATE FUNCTION jobqueue._complete(ids bigint[], tokens bigint[], outputs jsonb[])
RETURNS TABLE (id bigint, status text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
    SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    r_ids bigint[];
    r_status text[];
    with_dependents bigint[];
    largest integer;
    lowest_cap numeric;
BEGIN
    -- Output caps. Most acknowledgements carry no output or a small one: one pass over the
    -- outputs' sizes decides, and the caps are read only when an output comes near one.
    IF outputs IS NOT NULL THEN
        largest := (SELECT max(pg_column_size(o)) FROM unnest(outputs) AS o);
    END IF;
    IF largest IS NOT NULL THEN
        lowest_cap := least(jobqueue._conf('max_output_bytes'),
                            (SELECT min(q.max_output_bytes) FROM jobqueue.queue q WHERE q.max_output_bytes IS NOT NULL));
        IF largest * 8 > lowest_cap THEN
            PERFORM jobqueue._refuse_large_outputs(ids, tokens, outputs, lowest_cap);
        END IF;
    END IF;

    WITH input AS (
        SELECT x.id, x.token, x.output, x.ord
        FROM unnest(ids, tokens, outputs) WITH ORDINALITY AS x(id, token, output, ord)
    ), d AS (
        -- By primary key: written as plainly as `j.state = 'processing'`, the state test lets
        -- the planner scan all of job_lease_idx (every running job) once stale statistics say
        -- it is tiny; a sub-select's value proves nothing about that partial index.
        DELETE FROM jobqueue.job j USING input i
        WHERE j.id = ANY (ids) AND j.id = i.id AND j.state = (SELECT 'processing'::jobqueue.job_state)
          AND j.token = i.token
        RETURNING j.*, i.output AS new_output
    ), h AS (
        INSERT INTO jobqueue.job_history
        SELECT d.id, d.queue, d.type, d.payload, 'completed', d.priority, d.base_priority, d.run_at, d.attempt,
               d.max_attempts, d.retry_policy, d.unique_key, d.expires_at, d.tenant_id, d.user_id, d.tags,
               d.metadata, d.depends_on, d.waiting_on, d.has_dependents, d.timeout, d.visibility_timeout, d.token,
               d.worker_id, d.claimed_at, NULL, d.cancel_requested, d.progress, d.errors, d.created_at,
               d.created_by, now(), d.new_output, d.reason, NULL
        FROM d
    ), ev AS (
        INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state)
        SELECT d.id, d.token, d.queue, 'processing', 'completed' FROM d
    )
    SELECT array_agg(i.id ORDER BY i.ord),
           array_agg(CASE WHEN dd.id IS NOT NULL THEN 'completed'
                          WHEN EXISTS (SELECT 1 FROM jobqueue.job_history hh
                                       WHERE hh.id = i.id AND hh.token = i.token AND hh.state = 'completed')
                              THEN 'already_completed'
                          WHEN EXISTS (SELECT 1 FROM jobqueue.dead_letter dl
                                       WHERE dl.id = i.id AND dl.token = i.token AND dl.reason = 'output_too_large')
                              THEN 'output_too_large'
                          ELSE 'lease_lost' END ORDER BY i.ord),
           array_agg(dd.id) FILTER (WHERE dd.has_dependents)
    INTO r_ids, r_status, with_dependents
    FROM input i
    LEFT JOIN (SELECT DISTINCT d.id, d.token, d.has_dependents FROM d) AS dd ON dd.id = i.id AND dd.token = i.token;
    IF with_dependents IS NOT NULL THEN
        PERFORM jobqueue._release_dependents(with_dependents);
    END IF;
    RETURN QUERY SELECT x.id, x.status FROM unnest(r_ids, r_status) AS x(id, status);
END
$$;

CREATE FUNCTION jobqueue.complete(id bigint, token bigint, output jsonb DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    PERFORM jobqueue._check_lease_args(complete.id, complete.token);
    RETURN (SELECT c.status FROM jobqueue._complete(ARRAY[complete.id], ARRAY[complete.token],
                                                     ARRAY[complete.output]) AS c);
END
$$;
COMMENT ON FUNCTION jobqueue.complete(bigint, bigint, jsonb) IS
    'Finish a job successfully: completed | already_completed (same token again) | lease_lost | '
    'output_too_large (over max_output_bytes: dead-lettered, output not stored)';

CREATE FUNCTION jobqueue.complete_many(ids bigint[], tokens bigint[], outputs jsonb[] DEFAULT NULL)
RETURNS TABLE (id bigint, status text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF ids IS NULL OR cardinality(ids) NOT BETWEEN 1 AND 1000 OR array_position(ids, NULL) IS NOT NULL THEN
        PERFORM jobqueue._raise('ids', 'must hold 1 to 1000 job ids, none NULL');
    END IF;
    IF tokens IS NULL OR cardinality(tokens) <> cardinality(ids) OR array_position(tokens, NULL) IS NOT NULL THEN
        PERFORM jobqueue._raise('tokens', 'must hold one token per id, none NULL');
    END IF;
    IF outputs IS NOT NULL AND cardinality(outputs) <> cardinality(ids) THEN
        PERFORM jobqueue._raise('outputs', 'must hold one output per id (or be NULL)');
    END IF;
    RETURN QUERY SELECT c.id, c.status FROM jobqueue._complete(ids, tokens, outputs) AS c;
END
$$;
COMMENT ON FUNCTION jobqueue.complete_many(bigint[], bigint[], jsonb[]) IS
    'Complete a batch of jobs in one statement; one (id, status) row per input, in input order (statuses as complete)';

------------------------------------------------------------------------------------------
-- Fail: retry with back-off, or dead-letter when attempts or the policy are exhausted
------------------------------------------------------------------------------------------
-- The retry policy in force for a job: queue default, then the job type's policy, then the
-- job's own override, merged key by key (the most specific wins).
CREATE FUNCTION jobqueue._effective_policy(queue text, type text, job_policy jsonb) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT coalesce((SELECT q.retry_policy FROM jobqueue.queue q WHERE q.name = _effective_policy.queue), '{}')
        || coalesce((SELECT p.policy FROM jobqueue.retry_policy p WHERE p.type = _effective_policy.type), '{}')
        || coalesce(job_policy, '{}')
$$;

CREATE FUNCTION jobqueue.fail(
    id bigint,
    token bigint,
    error text DEFAULT NULL,
    error_class text DEFAULT 'transient',
    retry_in interval DEFAULT NULL,
    traceback text DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    j jobqueue.job;
    outcome text;
    why text;
    delay interval;
    entry jsonb;
    earlier text;
BEGIN
    PERFORM jobqueue._check_lease_args(fail.id, fail.token);
    PERFORM jobqueue._check_error_class(fail.error_class);
    IF retry_in IS NOT NULL THEN
        PERFORM jobqueue._check_duration('retry_in', retry_in, true, jobqueue._conf('max_delay_s'));
    END IF;

    SELECT * INTO j FROM jobqueue.job AS x
    WHERE x.id = fail.id AND x.state = 'processing' AND x.token = fail.token
    FOR UPDATE;
    IF NOT FOUND THEN
        -- A repeated fail with the same token answers the first outcome (its error entry says it).
        SELECT e.value->>'outcome' INTO earlier
        FROM (SELECT x.errors FROM jobqueue.job x WHERE x.id = fail.id
              UNION ALL SELECT x.errors FROM jobqueue.dead_letter x WHERE x.id = fail.id
              UNION ALL SELECT x.errors FROM jobqueue.job_history x WHERE x.id = fail.id) AS s
        CROSS JOIN LATERAL jsonb_array_elements(s.errors) AS e
        WHERE e.value->>'token' = fail.token::text AND e.value->>'source' = 'worker'
        LIMIT 1;
        RETURN coalesce(earlier, 'lease_lost');
    END IF;

    IF error_class = 'cancelled' OR j.cancel_requested THEN
        outcome := 'cancelled';
        why := coalesce(j.reason, 'cancelled');
    ELSIF error_class IN ('validation', 'business', 'permanent') THEN
        outcome := 'dead_letter';
        why := 'permanent_error';
    ELSIF j.attempt >= j.max_attempts * (CASE WHEN error_class = 'system' THEN 2 ELSE 1 END) THEN
        outcome := 'dead_letter';
        why := 'max_retries_exceeded';
    ELSE
        outcome := 'retrying';
        delay := coalesce(retry_in,
                          jobqueue.retry_delay(jobqueue._effective_policy(j.queue, j.type, j.retry_policy),
                                               j.attempt, error_class, random()));
    END IF;

    entry := jsonb_build_object(
        'at', now(), 'attempt', j.attempt, 'token', j.token, 'error_class', error_class,
        'message', left(error, jobqueue._conf('error_message_max_chars')::integer),
        'traceback', left(traceback, jobqueue._conf('traceback_max_chars')::integer),
        'worker_id', j.worker_id, 'source', 'worker', 'outcome', outcome);

    IF outcome = 'retrying' THEN
        UPDATE jobqueue.job x
        SET state = 'retrying', run_at = now() + delay, errors = jobqueue._append_error(x.errors, entry),
            worker_id = NULL, lease_expires_at = NULL
        WHERE x.id = j.id AND x.state = 'processing' AND x.token = j.token;
        -- a retry changes no table, so no counter trigger sees it: count it here
        INSERT INTO jobqueue.counter_delta (queue, type, failed, retried) VALUES (j.queue, j.type, 1, 1);
        INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state, detail)
        VALUES (j.id, j.token, j.queue, 'processing', 'retrying',
                jsonb_build_object('error_class', error_class, 'attempt', j.attempt, 'retry_in_s',
                                   extract(epoch FROM delay)));
        IF delay <= interval '0' THEN
            PERFORM jobqueue._notify(ARRAY[j.queue]);
        END IF;
        RETURN outcome;
    END IF;

    WITH d AS (
        DELETE FROM jobqueue.job x
        WHERE x.id = j.id AND x.state = 'processing' AND x.token = j.token
        RETURNING x AS r
    ), moved AS (
        SELECT p.* FROM d, jsonb_populate_record(d.r, jsonb_build_object(
            'state', outcome, 'finished_at', now(), 'reason', why, 'lease_expires_at', NULL,
            'errors', jobqueue._append_error((d.r).errors, entry))) AS p
    ), h AS (
        INSERT INTO jobqueue.job_history SELECT * FROM moved WHERE outcome = 'cancelled'
    ), l AS (
        INSERT INTO jobqueue.dead_letter SELECT * FROM moved WHERE outcome = 'dead_letter'
    )
    INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state, detail)
    SELECT (d.r).id, (d.r).token, (d.r).queue, 'processing', outcome::jobqueue.job_state,
           jsonb_build_object('error_class', error_class, 'attempt', j.attempt, 'reason', why)
    FROM d;
    PERFORM jobqueue._cancel_dependents(ARRAY[j.id]);
    RETURN outcome;
END
$$;
COMMENT ON FUNCTION jobqueue.fail(bigint, bigint, text, text, interval, text) IS
    'Record a failed attempt; retrying | dead_letter | cancelled | lease_lost (a repeat answers the first outcome)';

-- snooze and release: put a running job back without using an attempt.
CREATE FUNCTION jobqueue._put_back(id bigint, token bigint, delay interval, action text) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    j record;
BEGIN
    PERFORM jobqueue._check_lease_args(_put_back.id, _put_back.token);
    UPDATE jobqueue.job x
    SET state = 'pending', attempt = greatest(x.attempt - 1, 0), run_at = now() + delay,
        worker_id = NULL, lease_expires_at = NULL
    WHERE x.id = _put_back.id AND x.state = 'processing' AND x.token = _put_back.token
      AND NOT x.cancel_requested
    RETURNING x.id, x.token, x.queue INTO j;
    IF FOUND THEN
        INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state, detail)
        VALUES (j.id, j.token, j.queue, 'processing', 'pending',
                jsonb_build_object('action', action, 'delay_s', extract(epoch FROM delay)));
        IF delay <= interval '0' THEN
            PERFORM jobqueue._notify(ARRAY[j.queue]);
        END IF;
        RETURN CASE action WHEN 'snooze' THEN 'snoozed' ELSE 'released' END;
    END IF;
    -- Cancel was requested while it ran: putting it back would undo the cancel, so finish it.
    IF EXISTS (SELECT 1 FROM jobqueue.job x WHERE x.id = _put_back.id AND x.state = 'processing'
               AND x.token = _put_back.token AND x.cancel_requested) THEN
        RETURN jobqueue.fail(_put_back.id, _put_back.token, 'cancelled before ' || action, 'cancelled');
    END IF;
    RETURN 'lease_lost';
END
$$;

CREATE FUNCTION jobqueue.snooze(id bigint, token bigint, delay interval) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    PERFORM jobqueue._check_duration('delay', delay, true, jobqueue._conf('max_delay_s'));
    RETURN jobqueue._put_back(snooze.id, snooze.token, snooze.delay, 'snooze');
END
$$;
COMMENT ON FUNCTION jobqueue.snooze(bigint, bigint, interval) IS
    'Put a running job back to pending for delay, giving its attempt back: snoozed | lease_lost | cancelled';

CREATE FUNCTION jobqueue.release(id bigint, token bigint) RETURNS text
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT jobqueue._put_back(release.id, release.token, interval '0', 'release') $$;
COMMENT ON FUNCTION jobqueue.release(bigint, bigint) IS
    'Hand a running job back, claimable at once, attempt given back: released | lease_lost | cancelled';

CREATE FUNCTION jobqueue.add_log(id bigint, token bigint, message text) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    PERFORM jobqueue._check_lease_args(add_log.id, add_log.token);
    IF message IS NULL THEN
        PERFORM jobqueue._raise('message', 'must not be null');
    END IF;
    -- FOR SHARE: the line is written only while this lease holds (a transition waits for us).
    INSERT INTO jobqueue.job_log (job_id, token, message)
    SELECT j.id, j.token, left(add_log.message, jobqueue._conf('log_message_max_chars')::integer)
    FROM jobqueue.job j
    WHERE j.id = add_log.id AND j.state = 'processing' AND j.token = add_log.token
    FOR SHARE;
    RETURN CASE WHEN FOUND THEN 'ok' ELSE 'lease_lost' END;
END
$$;
COMMENT ON FUNCTION jobqueue.add_log(bigint, bigint, text) IS 'Attach a log line to a running job: ok | lease_lost';

CREATE FUNCTION jobqueue.set_progress(id bigint, token bigint, percent numeric) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    PERFORM jobqueue._check_lease_args(set_progress.id, set_progress.token);
    IF percent IS NULL OR NOT (percent BETWEEN 0 AND 100) THEN
        PERFORM jobqueue._raise('percent', 'must be between 0 and 100');
    END IF;
    UPDATE jobqueue.job j SET progress = round(percent, 2)
    WHERE j.id = set_progress.id AND j.state = 'processing' AND j.token = set_progress.token;
    RETURN CASE WHEN FOUND THEN 'ok' ELSE 'lease_lost' END;
END
$$;
COMMENT ON FUNCTION jobqueue.set_progress(bigint, bigint, numeric) IS
    'Record a running job''s progress (0..100): ok | lease_lost';

-- =======================================================================================
-- == 7. RETRY AND DEAD LETTERS ==
-- By hand: cancel a job, retry or redrive dead letters, archive and purge them.
-- =======================================================================================

------------------------------------------------------------------------------------------
-- Cancel, dead letters
------------------------------------------------------------------------------------------
-- Whether the calling login role administers jobqueue (member of jobqueue_admin, superuser,
-- or the schema owner; for a web request: an operator or admin API token).
CREATE FUNCTION jobqueue._is_admin() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    -- a web request: its token's role, never the web login's own memberships
    SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).role IN ('operator', 'admin')
                ELSE pg_has_role(session_user, 'jobqueue_admin', 'MEMBER')
                     OR session_user = (SELECT pg_get_userbyid(n.nspowner) FROM pg_namespace n
                                        WHERE n.nspname = 'jobqueue') END
$$;

CREATE FUNCTION jobqueue.cancel(id bigint, reason text DEFAULT NULL) RETURNS text
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
COMMENT ON FUNCTION jobqueue.cancel(bigint, text) IS
    'Cancel a waiting job (cancelled) or ask a running one to stop (cancel_requested); already_finished otherwise';

-- Put dead letters (by id) back as pending: same id, attempt 0, errors kept, a new token at the
-- next claim. Skips ids whose unique_key a live job holds now. Returns the ids put back.
CREATE FUNCTION jobqueue._requeue_dead_letters(ids bigint[], action text) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    back bigint[];
    queues text[];
    blocked bigint[];
BEGIN
    -- A dead letter may have expired while still waiting for dependencies: lock its live
    -- prerequisites (as enqueue does) and count them again; a failed one cancels it below.
    PERFORM 1 FROM jobqueue.job p
    WHERE p.id IN (SELECT unnest(x.depends_on) FROM jobqueue.dead_letter x WHERE x.id = ANY (ids))
    ORDER BY p.id FOR NO KEY UPDATE;
    WITH c AS (
        SELECT x.id, x.state
        FROM jobqueue.dead_letter x
        WHERE x.id = ANY (ids)
          AND (x.unique_key IS NULL
               OR NOT EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.unique_key = x.unique_key))
        ORDER BY x.id
        FOR UPDATE SKIP LOCKED
    ), one_per_key AS (
        -- two dead letters with the same unique_key: only the oldest goes back
        SELECT c.id, c.state FROM c JOIN jobqueue.dead_letter x ON x.id = c.id
        WHERE x.unique_key IS NULL
           OR c.id = (SELECT min(y.id) FROM c AS y JOIN jobqueue.dead_letter z ON z.id = y.id
                      WHERE z.unique_key = x.unique_key)
    ), d AS (
        DELETE FROM jobqueue.dead_letter x USING one_per_key o
        WHERE x.id = o.id AND x.state = o.state
        RETURNING x AS r, o.state AS from_state
    ), deps AS (
        SELECT (d.r).id,
               (SELECT count(*) FROM jobqueue.job p WHERE p.id = ANY ((d.r).depends_on))::integer AS live,
               EXISTS (SELECT 1 FROM jobqueue.dead_letter l WHERE l.id = ANY ((d.r).depends_on))
               OR EXISTS (SELECT 1 FROM jobqueue.job_history h
                          WHERE h.id = ANY ((d.r).depends_on) AND h.state = 'cancelled') AS failed
        FROM d WHERE (d.r).depends_on IS NOT NULL
    ), ins AS (
        INSERT INTO jobqueue.job
        SELECT p.* FROM d LEFT JOIN deps ON deps.id = (d.r).id,
        LATERAL jsonb_populate_record(d.r, jsonb_build_object(
            'state', 'pending', 'attempt', 0, 'run_at', now(), 'priority', (d.r).base_priority,
            -- a failed dependency holds it (+1) until it is cancelled below
            'waiting_on', coalesce(deps.live, 0) + CASE WHEN deps.failed THEN 1 ELSE 0 END,
            'worker_id', NULL, 'lease_expires_at', NULL, 'cancel_requested', false,
            'progress', NULL, 'finished_at', NULL, 'output', NULL, 'reason', NULL, 'archived_at', NULL,
            -- an expired job is put back to run: its past expiry no longer applies
            'expires_at', CASE WHEN (d.r).expires_at > now() THEN (d.r).expires_at END)) AS p
        RETURNING id, queue, waiting_on
    ), ev AS (
        INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state, detail)
        SELECT (d.r).id, (d.r).token, (d.r).queue, d.from_state, 'pending', jsonb_build_object('action', action)
        FROM d
    )
    SELECT array_agg(i.id ORDER BY i.id), array_agg(DISTINCT i.queue) FILTER (WHERE i.waiting_on = 0),
           (SELECT array_agg(deps.id) FROM deps WHERE deps.failed)
    INTO back, queues, blocked FROM ins i;
    PERFORM jobqueue._notify(queues);
    IF blocked IS NOT NULL THEN
        PERFORM jobqueue._finish_waiting(blocked, 'cancelled', 'dependency_failed');
    END IF;
    RETURN coalesce(back, '{}');
END
$$;

CREATE FUNCTION jobqueue.retry(id bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    dl record;
    live bigint;
    where_now text;
BEGIN
    IF retry.id IS NULL THEN
        PERFORM jobqueue._raise('id', 'must not be null');
    END IF;
    SELECT x.id, x.unique_key INTO dl FROM jobqueue.dead_letter x WHERE x.id = retry.id FOR UPDATE;
    IF NOT FOUND THEN
        SELECT x.state::text INTO where_now FROM jobqueue.job x WHERE x.id = retry.id
        UNION ALL SELECT x.state::text FROM jobqueue.job_history x WHERE x.id = retry.id LIMIT 1;
        RAISE EXCEPTION USING ERRCODE = 'P0002', COLUMN = 'id',
            MESSAGE = CASE WHEN where_now IS NULL THEN format('id: no dead letter %s', retry.id)
                           ELSE format('id: job %s is not a dead letter (it is %s)', retry.id, where_now) END;
    END IF;
    SELECT j.id INTO live FROM jobqueue.job j WHERE j.unique_key = dl.unique_key;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '23505', COLUMN = 'unique_key',
            MESSAGE = format('unique_key: live job %s holds the same unique_key; dead letter %s stays',
                             live, retry.id);
    END IF;
    PERFORM jobqueue._requeue_dead_letters(ARRAY[retry.id], 'retry');
    RETURN retry.id;
END
$$;
COMMENT ON FUNCTION jobqueue.retry(bigint) IS
    'Put one dead letter back as pending (same id, attempt 0; the next claim issues a new, higher token)';

-- Dead-letter filters (redrive, purge_dead_letters): a JSON object with any of
-- queue, type, reason, tenant_id (strings), error_class (the class of the last failed
-- attempt), ids (list of job ids), since/until (timestamps with zone, on the dead-letter
-- time), state ('dead_letter' or 'archived').
CREATE TYPE jobqueue._dead_letter_filter AS (
    queue text, type text, reason text, tenant_id text, ids bigint[],
    since timestamptz, until timestamptz, state jobqueue.job_state, error_class text
);

CREATE FUNCTION jobqueue._parse_filter(filter jsonb) RETURNS jobqueue._dead_letter_filter
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    f jobqueue._dead_letter_filter;
    k text;
    v jsonb;
BEGIN
    IF filter IS NULL OR jsonb_typeof(filter) <> 'object' THEN
        PERFORM jobqueue._raise('filter', 'must be a JSON object (use {} for all)');
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(filter) LOOP
        CONTINUE WHEN jsonb_typeof(v) = 'null';
        CASE k
        WHEN 'queue', 'type', 'reason', 'tenant_id' THEN
            IF jsonb_typeof(v) <> 'string' THEN
                PERFORM jobqueue._raise('filter', format('%s must be a string', k));
            END IF;
            CASE k
            WHEN 'queue' THEN f.queue := v #>> '{}';
            WHEN 'type' THEN f.type := v #>> '{}';
            WHEN 'reason' THEN f.reason := v #>> '{}';
            ELSE f.tenant_id := v #>> '{}';
            END CASE;
        WHEN 'error_class' THEN
            IF jsonb_typeof(v) <> 'string' OR (v #>> '{}') NOT IN
               ('transient', 'timeout', 'system', 'validation', 'business', 'permanent', 'cancelled') THEN
                PERFORM jobqueue._raise('filter', 'error_class must be one of transient, timeout, system, '
                                                  'validation, business, permanent, cancelled');
            END IF;
            f.error_class := v #>> '{}';
        WHEN 'ids' THEN
            IF jsonb_typeof(v) <> 'array' OR EXISTS (
                SELECT 1 FROM jsonb_array_elements(v) AS e
                WHERE jsonb_typeof(e) <> 'number' OR e::numeric <> trunc(e::numeric)
                   OR e::numeric NOT BETWEEN 1 AND 9223372036854775807) THEN
                PERFORM jobqueue._raise('filter', 'ids must be a list of job ids');
            END IF;
            f.ids := ARRAY(SELECT e::numeric::bigint FROM jsonb_array_elements(v) AS e);
        WHEN 'since', 'until' THEN
            IF jobqueue._timestamptz_of(v) IS NULL THEN
                PERFORM jobqueue._raise('filter', format('%s must be a timestamp with a time zone', k));
            END IF;
            IF k = 'since' THEN f.since := jobqueue._timestamptz_of(v); ELSE f.until := jobqueue._timestamptz_of(v); END IF;
        WHEN 'state' THEN
            IF v #>> '{}' NOT IN ('dead_letter', 'archived') THEN
                PERFORM jobqueue._raise('filter', 'state must be dead_letter or archived');
            END IF;
            f.state := (v #>> '{}')::jobqueue.job_state;
        ELSE
            PERFORM jobqueue._raise('filter', format('unknown key "%s" (known: queue, type, reason, tenant_id, '
                                                     'error_class, ids, since, until, state)', k));
        END CASE;
    END LOOP;
    RETURN f;
END
$$;

-- Ids of dead letters matching a filter (default state: the given default), oldest first.
CREATE FUNCTION jobqueue._filter_dead_letters(f jobqueue._dead_letter_filter, default_states jobqueue.job_state[],
                                              lim integer)
RETURNS bigint[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT coalesce(array_agg(s.id ORDER BY s.id), '{}') FROM (
        SELECT x.id FROM jobqueue.dead_letter x
        WHERE ((f).queue IS NULL OR x.queue = (f).queue)
          AND ((f).type IS NULL OR x.type = (f).type)
          AND ((f).reason IS NULL OR x.reason = (f).reason)
          AND ((f).tenant_id IS NULL OR x.tenant_id = (f).tenant_id)
          AND ((f).error_class IS NULL OR x.errors->-1->>'error_class' = (f).error_class)
          AND ((f).ids IS NULL OR x.id = ANY ((f).ids))
          AND ((f).since IS NULL OR x.finished_at >= (f).since)
          AND ((f).until IS NULL OR x.finished_at < (f).until)
          AND x.state = ANY (CASE WHEN (f).state IS NULL THEN default_states ELSE ARRAY[(f).state] END)
        ORDER BY x.id
        LIMIT lim
    ) AS s
$$;

CREATE FUNCTION jobqueue.redrive(filter jsonb DEFAULT '{}', "limit" integer DEFAULT 1000, dry_run boolean DEFAULT false)
RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    f jobqueue._dead_letter_filter := jobqueue._parse_filter(filter);
    ids bigint[];
BEGIN
    IF "limit" IS NULL OR "limit" NOT BETWEEN 1 AND 10000 THEN
        PERFORM jobqueue._raise('limit', 'must be between 1 and 10000');
    END IF;
    ids := jobqueue._filter_dead_letters(f, ARRAY['dead_letter']::jobqueue.job_state[], "limit");
    IF coalesce(dry_run, false) THEN
        RETURN QUERY SELECT unnest(ids);
        RETURN;
    END IF;
    RETURN QUERY SELECT unnest(jobqueue._requeue_dead_letters(ids, 'redrive'));
END
$$;
COMMENT ON FUNCTION jobqueue.redrive(jsonb, integer, boolean) IS
    'Put up to limit dead letters matching filter back as pending (ids returned; dry_run only lists them)';

-- Archive dead letters older than max_age_days (else the queue's dead_letter_max_age_days,
-- else the setting); returns how many (dry_run: would be).
CREATE FUNCTION jobqueue._archive(max_age_days integer, lim integer, dry_run boolean) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    n integer;
    default_days integer := jobqueue._conf('dead_letter_max_age_days');
BEGIN
    IF dry_run THEN
        SELECT count(*) INTO n FROM (
            SELECT 1 FROM jobqueue.dead_letter x LEFT JOIN jobqueue.queue q ON q.name = x.queue
            WHERE x.state = 'dead_letter'
              AND x.finished_at < now() - make_interval(days => coalesce(max_age_days, q.dead_letter_max_age_days, default_days))
            LIMIT lim) AS s;
        RETURN n;
    END IF;
    WITH c AS (
        SELECT x.id FROM jobqueue.dead_letter x LEFT JOIN jobqueue.queue q ON q.name = x.queue
        WHERE x.state = 'dead_letter'
          AND x.finished_at < now() - make_interval(days => coalesce(max_age_days, q.dead_letter_max_age_days, default_days))
        ORDER BY x.id LIMIT lim
        FOR UPDATE OF x SKIP LOCKED
    ), u AS (
        UPDATE jobqueue.dead_letter x SET state = 'archived', archived_at = now()
        FROM c WHERE x.id = c.id AND x.state = 'dead_letter'
        RETURNING x.id, x.token, x.queue
    ), ev AS (
        INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state)
        SELECT u.id, u.token, u.queue, 'dead_letter', 'archived' FROM u
    )
    SELECT count(*) INTO n FROM u;
    RETURN n;
END
$$;

CREATE FUNCTION jobqueue.archive_dead_letters(max_age_days integer DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    IF max_age_days < 0 OR max_age_days > 36500 THEN
        PERFORM jobqueue._raise('max_age_days', 'must be between 0 and 36500 (or NULL for the queue''s setting)');
    END IF;
    RETURN jobqueue._archive(max_age_days, 2147483647, false);
END
$$;
COMMENT ON FUNCTION jobqueue.archive_dead_letters(integer) IS
    'Archive dead letters older than max_age_days (default: per queue, else the setting); returns the count';

CREATE FUNCTION jobqueue.purge_dead_letters(filter jsonb, "limit" integer DEFAULT 1000) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    f jobqueue._dead_letter_filter := jobqueue._parse_filter(filter);
    n integer;
BEGIN
    IF "limit" IS NULL OR "limit" NOT BETWEEN 1 AND 100000 THEN
        PERFORM jobqueue._raise('limit', 'must be between 1 and 100000');
    END IF;
    WITH d AS (
        DELETE FROM jobqueue.dead_letter x
        WHERE x.id = ANY (jobqueue._filter_dead_letters(f, ARRAY['dead_letter', 'archived']::jobqueue.job_state[],
                                                        "limit"))
        RETURNING x.id, x.token, x.queue, x.state
    ), ev AS (
        INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state, detail)
        SELECT d.id, d.token, d.queue, d.state, NULL, '{"action": "purge"}' FROM d
    )
    SELECT count(*) INTO n FROM d;
    RETURN n;
END
$$;
COMMENT ON FUNCTION jobqueue.purge_dead_letters(jsonb, integer) IS
    'Delete up to limit dead letters (dead_letter or archived) matching filter; returns the count';

-- =======================================================================================
-- == 8. MAINTENANCE ==
-- reconcile and its steps (leases, TTLs, retention, partitions); cron expressions and the
-- periodic schedules reconcile fires; queue settings and retry policies.
-- =======================================================================================

------------------------------------------------------------------------------------------
-- Reconcile: maintenance steps, each one guarded statement with a batch size
------------------------------------------------------------------------------------------
-- History partitions: daily (UTC) ranges named job_history_pYYYYMMDD, created `ahead` days in
-- advance, dropped when wholly older than the longest history retention. Names come from
-- dates only. Serialised by a transaction-scoped advisory lock (another reconcile running it
-- skips) and bounded by lock_timeout, so it never queues behind or blocks the hot path for
-- long; if it cannot get its locks it does nothing this time.
CREATE FUNCTION jobqueue._maintain_partitions(dry_run boolean) RETURNS jsonb
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

-- Reconcile step 5, priority aging where a queue sets aging_interval: a runnable-when-due job
-- (pending or retrying, waiting on no dependency) gains +1 priority per aging_interval waited
-- since run_at, up to 10, never down; at most lim jobs per call. Driven from the queues that
-- enable it, each read through job_claim_idx: with no such queue (the default) it reads no
-- job at all. (It used to join every job to its queue, and once the table's statistics said
-- it was big, the planner walked all of job_pkey for it on every reconcile, even with aging
-- off: a scan as long as the backlog, holding back the xmin horizon while it ran -- issue 13.)
-- A job blocked by dependencies is aged once it is unblocked (its gain counts from run_at).
CREATE FUNCTION jobqueue._age_priorities(lim integer, dry_run boolean) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    q record;
    n integer;
    aged integer := 0;
BEGIN
    FOR q IN SELECT x.name, x.aging_interval FROM jobqueue.queue x WHERE x.aging_interval IS NOT NULL
             ORDER BY x.name LOOP
        EXIT WHEN aged >= lim;
        IF dry_run THEN
            SELECT count(*) INTO n FROM (
                SELECT 1 FROM jobqueue.job j
                WHERE j.queue = q.name AND j.state IN ('pending', 'retrying') AND j.waiting_on = 0
                  AND j.run_at <= now() - q.aging_interval
                  AND j.priority < least(10, j.base_priority
                        + floor(extract(epoch FROM now() - j.run_at) / extract(epoch FROM q.aging_interval)))
                LIMIT lim - aged) AS s;
        ELSE
            WITH c AS (
                SELECT j.id FROM jobqueue.job j
                WHERE j.queue = q.name AND j.state IN ('pending', 'retrying') AND j.waiting_on = 0
                  AND j.run_at <= now() - q.aging_interval
                  AND j.priority < least(10, j.base_priority
                        + floor(extract(epoch FROM now() - j.run_at) / extract(epoch FROM q.aging_interval)))
                LIMIT lim - aged
                FOR UPDATE SKIP LOCKED
            ), u AS (
                UPDATE jobqueue.job j
                SET priority = greatest(j.priority, least(10, j.base_priority
                        + floor(extract(epoch FROM now() - j.run_at) / extract(epoch FROM q.aging_interval))))::smallint
                FROM c
                WHERE j.id = c.id AND j.state IN ('pending', 'retrying')
                RETURNING 1
            )
            SELECT count(*) INTO n FROM u;
        END IF;
        aged := aged + n;
    END LOOP;
    RETURN aged;
END
$$;

CREATE FUNCTION jobqueue.reconcile(batch integer DEFAULT 1000, dry_run boolean DEFAULT false) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    dry boolean := coalesce(dry_run, false);
    leases_retried integer := 0;
    leases_dead integer := 0;
    leases_cancelled integer := 0;
    expired integer := 0;
    dependents integer := 0;
    archived integer;
    pruned integer := 0;
    events_pruned integer := 0;
    logs_pruned integer := 0;
    workers_pruned integer := 0;
    aged integer := 0;
    finished bigint[];
    wake text[];
    parts jsonb;
    history_keep interval := make_interval(secs => jobqueue._conf('history_retention_s'));
    min_keep interval;
    drop_before timestamptz;
    -- cut-offs computed once: a setting read per row made pruning a full scan of the table
    events_before timestamptz := now() - make_interval(secs => jobqueue._conf('event_retention_s'));
    logs_before timestamptz := now() - make_interval(secs => jobqueue._conf('log_retention_s'));
    workers_before timestamptz := now() - make_interval(secs => jobqueue._conf('worker_retention_s'));
BEGIN
    IF batch IS NULL OR batch NOT BETWEEN 1 AND 100000 THEN
        PERFORM jobqueue._raise('batch', 'must be between 1 and 100000');
    END IF;

    -- (1) Expired leases. A job whose lease ran out is a failed attempt of class timeout:
    -- retrying (with the timeout delay), or dead-lettered (visibility_timeout_exceeded) when
    -- its attempts are used up, or cancelled when cancel was requested. Candidates are locked
    -- with SKIP LOCKED and the transition re-asserts state, token and expiry, so a job acked
    -- or heartbeated in the meantime keeps its new state.
    IF dry THEN
        SELECT count(*) FILTER (WHERE NOT s.cancel_requested AND s.attempt < s.max_attempts),
               count(*) FILTER (WHERE NOT s.cancel_requested AND s.attempt >= s.max_attempts),
               count(*) FILTER (WHERE s.cancel_requested)
        INTO leases_retried, leases_dead, leases_cancelled
        FROM (SELECT j.cancel_requested, j.attempt, j.max_attempts FROM jobqueue.job j
              WHERE j.state = 'processing' AND j.lease_expires_at < now() LIMIT batch) AS s;
    ELSE
        WITH c AS (
            SELECT j.id FROM jobqueue.job j
            WHERE j.state = 'processing' AND j.lease_expires_at < now()
            ORDER BY j.lease_expires_at, j.id
            LIMIT batch
            FOR UPDATE SKIP LOCKED
        ), o AS (
            SELECT j.id, j.token, x.outcome,
                   jsonb_build_object('at', now(), 'attempt', j.attempt, 'token', j.token, 'error_class', 'timeout',
                       'message', format('lease expired at %s without acknowledgement', j.lease_expires_at),
                       'traceback', NULL, 'worker_id', j.worker_id, 'source', 'reconcile',
                       'outcome', x.outcome) AS entry,
                   CASE WHEN x.outcome = 'retrying' THEN jobqueue.retry_delay(
                       jobqueue._effective_policy(j.queue, j.type, j.retry_policy), j.attempt, 'timeout', random())
                   END AS delay
            FROM jobqueue.job j JOIN c ON c.id = j.id
            CROSS JOIN LATERAL (SELECT CASE WHEN j.cancel_requested THEN 'cancelled'
                                            WHEN j.attempt >= j.max_attempts THEN 'dead_letter'
                                            ELSE 'retrying' END AS outcome) AS x
        ), u AS (
            UPDATE jobqueue.job j
            SET state = 'retrying', run_at = now() + o.delay, errors = jobqueue._append_error(j.errors, o.entry),
                worker_id = NULL, lease_expires_at = NULL
            FROM o
            WHERE j.id = o.id AND o.outcome = 'retrying'
              AND j.state = 'processing' AND j.token = o.token AND j.lease_expires_at < now()
            RETURNING j.id, j.token, j.queue, j.type, j.attempt, j.run_at
        ), counted AS (
            -- retries change no table, so no counter trigger sees them: one delta per (queue, type)
            INSERT INTO jobqueue.counter_delta (queue, type, failed, retried)
            SELECT u.queue, u.type, count(*), count(*) FROM u GROUP BY u.queue, u.type
        ), d AS (
            DELETE FROM jobqueue.job j USING o
            WHERE j.id = o.id AND o.outcome <> 'retrying'
              AND j.state = 'processing' AND j.token = o.token AND j.lease_expires_at < now()
            RETURNING j AS r, o.outcome, o.entry
        ), moved AS (
            SELECT d.outcome, jsonb_populate_record(d.r, jsonb_build_object(
                       'state', d.outcome, 'finished_at', now(), 'lease_expires_at', NULL,
                       'reason', CASE WHEN d.outcome = 'cancelled' THEN coalesce((d.r).reason, 'cancelled')
                                      ELSE 'visibility_timeout_exceeded' END,
                       'errors', jobqueue._append_error((d.r).errors, d.entry))) AS r
            FROM d
        ), h AS (
            INSERT INTO jobqueue.job_history SELECT (m.r).* FROM moved m WHERE m.outcome = 'cancelled'
        ), l AS (
            INSERT INTO jobqueue.dead_letter SELECT (m.r).* FROM moved m WHERE m.outcome = 'dead_letter'
        ), ev AS (
            INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state, detail)
            SELECT u.id, u.token, u.queue, 'processing'::jobqueue.job_state, 'retrying'::jobqueue.job_state,
                   jsonb_build_object('error_class', 'timeout', 'attempt', u.attempt, 'by', 'reconcile')
            FROM u
            UNION ALL
            SELECT (m.r).id, (m.r).token, (m.r).queue, 'processing'::jobqueue.job_state, (m.r).state,
                   jsonb_build_object('error_class', 'timeout', 'attempt', (m.r).attempt, 'reason', (m.r).reason,
                                      'by', 'reconcile')
            FROM moved m
        )
        SELECT (SELECT count(*) FROM u),
               (SELECT count(*) FROM moved m WHERE m.outcome = 'dead_letter'),
               (SELECT count(*) FROM moved m WHERE m.outcome = 'cancelled'),
               (SELECT array_agg((m.r).id) FROM moved m),
               (SELECT array_agg(DISTINCT u.queue) FROM u WHERE u.run_at <= now())
        INTO leases_retried, leases_dead, leases_cancelled, finished, wake;
        PERFORM jobqueue._notify(wake);
        IF finished IS NOT NULL THEN
            dependents := dependents + jobqueue._cancel_dependents(finished);
        END IF;
    END IF;

    -- (2) Expired jobs: waiting past expires_at (claim no longer picks them) -> dead letter 'expired'.
    IF dry THEN
        SELECT count(*) INTO expired FROM (
            SELECT 1 FROM jobqueue.job j
            WHERE j.expires_at <= now() AND j.state IN ('pending', 'retrying') LIMIT batch) AS s;
    ELSE
        WITH c AS (
            SELECT j.id FROM jobqueue.job j
            WHERE j.expires_at <= now() AND j.state IN ('pending', 'retrying')
            ORDER BY j.expires_at, j.id
            LIMIT batch
            FOR UPDATE SKIP LOCKED
        ), d AS (
            DELETE FROM jobqueue.job j USING c
            WHERE j.id = c.id AND j.state IN ('pending', 'retrying') AND j.expires_at <= now()
            RETURNING j AS r
        ), l AS (
            INSERT INTO jobqueue.dead_letter
            SELECT p.* FROM d, jsonb_populate_record(d.r, jsonb_build_object(
                'state', 'dead_letter', 'finished_at', now(), 'reason', 'expired', 'waiting_on', 0)) AS p
        ), ev AS (
            INSERT INTO jobqueue.job_event (job_id, token, queue, from_state, to_state, detail)
            SELECT (d.r).id, (d.r).token, (d.r).queue, (d.r).state, 'dead_letter',
                   jsonb_build_object('reason', 'expired', 'by', 'reconcile')
            FROM d
        )
        SELECT count(*), array_agg((d.r).id) INTO expired, finished FROM d;
        IF finished IS NOT NULL THEN
            dependents := dependents + jobqueue._cancel_dependents(finished);
        END IF;
    END IF;

    -- (3) Archive old dead letters.
    archived := jobqueue._archive(NULL, batch, dry);

    -- (4) Retention: delete expired history rows batch by batch (per queue retention; wholly
    -- expired partitions are dropped in step 6), old audit events
    -- (the only delete job_event accepts: flagged, as the owner), old log lines, stopped workers.
    min_keep := least(history_keep, coalesce((SELECT min(q.history_retention) FROM jobqueue.queue q), history_keep));
    -- Dated partitions wholly older than the longest retention are dropped in step 6: their
    -- rows are not deleted one by one here (only DEFAULT-partition rows that old are).
    drop_before := (((now() - greatest(history_keep, coalesce((SELECT max(q.history_retention) FROM jobqueue.queue q),
                                                               history_keep))) AT TIME ZONE 'UTC')::date)::timestamp
                   AT TIME ZONE 'UTC';
    IF dry THEN
        SELECT count(*) INTO pruned FROM (
            SELECT 1 FROM jobqueue.job_history h LEFT JOIN jobqueue.queue q ON q.name = h.queue
            WHERE h.finished_at < now() - min_keep
              AND h.finished_at < now() - coalesce(q.history_retention, history_keep)
              AND (h.finished_at >= drop_before OR h.tableoid = 'jobqueue.job_history_default'::regclass)
            LIMIT batch) AS s;
        SELECT count(*) INTO events_pruned FROM (
            SELECT 1 FROM jobqueue.job_event e
            WHERE e.at < events_before LIMIT batch) AS s;
        SELECT count(*) INTO logs_pruned FROM (
            SELECT 1 FROM jobqueue.job_log g
            WHERE g.at < logs_before LIMIT batch) AS s;
        SELECT count(*) INTO workers_pruned FROM jobqueue.worker w
        WHERE w.stopped_at < workers_before;
    ELSE
        WITH c AS (
            SELECT h.id, h.finished_at FROM jobqueue.job_history h LEFT JOIN jobqueue.queue q ON q.name = h.queue
            WHERE h.finished_at < now() - min_keep
              AND h.finished_at < now() - coalesce(q.history_retention, history_keep)
              AND (h.finished_at >= drop_before OR h.tableoid = 'jobqueue.job_history_default'::regclass)
            LIMIT batch
            FOR UPDATE OF h SKIP LOCKED
        ), d AS (
            DELETE FROM jobqueue.job_history h USING c
            WHERE h.id = c.id AND h.finished_at = c.finished_at
            RETURNING 1
        )
        SELECT count(*) INTO pruned FROM d;

        PERFORM set_config('jobqueue.pruning', 'on', true);
        DELETE FROM jobqueue.job_event e
        WHERE e.ctid = ANY (ARRAY(
            SELECT x.ctid FROM jobqueue.job_event x
            WHERE x.at < events_before LIMIT batch));
        GET DIAGNOSTICS events_pruned = ROW_COUNT;
        PERFORM set_config('jobqueue.pruning', 'off', true);

        DELETE FROM jobqueue.job_log g
        WHERE g.ctid = ANY (ARRAY(
            SELECT x.ctid FROM jobqueue.job_log x
            WHERE x.at < logs_before LIMIT batch));
        GET DIAGNOSTICS logs_pruned = ROW_COUNT;

        DELETE FROM jobqueue.worker w
        WHERE w.stopped_at < workers_before;
        GET DIAGNOSTICS workers_pruned = ROW_COUNT;
    END IF;

    -- (5) Priority aging, where a queue enables it (jobqueue._age_priorities).
    aged := jobqueue._age_priorities(batch, dry);

    -- (6) History partitions: create the coming days', drop the wholly expired ones. Last,
    -- because its DDL locks job_history until this transaction commits.
    parts := jobqueue._maintain_partitions(dry);
    IF NOT dry THEN
        UPDATE jobqueue.maintenance m SET last_run_at = now()
        WHERE m.step IN (SELECT x.step FROM jobqueue.maintenance x WHERE x.step = 'reconcile'
                         FOR UPDATE SKIP LOCKED);
    END IF;
    RETURN jsonb_build_object(
        'dry_run', dry,
        'expired_leases', leases_retried + leases_dead + leases_cancelled,
        'leases_retried', leases_retried,
        'leases_dead_lettered', leases_dead,
        'leases_cancelled', leases_cancelled,
        'expired', expired,
        'dependents_cancelled', dependents,
        'dead_letters_archived', archived,
        'history_pruned', pruned,
        'events_pruned', events_pruned,
        'logs_pruned', logs_pruned,
        'workers_pruned', workers_pruned,
        'aged', aged) || parts || jobqueue._fire_schedules(batch, dry)
        || jobqueue._detect_alerts(dry)
        || jobqueue._compact_counters(batch, dry);
END
$$;
COMMENT ON FUNCTION jobqueue.reconcile(integer, boolean) IS
    'Maintenance (expire leases, expire TTL''d jobs, archive, prune, age priorities, partitions, fire schedules, '
    'detect alerts, fold counters); JSON summary';

------------------------------------------------------------------------------------------
-- Cron expressions, evaluated in SQL (reference semantics: the Python library cronsim; see
-- docs/sql-api.md "Cron expressions" and tests/integration/test_cron.py, which compares
-- jobqueue.cron_next with cronsim over random expressions, instants and time zones)
------------------------------------------------------------------------------------------
-- A parsed expression: each field a bitmask of its values (bit n = value n), the single
-- minute/second when the field has exactly one value (else -1), whether day-of-month and
-- day-of-week are ANDed (either starts with '*') or ORed (Vixie cron), and whether the
-- expression is evaluated on wall-clock time (5 fields with a fixed minute and hour: DST gaps
-- run at the first minute after the gap, repeated times run once) or on elapsed time.
CREATE TYPE jobqueue._cron AS (
    seconds   bigint,
    minutes   bigint,
    hours     bigint,
    days      bigint,
    months    bigint,
    dows      bigint,
    one_sec   integer,
    one_min   integer,
    day_and   boolean,
    wall      boolean
);

-- Raise a cron parse error: field 'cron' (or the caller's label), naming the position.
CREATE FUNCTION jobqueue._cron_error(label text, pos integer, part text, token text, problem text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    RETURN jobqueue._raise(label, format('%s field %s at position %s: %s', part, to_jsonb(token), pos, problem));
END
$$;

-- One value of a field: a number (digits only) or, in month and day-of-week, a name.
CREATE FUNCTION jobqueue._cron_value(label text, pos integer, part text, s text, lo integer, hi integer,
                                     token text)
RETURNS integer
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    months constant text[] := '{JAN,FEB,MAR,APR,MAY,JUN,JUL,AUG,SEP,OCT,NOV,DEC}';
    days constant text[] := '{SUN,MON,TUE,WED,THU,FRI,SAT}';
    v numeric;
BEGIN
    IF part = 'month' AND upper(s) = ANY (months) THEN
        RETURN array_position(months, upper(s));
    ELSIF part = 'day-of-week' AND upper(s) = ANY (days) THEN
        RETURN array_position(days, upper(s)) - 1;
    END IF;
    IF s !~ '^[0-9]+$' THEN
        PERFORM jobqueue._cron_error(label, pos, part, token, CASE
            WHEN s = '' THEN 'a number is missing'
            WHEN upper(s) ~ '^(L|LW|\d*L|.*#.*|.*W)$' THEN format('%s is not supported (no L, W or #)', to_jsonb(s))
            WHEN part = 'month' THEN format('%s is not a number or a month name (JAN-DEC)', to_jsonb(s))
            WHEN part = 'day-of-week' THEN format('%s is not a number or a day name (SUN-SAT)', to_jsonb(s))
            ELSE format('%s is not a number', to_jsonb(s)) END);
    END IF;
    v := s::numeric;
    IF v < lo OR v > hi THEN
        PERFORM jobqueue._cron_error(label, pos, part, token, format('%s is not between %s and %s', v, lo, hi));
    END IF;
    RETURN v::integer;
END
$$;

-- One field -> bitmask of its values (cronsim's grammar: *, n, a-b, */s, n/s, a-b/s, lists;
-- without L, W and #).
CREATE FUNCTION jobqueue._cron_field(label text, pos integer, part text, s text, lo integer, hi integer,
                                     token text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    tok text := coalesce(token, s);
    m bigint := 0;
    items bigint;
    term text;
    step numeric;
    a integer;
    b integer;
    i integer;
    k integer := 0;
BEGIN
    IF s = '*' THEN
        FOR i IN lo..hi LOOP
            m := m | (1::bigint << i);
        END LOOP;
        RETURN m;
    END IF;
    IF strpos(s, ',') > 0 THEN
        FOREACH term IN ARRAY string_to_array(s, ',') LOOP
            m := m | jobqueue._cron_field(label, pos, part, term, lo, hi, tok);
        END LOOP;
        RETURN m;
    END IF;
    IF strpos(s, '/') > 0 THEN
        term := split_part(s, '/', 1);
        IF substr(s, strpos(s, '/') + 1) !~ '^[0-9]+$' THEN
            PERFORM jobqueue._cron_error(label, pos, part, tok,
                format('the step %s is not a number', to_jsonb(substr(s, strpos(s, '/') + 1))));
        END IF;
        step := substr(s, strpos(s, '/') + 1)::numeric;
        IF step = 0 THEN
            PERFORM jobqueue._cron_error(label, pos, part, tok, 'a step must be at least 1');
        END IF;
        step := least(step, 1000);
        items := jobqueue._cron_field(label, pos, part, term, lo, hi, tok);
        IF items & (items - 1) = 0 AND strpos(term, '-') = 0 THEN
            -- n/s: from n to the end of the range, every s-th
            a := 0;
            WHILE (items >> a) & 1 = 0 LOOP
                a := a + 1;
            END LOOP;
            i := a;
            WHILE i <= hi LOOP
                m := m | (1::bigint << i);
                i := i + step::integer;
            END LOOP;
            RETURN m;
        END IF;
        -- every s-th of the values, in order
        FOR i IN lo..hi LOOP
            IF (items >> i) & 1 = 1 THEN
                IF k % step::integer = 0 THEN
                    m := m | (1::bigint << i);
                END IF;
                k := k + 1;
            END IF;
        END LOOP;
        RETURN m;
    END IF;
    IF strpos(s, '-') > 0 THEN
        a := jobqueue._cron_value(label, pos, part, split_part(s, '-', 1), lo, hi, tok);
        b := jobqueue._cron_value(label, pos, part, substr(s, strpos(s, '-') + 1), lo, hi, tok);
        IF b < a THEN
            PERFORM jobqueue._cron_error(label, pos, part, tok,
                format('the range %s goes backwards', to_jsonb(s)));
        END IF;
        FOR i IN a..b LOOP
            m := m | (1::bigint << i);
        END LOOP;
        RETURN m;
    END IF;
    RETURN 1::bigint << jobqueue._cron_value(label, pos, part, s, lo, hi, tok);
END
$$;

-- Parse an expression: 5 fields (minute hour day-of-month month day-of-week), 6 with a
-- trailing seconds field (as croniter and Procrastinate read it), or a macro. Errors name
-- the field, its text and its position (1-based character offset) in the expression.
CREATE FUNCTION jobqueue._cron_parse(expr text, label text DEFAULT 'cron') RETURNS jobqueue._cron
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    names constant text[] := '{minute,hour,day-of-month,month,day-of-week,second}';
    los constant integer[] := '{0,0,1,1,0,0}';
    his constant integer[] := '{59,23,31,12,7,59}';
    month_days constant integer[] := '{31,29,31,30,31,30,31,31,30,31,30,31}';
    e text := expr;
    toks text[] := '{}';
    poss integer[] := '{}';
    masks bigint[] := '{0,0,0,0,0,0}';
    c jobqueue._cron;
    i integer;
    n integer;
    start integer := 0;
    ch text;
    min_day integer;
    longest integer := 0;
BEGIN
    IF expr IS NULL OR btrim(expr) = '' THEN
        PERFORM jobqueue._raise(label, 'must be a cron expression such as ''*/5 * * * *'' or ''@daily''');
    ELSIF length(expr) > 1000 THEN
        PERFORM jobqueue._raise(label, 'longer than 1000 characters');
    END IF;
    CASE lower(btrim(expr))
        WHEN '@hourly' THEN e := '0 * * * *';
        WHEN '@daily', '@midnight' THEN e := '0 0 * * *';
        WHEN '@weekly' THEN e := '0 0 * * 0';
        WHEN '@monthly' THEN e := '0 0 1 * *';
        WHEN '@yearly', '@annually' THEN e := '0 0 1 1 *';
        ELSE
            IF btrim(expr) LIKE '@%' THEN
                PERFORM jobqueue._raise(label, format('unknown macro %s (known: @hourly, @daily, @midnight, @weekly, '
                                                      '@monthly, @yearly, @annually)', to_jsonb(btrim(expr))));
            END IF;
    END CASE;
    -- split on whitespace, remembering where each field starts
    FOR i IN 1..length(e) + 1 LOOP
        ch := substr(e, i, 1);
        IF ch = '' OR ch ~ '\s' THEN
            IF start > 0 THEN
                toks := toks || substr(e, start, i - start);
                poss := poss || start;
                start := 0;
            END IF;
        ELSIF start = 0 THEN
            start := i;
        END IF;
    END LOOP;
    n := cardinality(toks);
    IF n NOT IN (5, 6) THEN
        PERFORM jobqueue._raise(label, format('has %s fields; expected 5 (minute hour day-of-month month day-of-week) '
                                              'or 6 (the same and a second)', n));
    END IF;
    IF e IS DISTINCT FROM expr THEN
        poss := '{1,1,1,1,1}';  -- a macro: positions refer to the macro itself
    END IF;
    -- cronsim's order: second, minute, hour, day-of-month, month, day-of-week
    IF n = 6 THEN
        masks[6] := jobqueue._cron_field(label, poss[6], names[6], toks[6], los[6], his[6]);
    ELSE
        masks[6] := 1;
    END IF;
    FOR i IN 1..5 LOOP
        masks[i] := jobqueue._cron_field(label, poss[i], names[i], toks[i], los[i], his[i]);
    END LOOP;
    c.seconds := masks[6];
    c.minutes := masks[1];
    c.hours := masks[2];
    c.days := masks[3];
    c.months := masks[4];
    c.dows := masks[5];
    c.day_and := left(toks[3], 1) = '*' OR left(toks[5], 1) = '*';
    c.wall := n = 5 AND left(toks[1], 1) <> '*' AND left(toks[2], 1) <> '*';
    c.one_sec := CASE WHEN c.seconds & (c.seconds - 1) = 0 THEN round(log(2, c.seconds::numeric))::integer ELSE -1 END;
    c.one_min := CASE WHEN c.minutes & (c.minutes - 1) = 0 THEN round(log(2, c.minutes::numeric))::integer ELSE -1 END;
    -- a day that no month given has (0 0 31 2 *, 0 0 30 2 *) never comes
    min_day := 1;
    WHILE (c.days >> min_day) & 1 = 0 LOOP
        min_day := min_day + 1;
    END LOOP;
    IF min_day > 29 AND c.day_and THEN
        FOR i IN 1..12 LOOP
            IF (c.months >> i) & 1 = 1 THEN
                longest := greatest(longest, month_days[i]);
            END IF;
        END LOOP;
        IF min_day > longest THEN
            PERFORM jobqueue._cron_error(label, poss[3], names[3], toks[3],
                format('day %s never occurs in the months given (%s)', min_day, toks[4]));
        END IF;
    END IF;
    RETURN c;
END
$$;

-- The UTC offset of a zone at an instant.
CREATE FUNCTION jobqueue._tz_offset(t timestamptz, tz text) RETURNS interval
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT (t AT TIME ZONE tz) - (t AT TIME ZONE 'UTC');
END;

-- The instant of a wall-clock time in a zone, resolved as Python's zoneinfo does (PEP 495):
-- a repeated time is its first occurrence when fold = 0, its second when fold = 1; a
-- skipped time is read with the offset before the gap when fold = 0, after it when fold = 1.
CREATE FUNCTION jobqueue._tz_instant(w timestamp, fold integer, tz text) RETURNS timestamptz
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    u timestamptz := w AT TIME ZONE 'UTC';
    lo timestamptz := u - interval '15 hours';
    hi timestamptz := u + interval '15 hours';
    o_before interval := jobqueue._tz_offset(lo, tz);
    o_after interval := jobqueue._tz_offset(hi, tz);
    mid timestamptz;
    boundary timestamp;
BEGIN
    IF o_before = o_after THEN
        RETURN u - o_before;
    END IF;
    -- the transition between lo and hi, to the second
    WHILE hi - lo > interval '1 second' LOOP
        mid := lo + make_interval(secs => floor(extract(epoch FROM hi - lo) / 2));
        IF jobqueue._tz_offset(mid, tz) = o_before THEN
            lo := mid;
        ELSE
            hi := mid;
        END IF;
    END LOOP;
    boundary := (hi AT TIME ZONE 'UTC') + CASE WHEN fold = 0 THEN greatest(o_before, o_after)
                                              ELSE least(o_before, o_after) END;
    RETURN u - CASE WHEN w < boundary THEN o_before ELSE o_after END;
END
$$;

-- The first fire time after an instant (cronsim's algorithm, step for step, so that DST gaps
-- and overlaps come out exactly as cronsim's). NULL when nothing matches for 50 years.
CREATE FUNCTION jobqueue._cron_next(c jobqueue._cron, after timestamptz, tz text) RETURNS timestamptz
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    t timestamptz := date_trunc('second', after);  -- its instant (elapsed-time mode; NULL: from w, f)
    w timestamp := t AT TIME ZONE tz;   -- the wall-clock time being advanced
    f integer;                           -- its fold (elapsed-time mode; NULL: read it from t)
    wall boolean := c.wall AND tz <> 'UTC';
    start_year integer;
    needle date;
    r timestamptz;
    x integer;
BEGIN
    -- __next__ ticks one second first (wall-clock mode: on the wall time; elapsed-time mode:
    -- on the instant, reading the wall time and its fold back), then advances field by field
    IF wall THEN
        w := w + interval '1 second';
    ELSE
        t := t + interval '1 second';
        w := t AT TIME ZONE tz;
        f := NULL;  -- read from t when needed
    END IF;
    start_year := extract(year FROM w);
    LOOP
        -- month
        IF (c.months >> extract(month FROM w)::integer) & 1 = 0 THEN
            needle := date_trunc('month', w)::date;
            LOOP
                needle := (needle + interval '1 month')::date;
                EXIT WHEN (c.months >> extract(month FROM needle)::integer) & 1 = 1;
            END LOOP;
            w := needle::timestamp;
            f := 0;
            t := NULL;
        END IF;
        IF extract(year FROM w) > start_year + 50 THEN
            RETURN NULL;
        END IF;
        -- day (Vixie: day-of-month AND day-of-week when either starts with '*', else OR)
        needle := w::date;
        IF NOT jobqueue._cron_day(c, needle) THEN
            LOOP
                needle := needle + 1;
                EXIT WHEN jobqueue._cron_day(c, needle) OR extract(day FROM needle) = 1;
            END LOOP;
            w := needle::timestamp;
            f := 0;
            t := NULL;
            CONTINUE;
        END IF;
        -- hour
        IF (c.hours >> extract(hour FROM w)::integer) & 1 = 0 THEN
            IF NOT wall AND f IS NULL THEN
                f := CASE WHEN jobqueue._tz_instant(w, 0, tz) = t THEN 0 ELSE 1 END;
            END IF;
            w := date_trunc('hour', w);  -- Python's replace(): the same fold
            t := NULL;
            LOOP
                IF wall THEN
                    w := w + interval '1 hour';
                ELSE
                    t := coalesce(t, jobqueue._tz_instant(w, f, tz)) + interval '1 hour';
                    w := t AT TIME ZONE tz;
                    f := NULL;  -- read from t when needed
                END IF;
                EXIT WHEN (c.hours >> extract(hour FROM w)::integer) & 1 = 1 OR extract(hour FROM w) = 0;
            END LOOP;
            CONTINUE;
        END IF;
        -- minute
        IF (c.minutes >> extract(minute FROM w)::integer) & 1 = 0 THEN
            IF NOT wall AND f IS NULL THEN
                f := CASE WHEN jobqueue._tz_instant(w, 0, tz) = t THEN 0 ELSE 1 END;
            END IF;
            w := date_trunc('minute', w);  -- Python's replace(): the same fold
            t := NULL;
            IF c.one_min >= 0 THEN
                x := ((c.one_min - extract(minute FROM w)::integer) % 60 + 60) % 60;
                IF wall THEN
                    w := w + make_interval(mins => x);
                ELSE
                    t := coalesce(t, jobqueue._tz_instant(w, f, tz)) + make_interval(mins => x);
                    w := t AT TIME ZONE tz;
                    f := NULL;  -- read from t when needed
                END IF;
            END IF;
            WHILE (c.minutes >> extract(minute FROM w)::integer) & 1 = 0 LOOP
                IF wall THEN
                    w := w + interval '1 minute';
                ELSE
                    t := coalesce(t, jobqueue._tz_instant(w, f, tz)) + interval '1 minute';
                    w := t AT TIME ZONE tz;
                    f := NULL;  -- read from t when needed
                END IF;
                EXIT WHEN extract(minute FROM w) = 0;
            END LOOP;
            CONTINUE;
        END IF;
        -- second
        IF (c.seconds >> floor(extract(second FROM w))::integer) & 1 = 0 THEN
            IF c.one_sec >= 0 THEN
                x := ((c.one_sec - floor(extract(second FROM w))::integer) % 60 + 60) % 60;
                IF wall THEN
                    w := w + make_interval(secs => x);
                ELSE
                    t := coalesce(t, jobqueue._tz_instant(w, f, tz)) + make_interval(secs => x);
                    w := t AT TIME ZONE tz;
                    f := NULL;  -- read from t when needed
                END IF;
            END IF;
            WHILE (c.seconds >> floor(extract(second FROM w))::integer) & 1 = 0 LOOP
                IF wall THEN
                    w := w + interval '1 second';
                ELSE
                    t := coalesce(t, jobqueue._tz_instant(w, f, tz)) + interval '1 second';
                    w := t AT TIME ZONE tz;
                    f := NULL;  -- read from t when needed
                END IF;
                EXIT WHEN floor(extract(second FROM w)) = 0;
            END LOOP;
            CONTINUE;
        END IF;
        EXIT;
    END LOOP;
    IF wall THEN
        -- a skipped wall time moves to the first minute that exists; a repeated one is its
        -- first occurrence
        LOOP
            r := jobqueue._tz_instant(w, 0, tz);
            EXIT WHEN (r AT TIME ZONE tz) = w;
            w := w + interval '1 minute';
        END LOOP;
        RETURN r;
    END IF;
    RETURN coalesce(t, jobqueue._tz_instant(w, f, tz));
END
$$;

-- Whether a date matches the day-of-month and day-of-week fields.
CREATE FUNCTION jobqueue._cron_day(c jobqueue._cron, d date) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT CASE WHEN c.day_and
                THEN (c.days >> extract(day FROM d)::integer) & 1 = 1
                     AND ((c.dows >> extract(isodow FROM d)::integer) & 1 = 1
                          OR (c.dows >> (extract(isodow FROM d)::integer % 7)) & 1 = 1)
                ELSE (c.days >> extract(day FROM d)::integer) & 1 = 1
                     OR (c.dows >> extract(isodow FROM d)::integer) & 1 = 1
                     OR (c.dows >> (extract(isodow FROM d)::integer % 7)) & 1 = 1
           END;
END;

-- Raise unless tz names a time zone of the IANA database that PostgreSQL knows.
CREATE FUNCTION jobqueue._check_tz(tz text, label text DEFAULT 'tz') RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    IF tz IS NULL OR tz = '' THEN
        PERFORM jobqueue._raise(label, 'must be an IANA time zone name such as UTC or Europe/Berlin');
    ELSIF tz = 'UTC' OR EXISTS (SELECT 1 FROM jobqueue.schedule s WHERE s.tz = _check_tz.tz) THEN
        RETURN tz;  -- known good (pg_timezone_names reads every zone file: ~100 ms a call)
    ELSIF length(tz) > 64 OR NOT EXISTS (SELECT 1 FROM pg_timezone_names z WHERE z.name = tz) THEN
        PERFORM jobqueue._raise(label, format('unknown time zone %s (expected an IANA name such as UTC or '
                                              'Europe/Berlin)', to_jsonb(left(tz, 100))));
    END IF;
    RETURN tz;
END
$$;

CREATE FUNCTION jobqueue.cron_next(expr text, after timestamptz DEFAULT NULL, tz text DEFAULT 'UTC',
                                   n integer DEFAULT 1)
RETURNS SETOF timestamptz
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    c jobqueue._cron := jobqueue._cron_parse(expr, 'expr');
    t timestamptz := coalesce(after, now());
    i integer;
BEGIN
    PERFORM jobqueue._check_tz(tz);
    IF n IS NULL OR n NOT BETWEEN 1 AND 10000 THEN
        PERFORM jobqueue._raise('n', 'must be between 1 and 10000');
    END IF;
    IF NOT isfinite(t) THEN
        PERFORM jobqueue._raise('after', 'must be a finite timestamp');
    END IF;
    FOR i IN 1..n LOOP
        t := jobqueue._cron_next(c, t, tz);
        EXIT WHEN t IS NULL;
        RETURN NEXT t;
    END LOOP;
END
$$;
COMMENT ON FUNCTION jobqueue.cron_next(text, timestamptz, text, integer) IS
    'The next n fire times of a cron expression after an instant, in a time zone (cronsim semantics); see docs/sql-api.md';

------------------------------------------------------------------------------------------
-- Periodic schedules: a cron expression and a job template; reconcile fires each tick once
------------------------------------------------------------------------------------------
-- One row per schedule; private: set_schedule / pause_schedule / resume_schedule /
-- remove_schedule / sync_schedules write it, the schedules view reads it. next_at is the next
-- tick not yet fired (reconcile fires it ahead, within schedule_lookahead_s, and moves it on
-- in the same transaction).
CREATE TABLE jobqueue.schedule (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     text,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200 AND name !~ '[[:cntrl:]]'),
    cron          text NOT NULL,
    tz            text NOT NULL DEFAULT 'UTC',
    job           jsonb NOT NULL CHECK (jsonb_typeof(job) = 'object'),
    missed        text NOT NULL DEFAULT 'skip' CHECK (missed IN ('skip', 'latest', 'all')),
    max_backfill  integer NOT NULL DEFAULT 100 CHECK (max_backfill BETWEEN 0 AND 10000),
    paused        boolean NOT NULL DEFAULT false,
    paused_reason text,
    declared_by   text,                -- the app whose workers declared it (sync_schedules)
    next_at       timestamptz,         -- next tick to fire; NULL: the expression never fires again
    last_tick_at  timestamptz,
    last_job_id   bigint,
    last_error    text,                -- why the last firing failed (the tick is retried)
    last_error_at timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL DEFAULT session_user,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- a name is unique per tenant (single-tenant installs: tenant_id NULL, one name space)
    CONSTRAINT schedule_name_key UNIQUE NULLS NOT DISTINCT (name, tenant_id)
);
COMMENT ON TABLE jobqueue.schedule IS 'Periodic schedules (cron + job template); private, read jobqueue.schedules';
-- Reconcile's probe: the schedules due within the lookahead.
CREATE INDEX schedule_due_idx ON jobqueue.schedule (next_at) WHERE NOT paused;

-- The exactly-once guard: a (schedule, tick) row is written in the transaction that enqueues
-- the tick's job, so a tick fires once however many reconcilers race, across restarts, and
-- again only if that transaction rolled back (then nothing of it was kept). Pruned by
-- reconcile after history_retention_s; removing a schedule removes its rows, not its jobs.
CREATE TABLE jobqueue.schedule_tick (
    schedule_id bigint NOT NULL REFERENCES jobqueue.schedule (id) ON DELETE CASCADE,
    tick        timestamptz NOT NULL,
    job_id      bigint,
    fired_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_id, tick)
);
COMMENT ON TABLE jobqueue.schedule_tick IS 'Ticks fired per schedule (the exactly-once guard); private';
CREATE INDEX schedule_tick_fired_idx ON jobqueue.schedule_tick USING brin (fired_at);

INSERT INTO jobqueue.setting (key, value, description) VALUES
    ('schedule_lookahead_s', '60', 'reconcile enqueues schedule ticks due within this many seconds, with run_at = the tick '
                                   '(keep it at least the interval between reconcile runs)'),
    ('schedule_grace_s', '60', 'a schedule tick at most this many seconds late still fires under missed = skip; '
                               'older ones are missed ticks (policy skip, latest or all)');

REVOKE ALL ON jobqueue.schedule, jobqueue.schedule_tick FROM PUBLIC;

-- The last k ticks in [from_at, upto) (oldest first): scans a window before upto that
-- doubles until it holds k ticks or reaches from_at, so a long outage costs O(k log), not
-- one step per missed tick.
CREATE FUNCTION jobqueue._cron_last(c jobqueue._cron, tz text, from_at timestamptz, upto timestamptz, k integer)
RETURNS timestamptz[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    w interval := interval '2 minutes';
    s timestamptz;
    t timestamptz;
    found timestamptz[];
BEGIN
    IF k < 1 OR from_at >= upto THEN
        RETURN '{}';
    END IF;
    LOOP
        s := greatest(from_at, upto - w);
        found := '{}';
        t := jobqueue._cron_next(c, s - interval '1 second', tz);
        WHILE t IS NOT NULL AND t < upto LOOP
            IF t >= s THEN
                found := found || t;
            END IF;
            IF cardinality(found) > 4 * k + 100 THEN
                found := found[cardinality(found) - k + 1:];
            END IF;
            t := jobqueue._cron_next(c, t, tz);
        END LOOP;
        IF cardinality(found) >= k OR s = from_at THEN
            RETURN found[greatest(cardinality(found) - k + 1, 1):];
        END IF;
        w := w * CASE WHEN cardinality(found) = 0 THEN 8 ELSE least(8, ceil(k::numeric / cardinality(found)) + 1) END;
    END LOOP;
END
$$;

-- Why a schedule name is invalid, or NULL.
CREATE FUNCTION jobqueue._check_schedule_name(name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    IF name IS NULL OR name = '' THEN
        PERFORM jobqueue._raise('name', 'must be a non-empty string');
    ELSIF length(name) > 200 THEN
        PERFORM jobqueue._raise('name', 'longer than 200 characters');
    ELSIF name ~ '[[:cntrl:]]' THEN
        PERFORM jobqueue._raise('name', 'must not contain control characters');
    END IF;
    RETURN name;
END
$$;

-- Raise unless a job template is one enqueue accepts: checked by enqueuing it for real in a
-- subtransaction that is always rolled back (the same checks, messages and limits as
-- enqueue's, prefixed job.); returns the template.
CREATE FUNCTION jobqueue._check_template(job jsonb, label text DEFAULT 'job') RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    allowed constant text[] := ARRAY['type', 'payload', 'queue', 'priority', 'max_attempts', 'retry_policy',
                                     'unique_key', 'tags', 'metadata', 'timeout', 'visibility_timeout'];
    k text;
    msg text;
    col text;
BEGIN
    IF job IS NULL OR jsonb_typeof(job) <> 'object' THEN
        PERFORM jobqueue._raise(label, 'must be a JSON object with at least "type"');
    END IF;
    FOR k IN SELECT jsonb_object_keys(job) LOOP
        IF k IN ('run_at', 'delay') THEN
            PERFORM jobqueue._raise(label || '.' || k, 'is set by the schedule: each job runs at its tick', label || '.' || k);
        ELSIF NOT k = ANY (allowed) THEN
            PERFORM jobqueue._raise(label || '.' || k, format('unknown key (known: %s)', array_to_string(allowed, ', ')));
        END IF;
    END LOOP;
    IF NOT job ? 'type' THEN
        PERFORM jobqueue._raise(label || '.type', 'must be a non-empty string');
    END IF;
    BEGIN
        PERFORM jobqueue._enqueue(jsonb_build_array(job || jsonb_build_object('tenant_id', jobqueue._tenant())), true);
        RAISE EXCEPTION USING ERRCODE = 'JQ000', MESSAGE = 'probe';  -- roll the probe back
    EXCEPTION
        WHEN SQLSTATE 'JQ000' OR SQLSTATE '53400' THEN
            NULL;  -- accepted (a full queue is a state of now, not a fault of the template)
        WHEN invalid_parameter_value OR string_data_right_truncation OR invalid_text_representation THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, col = COLUMN_NAME;
            col := label || '.' || coalesce(nullif(col, ''), 'job');
            PERFORM jobqueue._raise(col, regexp_replace(msg, '^[^:]*: ', ''));
    END;
    RETURN job;
END
$$;

-- The schedule row of the caller's tenant with that name, locked; raises P0002 when none.
CREATE FUNCTION jobqueue._schedule_of(name text) RETURNS jobqueue.schedule
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    s jobqueue.schedule;
BEGIN
    PERFORM jobqueue._check_schedule_name(name);
    SELECT * INTO s FROM jobqueue.schedule x
    WHERE x.name = _schedule_of.name AND x.tenant_id IS NOT DISTINCT FROM jobqueue._tenant()
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', COLUMN = 'name',
            MESSAGE = format('name: no schedule named %s', to_jsonb(name));
    END IF;
    RETURN s;
END
$$;

-- Stop a schedule's future ticks: the jobs already enqueued for ticks after now (still
-- waiting) are cancelled with the given reason and their ticks forgotten (a re-planned
-- expression may fire the same instants again).
CREATE FUNCTION jobqueue._drop_future_ticks(schedule_id bigint, reason text) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    ids bigint[];
BEGIN
    WITH d AS (
        DELETE FROM jobqueue.schedule_tick k
        WHERE k.schedule_id = _drop_future_ticks.schedule_id AND k.tick > now()
        RETURNING k.job_id
    )
    SELECT array_agg(d.job_id) INTO ids FROM d WHERE d.job_id IS NOT NULL;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    RETURN jobqueue._finish_waiting(ids, 'cancelled', reason);
END
$$;

CREATE FUNCTION jobqueue.set_schedule(
    name text,
    cron text,
    job jsonb,
    tz text DEFAULT 'UTC',
    missed text DEFAULT 'skip',
    max_backfill integer DEFAULT 100,
    paused boolean DEFAULT NULL,
    declared_by text DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    c jobqueue._cron;
    zone text := coalesce(tz, 'UTC');
    policy text := coalesce(missed, 'skip');
    backfill integer := coalesce(max_backfill, 100);
    old jobqueue.schedule;
    first_tick timestamptz;
    replan boolean;
    new_id bigint;
BEGIN
    PERFORM jobqueue._check_schedule_name(name);
    c := jobqueue._cron_parse(cron, 'cron');
    PERFORM jobqueue._check_tz(zone);
    IF policy NOT IN ('skip', 'latest', 'all') THEN
        PERFORM jobqueue._raise('missed', 'must be one of skip, latest, all');
    END IF;
    IF backfill NOT BETWEEN 0 AND 10000 THEN
        PERFORM jobqueue._raise('max_backfill', 'must be an integer between 0 and 10000');
    END IF;
    IF length(declared_by) > 200 THEN
        PERFORM jobqueue._raise('declared_by', 'longer than 200 characters');
    END IF;
    PERFORM jobqueue._check_template(job);
    first_tick := jobqueue._cron_next(c, now(), zone);
    IF first_tick IS NULL THEN
        PERFORM jobqueue._raise('cron', format('%s never fires (no matching time in the next 50 years)', to_jsonb(cron)));
    END IF;

    SELECT * INTO old FROM jobqueue.schedule x
    WHERE x.name = set_schedule.name AND x.tenant_id IS NOT DISTINCT FROM jobqueue._tenant()
    FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO jobqueue.schedule AS x (tenant_id, name, cron, tz, job, missed, max_backfill, paused,
                                            paused_reason, declared_by, next_at)
        VALUES (jobqueue._tenant(), name, cron, zone, job, policy, backfill, coalesce(paused, false),
                CASE WHEN paused THEN 'paused' END, declared_by, first_tick)
        ON CONFLICT ON CONSTRAINT schedule_name_key DO NOTHING
        RETURNING x.id INTO new_id;
        IF new_id IS NULL THEN  -- created concurrently: replace it
            RETURN jobqueue.set_schedule(name, cron, job, tz, missed, max_backfill, paused, declared_by);
        END IF;
    ELSE
        -- a new expression, zone or template re-plans the future ticks (the waiting jobs of
        -- ticks after now are cancelled and fired again from the new definition); so does resuming
        replan := old.cron <> cron OR old.tz <> zone OR old.job <> job
                  OR (old.paused AND NOT coalesce(paused, old.paused));
        IF old.cron <> cron OR old.tz <> zone OR old.job <> job THEN
            PERFORM jobqueue._drop_future_ticks(old.id, 'schedule_changed');
        END IF;
        UPDATE jobqueue.schedule x
        SET cron = set_schedule.cron, tz = zone, job = set_schedule.job, missed = policy, max_backfill = backfill,
            paused = coalesce(set_schedule.paused, x.paused),
            paused_reason = CASE WHEN coalesce(set_schedule.paused, x.paused) THEN coalesce(x.paused_reason, 'paused') END,
            declared_by = coalesce(set_schedule.declared_by, x.declared_by),
            next_at = CASE WHEN replan THEN first_tick ELSE x.next_at END,
            last_error = CASE WHEN replan THEN NULL ELSE x.last_error END,
            updated_at = now()
        WHERE x.id = old.id;
        IF set_schedule.paused AND NOT old.paused THEN
            PERFORM jobqueue._drop_future_ticks(old.id, 'schedule_paused');
        END IF;
        new_id := old.id;
    END IF;
    RETURN (SELECT to_jsonb(v) FROM jobqueue.schedules v WHERE v.id = new_id);
END
$$;
COMMENT ON FUNCTION jobqueue.set_schedule(text, text, jsonb, text, text, integer, boolean, text) IS
    'Create or replace a periodic schedule (cron expression, zone, job template, missed-tick policy); see docs/sql-api.md';

CREATE FUNCTION jobqueue.pause_schedule(name text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    s jobqueue.schedule := jobqueue._schedule_of(name);
BEGIN
    IF NOT s.paused THEN
        UPDATE jobqueue.schedule x SET paused = true, paused_reason = 'paused', updated_at = now() WHERE x.id = s.id;
        PERFORM jobqueue._drop_future_ticks(s.id, 'schedule_paused');
    END IF;
    RETURN (SELECT to_jsonb(v) FROM jobqueue.schedules v WHERE v.id = s.id);
END
$$;
COMMENT ON FUNCTION jobqueue.pause_schedule(text) IS
    'Stop a schedule firing (jobs already enqueued for future ticks are cancelled); resume_schedule starts it again';

CREATE FUNCTION jobqueue.resume_schedule(name text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    s jobqueue.schedule := jobqueue._schedule_of(name);
BEGIN
    IF s.paused THEN
        -- ticks that passed while paused are not missed ticks: the schedule starts afresh
        UPDATE jobqueue.schedule x
        SET paused = false, paused_reason = NULL, updated_at = now(),
            next_at = jobqueue._cron_next(jobqueue._cron_parse(x.cron), now(), x.tz)
        WHERE x.id = s.id;
    END IF;
    RETURN (SELECT to_jsonb(v) FROM jobqueue.schedules v WHERE v.id = s.id);
END
$$;
COMMENT ON FUNCTION jobqueue.resume_schedule(text) IS 'Start a paused schedule again from its next tick after now';

CREATE FUNCTION jobqueue.remove_schedule(name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    PERFORM jobqueue._check_schedule_name(name);
    DELETE FROM jobqueue.schedule x
    WHERE x.name = remove_schedule.name AND x.tenant_id IS NOT DISTINCT FROM jobqueue._tenant();
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION jobqueue.remove_schedule(text) IS
    'Delete a schedule (false when there was none); jobs it already enqueued are left alone';

CREATE FUNCTION jobqueue.schedule_next(name text, n integer DEFAULT 5) RETURNS SETOF timestamptz
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    s jobqueue.schedule;
    c jobqueue._cron;
    t timestamptz;
    i integer;
BEGIN
    PERFORM jobqueue._check_schedule_name(name);
    IF n IS NULL OR n NOT BETWEEN 1 AND 10000 THEN
        PERFORM jobqueue._raise('n', 'must be between 1 and 10000');
    END IF;
    SELECT * INTO s FROM jobqueue.schedule x
    WHERE x.name = schedule_next.name AND x.tenant_id IS NOT DISTINCT FROM jobqueue._tenant();
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', COLUMN = 'name',
            MESSAGE = format('name: no schedule named %s', to_jsonb(name));
    END IF;
    c := jobqueue._cron_parse(s.cron);
    -- from the next planned tick (a paused schedule: as it would run if resumed now)
    t := CASE WHEN s.paused OR s.next_at IS NULL THEN jobqueue._cron_next(c, now(), s.tz) ELSE s.next_at END;
    FOR i IN 1..n LOOP
        EXIT WHEN t IS NULL;
        RETURN NEXT t;
        t := jobqueue._cron_next(c, t, s.tz);
    END LOOP;
END
$$;
COMMENT ON FUNCTION jobqueue.schedule_next(text, integer) IS 'The next n times a schedule fires';

-- A worker declares its app's schedules: each is created or replaced (declared_by = app),
-- one paused earlier because it was no longer declared is resumed, and every schedule
-- declared by that app before but not now is paused (never deleted). Returns the names
-- {"upserted": [...], "paused": [...], "resumed": [...]}; all or nothing.
CREATE FUNCTION jobqueue.sync_schedules(app text, schedules jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    e jsonb;
    i integer := 0;
    names text[] := '{}';
    paused_names text[];
    resumed text[] := '{}';
    msg text;
    col text;
    was jobqueue.schedule;
BEGIN
    IF app IS NULL OR app = '' OR length(app) > 200 OR app ~ '[[:cntrl:]]' THEN
        PERFORM jobqueue._raise('app', 'must be 1-200 characters without control characters');
    END IF;
    IF jsonb_typeof(schedules) IS DISTINCT FROM 'array' THEN
        PERFORM jobqueue._raise('schedules', 'must be a JSON array of {name, cron, job, tz, missed, max_backfill}');
    END IF;
    FOR e IN SELECT x FROM jsonb_array_elements(schedules) AS x LOOP
        BEGIN
            IF jsonb_typeof(e) <> 'object' THEN
                PERFORM jobqueue._raise('schedule', 'must be a JSON object');
            END IF;
            SELECT * INTO was FROM jobqueue.schedule x
            WHERE x.name = e->>'name' AND x.tenant_id IS NOT DISTINCT FROM jobqueue._tenant();
            PERFORM jobqueue.set_schedule(name => e->>'name', cron => e->>'cron', job => e->'job',
                tz => e->>'tz', missed => e->>'missed', max_backfill => (e->>'max_backfill')::integer,
                paused => CASE WHEN was.paused_reason = 'undeclared' THEN false END, declared_by => app);
            IF was.paused_reason = 'undeclared' THEN
                resumed := resumed || (e->>'name');
            END IF;
        EXCEPTION WHEN invalid_parameter_value OR string_data_right_truncation OR invalid_text_representation THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, col = COLUMN_NAME;
            PERFORM jobqueue._raise(format('schedules[%s].%s', i, coalesce(nullif(col, ''), 'schedule')),
                                    format('%s (schedule %s)', regexp_replace(msg, '^[^:]*: ', ''),
                                           coalesce(to_jsonb(e->>'name'), 'null')));
        END;
        names := names || (e->>'name');
        i := i + 1;
    END LOOP;
    WITH p AS (
        UPDATE jobqueue.schedule x SET paused = true, paused_reason = 'undeclared', updated_at = now()
        WHERE x.declared_by = app AND x.tenant_id IS NOT DISTINCT FROM jobqueue._tenant()
          AND NOT x.paused AND NOT x.name = ANY (names)
        RETURNING x.id, x.name
    )
    SELECT array_agg(p.name ORDER BY p.name), count(jobqueue._drop_future_ticks(p.id, 'schedule_undeclared'))
    INTO paused_names FROM p;
    RETURN jsonb_build_object('upserted', to_jsonb(names), 'paused', to_jsonb(coalesce(paused_names, '{}')),
                              'resumed', to_jsonb(resumed));
END
$$;
COMMENT ON FUNCTION jobqueue.sync_schedules(text, jsonb) IS
    'Create or replace the schedules an app declares and pause (never delete) the ones it no longer declares';

-- Fire ticks: (schedule, tick) pairs, ordered by schedule then tick. Each pair whose guard
-- row is new gets one job (all in one set-based enqueue, ids in input order); the guard rows
-- get their job ids and the schedules their last tick and job. Returns the jobs enqueued.
CREATE FUNCTION jobqueue._fire_ticks(sids bigint[], ticks timestamptz[]) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    new_sids bigint[];
    new_ticks timestamptz[];
    ids bigint[];
BEGIN
    WITH g AS (
        INSERT INTO jobqueue.schedule_tick AS k (schedule_id, tick)
        SELECT u.sid, u.tick FROM unnest(sids, ticks) AS u(sid, tick)
        ON CONFLICT DO NOTHING  -- fired already
        RETURNING k.schedule_id, k.tick
    )
    SELECT array_agg(g.schedule_id ORDER BY g.schedule_id, g.tick), array_agg(g.tick ORDER BY g.schedule_id, g.tick)
    INTO new_sids, new_ticks FROM g;
    IF new_sids IS NULL THEN
        RETURN 0;
    END IF;
    ids := ARRAY(
        SELECT e.id FROM jobqueue._enqueue((
            SELECT jsonb_agg(s.job || jsonb_build_object(
                       'run_at', u.tick, 'tenant_id', s.tenant_id,
                       'metadata', coalesce(nullif(s.job->'metadata', 'null'), '{}')
                                   || jsonb_build_object('schedule', s.name, 'tick', u.tick)) ORDER BY u.o)
            FROM unnest(new_sids, new_ticks) WITH ORDINALITY AS u(sid, tick, o)
            JOIN jobqueue.schedule s ON s.id = u.sid), false) AS e(id));
    UPDATE jobqueue.schedule_tick k SET job_id = x.id
    FROM unnest(new_sids, new_ticks, ids) AS x(sid, tick, id)
    WHERE k.schedule_id = x.sid AND k.tick = x.tick;
    UPDATE jobqueue.schedule s SET last_tick_at = x.tick, last_job_id = x.id
    FROM (SELECT DISTINCT ON (y.sid) y.sid, y.tick, y.id FROM unnest(new_sids, new_ticks, ids) AS y(sid, tick, id)
          ORDER BY y.sid, y.tick DESC) AS x
    WHERE s.id = x.sid;
    RETURN cardinality(new_sids);
END
$$;

-- Reconcile's step: fire the ticks of due schedules. The schedules whose next tick is within
-- schedule_lookahead_s are locked with SKIP LOCKED (concurrent reconcilers take other
-- schedules); for each, the ticks up to now + lookahead are planned, ticks more than
-- schedule_grace_s late being missed ticks handled by its policy (skip: none; latest: the most
-- recent one; all: each, at most max_backfill, the most recent kept). All the ticks are then
-- fired in one go (_fire_ticks: guard rows and one enqueue) and each next_at moves on, in this
-- transaction. When that fails (a queue is full, a template is no longer accepted), the
-- schedules are fired one by one, each in a subtransaction: a failing one keeps its next_at and
-- records last_error, and the others fire all the same.
CREATE FUNCTION jobqueue._fire_schedules(batch integer, dry_run boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    horizon timestamptz := now() + make_interval(secs => jobqueue._conf('schedule_lookahead_s'));
    late timestamptz := date_trunc('second', now() - make_interval(secs => jobqueue._conf('schedule_grace_s')));
    max_ticks constant integer := 50000;  -- per call (one enqueue); the rest fire at the next call
    s record;
    c jobqueue._cron;
    ticks timestamptz[];
    t timestamptz;
    prev timestamptz;
    sched_ids bigint[] := '{}';
    next_ats timestamptz[] := '{}';
    pair_sids bigint[] := '{}';
    pair_ticks timestamptz[] := '{}';
    failed_ids bigint[] := '{}';
    fired integer := 0;
    behind integer := 0;
    n integer := 0;
    i integer;
    err text;
BEGIN
    IF coalesce(dry_run, false) THEN
        SELECT count(*) INTO n FROM (
            SELECT 1 FROM jobqueue.schedule x
            WHERE NOT x.paused AND x.next_at <= horizon
              AND x.tenant_id IS NOT DISTINCT FROM coalesce(jobqueue._tenant(), x.tenant_id)
            LIMIT batch) AS d;
        RETURN jsonb_build_object('schedules_due', n);
    END IF;
    FOR s IN
        SELECT x.id, x.cron, x.tz, x.missed, x.max_backfill, x.next_at
        FROM jobqueue.schedule x
        WHERE NOT x.paused AND x.next_at <= horizon
          AND x.tenant_id IS NOT DISTINCT FROM coalesce(jobqueue._tenant(), x.tenant_id)
        ORDER BY x.next_at, x.id
        LIMIT batch
        FOR UPDATE SKIP LOCKED
    LOOP
        n := n + 1;
        c := jobqueue._cron_parse(s.cron);
        ticks := '{}';
        IF s.next_at < late THEN
            behind := behind + 1;
            IF s.missed = 'latest' THEN
                ticks := jobqueue._cron_last(c, s.tz, s.next_at, late, 1);
            ELSIF s.missed = 'all' THEN
                ticks := jobqueue._cron_last(c, s.tz, s.next_at, late, s.max_backfill);
            END IF;
            t := jobqueue._cron_next(c, late - interval '1 second', s.tz);
        ELSE
            t := s.next_at;
        END IF;
        prev := NULL;
        FOR i IN 1..max_ticks LOOP
            EXIT WHEN t IS NULL OR t > horizon;
            IF prev IS NULL OR t > prev THEN
                ticks := ticks || t;
                prev := t;
            END IF;
            t := jobqueue._cron_next(c, greatest(t, prev), s.tz);
        END LOOP;
        sched_ids := sched_ids || s.id;
        next_ats := next_ats || t;
        pair_sids := pair_sids || array_fill(s.id, ARRAY[cardinality(ticks)]);
        pair_ticks := pair_ticks || ticks;
        EXIT WHEN cardinality(pair_ticks) >= max_ticks;
    END LOOP;

    IF cardinality(pair_ticks) > 0 THEN
        BEGIN
            fired := jobqueue._fire_ticks(pair_sids, pair_ticks);
        EXCEPTION WHEN OTHERS THEN
            -- one of them cannot be fired: schedule by schedule, so that the others still fire
            fired := 0;
            FOR i IN 1..cardinality(sched_ids) LOOP
                BEGIN
                    fired := fired + jobqueue._fire_ticks(
                        ARRAY(SELECT p.sid FROM unnest(pair_sids, pair_ticks) AS p(sid, tick)
                              WHERE p.sid = sched_ids[i] ORDER BY p.tick),
                        ARRAY(SELECT p.tick FROM unnest(pair_sids, pair_ticks) AS p(sid, tick)
                              WHERE p.sid = sched_ids[i] ORDER BY p.tick));
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
                    failed_ids := failed_ids || sched_ids[i];
                    UPDATE jobqueue.schedule x SET last_error = left(err, 2000), last_error_at = now()
                    WHERE x.id = sched_ids[i];
                END;
            END LOOP;
        END;
    END IF;
    UPDATE jobqueue.schedule x SET next_at = u.next_at, last_error = NULL, last_error_at = NULL
    FROM unnest(sched_ids, next_ats) AS u(id, next_at)
    WHERE x.id = u.id AND NOT u.id = ANY (failed_ids);

    -- the guard rows of ticks fired longer ago than history is kept
    DELETE FROM jobqueue.schedule_tick k
    WHERE k.ctid = ANY (ARRAY(
        SELECT x.ctid FROM jobqueue.schedule_tick x
        WHERE x.fired_at < now() - make_interval(secs => jobqueue._conf('history_retention_s'))
        LIMIT batch));
    RETURN jsonb_build_object('schedules_due', n, 'schedule_jobs_enqueued', fired,
                              'schedules_behind', behind, 'schedules_failed', cardinality(failed_ids));
END
$$;

CREATE VIEW jobqueue.schedules AS
    SELECT s.id, s.name, s.tenant_id, s.cron, s.tz, s.job, s.missed, s.max_backfill, s.paused, s.paused_reason,
           s.declared_by,
           CASE WHEN NOT s.paused THEN s.next_at END AS next_fire_at,
           s.last_tick_at AS last_fire_at, s.last_job_id,
           coalesce(lj.state::text, CASE WHEN s.last_job_id IS NOT NULL THEN 'pruned' END) AS last_job_state,
           s.last_error, s.last_error_at, s.created_at, s.created_by, s.updated_at
    FROM jobqueue.schedule s
    LEFT JOIN LATERAL (
        SELECT j.state FROM jobqueue.job j WHERE j.id = s.last_job_id
        UNION ALL SELECT h.state FROM jobqueue.job_history h WHERE h.id = s.last_job_id
        UNION ALL SELECT d.state FROM jobqueue.dead_letter d WHERE d.id = s.last_job_id
        LIMIT 1) AS lj ON true
    -- a mapped role sees its own tenant's schedules only
    WHERE s.tenant_id IS NOT DISTINCT FROM
          coalesce((SELECT jobqueue._tenant()), s.tenant_id);
COMMENT ON VIEW jobqueue.schedules IS
    'Periodic schedules with their next and last fire time and the last job''s id and state';

CREATE FUNCTION jobqueue.list_schedules() RETURNS SETOF jobqueue.schedules
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT * FROM jobqueue.schedules v ORDER BY v.name, v.tenant_id $$;
COMMENT ON FUNCTION jobqueue.list_schedules() IS 'Every schedule the caller can see (the schedules view), by name';

------------------------------------------------------------------------------------------
-- Alerts: rules, incidents, channels and their routes; detection is reconcile's last step
-- (docs/sql-api.md "Alerts"). Detection reads bounded, index-backed aggregates, opens one
-- incident per dedupe key (kind, queue, type, subject) and enqueues each notification as an
-- ordinary job (queue jobqueue.alerts, type jobqueue.notify) in the same transaction.
------------------------------------------------------------------------------------------
-- A rule: a kind of condition, a threshold it fires above and a lower clear threshold it
-- must fall to (hysteresis), for one scope: every queue (queue NULL) or one, every job type
-- (type NULL) or one. The built-in rows (queue and type NULL) are the defaults, on out of
-- the box; a row for a queue and/or type overrides the default of the same name there
-- (the most specific row wins: queue+type, queue, type, default), disabled rows included.
CREATE TABLE jobqueue.alert_rule (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL CHECK (name ~ '^[a-z0-9_.:-]{1,64}$'),
    kind            text NOT NULL CHECK (kind IN ('queue_depth', 'oldest_runnable_age', 'error_rate', 'dead_letters',
                                                  'job_stuck', 'worker_down', 'reconcile_not_run', 'xmin_horizon',
                                                  'notify_queue')),
    queue           text CHECK (queue ~ '^[A-Za-z0-9_.:-]{1,128}$'),
    type            text CHECK (length(type) BETWEEN 1 AND 255),
    severity        text NOT NULL CHECK (severity IN ('critical', 'warning', 'info')),
    threshold       double precision NOT NULL CHECK (threshold >= 0),
    clear_threshold double precision NOT NULL CHECK (clear_threshold >= 0 AND clear_threshold <= threshold),
    window_s        integer CHECK (window_s BETWEEN 300 AND 86400),       -- error_rate, dead_letters
    min_events      integer NOT NULL DEFAULT 0 CHECK (min_events >= 0),   -- error_rate: fewer attempts: no verdict
    resolve_after_s integer NOT NULL DEFAULT 300 CHECK (resolve_after_s BETWEEN 0 AND 604800),
    enabled         boolean NOT NULL DEFAULT true,
    builtin         boolean NOT NULL DEFAULT false,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by      text NOT NULL DEFAULT session_user,
    CONSTRAINT alert_rule_scope_key UNIQUE NULLS NOT DISTINCT (name, queue, type)
);
COMMENT ON TABLE jobqueue.alert_rule IS
    'Alert rules (defaults and per queue/type overrides); private: set_alert_rule, read jobqueue.alert_rules';
INSERT INTO jobqueue.alert_rule
    (name, kind, severity, threshold, clear_threshold, window_s, min_events, resolve_after_s, builtin) VALUES
    ('queue_depth', 'queue_depth', 'warning', 10000, 8000, NULL, 0, 300, true),
    ('oldest_runnable_age', 'oldest_runnable_age', 'warning', 600, 300, NULL, 0, 300, true),
    ('error_rate_1h', 'error_rate', 'warning', 0.25, 0.15, 3600, 20, 600, true),
    ('error_rate_24h', 'error_rate', 'warning', 0.10, 0.07, 86400, 100, 600, true),
    ('dead_letters', 'dead_letters', 'warning', 0, 0, 900, 0, 0, true),
    ('job_stuck', 'job_stuck', 'warning', 3600, 3600, NULL, 0, 0, true),
    ('worker_down', 'worker_down', 'critical', 60, 30, NULL, 0, 60, true),
    ('reconcile_not_run', 'reconcile_not_run', 'critical', 300, 120, NULL, 0, 300, true),
    ('xmin_horizon', 'xmin_horizon', 'warning', 300, 240, NULL, 0, 300, true),
    ('notify_queue', 'notify_queue', 'warning', 0.5, 0.4, NULL, 0, 300, true);

-- An incident: one per dedupe key while open (firing or acknowledged); resolved rows are
-- kept for alert_retention_s. clear_since: since when the condition has been clear (NULL
-- while it holds or hovers between the clear and fire thresholds).
CREATE TABLE jobqueue.alert_incident (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dedupe_key      text NOT NULL,
    rule            text NOT NULL,
    kind            text NOT NULL,
    severity        text NOT NULL,
    state           text NOT NULL DEFAULT 'firing' CHECK (state IN ('firing', 'acknowledged', 'resolved')),
    queue           text,
    type            text,
    subject         text,
    value           double precision,
    threshold       double precision,
    first_seen      timestamptz NOT NULL DEFAULT now(),
    last_seen       timestamptz NOT NULL DEFAULT now(),
    count           bigint NOT NULL DEFAULT 1,
    clear_since     timestamptz,
    resolve_after_s integer NOT NULL DEFAULT 300,
    acknowledged_by text,
    acknowledged_at timestamptz,
    resolved_at     timestamptz,
    resolved_by     text,
    summary         text NOT NULL
);
COMMENT ON TABLE jobqueue.alert_incident IS 'Alert incidents (firing, acknowledged, resolved); private, read jobqueue.alerts';
-- One open incident per key (the guard two detections cannot both pass), and the open set
-- detection reads on every run.
CREATE UNIQUE INDEX alert_incident_open_key ON jobqueue.alert_incident (dedupe_key) WHERE state <> 'resolved';
CREATE INDEX alert_incident_resolved_idx ON jobqueue.alert_incident (resolved_at) WHERE state = 'resolved';

-- A channel: where notifications go (config validated by _check_alert_channel; secrets only
-- by environment variable or file name), and its route: which incidents it receives.
CREATE TABLE jobqueue.alert_channel (
    name            text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    kind            text NOT NULL CHECK (kind IN ('email', 'slack', 'pagerduty', 'webhook')),
    config          jsonb NOT NULL,
    kinds           text[],                               -- route: rule kinds (NULL: every kind)
    rules           text[],                               -- route: rule names (NULL: every rule)
    queues          text[],                               -- route: queues (NULL: every queue and global alerts)
    min_severity    text NOT NULL DEFAULT 'warning' CHECK (min_severity IN ('critical', 'warning', 'info')),
    repeat_interval interval DEFAULT '4 hours',           -- NULL: never repeat
    send_resolve    boolean NOT NULL DEFAULT true,
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by      text NOT NULL DEFAULT session_user
);
COMMENT ON TABLE jobqueue.alert_channel IS
    'Alert channels and their routes; private: add_alert_channel/set_alert_route, read jobqueue.alert_channels';

-- Every notification enqueued: one row per (incident, channel, event, repeat number). The
-- primary key is the exactly-once guard of the enqueue, whoever runs detection.
CREATE TABLE jobqueue.alert_notice (
    incident_id bigint NOT NULL REFERENCES jobqueue.alert_incident (id) ON DELETE CASCADE,
    channel     text NOT NULL,
    event       text NOT NULL CHECK (event IN ('trigger', 'repeat', 'acknowledge', 'resolve')),
    seq         integer NOT NULL DEFAULT 0,
    job_id      bigint,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (incident_id, channel, event, seq)
);
COMMENT ON TABLE jobqueue.alert_notice IS 'Notification jobs enqueued per incident, channel and event; private';

-- Outcomes per queue, job type and 5-minute bucket, added up incrementally by detection
-- from the rows finished since its last run (job_history, job_event: BRIN-indexed time
-- ranges), so an error rate over 24 hours sums at most 288 rows per queue and type instead
-- of scanning a day of history on every reconcile. Rows older than a day are dropped.
CREATE TABLE jobqueue.alert_tally (
    queue     text NOT NULL,
    type      text NOT NULL,
    bucket    timestamptz NOT NULL,
    completed bigint NOT NULL DEFAULT 0,
    failed    bigint NOT NULL DEFAULT 0,   -- failed attempts (retried or dead-lettered)
    dead      bigint NOT NULL DEFAULT 0,   -- jobs dead-lettered
    PRIMARY KEY (queue, type, bucket)
);
COMMENT ON TABLE jobqueue.alert_tally IS 'Job outcomes per queue, type and 5-minute bucket (alert detection); private';
CREATE INDEX alert_tally_bucket_idx ON jobqueue.alert_tally (bucket);

-- Detection's own bookkeeping (one row): up to when outcomes are tallied, and the reconcile
-- stamp the previous detection saw (reconcile_not_run measures the gap between runs).
CREATE TABLE jobqueue.alert_state (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),
    tallied_to       timestamptz,
    last_reconcile   timestamptz,
    last_detected_at timestamptz
);
COMMENT ON TABLE jobqueue.alert_state IS 'Alert detection bookkeeping (one row); private';
INSERT INTO jobqueue.alert_state (id) VALUES (true);

REVOKE ALL ON jobqueue.alert_rule, jobqueue.alert_incident, jobqueue.alert_channel, jobqueue.alert_notice,
              jobqueue.alert_tally, jobqueue.alert_state FROM PUBLIC;

INSERT INTO jobqueue.setting (key, value, description) VALUES
    ('alert_tally_lag_s', '30', 'alert detection tallies job outcomes this many seconds behind now, so that '
                                'transactions still committing are counted (0 to 300)'),
    ('alert_retention_s', '2592000', 'how long resolved alert incidents are kept (30 days)');

-- info < warning < critical
CREATE FUNCTION jobqueue._severity_rank(severity text) RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT CASE severity WHEN 'info' THEN 1 WHEN 'warning' THEN 2 WHEN 'critical' THEN 3 END $$;

-- Raise unless a severity is known; returns it.
CREATE FUNCTION jobqueue._check_severity(severity text, field text DEFAULT 'severity') RETURNS text
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    IF severity IS NULL OR severity NOT IN ('critical', 'warning', 'info') THEN
        PERFORM jobqueue._raise(field, format('must be one of critical, warning, info (got %s)',
                                              coalesce(to_jsonb(severity)::text, 'null')));
    END IF;
    RETURN severity;
END
$$;

-- A channel's config, checked for its kind: every error names the field (config.<key>),
-- keys holding plain secrets are refused (secrets are referenced by environment variable or
-- file name), unknown keys are refused. Returns the config as stored (pagerduty's url filled
-- in with its default).
CREATE FUNCTION jobqueue._check_alert_channel(kind text, config jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    known text[];
    k text;
    v jsonb;
    url_re constant text := '^https?://[^/?#[:space:]]+([/?#][^[:space:]]*)?$';
    env_re constant text := '^[A-Za-z_][A-Za-z0-9_]{0,254}$';
    n integer;
BEGIN
    IF kind IS NULL OR kind NOT IN ('email', 'slack', 'pagerduty', 'webhook') THEN
        PERFORM jobqueue._raise('kind', format('must be one of email, slack, pagerduty, webhook (got %s)',
                                               coalesce(to_jsonb(kind)::text, 'null')));
    END IF;
    IF config IS NULL OR jsonb_typeof(config) <> 'object' THEN
        PERFORM jobqueue._raise('config', 'must be a JSON object');
    END IF;
    FOREACH k IN ARRAY ARRAY['password', 'routing_key', 'secret', 'token', 'api_key'] LOOP
        IF config ? k THEN
            PERFORM jobqueue._raise('config.' || k, format(
                'secrets are not stored in the database; give %1$s_env (an environment variable name) or '
                '%1$s_file (a file name) instead', CASE k WHEN 'token' THEN 'url' WHEN 'api_key' THEN 'routing_key'
                                                           ELSE k END));
        END IF;
    END LOOP;
    known := CASE kind
        WHEN 'email' THEN ARRAY['host', 'port', 'from', 'to', 'starttls', 'ssl', 'username', 'password_env',
                                'password_file', 'timeout_s']
        WHEN 'slack' THEN ARRAY['url', 'url_env', 'url_file', 'timeout_s']
        WHEN 'pagerduty' THEN ARRAY['routing_key_env', 'routing_key_file', 'url', 'timeout_s']
        ELSE ARRAY['url', 'secret_env', 'secret_file', 'headers', 'timeout_s'] END;
    FOR k IN SELECT x FROM jsonb_object_keys(config) AS x ORDER BY x LOOP
        IF NOT k = ANY (known) THEN
            PERFORM jobqueue._raise('config.' || k, format('unknown key for a %s channel (known: %s)', kind,
                                                           array_to_string(known, ', ')));
        END IF;
    END LOOP;
    -- shared by every kind
    FOREACH k IN ARRAY ARRAY['password_env', 'url_env', 'routing_key_env', 'secret_env'] LOOP
        IF config ? k AND (jsonb_typeof(config->k) <> 'string' OR config->>k !~ env_re) THEN
            PERFORM jobqueue._raise('config.' || k, 'must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)');
        END IF;
    END LOOP;
    FOREACH k IN ARRAY ARRAY['password_file', 'url_file', 'routing_key_file', 'secret_file'] LOOP
        IF config ? k AND (jsonb_typeof(config->k) <> 'string' OR config->>k = ''
                           OR length(config->>k) > 4096 OR config->>k ~ '[[:cntrl:]]') THEN
            PERFORM jobqueue._raise('config.' || k, 'must be a file name (a non-empty string)');
        END IF;
    END LOOP;
    IF config ? 'timeout_s' AND (CASE WHEN jsonb_typeof(config->'timeout_s') = 'number'
                                      THEN NOT ((config->>'timeout_s')::numeric > 0
                                                AND (config->>'timeout_s')::numeric <= 300)
                                      ELSE true END) THEN
        PERFORM jobqueue._raise('config.timeout_s', 'must be a number of seconds more than 0 and at most 300');
    END IF;
    IF config ? 'url' AND (jsonb_typeof(config->'url') <> 'string' OR config->>'url' !~* url_re
                           OR length(config->>'url') > 2048) THEN
        PERFORM jobqueue._raise('config.url', 'must be an http:// or https:// URL');
    END IF;

    IF kind = 'email' THEN
        IF jsonb_typeof(config->'host') IS DISTINCT FROM 'string' OR config->>'host' !~ '^[][A-Za-z0-9.:_-]{1,255}$' THEN
            PERFORM jobqueue._raise('config.host', 'must be a host name or address (required)');
        END IF;
        IF (CASE WHEN jsonb_typeof(config->'port') = 'number'
                 THEN (config->>'port')::numeric NOT BETWEEN 1 AND 65535
                      OR (config->>'port')::numeric <> trunc((config->>'port')::numeric)
                 ELSE true END) THEN
            PERFORM jobqueue._raise('config.port', 'must be an integer between 1 and 65535 (required)');
        END IF;
        IF jsonb_typeof(config->'from') IS DISTINCT FROM 'string' OR config->>'from' !~ '^[^@[:space:]]+@[^@[:space:]]+$' THEN
            PERFORM jobqueue._raise('config.from', 'must be an email address (required)');
        END IF;
        IF jsonb_typeof(config->'to') IS DISTINCT FROM 'array' OR jsonb_array_length(config->'to') = 0 THEN
            PERFORM jobqueue._raise('config.to', 'must be a non-empty list of email addresses (required)');
        END IF;
        SELECT min(t.o) INTO n FROM jsonb_array_elements(config->'to') WITH ORDINALITY AS t(v, o)
        WHERE jsonb_typeof(t.v) <> 'string' OR t.v #>> '{}' !~ '^[^@[:space:]]+@[^@[:space:]]+$';
        IF n IS NOT NULL THEN
            PERFORM jobqueue._raise('config.to', format('element %s must be an email address', n - 1),
                                    format('config.to[%s]', n - 1));
        END IF;
        FOREACH k IN ARRAY ARRAY['starttls', 'ssl'] LOOP
            IF config ? k AND jsonb_typeof(config->k) <> 'boolean' THEN
                PERFORM jobqueue._raise('config.' || k, 'must be true or false');
            END IF;
        END LOOP;
        IF coalesce((config->>'starttls')::boolean, false) AND coalesce((config->>'ssl')::boolean, false) THEN
            PERFORM jobqueue._raise('config.ssl', 'ssl (implicit TLS) and starttls cannot both be true');
        END IF;
        IF config ? 'username' AND (jsonb_typeof(config->'username') <> 'string' OR config->>'username' = '') THEN
            PERFORM jobqueue._raise('config.username', 'must be a non-empty string');
        END IF;
        IF config ? 'password_env' AND config ? 'password_file' THEN
            PERFORM jobqueue._raise('config.password_file', 'give password_env or password_file, not both');
        END IF;
        IF (config ? 'password_env' OR config ? 'password_file') AND NOT config ? 'username' THEN
            PERFORM jobqueue._raise('config.username', 'is required with a password');
        END IF;
    ELSIF kind = 'slack' THEN
        n := (config ? 'url')::integer + (config ? 'url_env')::integer + (config ? 'url_file')::integer;
        IF n <> 1 THEN
            PERFORM jobqueue._raise('config.url', 'give exactly one of url, url_env, url_file');
        END IF;
    ELSIF kind = 'pagerduty' THEN
        n := (config ? 'routing_key_env')::integer + (config ? 'routing_key_file')::integer;
        IF n <> 1 THEN
            PERFORM jobqueue._raise('config.routing_key_env', 'give exactly one of routing_key_env, routing_key_file');
        END IF;
        config := jsonb_build_object('url', 'https://events.pagerduty.com/v2/enqueue') || config;
    ELSE
        IF NOT config ? 'url' THEN
            PERFORM jobqueue._raise('config.url', 'must be an http:// or https:// URL (required)');
        END IF;
        n := (config ? 'secret_env')::integer + (config ? 'secret_file')::integer;
        IF n <> 1 THEN
            PERFORM jobqueue._raise('config.secret_env', 'give exactly one of secret_env, secret_file '
                                                         '(the HMAC-SHA256 signing key)');
        END IF;
        IF config ? 'headers' THEN
            IF jsonb_typeof(config->'headers') <> 'object' THEN
                PERFORM jobqueue._raise('config.headers', 'must be an object of header name -> string');
            END IF;
            SELECT min(h.key) INTO k FROM jsonb_each(config->'headers') AS h
            WHERE jsonb_typeof(h.value) <> 'string' OR h.key !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]{1,128}$'
               OR h.value #>> '{}' ~ '[\r\n]';
            IF k IS NOT NULL THEN
                PERFORM jobqueue._raise('config.headers', format('header %s must be a token name with a one-line '
                                                                 'string value', to_jsonb(k)));
            END IF;
            -- a credential in a header would be a secret stored in the database
            SELECT min(h.key) INTO k FROM jsonb_object_keys(config->'headers') AS h(key)
            WHERE lower(h.key) IN ('authorization', 'proxy-authorization', 'cookie', 'x-api-key', 'api-key');
            IF k IS NOT NULL THEN
                PERFORM jobqueue._raise('config.headers', format('header %s would store a credential; the request '
                                                                 'is signed with secret_env/secret_file', to_jsonb(k)));
            END IF;
        END IF;
    END IF;
    RETURN config;
END
$$;

-- A route document ({kinds, rules, queues, min_severity, repeat_interval_s, send_resolve,
-- enabled}), checked; returns the columns' values as one jsonb (absent keys: absent).
CREATE FUNCTION jobqueue._check_alert_route(route jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    k text;
    bad text;
BEGIN
    route := coalesce(route, '{}');
    IF jsonb_typeof(route) <> 'object' THEN
        PERFORM jobqueue._raise('route', 'must be a JSON object');
    END IF;
    FOR k IN SELECT x FROM jsonb_object_keys(route) AS x ORDER BY x LOOP
        IF k NOT IN ('kinds', 'rules', 'queues', 'min_severity', 'repeat_interval_s', 'send_resolve', 'enabled') THEN
            PERFORM jobqueue._raise('route.' || k, 'unknown key (known: kinds, rules, queues, min_severity, '
                                                   'repeat_interval_s, send_resolve, enabled)');
        END IF;
    END LOOP;
    FOREACH k IN ARRAY ARRAY['kinds', 'rules', 'queues'] LOOP
        IF route ? k AND jsonb_typeof(route->k) <> 'null' AND (jsonb_typeof(route->k) <> 'array'
            OR jsonb_path_exists(route->k, '$[*] ? (@.type() != "string")')) THEN
            PERFORM jobqueue._raise('route.' || k, 'must be a list of strings, or null for every one');
        END IF;
    END LOOP;
    SELECT x INTO bad FROM jsonb_array_elements_text(CASE WHEN jsonb_typeof(route->'kinds') = 'array'
                                                          THEN route->'kinds' ELSE '[]' END) AS x
    WHERE x NOT IN ('queue_depth', 'oldest_runnable_age', 'error_rate', 'dead_letters', 'job_stuck', 'worker_down',
                    'reconcile_not_run', 'xmin_horizon', 'notify_queue') LIMIT 1;
    IF bad IS NOT NULL THEN
        PERFORM jobqueue._raise('route.kinds', format('unknown rule kind %s', to_jsonb(bad)));
    END IF;
    SELECT x INTO bad FROM jsonb_array_elements_text(CASE WHEN jsonb_typeof(route->'queues') = 'array'
                                                          THEN route->'queues' ELSE '[]' END) AS x
    WHERE jobqueue._queue_error(x) IS NOT NULL LIMIT 1;
    IF bad IS NOT NULL THEN
        PERFORM jobqueue._raise('route.queues', format('%s: %s', to_jsonb(bad), jobqueue._queue_error(bad)));
    END IF;
    IF route ? 'min_severity' THEN
        PERFORM jobqueue._check_severity(route->>'min_severity', 'route.min_severity');
    END IF;
    IF route ? 'repeat_interval_s' AND (CASE jsonb_typeof(route->'repeat_interval_s')
                                            WHEN 'null' THEN false
                                            WHEN 'number' THEN (route->>'repeat_interval_s')::numeric
                                                               NOT BETWEEN 60 AND 604800
                                            ELSE true END) THEN
        PERFORM jobqueue._raise('route.repeat_interval_s',
                                'must be a number of seconds between 60 and 604800, or null for never');
    END IF;
    FOREACH k IN ARRAY ARRAY['send_resolve', 'enabled'] LOOP
        IF route ? k AND jsonb_typeof(route->k) <> 'boolean' THEN
            PERFORM jobqueue._raise('route.' || k, 'must be true or false');
        END IF;
    END LOOP;
    RETURN route;
END
$$;

-- Whether an incident goes to a channel (its route).
CREATE FUNCTION jobqueue._alert_routed(c jobqueue.alert_channel, i jobqueue.alert_incident) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT c.enabled
       AND jobqueue._severity_rank(i.severity) >= jobqueue._severity_rank(c.min_severity)
       AND (c.kinds IS NULL OR i.kind = ANY (c.kinds))
       AND (c.rules IS NULL OR i.rule = ANY (c.rules))
       AND (c.queues IS NULL OR i.queue = ANY (c.queues))
$$;

-- The payload of a notification job (the contract the jobqueue.notify handler reads; see
-- docs/sql-api.md "Alerts").
CREATE FUNCTION jobqueue._alert_payload(event text, c jobqueue.alert_channel, i jobqueue.alert_incident)
RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT jsonb_build_object(
        'event', event,
        'channel', jsonb_build_object('name', c.name, 'kind', c.kind, 'config', c.config),
        'incident', jsonb_build_object(
            'id', i.id, 'dedupe_key', i.dedupe_key, 'rule', i.rule, 'kind', i.kind, 'severity', i.severity,
            'state', i.state, 'queue', i.queue, 'type', i.type, 'value', i.value, 'threshold', i.threshold,
            'first_seen', i.first_seen, 'last_seen', i.last_seen, 'count', i.count,
            'acknowledged_by', i.acknowledged_by, 'acknowledged_at', i.acknowledged_at,
            'resolved_at', i.resolved_at, 'summary', i.summary))
$$;

-- Enqueue one notification job per (incident, routed channel) for an event, once: the
-- alert_notice row is the guard (ON CONFLICT DO NOTHING), the jobs are enqueued in the same
-- transaction through _enqueue. 'repeat' goes only to channels whose last notice of that
-- incident is older than their repeat interval; 'resolve' only to channels that send_resolve.
-- Returns the number of jobs enqueued.
CREATE FUNCTION jobqueue._alert_notify(ids bigint[], event text) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    n_ids bigint[];
    n_channels text[];
    n_seqs integer[];
    jobs jsonb;
    job_ids bigint[];
BEGIN
    IF ids IS NULL OR cardinality(ids) = 0 THEN
        RETURN 0;
    END IF;
    WITH n AS (
        INSERT INTO jobqueue.alert_notice AS a (incident_id, channel, event, seq)
        SELECT i.id, c.name, _alert_notify.event,
               CASE WHEN _alert_notify.event = 'repeat' THEN 1 + coalesce((
                   SELECT max(x.seq) FROM jobqueue.alert_notice x
                   WHERE x.incident_id = i.id AND x.channel = c.name AND x.event = 'repeat'), 0) ELSE 0 END
        FROM jobqueue.alert_incident i
        JOIN jobqueue.alert_channel c ON jobqueue._alert_routed(c, i)
        WHERE i.id = ANY (ids)
          AND (_alert_notify.event <> 'resolve' OR c.send_resolve)
          AND (_alert_notify.event <> 'repeat' OR (c.repeat_interval IS NOT NULL AND (
                  SELECT max(x.at) FROM jobqueue.alert_notice x
                  WHERE x.incident_id = i.id AND x.channel = c.name) <= now() - c.repeat_interval))
        ORDER BY i.id, c.name
        ON CONFLICT DO NOTHING
        RETURNING a.incident_id, a.channel, a.seq
    )
    SELECT array_agg(n.incident_id ORDER BY n.incident_id, n.channel), array_agg(n.channel ORDER BY n.incident_id, n.channel),
           array_agg(n.seq ORDER BY n.incident_id, n.channel)
    INTO n_ids, n_channels, n_seqs FROM n;
    IF n_ids IS NULL THEN
        RETURN 0;
    END IF;
    -- priority 10: claimed before the backlog of every queue a worker serves beside this one
    SELECT jsonb_agg(jsonb_build_object(
               'queue', 'jobqueue.alerts', 'type', 'jobqueue.notify', 'priority', 10,
               'payload', jobqueue._alert_payload(_alert_notify.event, c, i),
               'metadata', jsonb_build_object('alert_id', i.id, 'channel', c.name, 'event', _alert_notify.event))
           ORDER BY u.o)
    INTO jobs
    FROM unnest(n_ids, n_channels) WITH ORDINALITY AS u(iid, ch, o)
    JOIN jobqueue.alert_incident i ON i.id = u.iid
    JOIN jobqueue.alert_channel c ON c.name = u.ch;
    job_ids := ARRAY(SELECT e.id FROM jobqueue._enqueue(jobs, false) AS e(id));
    UPDATE jobqueue.alert_notice a SET job_id = x.job_id
    FROM unnest(n_ids, n_channels, n_seqs, job_ids) AS x(iid, ch, seq, job_id)
    WHERE a.incident_id = x.iid AND a.channel = x.ch AND a.event = _alert_notify.event AND a.seq = x.seq;
    RETURN cardinality(job_ids);
END
$$;

-- One observation of a rule in one scope (detection's working set).
CREATE TYPE jobqueue._alert_obs AS (
    dedupe_key      text,
    rule            text,
    kind            text,
    severity        text,
    queue           text,
    type            text,
    subject         text,
    value           double precision,
    threshold       double precision,
    clear_threshold double precision,
    resolve_after_s integer,
    summary         text
);

-- Add the job outcomes finished since the last tally (up to now - alert_tally_lag_s) to
-- alert_tally: completions from job_history, failed attempts and dead letters from
-- job_event, each a BRIN-indexed time range; a first run (or one after a long pause) starts
-- at most a day back. Drops buckets older than a day.
CREATE FUNCTION jobqueue._alert_tally() RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    upto timestamptz := now() - make_interval(secs => jobqueue._conf('alert_tally_lag_s'));
    since timestamptz;
BEGIN
    SELECT greatest(s.tallied_to, now() - interval '1 day') INTO since FROM jobqueue.alert_state s FOR UPDATE;
    since := coalesce(since, now() - interval '1 day');
    IF since >= upto THEN
        RETURN;
    END IF;
    INSERT INTO jobqueue.alert_tally AS t (queue, type, bucket, completed, failed, dead)
    SELECT x.queue, x.type, x.bucket, sum(x.c), sum(x.f), sum(x.d)
    FROM (
        SELECT h.queue, h.type, date_bin('5 minutes', h.finished_at, timestamptz '2000-01-01 00:00+00') AS bucket,
               1 AS c, 0 AS f, 0 AS d
        FROM jobqueue.job_history h
        WHERE h.finished_at >= since AND h.finished_at < upto AND h.state = 'completed'
        UNION ALL
        SELECT e.queue, coalesce(e.detail->>'type', j.type, '?'),
               date_bin('5 minutes', e.at, timestamptz '2000-01-01 00:00+00'),
               0, (e.from_state = 'processing')::integer, (e.to_state = 'dead_letter')::integer
        FROM jobqueue.job_event e
        LEFT JOIN LATERAL (
            SELECT y.type FROM jobqueue.job y WHERE y.id = e.job_id
            UNION ALL SELECT d.type FROM jobqueue.dead_letter d WHERE d.id = e.job_id
            UNION ALL SELECT h.type FROM jobqueue.job_history h WHERE h.id = e.job_id
            LIMIT 1) AS j ON true
        WHERE e.at >= since AND e.at < upto AND e.to_state IN ('retrying', 'dead_letter')
    ) AS x
    GROUP BY 1, 2, 3
    ON CONFLICT (queue, type, bucket) DO UPDATE
    SET completed = t.completed + excluded.completed, failed = t.failed + excluded.failed,
        dead = t.dead + excluded.dead;
    UPDATE jobqueue.alert_state s SET tallied_to = upto;
    DELETE FROM jobqueue.alert_tally t WHERE t.bucket < now() - interval '1 day 5 minutes';
END
$$;

-- Every enabled rule's observations now, one per scope: per queue (queue_depth,
-- oldest_runnable_age), per queue and rule type (error_rate, dead_letters, job_stuck), per
-- worker (worker_down) or once (reconcile_not_run, xmin_horizon, notify_queue). Each read
-- is bounded: depth counts at most threshold + 1 rows of job_claim_idx, the oldest runnable
-- job is one probe per priority, rates sum alert_tally, running jobs are read through
-- job_lease_idx. reconcile_gap: seconds between this and the previous reconcile.
CREATE FUNCTION jobqueue._alert_observe(reconcile_gap double precision) RETURNS SETOF jobqueue._alert_obs
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    -- plpgsql, not a plain SQL body: its plan is cached for the session (planning this query
    -- cost more than running it on every reconcile of a worker's loop)
    RETURN QUERY
    -- the effective rule per queue: the queue's own row, else the default (disabled included)
    WITH per_queue AS (
        SELECT e.* FROM (
            SELECT DISTINCT ON (r.name, q.name) r.*, q.name AS q
            FROM jobqueue.alert_rule r
            JOIN jobqueue.queue q ON r.queue IS NULL OR r.queue = q.name
            WHERE r.kind IN ('queue_depth', 'oldest_runnable_age') AND r.type IS NULL
            ORDER BY r.name, q.name, r.queue IS NULL) AS e
        WHERE e.enabled
    ), pairs AS (
        SELECT t.queue, t.type FROM jobqueue.alert_tally t GROUP BY 1, 2
    ), per_pair AS (
        SELECT e.* FROM (
            SELECT DISTINCT ON (r.name, p.queue, p.type) r.*, p.queue AS q, p.type AS ty
            FROM pairs p
            JOIN jobqueue.alert_rule r ON (r.queue IS NULL OR r.queue = p.queue) AND (r.type IS NULL OR r.type = p.type)
            WHERE r.kind IN ('error_rate', 'dead_letters')
            ORDER BY r.name, p.queue, p.type, r.queue IS NULL, r.type IS NULL) AS e
        WHERE e.enabled
    ), sums AS (
        -- grouped by rule id and queue only: sorting on every text column of the rule cost more
        -- than the sums
        SELECT e.id, e.q, sum(t.completed) AS c, sum(t.failed) AS f, sum(t.dead) AS d
        FROM per_pair e
        JOIN jobqueue.alert_tally t ON t.queue = e.q AND t.type = e.ty
                                   AND t.bucket >= now() - make_interval(secs => e.window_s)
        GROUP BY e.id, e.q
    ), rates AS (
        SELECT r.name, r.kind, r.severity, x.q, r.type, r.threshold, r.clear_threshold, r.resolve_after_s,
               r.min_events, r.window_s, x.c, x.f, x.d
        FROM sums x JOIN jobqueue.alert_rule r ON r.id = x.id
    ), running AS (
        SELECT j.queue, j.type, max(extract(epoch FROM now() - j.claimed_at))::float8 AS age, count(*) AS n
        FROM jobqueue.job j
        WHERE j.state = 'processing' AND j.lease_expires_at > '-infinity'  -- job_lease_idx
        GROUP BY 1, 2
    ), stuck AS (
        SELECT r.name, r.kind, r.severity, x.q, r.type, r.threshold, r.clear_threshold, r.resolve_after_s, x.age, x.n
        FROM (SELECT e.id, e.q, max(e.age) AS age, sum(e.n) AS n FROM (
            SELECT DISTINCT ON (r.name, p.queue, p.type) r.*, p.queue AS q, p.age, p.n
            FROM running p
            JOIN jobqueue.alert_rule r ON (r.queue IS NULL OR r.queue = p.queue) AND (r.type IS NULL OR r.type = p.type)
            WHERE r.kind = 'job_stuck'
            ORDER BY r.name, p.queue, p.type, r.queue IS NULL, r.type IS NULL) AS e
              WHERE e.enabled
              GROUP BY e.id, e.q) AS x
        JOIN jobqueue.alert_rule r ON r.id = x.id
    ), whole AS (
        SELECT r.* FROM jobqueue.alert_rule r
        WHERE r.enabled AND r.queue IS NULL AND r.type IS NULL
          AND r.kind IN ('worker_down', 'reconcile_not_run', 'xmin_horizon', 'notify_queue')
    ), obs AS (
        SELECT e.name, e.kind, e.severity, e.q AS queue, NULL::text AS type, NULL::text AS subject,
               v.value, e.threshold, e.clear_threshold, e.resolve_after_s,
               CASE WHEN e.kind = 'queue_depth'
                    THEN format('queue %s: %s%s runnable jobs waiting (fires above %s, clears at %s)', e.q,
                                CASE WHEN v.value > greatest(e.threshold, e.clear_threshold) THEN 'more than ' END,
                                CASE WHEN v.value > greatest(e.threshold, e.clear_threshold)
                                     THEN greatest(e.threshold, e.clear_threshold)::bigint ELSE v.value::bigint END,
                                e.threshold, e.clear_threshold)
                    ELSE format('queue %s: the oldest runnable job has waited %s s (fires above %s s)', e.q,
                                round(v.value::numeric, 1), e.threshold) END AS summary
        FROM per_queue e
        CROSS JOIN LATERAL (
            SELECT CASE WHEN e.kind = 'queue_depth' THEN (
                       SELECT count(*) FROM (
                           SELECT 1 FROM jobqueue.job j
                           WHERE j.queue = e.q AND j.state IN ('pending', 'retrying') AND j.waiting_on = 0
                             AND j.run_at <= now()
                           LIMIT floor(greatest(e.threshold, e.clear_threshold))::bigint + 1) AS s)::float8
                   ELSE coalesce((
                       SELECT greatest(0, extract(epoch FROM now() - min(m.run_at)))::float8
                       FROM generate_series(0, 10) AS p(p)
                       CROSS JOIN LATERAL (
                           SELECT j.run_at FROM jobqueue.job j
                           WHERE j.queue = e.q AND j.priority = p.p AND j.state IN ('pending', 'retrying')
                             AND j.waiting_on = 0
                           ORDER BY j.run_at LIMIT 1) AS m), 0) END AS value
            -- OFFSET 0 keeps this a subquery run once per rule: pulled up, its count was
            -- copied into each of the three uses of v.value below and run three times
            OFFSET 0) AS v
        UNION ALL
        SELECT r.name, r.kind, r.severity, r.q, r.type, NULL,
               CASE WHEN r.kind = 'dead_letters' THEN r.d::float8
                    WHEN r.c + r.f < greatest(r.min_events, 1) THEN 0
                    ELSE r.f::float8 / (r.c + r.f) END,
               r.threshold, r.clear_threshold, r.resolve_after_s,
               CASE WHEN r.kind = 'dead_letters'
                    THEN format('queue %s%s: %s jobs dead-lettered in the last %s', r.q,
                                coalesce(' type ' || r.type, ''), r.d, jobqueue._human_seconds(r.window_s))
                    ELSE format('queue %s%s: error rate %s%% over the last %s (%s failed attempts, %s completed; '
                                'fires above %s%%)', r.q, coalesce(' type ' || r.type, ''),
                                round(100 * r.f::numeric / greatest(r.c + r.f, 1), 1),
                                jobqueue._human_seconds(r.window_s), r.f, r.c,
                                round(100 * r.threshold::numeric, 1)) END
        FROM rates r
        UNION ALL
        SELECT s.name, s.kind, s.severity, s.q, s.type, NULL, s.age, s.threshold, s.clear_threshold, s.resolve_after_s,
               format('queue %s%s: a job has been running for %s s (%s running; fires above %s s)', s.q,
                      coalesce(' type ' || s.type, ''), round(s.age::numeric), s.n, s.threshold)
        FROM stuck s
        UNION ALL
        SELECT g.name, g.kind, g.severity, NULL, NULL,
               w.worker_id || coalesce('@' || w.tenant_id, ''),
               extract(epoch FROM now() - w.last_seen_at)::float8, g.threshold, g.clear_threshold, g.resolve_after_s,
               format('worker %s (%s pid %s) last heartbeat %s s ago (fires above %s s)', w.worker_id,
                      coalesce(w.host, '?'), coalesce(w.pid::text, '?'),
                      round(extract(epoch FROM now() - w.last_seen_at)), g.threshold)
        FROM whole g JOIN jobqueue.worker w ON w.stopped_at IS NULL
        WHERE g.kind = 'worker_down'
        UNION ALL
        SELECT g.name, g.kind, g.severity, NULL, NULL, NULL, coalesce(reconcile_gap, 0), g.threshold,
               g.clear_threshold, g.resolve_after_s,
               format('reconcile ran %s s after the previous run (fires above %s s)',
                      round(coalesce(reconcile_gap, 0)::numeric), g.threshold)
        FROM whole g WHERE g.kind = 'reconcile_not_run'
        UNION ALL
        SELECT g.name, g.kind, g.severity, NULL, NULL, NULL, x.secs, g.threshold, g.clear_threshold,
               g.resolve_after_s,
               format('oldest transaction holding back vacuum: %s s (fires above %s s)', round(x.secs::numeric),
                      g.threshold)
        FROM whole g
        CROSS JOIN LATERAL (
            SELECT coalesce(max(h.secs), 0)::float8 AS secs FROM (
                SELECT extract(epoch FROM clock_timestamp() - a.xact_start)::float8 AS secs
                FROM pg_stat_activity a
                WHERE a.pid <> pg_backend_pid() AND (a.backend_xid IS NOT NULL OR a.backend_xmin IS NOT NULL)
                UNION ALL
                SELECT extract(epoch FROM clock_timestamp() - p.prepared)::float8 FROM pg_prepared_xacts p
            ) AS h) AS x
        WHERE g.kind = 'xmin_horizon'
        UNION ALL
        SELECT g.name, g.kind, g.severity, NULL, NULL, NULL, pg_notification_queue_usage(), g.threshold,
               g.clear_threshold, g.resolve_after_s,
               format('NOTIFY queue %s%% full (fires above %s%%)', round(100 * pg_notification_queue_usage()::numeric, 1),
                      round(100 * g.threshold::numeric, 1))
        FROM whole g WHERE g.kind = 'notify_queue'
    )
    SELECT concat_ws('|', o.kind, coalesce(o.queue, '*'), coalesce(o.type, '*'), coalesce(o.subject, '*')),
           o.name, o.kind, o.severity, o.queue, o.type, o.subject, o.value, o.threshold, o.clear_threshold,
           o.resolve_after_s, o.summary
    FROM obs o;
END
$$;

-- Reconcile's step: alert detection. Only one detection runs at a time (a transaction-scoped
-- advisory lock; a concurrent reconcile skips it), and only for a caller mapped to no tenant
-- (a tenant's reconcile sees only its own jobs). Observations are grouped by dedupe key
-- (the worst one speaks for the key); then, in this transaction:
--   * a firing key with no open incident opens one (state firing) -> 'trigger' notifications;
--   * a firing key with one counts it (count, last_seen, value, severity up) and, while it is
--     not acknowledged, sends 'repeat' to channels whose repeat interval has passed;
--   * an open incident whose value is at or under the clear threshold (or that has no
--     observation any more) is clear from then; clear for resolve_after_s -> resolved,
--     'resolve' notifications; a value between the two thresholds keeps it open (hysteresis).
-- Resolved incidents older than alert_retention_s are deleted (batch at a time).
CREATE FUNCTION jobqueue._detect_alerts_now(dry_run boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    st jobqueue.alert_state;
    stamp timestamptz;
    gap double precision;
    obs jobqueue._alert_obs[];
    opened bigint[];
    repeating bigint[];
    resolved bigint[];
    hovering integer;
    sent integer := 0;
BEGIN
    IF jobqueue._tenant() IS NOT NULL THEN
        RETURN jsonb_build_object('alerts_skipped', 'tenant');
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtext('jobqueue._detect_alerts')) THEN
        RETURN jsonb_build_object('alerts_skipped', 'busy');
    END IF;
    SELECT * INTO st FROM jobqueue.alert_state;
    SELECT m.last_run_at INTO stamp FROM jobqueue.maintenance m WHERE m.step = 'reconcile';
    -- stamped by this very transaction (detection inside reconcile): the gap since the stamp
    -- the previous detection saw; else (or when that is unknown) the age of the stamp
    gap := extract(epoch FROM now() - CASE WHEN stamp = now() THEN coalesce(st.last_reconcile, stamp) ELSE stamp END);
    IF NOT coalesce(dry_run, false) THEN
        PERFORM jobqueue._alert_tally();
        UPDATE jobqueue.alert_state s SET last_reconcile = stamp, last_detected_at = now();
    END IF;
    obs := ARRAY(
        SELECT DISTINCT ON (o.dedupe_key) o
        FROM jobqueue._alert_observe(gap) AS o
        ORDER BY o.dedupe_key, o.value > o.threshold DESC, jobqueue._severity_rank(o.severity) DESC,
                 o.value > o.clear_threshold DESC, o.rule);
    IF coalesce(dry_run, false) THEN
        RETURN jsonb_build_object(
            'alerts_firing', (SELECT count(*) FROM unnest(obs) o WHERE o.value > o.threshold),
            'alerts_open', (SELECT count(*) FROM jobqueue.alert_incident i WHERE i.state <> 'resolved'));
    END IF;

    -- still firing: count it
    WITH u AS (
        UPDATE jobqueue.alert_incident i
        SET last_seen = now(), count = i.count + 1, value = o.value, threshold = o.threshold, summary = o.summary,
            rule = o.rule, clear_since = NULL, resolve_after_s = o.resolve_after_s,
            severity = CASE WHEN jobqueue._severity_rank(o.severity) > jobqueue._severity_rank(i.severity)
                            THEN o.severity ELSE i.severity END
        FROM unnest(obs) o
        WHERE i.state <> 'resolved' AND i.dedupe_key = o.dedupe_key AND o.value > o.threshold
        RETURNING i.id, i.state
    )
    SELECT array_agg(u.id ORDER BY u.id) FILTER (WHERE u.state = 'firing') INTO repeating FROM u;
    -- newly firing: open an incident (the unique open key makes a concurrent one a no-op)
    WITH n AS (
        INSERT INTO jobqueue.alert_incident AS i
            (dedupe_key, rule, kind, severity, queue, type, subject, value, threshold, resolve_after_s, summary)
        SELECT o.dedupe_key, o.rule, o.kind, o.severity, o.queue, o.type, o.subject, o.value, o.threshold,
               o.resolve_after_s, o.summary
        FROM unnest(obs) o
        WHERE o.value > o.threshold
          AND NOT EXISTS (SELECT 1 FROM jobqueue.alert_incident x WHERE x.dedupe_key = o.dedupe_key
                                                                    AND x.state <> 'resolved')
        ORDER BY o.dedupe_key
        ON CONFLICT (dedupe_key) WHERE state <> 'resolved' DO NOTHING
        RETURNING i.id
    )
    SELECT array_agg(n.id ORDER BY n.id) INTO opened FROM n;
    -- hovering between the thresholds: open, not clear
    UPDATE jobqueue.alert_incident i SET clear_since = NULL, value = o.value
    FROM unnest(obs) o
    WHERE i.state <> 'resolved' AND i.dedupe_key = o.dedupe_key
      AND o.value <= o.threshold AND o.value > o.clear_threshold;
    GET DIAGNOSTICS hovering = ROW_COUNT;
    -- clear (or gone): start or continue the clear period; resolve once it is long enough
    WITH c AS (
        SELECT i.id, o.value
        FROM jobqueue.alert_incident i
        LEFT JOIN unnest(obs) o ON o.dedupe_key = i.dedupe_key
        WHERE i.state <> 'resolved' AND (o.dedupe_key IS NULL OR o.value <= o.clear_threshold)
        FOR UPDATE OF i
    ), r AS (
        UPDATE jobqueue.alert_incident i
        SET clear_since = coalesce(i.clear_since, now()), value = coalesce(c.value, i.value),
            state = CASE WHEN now() - coalesce(i.clear_since, now()) >= make_interval(secs => i.resolve_after_s)
                         THEN 'resolved' ELSE i.state END,
            resolved_at = CASE WHEN now() - coalesce(i.clear_since, now()) >= make_interval(secs => i.resolve_after_s)
                               THEN now() END,
            resolved_by = CASE WHEN now() - coalesce(i.clear_since, now()) >= make_interval(secs => i.resolve_after_s)
                               THEN 'reconcile' END
        FROM c
        WHERE i.id = c.id
        RETURNING i.id, i.state
    )
    SELECT array_agg(r.id ORDER BY r.id) FILTER (WHERE r.state = 'resolved') INTO resolved FROM r;

    sent := jobqueue._alert_notify(opened, 'trigger') + jobqueue._alert_notify(repeating, 'repeat')
            + jobqueue._alert_notify(resolved, 'resolve');
    DELETE FROM jobqueue.alert_incident i
    WHERE i.id = ANY (ARRAY(
        SELECT x.id FROM jobqueue.alert_incident x
        WHERE x.state = 'resolved' AND x.resolved_at < now() - make_interval(secs => jobqueue._conf('alert_retention_s'))
        LIMIT 1000));
    -- work done only (a worker logs a reconcile that did something); check_alerts adds the open count
    RETURN jsonb_build_object(
        'alerts_opened', coalesce(cardinality(opened), 0),
        'alerts_resolved', coalesce(cardinality(resolved), 0),
        'alert_notifications', sent);
END
$$;

-- Reconcile's step (the one line reconcile calls): detection in a subtransaction, so that
-- alerting can never stop maintenance. A failure (the alerts queue full, a bug) rolls back
-- detection only, says why in "alerts_error" and raises a WARNING; the next reconcile tries again.
CREATE FUNCTION jobqueue._detect_alerts(dry_run boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    err text;
BEGIN
    RETURN jobqueue._detect_alerts_now(dry_run);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
    RAISE WARNING 'jobqueue alert detection failed (maintenance went on): %', err;
    RETURN jsonb_build_object('alerts_error', left(err, 2000));
END
$$;

------------------------------------------------------------------------------------------
-- Alerts: the operator's functions and views
------------------------------------------------------------------------------------------
-- Incidents. A mapped (tenant) role sees none: detection aggregates every tenant's jobs.
CREATE VIEW jobqueue.alerts AS
    SELECT i.id, i.rule, i.kind, i.severity, i.state, i.queue, i.type, i.subject, i.dedupe_key, i.value, i.threshold,
           i.first_seen, i.last_seen, i.count, i.acknowledged_by, i.acknowledged_at, i.resolved_at, i.resolved_by,
           i.clear_since, i.summary
    FROM jobqueue.alert_incident i
    -- no tenant's caller (a mapped login role or a tenant's API token) sees alerts
    WHERE (SELECT jobqueue._tenant()) IS NULL;
COMMENT ON VIEW jobqueue.alerts IS
    'Alert incidents (firing, acknowledged, resolved) with the value that crossed the threshold; none for tenant roles';

CREATE VIEW jobqueue.alert_rules AS
    SELECT r.name, r.kind, r.queue, r.type, r.severity, r.threshold, r.clear_threshold, r.window_s, r.min_events,
           r.resolve_after_s, r.enabled, r.builtin, r.updated_at, r.updated_by
    FROM jobqueue.alert_rule r;
COMMENT ON VIEW jobqueue.alert_rules IS 'Alert rules: the built-in defaults and the per queue / job type overrides';

CREATE VIEW jobqueue.alert_channels AS
    SELECT c.name, c.kind, c.config, c.kinds, c.rules, c.queues, c.min_severity,
           extract(epoch FROM c.repeat_interval)::integer AS repeat_interval_s, c.send_resolve, c.enabled,
           c.created_at, c.updated_at, c.updated_by
    FROM jobqueue.alert_channel c;
COMMENT ON VIEW jobqueue.alert_channels IS
    'Alert channels (config holds no secret: only environment variable or file names) and their routes';

CREATE FUNCTION jobqueue.check_alerts(dry_run boolean DEFAULT false) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    PERFORM jobqueue._require_unmapped('check_alerts');
    RETURN jobqueue._detect_alerts(coalesce(dry_run, false))
        || jsonb_build_object('alerts_open', (SELECT count(*) FROM jobqueue.alert_incident i
                                              WHERE i.state <> 'resolved'));
END
$$;
COMMENT ON FUNCTION jobqueue.check_alerts(boolean) IS
    'Run alert detection now (reconcile runs it too); JSON summary: alerts_opened, alerts_resolved, alerts_open, '
    'alert_notifications (alerts_skipped when another detection holds the lock)';

CREATE FUNCTION jobqueue.list_alerts(state text DEFAULT 'open', "limit" integer DEFAULT 100)
RETURNS SETOF jobqueue.alerts
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    PERFORM jobqueue._require_unmapped('list_alerts');
    IF state IS NULL OR state NOT IN ('open', 'firing', 'acknowledged', 'resolved', 'all') THEN
        PERFORM jobqueue._raise('state', 'must be one of open, firing, acknowledged, resolved, all');
    END IF;
    IF "limit" IS NULL OR "limit" NOT BETWEEN 1 AND 10000 THEN
        PERFORM jobqueue._raise('limit', 'must be between 1 and 10000');
    END IF;
    RETURN QUERY
    SELECT * FROM jobqueue.alerts a
    WHERE CASE list_alerts.state WHEN 'all' THEN true WHEN 'open' THEN a.state <> 'resolved'
               ELSE a.state = list_alerts.state END
    ORDER BY a.state = 'resolved', jobqueue._severity_rank(a.severity) DESC, a.id DESC
    LIMIT "limit";
END
$$;
COMMENT ON FUNCTION jobqueue.list_alerts(text, integer) IS
    'Alert incidents: open (firing or acknowledged; the default), firing, acknowledged, resolved or all; '
    'most severe and newest first';

CREATE FUNCTION jobqueue._alert_of(id bigint) RETURNS jobqueue.alert_incident
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    r jobqueue.alert_incident;
BEGIN
    IF id IS NULL THEN
        PERFORM jobqueue._raise('id', 'must be an alert id');
    END IF;
    SELECT * INTO r FROM jobqueue.alert_incident i WHERE i.id = _alert_of.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('id: no alert %s', id), COLUMN = 'id';
    END IF;
    RETURN r;
END
$$;

CREATE FUNCTION jobqueue.get_alert(id bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    r jsonb;
BEGIN
    PERFORM jobqueue._require_unmapped('get_alert');
    SELECT to_jsonb(a) || jsonb_build_object('notifications', coalesce((
               SELECT jsonb_agg(jsonb_build_object('channel', n.channel, 'event', n.event, 'seq', n.seq,
                                                   'job_id', n.job_id, 'at', n.at,
                                                   'job_state', (SELECT j.state FROM jobqueue.jobs j WHERE j.id = n.job_id))
                                ORDER BY n.at, n.channel)
               FROM jobqueue.alert_notice n WHERE n.incident_id = a.id), '[]'))
    INTO r FROM jobqueue.alerts a WHERE a.id = get_alert.id;
    IF r IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('id: no alert %s', id), COLUMN = 'id';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION jobqueue.get_alert(bigint) IS
    'One alert incident (the alerts view''s columns) with its notifications (channel, event, job id and state)';

CREATE FUNCTION jobqueue.ack_alert(id bigint, by text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    r jobqueue.alert_incident;
BEGIN
    PERFORM jobqueue._require_unmapped('ack_alert');
    IF by IS NOT NULL AND (length(by) NOT BETWEEN 1 AND 255 OR by ~ '[[:cntrl:]]') THEN
        PERFORM jobqueue._raise('by', 'must be 1-255 characters without control characters');
    END IF;
    r := jobqueue._alert_of(id);
    IF r.state = 'resolved' THEN
        PERFORM jobqueue._raise('id', format('alert %s is resolved (at %s); only a firing alert can be acknowledged',
                                             id, r.resolved_at));
    END IF;
    IF r.state = 'firing' THEN
        UPDATE jobqueue.alert_incident i
        SET state = 'acknowledged', acknowledged_by = coalesce(by, session_user), acknowledged_at = now()
        WHERE i.id = r.id AND i.state = 'firing';
        PERFORM jobqueue._alert_notify(ARRAY[r.id], 'acknowledge');
    END IF;
    RETURN (SELECT to_jsonb(a) FROM jobqueue.alerts a WHERE a.id = r.id);
END
$$;
COMMENT ON FUNCTION jobqueue.ack_alert(bigint, text) IS
    'Acknowledge a firing alert (by: who; default the login role): no more repeats, an acknowledge notification '
    'to its channels; already acknowledged: unchanged; resolved: error (22023, field id); unknown id: P0002';

CREATE FUNCTION jobqueue.resolve_alert(id bigint, by text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    r jobqueue.alert_incident;
BEGIN
    PERFORM jobqueue._require_unmapped('resolve_alert');
    IF by IS NOT NULL AND (length(by) NOT BETWEEN 1 AND 255 OR by ~ '[[:cntrl:]]') THEN
        PERFORM jobqueue._raise('by', 'must be 1-255 characters without control characters');
    END IF;
    r := jobqueue._alert_of(id);
    IF r.state = 'resolved' THEN
        PERFORM jobqueue._raise('id', format('alert %s is already resolved (at %s)', id, r.resolved_at));
    END IF;
    UPDATE jobqueue.alert_incident i
    SET state = 'resolved', resolved_at = now(), resolved_by = coalesce(by, session_user)
    WHERE i.id = r.id AND i.state <> 'resolved';
    PERFORM jobqueue._alert_notify(ARRAY[r.id], 'resolve');
    RETURN (SELECT to_jsonb(a) FROM jobqueue.alerts a WHERE a.id = r.id);
END
$$;
COMMENT ON FUNCTION jobqueue.resolve_alert(bigint, text) IS
    'Resolve an open alert by hand (a resolve notification to its channels); if the condition still holds, the '
    'next detection opens a new incident. Resolved already: error (22023, field id); unknown id: P0002';

-- A threshold from a JSON value: a number, or for the kinds measured in seconds a duration
-- string ('10 minutes'); NULL when it is neither.
CREATE FUNCTION jobqueue._alert_number(kind text, value jsonb) RETURNS double precision
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT CASE WHEN jsonb_typeof(value) = 'number' THEN value::text::float8
                WHEN jsonb_typeof(value) = 'string'
                     AND kind IN ('oldest_runnable_age', 'job_stuck', 'worker_down', 'reconcile_not_run', 'xmin_horizon')
                THEN jobqueue._seconds_of(value)::float8 END
$$;

CREATE FUNCTION jobqueue.set_alert_rule(name text, settings jsonb DEFAULT '{}', queue text DEFAULT NULL,
                                        type text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    base jobqueue.alert_rule;      -- the row it replaces, else the default of that name
    k text;
    v_kind text;
    v_sev text;
    v_thr double precision;
    v_clear double precision;
    v_window integer;
    v_min integer;
    v_resolve integer;
    v_enabled boolean;
    x double precision;
    max_thr double precision;
BEGIN
    PERFORM jobqueue._require_unmapped('set_alert_rule');
    IF name IS NULL OR name !~ '^[a-z0-9_.:-]{1,64}$' THEN
        PERFORM jobqueue._raise('name', 'must be 1-64 characters of a-z 0-9 _ . : -');
    END IF;
    IF queue IS NOT NULL THEN
        PERFORM jobqueue._check_queue(queue);
    END IF;
    IF type IS NOT NULL THEN
        PERFORM jobqueue._check_type(type);
    END IF;
    settings := coalesce(settings, '{}');
    IF jsonb_typeof(settings) <> 'object' THEN
        PERFORM jobqueue._raise('settings', 'must be a JSON object');
    END IF;
    FOR k IN SELECT kk FROM jsonb_object_keys(settings) AS kk ORDER BY kk LOOP
        IF k NOT IN ('kind', 'severity', 'threshold', 'clear_threshold', 'window_s', 'min_events', 'resolve_after_s',
                     'enabled') THEN
            PERFORM jobqueue._raise(k, 'unknown setting (known: kind, severity, threshold, clear_threshold, window_s, '
                                       'min_events, resolve_after_s, enabled)');
        END IF;
    END LOOP;
    SELECT * INTO base FROM jobqueue.alert_rule r
    WHERE r.name = set_alert_rule.name AND r.queue IS NOT DISTINCT FROM set_alert_rule.queue
      AND r.type IS NOT DISTINCT FROM set_alert_rule.type
    FOR UPDATE;
    IF NOT FOUND THEN
        SELECT * INTO base FROM jobqueue.alert_rule r
        WHERE r.name = set_alert_rule.name
        ORDER BY r.queue IS NULL DESC, r.type IS NULL DESC, r.id LIMIT 1;
    END IF;

    v_kind := coalesce(settings->>'kind', base.kind);
    IF jsonb_typeof(settings->'kind') IS DISTINCT FROM NULL AND jsonb_typeof(settings->'kind') <> 'string' THEN
        PERFORM jobqueue._raise('kind', 'must be a string');
    END IF;
    IF v_kind IS NULL OR v_kind NOT IN ('queue_depth', 'oldest_runnable_age', 'error_rate', 'dead_letters',
                                        'job_stuck', 'worker_down', 'reconcile_not_run', 'xmin_horizon',
                                        'notify_queue') THEN
        PERFORM jobqueue._raise('kind', format('must be one of queue_depth, oldest_runnable_age, error_rate, '
                                               'dead_letters, job_stuck, worker_down, reconcile_not_run, xmin_horizon, '
                                               'notify_queue (got %s)', coalesce(settings->'kind', 'null')));
    END IF;
    IF base.kind IS NOT NULL AND v_kind <> base.kind THEN
        PERFORM jobqueue._raise('kind', format('rule %s is of kind %s; give a new name for a %s rule',
                                               name, base.kind, v_kind));
    END IF;
    IF v_kind IN ('worker_down', 'reconcile_not_run', 'xmin_horizon', 'notify_queue') THEN
        IF queue IS NOT NULL THEN
            PERFORM jobqueue._raise('queue', format('%s rules apply to the whole installation; give no queue', v_kind));
        END IF;
        IF type IS NOT NULL THEN
            PERFORM jobqueue._raise('type', format('%s rules apply to the whole installation; give no type', v_kind));
        END IF;
    ELSIF v_kind IN ('queue_depth', 'oldest_runnable_age') AND type IS NOT NULL THEN
        PERFORM jobqueue._raise('type', format('%s rules are per queue; give no type', v_kind));
    END IF;

    IF settings ? 'severity' THEN
        PERFORM jobqueue._check_severity(settings->>'severity');
        IF jsonb_typeof(settings->'severity') <> 'string' THEN
            PERFORM jobqueue._raise('severity', 'must be one of critical, warning, info');
        END IF;
    END IF;
    v_sev := coalesce(settings->>'severity', base.severity, 'warning');

    max_thr := CASE WHEN v_kind IN ('error_rate', 'notify_queue') THEN 1 ELSE 1e12 END;
    FOREACH k IN ARRAY ARRAY['threshold', 'clear_threshold'] LOOP
        IF settings ? k THEN
            x := jobqueue._alert_number(v_kind, settings->k);
            IF x IS NULL OR x = 'NaN' THEN
                PERFORM jobqueue._raise(k, CASE WHEN v_kind IN ('oldest_runnable_age', 'job_stuck', 'worker_down',
                                                                'reconcile_not_run', 'xmin_horizon')
                                                THEN 'must be a number of seconds or a duration'
                                                ELSE 'must be a number' END);
            END IF;
            IF NOT (x >= 0 AND x <= max_thr) THEN
                PERFORM jobqueue._raise(k, format('must be at least 0 and at most %s%s', max_thr,
                                                  CASE WHEN max_thr = 1 THEN ' (a fraction)' ELSE '' END));
            END IF;
        END IF;
    END LOOP;
    v_thr := coalesce(jobqueue._alert_number(v_kind, settings->'threshold'), base.threshold);
    IF v_thr IS NULL THEN
        PERFORM jobqueue._raise('threshold', 'is required for a new rule');
    END IF;
    -- a new threshold without a clear threshold keeps the rule's clear/fire ratio
    v_clear := coalesce(jobqueue._alert_number(v_kind, settings->'clear_threshold'),
                        CASE WHEN base.threshold > 0 THEN v_thr * base.clear_threshold / base.threshold
                             ELSE least(coalesce(base.clear_threshold, v_thr), v_thr) END);
    IF v_clear > v_thr THEN
        PERFORM jobqueue._raise('clear_threshold', format('must be at most threshold (%s)', v_thr));
    END IF;
    IF settings ? 'window_s' THEN
        x := jobqueue._alert_number('job_stuck', settings->'window_s');
        IF v_kind NOT IN ('error_rate', 'dead_letters') THEN
            PERFORM jobqueue._raise('window_s', 'applies to error_rate and dead_letters rules only');
        END IF;
        IF x IS NULL OR NOT (x BETWEEN 300 AND 86400) OR x <> trunc(x) THEN
            PERFORM jobqueue._raise('window_s', 'must be a whole number of seconds between 300 and 86400');
        END IF;
    END IF;
    v_window := CASE WHEN v_kind IN ('error_rate', 'dead_letters')
                     THEN coalesce(jobqueue._alert_number('job_stuck', settings->'window_s')::integer,
                                   base.window_s, 3600) END;
    FOREACH k IN ARRAY ARRAY['min_events', 'resolve_after_s'] LOOP
        IF settings ? k THEN
            x := jobqueue._alert_number(CASE WHEN k = 'resolve_after_s' THEN 'job_stuck' END, settings->k);
            IF x IS NULL OR x < 0 OR x <> trunc(x) OR x > (CASE WHEN k = 'min_events' THEN 1000000000 ELSE 604800 END) THEN
                PERFORM jobqueue._raise(k, CASE WHEN k = 'min_events' THEN 'must be a whole number, at least 0'
                                                ELSE 'must be a whole number of seconds between 0 and 604800' END);
            END IF;
        END IF;
    END LOOP;
    v_min := coalesce((settings->>'min_events')::numeric::integer, base.min_events, 0);
    v_resolve := coalesce(jobqueue._alert_number('job_stuck', settings->'resolve_after_s')::integer,
                          base.resolve_after_s, 300);
    IF settings ? 'enabled' AND jsonb_typeof(settings->'enabled') <> 'boolean' THEN
        PERFORM jobqueue._raise('enabled', 'must be true or false');
    END IF;
    v_enabled := coalesce((settings->>'enabled')::boolean,
                          CASE WHEN base.queue IS NOT DISTINCT FROM queue AND base.type IS NOT DISTINCT FROM type
                               THEN base.enabled END, true);

    INSERT INTO jobqueue.alert_rule AS r (name, kind, queue, type, severity, threshold, clear_threshold, window_s,
                                          min_events, resolve_after_s, enabled)
    VALUES (name, v_kind, queue, type, v_sev, v_thr, v_clear, v_window, v_min, v_resolve, v_enabled)
    ON CONFLICT ON CONSTRAINT alert_rule_scope_key DO UPDATE
    SET severity = excluded.severity, threshold = excluded.threshold, clear_threshold = excluded.clear_threshold,
        window_s = excluded.window_s, min_events = excluded.min_events, resolve_after_s = excluded.resolve_after_s,
        enabled = excluded.enabled, updated_at = now(), updated_by = session_user;
    RETURN (SELECT to_jsonb(v) FROM jobqueue.alert_rules v
            WHERE v.name = set_alert_rule.name AND v.queue IS NOT DISTINCT FROM set_alert_rule.queue
              AND v.type IS NOT DISTINCT FROM set_alert_rule.type);
END
$$;
COMMENT ON FUNCTION jobqueue.set_alert_rule(text, jsonb, text, text) IS
    'Create or change alert rule name (for every queue and type, or one queue and/or job type: an override of the '
    'default of that name); settings: kind, severity, threshold, clear_threshold, window_s, min_events, '
    'resolve_after_s, enabled; unset ones come from the rule being changed or the default. Returns the rule';

CREATE FUNCTION jobqueue.remove_alert_rule(name text, queue text DEFAULT NULL, type text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    PERFORM jobqueue._require_unmapped('remove_alert_rule');
    IF EXISTS (SELECT 1 FROM jobqueue.alert_rule r WHERE r.name = remove_alert_rule.name AND r.builtin
                 AND r.queue IS NOT DISTINCT FROM remove_alert_rule.queue
                 AND r.type IS NOT DISTINCT FROM remove_alert_rule.type) THEN
        PERFORM jobqueue._raise('name', format('%s is a built-in default; disable it instead '
                                               '(set_alert_rule(%L, ''{"enabled": false}''))', name, name));
    END IF;
    DELETE FROM jobqueue.alert_rule r
    WHERE r.name = remove_alert_rule.name AND r.queue IS NOT DISTINCT FROM remove_alert_rule.queue
      AND r.type IS NOT DISTINCT FROM remove_alert_rule.type;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n > 0;
END
$$;
COMMENT ON FUNCTION jobqueue.remove_alert_rule(text, text, text) IS
    'Delete an alert rule or override (queue/type); false when there was none; built-in defaults are disabled, '
    'not removed';

CREATE FUNCTION jobqueue.list_alert_rules() RETURNS SETOF jobqueue.alert_rules
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT * FROM jobqueue.alert_rules v ORDER BY v.name, v.queue NULLS FIRST, v.type NULLS FIRST $$;
COMMENT ON FUNCTION jobqueue.list_alert_rules() IS 'Every alert rule (the alert_rules view), by name, defaults first';

CREATE FUNCTION jobqueue.add_alert_channel(name text, kind text, config jsonb, route jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    c jsonb;
    r jsonb;
BEGIN
    PERFORM jobqueue._require_unmapped('add_alert_channel');
    IF name IS NULL OR name !~ '^[A-Za-z0-9_.:-]{1,64}$' THEN
        PERFORM jobqueue._raise('name', 'must be 1-64 characters of A-Z a-z 0-9 _ . : -');
    END IF;
    c := jobqueue._check_alert_channel(kind, config);
    r := jobqueue._check_alert_route(route);
    INSERT INTO jobqueue.alert_channel AS x (name, kind, config) VALUES (name, kind, c)
    ON CONFLICT ON CONSTRAINT alert_channel_pkey DO UPDATE SET kind = excluded.kind, config = excluded.config,
                                                               updated_at = now(),
                                     updated_by = session_user;
    RETURN jobqueue.set_alert_route(name, r);
END
$$;
COMMENT ON FUNCTION jobqueue.add_alert_channel(text, text, jsonb, jsonb) IS
    'Create (or replace the config of) an alert channel: kind email|slack|pagerduty|webhook, config checked per '
    'kind (secrets only as *_env or *_file names), optional route (see set_alert_route). Returns the channel';

CREATE FUNCTION jobqueue.set_alert_route(channel text, route jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    PERFORM jobqueue._require_unmapped('set_alert_route');
    route := jobqueue._check_alert_route(route);
    UPDATE jobqueue.alert_channel c
    SET kinds = CASE WHEN route ? 'kinds' THEN ARRAY(SELECT jsonb_array_elements_text(nullif(route->'kinds', 'null')))
                     ELSE c.kinds END,
        rules = CASE WHEN route ? 'rules' THEN ARRAY(SELECT jsonb_array_elements_text(nullif(route->'rules', 'null')))
                     ELSE c.rules END,
        queues = CASE WHEN route ? 'queues' THEN ARRAY(SELECT jsonb_array_elements_text(nullif(route->'queues', 'null')))
                      ELSE c.queues END,
        min_severity = coalesce(route->>'min_severity', c.min_severity),
        repeat_interval = CASE WHEN route ? 'repeat_interval_s'
                               THEN make_interval(secs => (route->>'repeat_interval_s')::float8)
                               ELSE c.repeat_interval END,
        send_resolve = coalesce((route->>'send_resolve')::boolean, c.send_resolve),
        enabled = coalesce((route->>'enabled')::boolean, c.enabled),
        updated_at = now(), updated_by = session_user
    WHERE c.name = channel;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('channel: no alert channel %s', to_jsonb(channel)),
                              COLUMN = 'channel';
    END IF;
    -- an empty list given as [] means "none"; NULL (or null) means "every one"
    RETURN (SELECT to_jsonb(v) FROM jobqueue.alert_channels v WHERE v.name = channel);
END
$$;
COMMENT ON FUNCTION jobqueue.set_alert_route(text, jsonb) IS
    'Change which incidents a channel receives: kinds, rules, queues (lists; null: every one), min_severity, '
    'repeat_interval_s (null: never), send_resolve, enabled; absent keys unchanged. Returns the channel';

CREATE FUNCTION jobqueue.remove_alert_channel(name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    PERFORM jobqueue._require_unmapped('remove_alert_channel');
    DELETE FROM jobqueue.alert_channel c WHERE c.name = remove_alert_channel.name;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n > 0;
END
$$;
COMMENT ON FUNCTION jobqueue.remove_alert_channel(text) IS
    'Delete an alert channel (notification jobs already enqueued still run); false when there was none';

CREATE FUNCTION jobqueue.list_alert_channels() RETURNS SETOF jobqueue.alert_channels
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    PERFORM jobqueue._require_unmapped('list_alert_channels');
    RETURN QUERY SELECT * FROM jobqueue.alert_channels v ORDER BY v.name;
END
$$;
COMMENT ON FUNCTION jobqueue.list_alert_channels() IS 'Every alert channel with its route, by name';

CREATE FUNCTION jobqueue.test_alert_channel(name text) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    c jobqueue.alert_channel;
    i jobqueue.alert_incident;
BEGIN
    PERFORM jobqueue._require_unmapped('test_alert_channel');
    SELECT * INTO c FROM jobqueue.alert_channel x WHERE x.name = test_alert_channel.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('name: no alert channel %s', to_jsonb(name)),
                              COLUMN = 'name';
    END IF;
    i.id := 0;
    i.dedupe_key := format('test|%s|%s', c.name, extract(epoch FROM now()));
    i.rule := 'test';
    i.kind := 'test';
    i.severity := 'info';
    i.state := 'firing';
    i.first_seen := now();
    i.last_seen := now();
    i.count := 1;
    i.summary := format('jobqueue test notification for channel %s (sent by %s)', c.name, session_user);
    RETURN (SELECT e.id FROM jobqueue._enqueue(jsonb_build_array(jsonb_build_object(
        'queue', 'jobqueue.alerts', 'type', 'jobqueue.notify', 'priority', 10,
        'payload', jobqueue._alert_payload('trigger', c, i) || '{"test": true}',
        'metadata', jsonb_build_object('alert_id', 0, 'channel', c.name, 'event', 'test'))), false) AS e(id));
END
$$;
COMMENT ON FUNCTION jobqueue.test_alert_channel(text) IS
    'Enqueue a test notification (event trigger, rule/kind test, severity info, "test": true) to one channel, '
    'whatever its route; returns the job id';

------------------------------------------------------------------------------------------
-- Queues and retry policies
------------------------------------------------------------------------------------------
CREATE FUNCTION jobqueue._queue_settings(queue text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT jsonb_build_object(
        'queue', q.name, 'paused', q.paused, 'max_size', q.max_size,
        'visibility_timeout', extract(epoch FROM q.visibility_timeout), 'max_attempts', q.max_attempts,
        'retry_policy', q.retry_policy, 'dead_letter_max_age_days', q.dead_letter_max_age_days,
        'history_retention', extract(epoch FROM q.history_retention),
        'aging_interval', extract(epoch FROM q.aging_interval), 'max_output_bytes', q.max_output_bytes)
    FROM jobqueue.queue q WHERE q.name = _queue_settings.queue
$$;

CREATE FUNCTION jobqueue.pause_queue(queue text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    PERFORM jobqueue._require_unmapped('pause_queue');
    PERFORM jobqueue._check_queue(pause_queue.queue);
    INSERT INTO jobqueue.queue AS q (name, paused) VALUES (pause_queue.queue, true)
    ON CONFLICT (name) DO UPDATE SET paused = true, updated_at = now();
END
$$;
COMMENT ON FUNCTION jobqueue.pause_queue(text) IS 'Stop claims from a queue (enqueue still accepted)';

CREATE FUNCTION jobqueue.resume_queue(queue text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    PERFORM jobqueue._require_unmapped('resume_queue');
    PERFORM jobqueue._check_queue(resume_queue.queue);
    INSERT INTO jobqueue.queue AS q (name, paused) VALUES (resume_queue.queue, false)
    ON CONFLICT (name) DO UPDATE SET paused = false, updated_at = now();
    PERFORM jobqueue._notify(ARRAY[resume_queue.queue]);
END
$$;
COMMENT ON FUNCTION jobqueue.resume_queue(text) IS 'Let workers claim from a paused queue again';

CREATE FUNCTION jobqueue.configure_queue(queue text, settings jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    k text;
    v jsonb;
    n numeric;
    max_lease numeric := jobqueue._conf('max_lease_s');
    problem text;
BEGIN
    PERFORM jobqueue._require_unmapped('configure_queue');
    PERFORM jobqueue._check_queue(configure_queue.queue);
    IF settings IS NULL OR jsonb_typeof(settings) <> 'object' THEN
        PERFORM jobqueue._raise('settings', 'must be a JSON object');
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(settings) LOOP
        CONTINUE WHEN jsonb_typeof(v) = 'null';  -- JSON null clears the setting
        n := CASE WHEN jsonb_typeof(v) = 'number' THEN v::numeric END;
        CASE k
        WHEN 'max_size' THEN
            IF n IS NULL OR n <> trunc(n) OR n NOT BETWEEN 1 AND 100000000 THEN
                PERFORM jobqueue._raise('max_size', 'must be an integer between 1 and 100000000 (or null)');
            END IF;
        WHEN 'visibility_timeout' THEN
            IF n IS NULL OR n <= 0 OR n > max_lease THEN
                PERFORM jobqueue._raise('visibility_timeout',
                    format('must be a number of seconds more than 0 and at most %s (or null)', max_lease));
            END IF;
        WHEN 'max_attempts' THEN
            IF n IS NULL OR n <> trunc(n) OR n NOT BETWEEN 1 AND 1000 THEN
                PERFORM jobqueue._raise('max_attempts', 'must be an integer between 1 and 1000 (or null)');
            END IF;
        WHEN 'retry_policy' THEN
            problem := jobqueue._policy_error(v);
            IF problem IS NOT NULL THEN
                PERFORM jobqueue._raise('retry_policy', problem);
            END IF;
        WHEN 'dead_letter_max_age_days' THEN
            IF n IS NULL OR n <> trunc(n) OR n NOT BETWEEN 1 AND 36500 THEN
                PERFORM jobqueue._raise('dead_letter_max_age_days', 'must be an integer between 1 and 36500 (or null)');
            END IF;
        WHEN 'history_retention' THEN
            IF n IS NULL OR n <= 0 OR n > 315360000 THEN
                PERFORM jobqueue._raise('history_retention',
                    'must be a number of seconds more than 0 and at most 315360000 (or null)');
            END IF;
        WHEN 'aging_interval' THEN
            IF n IS NULL OR n <= 0 OR n > 2592000 THEN
                PERFORM jobqueue._raise('aging_interval',
                    'must be a number of seconds more than 0 and at most 2592000 (or null)');
            END IF;
        WHEN 'max_output_bytes' THEN
            IF n IS NULL OR n <> trunc(n) OR n NOT BETWEEN 1 AND 16777216 THEN
                PERFORM jobqueue._raise('max_output_bytes', 'must be an integer between 1 and 16777216 (or null)');
            END IF;
        ELSE
            PERFORM jobqueue._raise('settings', format('unknown key "%s" (known: max_size, visibility_timeout, '
                'max_attempts, retry_policy, dead_letter_max_age_days, history_retention, aging_interval, '
                'max_output_bytes)', k));
        END CASE;
    END LOOP;
    INSERT INTO jobqueue.queue (name) VALUES (configure_queue.queue) ON CONFLICT DO NOTHING;
    UPDATE jobqueue.queue q SET
        max_size = CASE WHEN settings ? 'max_size' THEN (settings->>'max_size')::numeric::integer ELSE q.max_size END,
        visibility_timeout = CASE WHEN settings ? 'visibility_timeout'
            THEN make_interval(secs => (settings->>'visibility_timeout')::float8) ELSE q.visibility_timeout END,
        max_attempts = CASE WHEN settings ? 'max_attempts'
            THEN (settings->>'max_attempts')::numeric::integer ELSE q.max_attempts END,
        retry_policy = CASE WHEN settings ? 'retry_policy' THEN nullif(settings->'retry_policy', 'null') ELSE q.retry_policy END,
        dead_letter_max_age_days = CASE WHEN settings ? 'dead_letter_max_age_days'
            THEN (settings->>'dead_letter_max_age_days')::numeric::integer ELSE q.dead_letter_max_age_days END,
        history_retention = CASE WHEN settings ? 'history_retention'
            THEN make_interval(secs => (settings->>'history_retention')::float8) ELSE q.history_retention END,
        aging_interval = CASE WHEN settings ? 'aging_interval'
            THEN make_interval(secs => (settings->>'aging_interval')::float8) ELSE q.aging_interval END,
        max_output_bytes = CASE WHEN settings ? 'max_output_bytes'
            THEN (settings->>'max_output_bytes')::numeric::integer ELSE q.max_output_bytes END,
        updated_at = now()
    WHERE q.name = configure_queue.queue;
    RETURN jobqueue._queue_settings(configure_queue.queue);
END
$$;
COMMENT ON FUNCTION jobqueue.configure_queue(text, jsonb) IS
    'Set queue settings (max_size, visibility_timeout, max_attempts, retry_policy, dead_letter_max_age_days, '
    'history_retention, aging_interval, max_output_bytes; JSON null clears); returns the resulting settings';

CREATE FUNCTION jobqueue.set_retry_policy(type text, policy jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    problem text := jobqueue._policy_error(policy);
BEGIN
    PERFORM jobqueue._require_unmapped('set_retry_policy');
    PERFORM jobqueue._check_type(set_retry_policy.type);
    IF problem IS NOT NULL THEN
        PERFORM jobqueue._raise('policy', problem);
    END IF;
    IF policy IS NULL OR jsonb_typeof(policy) = 'null' THEN
        DELETE FROM jobqueue.retry_policy p WHERE p.type = set_retry_policy.type;
    ELSE
        INSERT INTO jobqueue.retry_policy AS p (type, policy) VALUES (set_retry_policy.type, policy)
        ON CONFLICT (type) DO UPDATE SET policy = EXCLUDED.policy, updated_at = now();
    END IF;
END
$$;
COMMENT ON FUNCTION jobqueue.set_retry_policy(text, jsonb) IS
    'Set (or with NULL remove) the retry policy of a job type; see retry_delay for the keys';

-- =======================================================================================
-- == 9. OBSERVABILITY ==
-- What an operator reads: statistics, health, workers, the views.
-- =======================================================================================

------------------------------------------------------------------------------------------
-- Statistics
------------------------------------------------------------------------------------------
CREATE FUNCTION jobqueue.queue_stats()
RETURNS TABLE (queue text, paused boolean, pending bigint, scheduled bigint, retrying bigint, processing bigint,
               dead_letters bigint, oldest_pending_age_s double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    WITH j AS (
        SELECT x.queue,
               count(*) FILTER (WHERE x.state = 'pending' AND x.run_at <= now()) AS pending,
               count(*) FILTER (WHERE x.state = 'pending' AND x.run_at > now()) AS scheduled,
               count(*) FILTER (WHERE x.state = 'retrying') AS retrying,
               count(*) FILTER (WHERE x.state = 'processing') AS processing,
               max(extract(epoch FROM now() - x.run_at)) FILTER (
                   WHERE x.state IN ('pending', 'retrying') AND x.run_at <= now() AND x.waiting_on = 0) AS oldest
        FROM jobqueue.job x GROUP BY x.queue
    ), d AS (
        SELECT x.queue, count(*) AS n FROM jobqueue.dead_letter x WHERE x.state = 'dead_letter' GROUP BY x.queue
    ), names AS (
        SELECT q.name AS queue FROM jobqueue.queue q
        UNION SELECT j.queue FROM j
        UNION SELECT d.queue FROM d
    )
    SELECT n.queue, coalesce(q.paused, false), coalesce(j.pending, 0), coalesce(j.scheduled, 0),
           coalesce(j.retrying, 0), coalesce(j.processing, 0), coalesce(d.n, 0), coalesce(j.oldest, 0)::float8
    FROM names n
    LEFT JOIN jobqueue.queue q ON q.name = n.queue
    LEFT JOIN j ON j.queue = n.queue
    LEFT JOIN d ON d.queue = n.queue
    ORDER BY n.queue
$$;
COMMENT ON FUNCTION jobqueue.queue_stats() IS
    'Per queue: pending (runnable now), scheduled (run_at ahead), retrying, processing, dead letters, '
    'age in seconds of the oldest runnable waiting job';

CREATE FUNCTION jobqueue.metrics("window" interval DEFAULT '1 hour')
RETURNS TABLE (queue text, completed bigint, failed bigint, success_rate double precision,
               avg_duration_s double precision, p95_duration_s double precision,
               jobs_per_minute double precision, error_rate double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM jobqueue._check_duration('window', "window", false, 31 * 86400);
    RETURN QUERY
    WITH c AS (
        SELECT h.queue, count(*) AS completed,
               avg(extract(epoch FROM h.finished_at - h.claimed_at))::float8 AS avg_s,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM h.finished_at - h.claimed_at))::float8 AS p95_s
        FROM jobqueue.job_history h
        WHERE h.state = 'completed' AND h.finished_at >= now() - "window"
        GROUP BY h.queue
    ), f AS (
        SELECT e.queue,
               count(*) FILTER (WHERE e.from_state = 'processing' AND e.to_state IN ('retrying', 'dead_letter')) AS failed,
               count(*) FILTER (WHERE e.to_state = 'dead_letter') AS dead
        FROM jobqueue.job_event e
        WHERE e.at >= now() - "window" AND e.to_state IN ('retrying', 'dead_letter')
        GROUP BY e.queue
    )
    SELECT coalesce(c.queue, f.queue), coalesce(c.completed, 0), coalesce(f.failed, 0),
           coalesce(c.completed, 0)::float8 / nullif(coalesce(c.completed, 0) + coalesce(f.dead, 0), 0),
           c.avg_s, c.p95_s,
           coalesce(c.completed, 0)::float8 / (extract(epoch FROM "window")::float8 / 60),
           coalesce(f.failed, 0)::float8 / nullif(coalesce(c.completed, 0) + coalesce(f.failed, 0), 0)
    FROM c FULL JOIN f ON f.queue = c.queue
    ORDER BY 1;
END
$$;
COMMENT ON FUNCTION jobqueue.metrics(interval) IS
    'Per queue over the last window: completed, failed attempts, success_rate = completed/(completed + dead-lettered), '
    'avg and p95 processing seconds (claim to completion), completions per minute, '
    'error_rate = failed attempts/(completed + failed attempts)';

------------------------------------------------------------------------------------------
-- Counters: transitions per (queue, type), kept by the database (tables in part 2)
------------------------------------------------------------------------------------------
-- The upper bounds, in seconds, of the histogram buckets (queue time and run time), a last
-- bucket above them all. Fixed: the stored counts are per bucket of these bounds. (plpgsql,
-- not sql: it returns the constant without planning a query at each call.)
CREATE FUNCTION jobqueue.histogram_buckets() RETURNS double precision[]
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ BEGIN RETURN '{0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10,30,60,300,900,3600}'::double precision[]; END $$;
COMMENT ON FUNCTION jobqueue.histogram_buckets() IS
    'Upper bounds (seconds) of the queue-time and run-time histogram buckets of jobqueue.counters()';

-- Per-bucket counts (not cumulative) of durations in seconds: element k counts the values v
-- with bound[k-1] < v <= bound[k] (Prometheus' le), the last element those above every
-- bound. NULL for no values.
CREATE FUNCTION jobqueue._bucket_counts(vals double precision[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    bounds constant double precision[] := jobqueue.histogram_buckets();
    counts bigint[];
    v double precision;
    k integer;
BEGIN
    IF vals IS NULL OR cardinality(vals) = 0 THEN
        RETURN NULL;
    END IF;
    -- A loop of simple expressions, not a query: the counter trigger calls this twice per
    -- statement that finishes jobs, and starting the query's plan (a join, a sort, an
    -- aggregate) cost 85 us a call for 20 values, the loop 9 us (250 values: 135 vs 85 us;
    -- revision 0014). width_bucket (a binary search) counts the bounds <= v; a v equal to a
    -- bound belongs to that bound's bucket (le), so it counts one less.
    counts := array_fill(0::bigint, ARRAY[cardinality(bounds) + 1]);
    FOREACH v IN ARRAY vals LOOP
        k := width_bucket(v, bounds);
        IF k > 0 AND bounds[k] = v THEN
            k := k - 1;
        END IF;
        counts[k + 1] := counts[k + 1] + 1;
    END LOOP;
    RETURN counts;
END
$$;

-- Element-wise sum of two bucket arrays (STRICT: an aggregate over it skips NULLs).
CREATE FUNCTION jobqueue._add_buckets(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT ARRAY(SELECT coalesce(x.a, 0) + coalesce(x.b, 0) FROM unnest(a, b) AS x(a, b)) $$;

CREATE AGGREGATE jobqueue._sum_buckets(bigint[]) (SFUNC = jobqueue._add_buckets, STYPE = bigint[]);

-- Statement-level triggers: each appends one counter_delta row per (queue, type) of the rows
-- the statement wrote (none when it wrote none). They see only rows that were inserted, so
-- an enqueue that loses a unique_key conflict or a rolled-back statement counts nothing.
-- A job inserted into the hot table was enqueued (enqueue, enqueue_many, enqueue_batch,
-- schedules) or put back from the dead letters (retry, redrive): either way it entered the
-- queue, so enqueued - completed - cancelled - dead_lettered = live jobs.
CREATE FUNCTION jobqueue._count_enqueued() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    INSERT INTO jobqueue.counter_delta (queue, type, enqueued)
    SELECT n.queue, n.type, count(*) FROM new_rows n GROUP BY n.queue, n.type;
    RETURN NULL;
END
$$;

-- A job inserted into job_history finished: completed (complete, complete_many), or cancelled
-- (cancel, fail with cancelled, reconcile, a failed dependency). Completed jobs also give
-- their queue time (claimed_at - run_at: how long the successful attempt waited, once due,
-- for a worker) and run time (finished_at - claimed_at).
CREATE FUNCTION jobqueue._count_finished() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    INSERT INTO jobqueue.counter_delta (queue, type, completed, cancelled, queue_time, queue_time_sum,
                                        run_time, run_time_sum)
    SELECT n.queue, n.type, count(*) FILTER (WHERE n.state = 'completed'), count(*) FILTER (WHERE n.state = 'cancelled'),
           jobqueue._bucket_counts(array_agg(t.queued) FILTER (WHERE t.queued IS NOT NULL)),
           coalesce(sum(t.queued), 0),
           jobqueue._bucket_counts(array_agg(t.ran) FILTER (WHERE t.ran IS NOT NULL)),
           coalesce(sum(t.ran), 0)
    FROM new_rows n
    CROSS JOIN LATERAL (
        SELECT CASE WHEN n.state = 'completed'
                    THEN greatest(extract(epoch FROM n.claimed_at - n.run_at), 0)::float8 END AS queued,
               CASE WHEN n.state = 'completed'
                    THEN greatest(extract(epoch FROM n.finished_at - n.claimed_at), 0)::float8 END AS ran
    ) AS t
    GROUP BY n.queue, n.type;
    RETURN NULL;
END
$$;

-- A job inserted into dead_letter failed for good. Its last attempt failed (a failed attempt
-- counts in failed) when the reason is one only a running job gets; 'expired' jobs were
-- waiting. (Failed attempts that are retried are counted by fail and reconcile.)
CREATE FUNCTION jobqueue._count_dead_lettered() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    INSERT INTO jobqueue.counter_delta (queue, type, dead_lettered, failed)
    SELECT n.queue, n.type, count(*),
           count(*) FILTER (WHERE n.reason IN ('permanent_error', 'max_retries_exceeded',
                                               'visibility_timeout_exceeded', 'output_too_large'))
    FROM new_rows n GROUP BY n.queue, n.type;
    RETURN NULL;
END
$$;

CREATE TRIGGER count_enqueued AFTER INSERT ON jobqueue.job
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION jobqueue._count_enqueued();
CREATE TRIGGER count_finished AFTER INSERT ON jobqueue.job_history
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION jobqueue._count_finished();
CREATE TRIGGER count_dead_lettered AFTER INSERT ON jobqueue.dead_letter
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION jobqueue._count_dead_lettered();

-- Reconcile's step: fold up to batch * 100 delta rows into counter_total, one upsert per
-- (queue, type). Rows are taken with SKIP LOCKED, so concurrent reconciles split the work
-- and never count a row twice; a reader summing totals and deltas in one statement sees a
-- fold either wholly done or not at all.
CREATE FUNCTION jobqueue._compact_counters(batch integer, dry_run boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    IF dry_run THEN
        SELECT count(*) INTO n FROM (SELECT 1 FROM jobqueue.counter_delta LIMIT batch * 100) AS s;
        RETURN jsonb_build_object('counters_compacted', n);
    END IF;
    WITH d AS (
        DELETE FROM jobqueue.counter_delta x
        WHERE x.ctid = ANY (ARRAY(SELECT y.ctid FROM jobqueue.counter_delta y LIMIT batch * 100
                                  FOR UPDATE SKIP LOCKED))
        RETURNING x.*
    ), g AS (
        SELECT d.queue, d.type, sum(d.enqueued)::bigint AS enqueued, sum(d.completed)::bigint AS completed,
               sum(d.failed)::bigint AS failed, sum(d.retried)::bigint AS retried,
               sum(d.dead_lettered)::bigint AS dead_lettered, sum(d.cancelled)::bigint AS cancelled,
               jobqueue._sum_buckets(d.queue_time) AS queue_time, sum(d.queue_time_sum) AS queue_time_sum,
               jobqueue._sum_buckets(d.run_time) AS run_time, sum(d.run_time_sum) AS run_time_sum
        FROM d GROUP BY d.queue, d.type
    ), u AS (
        INSERT INTO jobqueue.counter_total AS t
        SELECT g.* FROM g ORDER BY g.queue, g.type  -- upserts in key order: no deadlock between reconciles
        ON CONFLICT (queue, type) DO UPDATE
        SET enqueued = t.enqueued + EXCLUDED.enqueued, completed = t.completed + EXCLUDED.completed,
            failed = t.failed + EXCLUDED.failed, retried = t.retried + EXCLUDED.retried,
            dead_lettered = t.dead_lettered + EXCLUDED.dead_lettered, cancelled = t.cancelled + EXCLUDED.cancelled,
            queue_time = coalesce(jobqueue._add_buckets(t.queue_time, EXCLUDED.queue_time), t.queue_time,
                                  EXCLUDED.queue_time),
            queue_time_sum = t.queue_time_sum + EXCLUDED.queue_time_sum,
            run_time = coalesce(jobqueue._add_buckets(t.run_time, EXCLUDED.run_time), t.run_time, EXCLUDED.run_time),
            run_time_sum = t.run_time_sum + EXCLUDED.run_time_sum
    )
    SELECT count(*) INTO n FROM d;
    RETURN jsonb_build_object('counters_compacted', n);
END
$$;

-- The counters: totals plus the deltas not yet folded, in one snapshot; running is the
-- current number of processing jobs (a gauge, not a counter). Bucket arrays are per bucket
-- (not cumulative), one element per bound of histogram_buckets() and one above.
CREATE FUNCTION jobqueue.counters()
RETURNS TABLE (queue text, type text, enqueued bigint, completed bigint, failed bigint, retried bigint,
               dead_lettered bigint, cancelled bigint, running bigint,
               queue_time_buckets bigint[], queue_time_sum double precision,
               run_time_buckets bigint[], run_time_sum double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    zeros bigint[] := array_fill(0::bigint, ARRAY[cardinality(jobqueue.histogram_buckets()) + 1]);
BEGIN
    -- counters are per queue and type across tenants: a tenant-mapped role may not read them
    PERFORM jobqueue._require_unmapped('counters');
    RETURN QUERY
    WITH c AS (
        SELECT x.queue, x.type, sum(x.enqueued)::bigint AS enqueued, sum(x.completed)::bigint AS completed,
               sum(x.failed)::bigint AS failed, sum(x.retried)::bigint AS retried,
               sum(x.dead_lettered)::bigint AS dead_lettered, sum(x.cancelled)::bigint AS cancelled,
               jobqueue._sum_buckets(x.queue_time) AS queue_time, sum(x.queue_time_sum) AS queue_time_sum,
               jobqueue._sum_buckets(x.run_time) AS run_time, sum(x.run_time_sum) AS run_time_sum
        FROM (SELECT * FROM jobqueue.counter_total UNION ALL SELECT * FROM jobqueue.counter_delta) AS x
        GROUP BY x.queue, x.type
    ), r AS (
        SELECT j.queue, j.type, count(*) AS running
        FROM jobqueue.job j WHERE j.state = 'processing'
        GROUP BY j.queue, j.type
    )
    SELECT coalesce(c.queue, r.queue), coalesce(c.type, r.type), coalesce(c.enqueued, 0),
           coalesce(c.completed, 0), coalesce(c.failed, 0), coalesce(c.retried, 0), coalesce(c.dead_lettered, 0),
           coalesce(c.cancelled, 0), coalesce(r.running, 0), coalesce(c.queue_time, zeros),
           coalesce(c.queue_time_sum, 0), coalesce(c.run_time, zeros), coalesce(c.run_time_sum, 0)
    FROM c FULL JOIN r ON r.queue = c.queue AND r.type = c.type
    ORDER BY 1, 2;
END
$$;
COMMENT ON FUNCTION jobqueue.counters() IS
    'Per queue and job type: monotonic counts of jobs enqueued, completed, failed (attempts), retried, '
    'dead-lettered, cancelled; running now; queue-time and run-time histograms of completed jobs';
-- The audit trail for dashboards and live streams (job_event itself is private)
------------------------------------------------------------------------------------------
-- Row-level security on job_event applies (policies key on session_user, which a definer
-- function keeps), and a producer sees the events of the jobs it enqueued, as in the jobs
-- view. Never the whole trail: a job's events (its index), or those at or after `since`
-- (the BRIN index on at) with an id above `after`. A live stream's cursor is its last
-- safe id plus that id's time (see docs/sql-api.md "Live streams").
CREATE FUNCTION jobqueue.job_events(after bigint DEFAULT NULL, since timestamptz DEFAULT NULL,
                                    max_rows integer DEFAULT 500, of_job bigint DEFAULT NULL,
                                    queue_changes boolean DEFAULT false)
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
      -- queue changes (job_id NULL) only when asked for: queues are shared by every tenant
      AND CASE WHEN e.job_id IS NULL THEN coalesce(queue_changes, false)
               ELSE (SELECT jobqueue._sees_all_jobs())
                    OR EXISTS (SELECT 1 FROM jobqueue.jobs j WHERE j.id = e.job_id) END
    ORDER BY e.id
    LIMIT max_rows;
END
$$;
COMMENT ON FUNCTION jobqueue.job_events(bigint, timestamptz, integer, bigint, boolean) IS
    'Audit-trail rows the caller may see (its tenant; a producer: its jobs): one job''s, or those at or after since '
    'with id above after, in id order, at most max_rows; queue_changes: also queue pauses, resumes and '
    'configuration changes (job_id NULL)';

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

------------------------------------------------------------------------------------------
-- Health: what an operator alerts on
------------------------------------------------------------------------------------------
-- One row per check, in a fixed order: its value, the threshold it is held to (NULL: that
-- check is off), whether it alerts, and what the value refers to. Thresholds are parameters
-- with defaults, so a monitor may pass its own. Reads the statistics views, not the job
-- history: it costs the same with a million finished jobs.
--
-- The oldest-xmin checks (RELIABILITY 2.2): a transaction, snapshot, prepared transaction
-- or replication slot that holds back vacuum makes every queue table bloat until it ends.
-- Of other roles' sessions pg_stat_activity shows pid, user and xids to everyone, but their
-- start time, state and application only to a schema owner with the privileges of
-- pg_read_all_stats (a superuser has them): without those, the age in xids counts every
-- session, the age in seconds only the owner's own sessions and prepared transactions.
CREATE FUNCTION jobqueue.health(
    max_xmin_age interval DEFAULT '5 minutes',
    max_xmin_xids bigint DEFAULT 100000000,
    max_reconcile_age interval DEFAULT '1 minute',
    max_lease_overdue interval DEFAULT '1 minute',
    max_notify_queue_usage double precision DEFAULT 0.5,
    max_pending_age interval DEFAULT NULL,
    max_dead_letters bigint DEFAULT NULL,
    max_expired_leases bigint DEFAULT NULL
)
RETURNS TABLE (check_name text, value double precision, threshold double precision, alert boolean, detail text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    xmin_s double precision;
    xmin_s_who text;
    xmin_x bigint;
    xmin_x_who text;
    snap_x bigint := age(pg_snapshot_xmin(pg_current_snapshot())::text::xid);
    last_reconcile timestamptz;
    overdue double precision;
    overdue_n bigint;
    pending_s double precision;
    pending_q text;
    dead bigint;
BEGIN
    -- Read-only, but sessions and slots are the cluster's, not a tenant's: for the operator only.
    IF jobqueue._tenant() IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('health: login role %s acts for tenant %s; health reports on the whole server '
                             '(every session, replication slot and tenant''s jobs) and needs a jobqueue_admin '
                             'role mapped to no tenant', session_user, jobqueue._tenant());
    END IF;
    -- NULL means the default (as everywhere in the API); the last three are off by default.
    max_xmin_age := coalesce(max_xmin_age, interval '5 minutes');
    max_xmin_xids := coalesce(max_xmin_xids, 100000000);
    max_reconcile_age := coalesce(max_reconcile_age, interval '1 minute');
    max_lease_overdue := coalesce(max_lease_overdue, interval '1 minute');
    max_notify_queue_usage := coalesce(max_notify_queue_usage, 0.5);
    PERFORM jobqueue._check_duration('max_xmin_age', max_xmin_age, false, 31 * 86400);
    IF max_xmin_xids NOT BETWEEN 1 AND 2000000000 THEN
        PERFORM jobqueue._raise('max_xmin_xids', 'must be between 1 and 2000000000');
    END IF;
    PERFORM jobqueue._check_duration('max_reconcile_age', max_reconcile_age, false, 31 * 86400);
    PERFORM jobqueue._check_duration('max_lease_overdue', max_lease_overdue, true, 31 * 86400);
    IF NOT (max_notify_queue_usage > 0 AND max_notify_queue_usage <= 1) THEN
        PERFORM jobqueue._raise('max_notify_queue_usage', 'must be more than 0 and at most 1');
    END IF;
    IF max_pending_age IS NOT NULL THEN
        PERFORM jobqueue._check_duration('max_pending_age', max_pending_age, false, 366 * 86400);
    END IF;
    IF max_dead_letters < 0 THEN
        PERFORM jobqueue._raise('max_dead_letters', 'must be at least 0');
    END IF;
    IF max_expired_leases < 0 THEN
        PERFORM jobqueue._raise('max_expired_leases', 'must be at least 0');
    END IF;

    -- Every vacuum horizon holder but this call: sessions, prepared transactions, slots.
    WITH holder AS (
        SELECT greatest(age(a.backend_xid), age(a.backend_xmin))::bigint AS xids,
               extract(epoch FROM clock_timestamp() - a.xact_start)::float8 AS secs,
               format('pid %s (%s)', a.pid,
                      CASE WHEN a.state IS NULL THEN format('user %s; more needs pg_read_all_stats', a.usename)
                           ELSE format('%s, %s, user %s', coalesce(nullif(a.application_name, ''), a.backend_type),
                                       a.state, a.usename) END) AS who
        FROM pg_stat_activity a
        WHERE a.pid <> pg_backend_pid() AND (a.backend_xid IS NOT NULL OR a.backend_xmin IS NOT NULL)
        UNION ALL
        SELECT age(p.transaction)::bigint, extract(epoch FROM clock_timestamp() - p.prepared)::float8,
               format('prepared transaction %L', p.gid)
        FROM pg_prepared_xacts p
        UNION ALL
        SELECT greatest(age(r.xmin), age(r.catalog_xmin))::bigint, NULL, format('replication slot %L', r.slot_name)
        FROM pg_replication_slots r WHERE r.xmin IS NOT NULL OR r.catalog_xmin IS NOT NULL
    )
    SELECT (SELECT h.secs FROM holder h WHERE h.secs IS NOT NULL ORDER BY h.secs DESC LIMIT 1),
           (SELECT h.who FROM holder h WHERE h.secs IS NOT NULL ORDER BY h.secs DESC LIMIT 1),
           (SELECT h.xids FROM holder h WHERE h.xids IS NOT NULL ORDER BY h.xids DESC LIMIT 1),
           (SELECT h.who FROM holder h WHERE h.xids IS NOT NULL ORDER BY h.xids DESC LIMIT 1)
    INTO xmin_s, xmin_s_who, xmin_x, xmin_x_who;
    IF coalesce(snap_x, 0) > coalesce(xmin_x, 0) THEN
        xmin_x := snap_x;
        xmin_x_who := 'the oldest running transaction (its session is not visible to the schema owner)';
    END IF;

    SELECT m.last_run_at INTO last_reconcile FROM jobqueue.maintenance m WHERE m.step = 'reconcile';
    SELECT extract(epoch FROM now() - min(j.lease_expires_at))::float8, count(*)
    INTO overdue, overdue_n
    FROM jobqueue.job j WHERE j.state = 'processing' AND j.lease_expires_at < now();
    SELECT extract(epoch FROM now() - j.run_at)::float8, j.queue INTO pending_s, pending_q
    FROM jobqueue.job j
    WHERE j.state IN ('pending', 'retrying') AND j.run_at <= now() AND j.waiting_on = 0
    ORDER BY j.run_at LIMIT 1;
    SELECT count(*) INTO dead FROM jobqueue.dead_letter d WHERE d.state = 'dead_letter';

    RETURN QUERY VALUES
        ('oldest_xmin_age_s', coalesce(xmin_s, 0), extract(epoch FROM max_xmin_age)::float8,
         coalesce(xmin_s, 0) > extract(epoch FROM max_xmin_age), coalesce(xmin_s_who, 'no open transaction')),
        ('oldest_xmin_age_xids', coalesce(xmin_x, 0)::float8, max_xmin_xids::float8,
         coalesce(xmin_x, 0) > max_xmin_xids, coalesce(xmin_x_who, 'no open transaction')),
        ('reconcile_last_run_age_s', extract(epoch FROM now() - last_reconcile)::float8,
         extract(epoch FROM max_reconcile_age)::float8,
         last_reconcile IS NULL OR now() - last_reconcile > max_reconcile_age,
         CASE WHEN last_reconcile IS NULL THEN 'reconcile has never run' ELSE 'last run ' || last_reconcile END),
        ('lease_overdue_s', coalesce(overdue, 0), extract(epoch FROM max_lease_overdue)::float8,
         coalesce(overdue, 0) > extract(epoch FROM max_lease_overdue),
         format('%s expired leases waiting for reconcile', overdue_n)),
        ('expired_leases', overdue_n::float8, max_expired_leases::float8,
         coalesce(overdue_n > max_expired_leases, false), 'leases past their expiry, not yet reclaimed'),
        ('notify_queue_usage', pg_notification_queue_usage(), max_notify_queue_usage,
         pg_notification_queue_usage() > max_notify_queue_usage, 'share of the NOTIFY queue in use'),
        ('oldest_pending_age_s', coalesce(pending_s, 0), extract(epoch FROM max_pending_age)::float8,
         coalesce(pending_s > extract(epoch FROM max_pending_age), false),
         coalesce('queue ' || pending_q, 'no runnable job waiting')),
        ('dead_letters', dead::float8, max_dead_letters::float8, coalesce(dead > max_dead_letters, false),
         'jobs in the dead-letter queue');
END
$$;
COMMENT ON FUNCTION jobqueue.health(interval, bigint, interval, interval, double precision, interval, bigint, bigint) IS
    'Alert checks: oldest xmin age (s, xids), reconcile last-run age, overdue and expired leases, NOTIFY queue usage, '
    'oldest runnable job age, dead letters; one row each with value, threshold, alert, detail';

------------------------------------------------------------------------------------------
-- Workers
------------------------------------------------------------------------------------------
CREATE FUNCTION jobqueue.register_worker(worker_id text, host text DEFAULT NULL, pid integer DEFAULT NULL,
                                         queues text[] DEFAULT NULL, concurrency integer DEFAULT NULL,
                                         metadata jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF worker_id IS NULL OR worker_id = '' THEN
        PERFORM jobqueue._raise('worker_id', 'must be a non-empty string');
    ELSIF length(worker_id) > 255 THEN
        PERFORM jobqueue._raise('worker_id', 'longer than 255 characters');
    END IF;
    IF length(host) > 255 THEN
        PERFORM jobqueue._raise('host', 'longer than 255 characters');
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(queues) AS x WHERE jobqueue._queue_error(x) IS NOT NULL)
       OR cardinality(queues) > 100 THEN
        PERFORM jobqueue._raise('queues', 'must be at most 100 valid queue names');
    END IF;
    IF concurrency IS NOT NULL AND concurrency NOT BETWEEN 1 AND 100000 THEN
        PERFORM jobqueue._raise('concurrency', 'must be between 1 and 100000');
    END IF;
    IF metadata IS NOT NULL AND jsonb_typeof(metadata) <> 'object' THEN
        PERFORM jobqueue._raise('metadata', 'must be a JSON object');
    END IF;
    -- Keyed by (worker_id, the caller's tenant): another tenant's worker of the same name is
    -- neither a conflict nor visible.
    INSERT INTO jobqueue.worker AS w (worker_id, db_user, host, pid, queues, concurrency, metadata, tenant_id)
    VALUES (register_worker.worker_id, session_user, register_worker.host, register_worker.pid,
            register_worker.queues, register_worker.concurrency, coalesce(register_worker.metadata, '{}'),
            jobqueue._tenant())
    ON CONFLICT (worker_id, tenant_id) DO UPDATE
    SET db_user = EXCLUDED.db_user, host = EXCLUDED.host, pid = EXCLUDED.pid, queues = EXCLUDED.queues,
        concurrency = EXCLUDED.concurrency, metadata = EXCLUDED.metadata, started_at = now(),
        last_seen_at = now(), jobs_done = 0, stopped_at = NULL;
END
$$;
COMMENT ON FUNCTION jobqueue.register_worker(text, text, integer, text[], integer, jsonb) IS
    'Register (or re-register) a worker process';

CREATE FUNCTION jobqueue.worker_heartbeat(worker_id text, jobs_done bigint DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF jobs_done < 0 THEN
        PERFORM jobqueue._raise('jobs_done', 'must be at least 0');
    END IF;
    UPDATE jobqueue.worker w
    SET last_seen_at = now(), jobs_done = coalesce(worker_heartbeat.jobs_done, w.jobs_done)
    WHERE w.worker_id = worker_heartbeat.worker_id AND w.tenant_id IS NOT DISTINCT FROM jobqueue._tenant()
      AND w.stopped_at IS NULL;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION jobqueue.worker_heartbeat(text, bigint) IS
    'A registered worker is alive (false: unknown or unregistered, register again)';

CREATE FUNCTION jobqueue.unregister_worker(worker_id text) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    UPDATE jobqueue.worker w SET stopped_at = now(), last_seen_at = now()
    WHERE w.worker_id = unregister_worker.worker_id AND w.tenant_id IS NOT DISTINCT FROM jobqueue._tenant()
      AND w.stopped_at IS NULL
$$;
COMMENT ON FUNCTION jobqueue.unregister_worker(text) IS 'A worker stopped (kept for worker_retention_s)';

-- Seconds until the next waiting job of these queues becomes runnable (0: one is runnable
-- now; NULL: none waiting, or all these queues paused). An idle worker sleeps until then
-- (or a notification). Eleven probes of the claim index per queue (one per priority), so it
-- costs the same with a million scheduled jobs.
CREATE FUNCTION jobqueue.next_due(queues text[] DEFAULT '{default}') RETURNS double precision
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    due timestamptz;
BEGIN
    IF queues IS NULL OR cardinality(queues) NOT BETWEEN 1 AND 100
       OR EXISTS (SELECT 1 FROM unnest(queues) AS x WHERE jobqueue._queue_error(x) IS NOT NULL) THEN
        PERFORM jobqueue._raise('queues', 'must name 1 to 100 valid queues');
    END IF;
    SELECT min(f.run_at) INTO due
    FROM unnest(queues) AS oq(name)
    CROSS JOIN generate_series(0, 10) AS p(priority)
    CROSS JOIN LATERAL (
        SELECT j.run_at FROM jobqueue.job j
        WHERE j.queue = oq.name AND j.state IN ('pending', 'retrying') AND j.waiting_on = 0
          AND j.priority = p.priority
        ORDER BY j.priority DESC, j.run_at
        LIMIT 1
    ) AS f
    WHERE NOT EXISTS (SELECT 1 FROM jobqueue.queue q WHERE q.name = oq.name AND q.paused);
    RETURN CASE WHEN due IS NOT NULL THEN greatest(extract(epoch FROM due - now()), 0)::float8 END;
END
$$;
COMMENT ON FUNCTION jobqueue.next_due(text[]) IS
    'Seconds until the next waiting job of these queues is due (0: now; NULL: nothing waiting)';

-- The log lines of a job (add_log), oldest first. Producers may read the logs of the jobs
-- they enqueued; workers and admins any job's.
CREATE FUNCTION jobqueue.job_logs(id bigint)
RETURNS TABLE (at timestamptz, token bigint, attempt integer, message text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF job_logs.id IS NULL THEN
        PERFORM jobqueue._raise('id', 'must not be null');
    END IF;
    IF NOT jobqueue._sees_all_jobs() AND NOT EXISTS (
        SELECT 1 FROM jobqueue.jobs j WHERE j.id = job_logs.id AND j.created_by = jobqueue._actor()) THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT g.at, g.token,
           (SELECT (e.detail->>'attempt')::integer FROM jobqueue.job_event e
            WHERE e.job_id = g.job_id AND e.token = g.token AND e.to_state = 'processing' LIMIT 1),
           g.message
    FROM jobqueue.job_log g WHERE g.job_id = job_logs.id ORDER BY g.at, g.id;
END
$$;
COMMENT ON FUNCTION jobqueue.job_logs(bigint) IS 'The log lines workers attached to a job (add_log), oldest first';

------------------------------------------------------------------------------------------
-- Views (read-only; owned by the schema owner)
------------------------------------------------------------------------------------------
-- Whether the calling login role may read every job (workers and admins; producers see
-- the jobs they enqueued).
CREATE FUNCTION jobqueue._sees_all_jobs() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).role <> 'producer'
                ELSE pg_has_role(session_user, 'jobqueue_worker', 'MEMBER') OR jobqueue._is_admin() END
$$;

CREATE VIEW jobqueue.jobs AS
    SELECT x.id, x.queue, x.type, x.state, x.priority, x.base_priority, x.payload, x.run_at, x.attempt,
           x.max_attempts, x.retry_policy, x.unique_key, x.expires_at, x.tenant_id, x.user_id, x.tags, x.metadata,
           x.depends_on, x.waiting_on, x.timeout, x.visibility_timeout, x.token, x.worker_id, x.claimed_at,
           x.lease_expires_at, x.cancel_requested, x.progress, x.errors, x.errors->-1->>'message' AS last_error,
           x.created_at, x.created_by, x.finished_at, x.output, x.reason, x.archived_at
    FROM (
        SELECT * FROM jobqueue.job
        UNION ALL SELECT * FROM jobqueue.job_history
        UNION ALL SELECT * FROM jobqueue.dead_letter
    ) AS x
    -- (spelled out with pg_catalog functions: a view checks EXECUTE as the querying role)
    WHERE x.created_by = (SELECT CASE WHEN session_user = 'jobqueue_web' THEN jobqueue._actor()
                                      ELSE session_user::text END)
       OR (SELECT CASE WHEN session_user = 'jobqueue_web' THEN jobqueue._sees_all_jobs()
                       ELSE pg_has_role(session_user, 'jobqueue_worker', 'MEMBER')
                            OR pg_has_role(session_user, 'jobqueue_admin', 'MEMBER')
                            OR session_user = (SELECT pg_get_userbyid(n.nspowner) FROM pg_namespace n
                                               WHERE n.nspname = 'jobqueue') END);
COMMENT ON VIEW jobqueue.jobs IS
    'Every job in any state (live, finished, dead letters): one row per job. Producers see the jobs they enqueued.';

CREATE VIEW jobqueue.dead_letters AS
    SELECT x.id, x.queue, x.type, x.state, x.reason, x.payload, x.errors, x.errors->-1->>'message' AS last_error,
           x.attempt, x.max_attempts, x.unique_key, x.tenant_id, x.user_id, x.tags, x.metadata, x.token,
           x.created_at, x.created_by, x.run_at, x.claimed_at, x.finished_at AS dead_at, x.archived_at
    FROM jobqueue.dead_letter x;
COMMENT ON VIEW jobqueue.dead_letters IS 'Jobs that failed for good (state dead_letter or archived), with every error';

CREATE VIEW jobqueue.queues AS
    SELECT q.name, q.paused, q.max_size, q.visibility_timeout, q.max_attempts, q.retry_policy,
           q.dead_letter_max_age_days, q.history_retention, q.aging_interval, q.created_at, q.updated_at,
           q.max_output_bytes
    FROM jobqueue.queue q;
COMMENT ON VIEW jobqueue.queues IS 'Every queue configured or used (enqueue registers new queues) and its settings';

CREATE VIEW jobqueue.workers AS
    SELECT w.worker_id, w.db_user, w.host, w.pid, w.queues, w.concurrency, w.metadata, w.started_at,
           w.last_seen_at, w.jobs_done, w.stopped_at,
           CASE WHEN w.stopped_at IS NOT NULL THEN 'stopped'
                WHEN w.last_seen_at > now() - interval '60 seconds' THEN 'healthy'
                WHEN w.last_seen_at > now() - interval '5 minutes' THEN 'degraded'
                ELSE 'unhealthy' END AS status,
           -- a tenant's worker runs only its tenant's jobs; an unmapped one may run any tenant's
           (SELECT count(*) FROM jobqueue.job j WHERE j.state = 'processing' AND j.worker_id = w.worker_id
              AND (w.tenant_id IS NULL OR j.tenant_id = w.tenant_id)) AS running,
           w.tenant_id
    FROM jobqueue.worker w;
COMMENT ON VIEW jobqueue.workers IS
    'Worker processes: healthy (seen < 60 s ago), degraded (< 5 min), unhealthy, or stopped; running jobs; '
    'tenant_id (worker ids are unique per tenant)';

-- =======================================================================================
-- == 10. TENANCY ==
-- The admin side of multi-tenant mode and row-level security (the checks every call
-- makes are in part 3).
-- =======================================================================================

------------------------------------------------------------------------------------------
-- Multi-tenant mode: the tenant mapping, rate limits, and row-level security
------------------------------------------------------------------------------------------
-- Owners that would let the definer functions and views bypass row-level security
-- (superusers and BYPASSRLS roles always do, FORCE or not); NULL when there are none.
CREATE FUNCTION jobqueue._rls_bypassing_owners() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
    SELECT string_agg(DISTINCT r.rolname, ', ' ORDER BY r.rolname)
    FROM (SELECT c.relowner AS owner FROM pg_class c
          WHERE c.relnamespace = 'jobqueue'::regnamespace AND c.relkind IN ('r', 'p', 'v')
            AND c.relname <> 'alembic_version'
          UNION
          SELECT p.proowner FROM pg_proc p WHERE p.pronamespace = 'jobqueue'::regnamespace AND p.prosecdef) AS o
    JOIN pg_roles r ON r.oid = o.owner
    WHERE r.rolsuper OR r.rolbypassrls
$$;

-- Raise unless a tenant id is valid; returns it.
CREATE FUNCTION jobqueue._check_tenant_id(tenant_id text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    IF tenant_id IS NULL OR tenant_id = '' THEN
        PERFORM jobqueue._raise('tenant_id', 'must be a non-empty string');
    ELSIF length(tenant_id) > 255 THEN
        PERFORM jobqueue._raise('tenant_id', 'longer than 255 characters');
    ELSIF tenant_id ~ '[[:cntrl:]]' THEN
        PERFORM jobqueue._raise('tenant_id', 'must not contain control characters');
    END IF;
    RETURN tenant_id;
END
$$;

CREATE FUNCTION jobqueue.set_tenant_role(role_name text, tenant_id text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    r record;
    bypass text;
BEGIN
    PERFORM jobqueue._require_unmapped('set_tenant_role');
    IF role_name IS NULL OR role_name = '' THEN
        PERFORM jobqueue._raise('role_name', 'must be a non-empty string');
    ELSIF length(role_name) > 63 THEN
        PERFORM jobqueue._raise('role_name', 'longer than 63 characters');
    END IF;
    PERFORM jobqueue._check_tenant_id(set_tenant_role.tenant_id);
    SELECT x.rolsuper OR x.rolbypassrls AS bypasses INTO r FROM pg_roles x WHERE x.rolname = set_tenant_role.role_name;
    IF NOT FOUND THEN
        PERFORM jobqueue._raise('role_name', format('no role %s in this cluster', quote_ident(set_tenant_role.role_name)));
    ELSIF r.bypasses THEN
        PERFORM jobqueue._raise('role_name', format('%s is a superuser or has BYPASSRLS: row-level security never '
                                                    'applies to it, so it cannot be confined to a tenant',
                                                    quote_ident(set_tenant_role.role_name)));
    END IF;
    bypass := jobqueue._rls_bypassing_owners();
    IF bypass IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('set_tenant_role: multi-tenant mode needs the jobqueue schema owned by a role without '
                             'SUPERUSER or BYPASSRLS, but %s owns jobqueue objects (row-level security would '
                             'never apply); install it as such a role (docs/sql-api.md "Multi-tenant mode")', bypass);
    END IF;
    INSERT INTO jobqueue.tenant_role AS t (role_name, tenant_id)
    VALUES (set_tenant_role.role_name, set_tenant_role.tenant_id)
    ON CONFLICT (role_name) DO UPDATE
    SET tenant_id = EXCLUDED.tenant_id, created_at = now(), created_by = session_user;
END
$$;
COMMENT ON FUNCTION jobqueue.set_tenant_role(text, text) IS
    'Confine a login role to a tenant (its jobs get that tenant_id; it sees only that tenant''s jobs)';

CREATE FUNCTION jobqueue.unset_tenant_role(role_name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    PERFORM jobqueue._require_unmapped('unset_tenant_role');
    IF role_name IS NULL OR role_name = '' THEN
        PERFORM jobqueue._raise('role_name', 'must be a non-empty string');
    END IF;
    DELETE FROM jobqueue.tenant_role t WHERE t.role_name = unset_tenant_role.role_name;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION jobqueue.unset_tenant_role(text) IS
    'Remove a login role''s tenant mapping (it becomes unrestricted); false when it had none';

CREATE FUNCTION jobqueue.set_tenant_rate_limit(tenant_id text, rate double precision, burst integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    b integer;
BEGIN
    PERFORM jobqueue._require_unmapped('set_tenant_rate_limit');
    PERFORM jobqueue._check_tenant_id(set_tenant_rate_limit.tenant_id);
    IF rate IS NULL OR rate = 'NaN' OR rate <= 0 OR rate > 1000000 THEN
        PERFORM jobqueue._raise('rate', 'must be a number of jobs per second more than 0 and at most 1000000');
    END IF;
    IF burst IS NOT NULL AND burst NOT BETWEEN 1 AND 100000000 THEN
        PERFORM jobqueue._raise('burst', 'must be an integer between 1 and 100000000 (or NULL: one second''s worth)');
    END IF;
    b := coalesce(burst, greatest(ceil(rate), 1)::integer);
    INSERT INTO jobqueue.tenant_limit AS l (tenant_id, rate, burst, tokens)
    VALUES (set_tenant_rate_limit.tenant_id, rate, b, b)
    ON CONFLICT (tenant_id) DO UPDATE
    SET rate = EXCLUDED.rate, burst = EXCLUDED.burst, tokens = least(l.tokens, EXCLUDED.burst), updated_at = now();
END
$$;
COMMENT ON FUNCTION jobqueue.set_tenant_rate_limit(text, double precision, integer) IS
    'Limit a tenant''s enqueues to rate jobs/s with bursts of burst jobs (token bucket); over it: SQLSTATE JQ429';

CREATE FUNCTION jobqueue.clear_tenant_rate_limit(tenant_id text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    PERFORM jobqueue._require_unmapped('clear_tenant_rate_limit');
    PERFORM jobqueue._check_tenant_id(clear_tenant_rate_limit.tenant_id);
    DELETE FROM jobqueue.tenant_limit l WHERE l.tenant_id = clear_tenant_rate_limit.tenant_id;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION jobqueue.clear_tenant_rate_limit(text) IS
    'Remove a tenant''s enqueue rate limit; false when it had none';

CREATE VIEW jobqueue.tenant_roles AS
    SELECT t.role_name, t.tenant_id, t.created_at, t.created_by
    FROM jobqueue.tenant_role t
    -- a mapped role sees its own tenant's mappings only
    WHERE t.tenant_id = coalesce((SELECT jobqueue._tenant()),
                                 t.tenant_id);
COMMENT ON VIEW jobqueue.tenant_roles IS 'Login roles confined to a tenant (set_tenant_role)';

CREATE VIEW jobqueue.tenant_rate_limits AS
    SELECT l.tenant_id, l.rate, l.burst,
           least(l.burst, l.tokens + l.rate * greatest(extract(epoch FROM clock_timestamp() - l.refilled_at), 0))
               AS tokens_available,
           l.updated_at
    FROM jobqueue.tenant_limit l
    WHERE l.tenant_id = coalesce((SELECT jobqueue._tenant()),
                                 l.tenant_id);
COMMENT ON VIEW jobqueue.tenant_rate_limits IS 'Enqueue rate limits per tenant and the tokens available now';

------------------------------------------------------------------------------------------
-- API tokens (jobqueue serve: docs/web.md "Authentication")
------------------------------------------------------------------------------------------
-- Create an API token: 256 random bits (gen_random_uuid draws on the server's strong random
-- source), returned once; only its sha256 is stored. role: viewer, producer, operator or
-- admin; tenant_id confines it to one tenant (needs a schema owner that row-level security
-- binds, as set_tenant_role); expires_in: its lifetime (NULL: none); name: a label. Needs
-- jobqueue_admin mapped to no tenant (through the API: an admin token).
CREATE FUNCTION jobqueue.create_token(role text, tenant_id text DEFAULT NULL, expires_in interval DEFAULT NULL,
                                      name text DEFAULT NULL)
RETURNS TABLE (id bigint, token text, expires_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    secret text := 'jq_' || replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
    bypass text;
    made jobqueue.api_token;
BEGIN
    PERFORM jobqueue._require_unmapped('create_token');
    PERFORM jobqueue._require_token_admin('create_token');
    IF create_token.role IS NULL OR create_token.role NOT IN ('viewer', 'producer', 'operator', 'admin') THEN
        PERFORM jobqueue._raise('role', format('must be viewer, producer, operator or admin (got %s)',
                                               coalesce(quote_literal(left(create_token.role, 100)), 'null')));
    END IF;
    IF create_token.tenant_id IS NOT NULL THEN
        PERFORM jobqueue._check_tenant_id(create_token.tenant_id);
        bypass := jobqueue._rls_bypassing_owners();
        IF bypass IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = '55000', COLUMN = 'tenant_id',
                MESSAGE = format('tenant_id: a tenant token needs the jobqueue schema owned by a role without '
                                 'SUPERUSER or BYPASSRLS, but %s owns jobqueue objects (row-level security would '
                                 'never apply); install it as such a role (docs/sql-api.md "Multi-tenant mode")',
                                 bypass);
        END IF;
    END IF;
    IF create_token.expires_in IS NOT NULL AND create_token.expires_in <= interval '0' THEN
        PERFORM jobqueue._raise('expires_in', 'must be more than 0');
    END IF;
    IF create_token.name = '' OR length(create_token.name) > 200 OR create_token.name ~ '[[:cntrl:]]' THEN
        PERFORM jobqueue._raise('name', CASE WHEN length(create_token.name) > 200 THEN 'longer than 200 characters'
                                             ELSE 'must be a non-empty string without control characters' END);
    END IF;
    INSERT INTO jobqueue.api_token AS t (hash, role, tenant_id, name, expires_at)
    VALUES (sha256(convert_to(secret, 'UTF8')), create_token.role, create_token.tenant_id, create_token.name,
            now() + create_token.expires_in)
    RETURNING t.* INTO made;
    RETURN QUERY SELECT made.id, secret, made.expires_at;
END
$$;
COMMENT ON FUNCTION jobqueue.create_token(text, text, interval, text) IS
    'Create an API token for jobqueue serve (returned once; only its sha256 is kept)';

-- Raise 42501 when a web request whose token is not an admin token manages tokens.
CREATE FUNCTION jobqueue._require_token_admin(action text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
BEGIN
    IF session_user = 'jobqueue_web' AND (jobqueue._web_token()).role <> 'admin' THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('%s: API tokens are managed by admin tokens only', action);
    END IF;
END
$$;

-- Revoke a token at once (its next request is refused); false when it was already revoked.
-- Unknown ids raise P0002. Needs jobqueue_admin mapped to no tenant.
CREATE FUNCTION jobqueue.revoke_token(id bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM jobqueue._require_unmapped('revoke_token');
    PERFORM jobqueue._require_token_admin('revoke_token');
    IF revoke_token.id IS NULL THEN
        PERFORM jobqueue._raise('id', 'must not be null');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM jobqueue.api_token t WHERE t.id = revoke_token.id) THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', COLUMN = 'id',
            MESSAGE = format('id: no API token %s', revoke_token.id);
    END IF;
    UPDATE jobqueue.api_token t SET revoked_at = now() WHERE t.id = revoke_token.id AND t.revoked_at IS NULL;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION jobqueue.revoke_token(bigint) IS 'Revoke an API token at once; false when already revoked';

-- Verify an API token (sha256, not revoked, not expired), keep it in the transaction-local
-- setting jobqueue.token for _web_token(), and return its row: what act_as_token and
-- enqueue_as_token do first (granted to jobqueue_web only, as they are). Unknown, expired
-- and revoked tokens raise 28000 with one message (which one is not said), naming field
-- token. last_used_at is written at most once a minute per token (the UPDATE runs only
-- when the row read says it is due).
CREATE FUNCTION jobqueue._verify_token(token text) RETURNS jobqueue.api_token
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    k jobqueue.api_token;
BEGIN
    SELECT t.* INTO k FROM jobqueue.api_token t
    WHERE t.hash = sha256(convert_to(_verify_token.token, 'UTF8'))
      AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now());
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '28000', COLUMN = 'token',
            MESSAGE = 'token: unknown, expired or revoked';
    END IF;
    PERFORM set_config('jobqueue.token', _verify_token.token, true);
    IF k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute' THEN
        UPDATE jobqueue.api_token t SET last_used_at = now()
        WHERE t.id = k.id AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute');
    END IF;
    RETURN k;
END
$$;

-- The web server's first statement of every request (granted to jobqueue_web only):
-- _verify_token, and return what the token may act as.
CREATE FUNCTION jobqueue.act_as_token(token text)
RETURNS TABLE (token_id bigint, role text, tenant_id text, name text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    k jobqueue.api_token := jobqueue._verify_token(act_as_token.token);
BEGIN
    RETURN QUERY SELECT k.id, k.role, k.tenant_id, k.name;
END
$$;
COMMENT ON FUNCTION jobqueue.act_as_token(text) IS
    'jobqueue serve: verify an API token and act as it for the rest of the transaction';

-- jobqueue serve's POST /jobs in one statement: verify the token as act_as_token does
-- (_verify_token), SET LOCAL ROLE to its database role, then enqueue as that role -- what
-- the server otherwise sends as two statements. SECURITY INVOKER, on purpose: a definer function may not SET ROLE, and the
-- enqueue must run as the token's role so that the database checks its grant (a viewer token
-- gets 42501) while _tenant(), _actor() and the row-level security policies see the token
-- (session_user jobqueue_web, current role the token's). Granted to jobqueue_web only, which
-- the token's role is not a member of: once the role is taken, nothing more in the
-- transaction can call it again. A refused token raises 28000 naming token before anything
-- is done; any error rolls back the whole statement (last_used_at included).
CREATE FUNCTION jobqueue.enqueue_as_token(
    token text,
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
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    k jobqueue.api_token := jobqueue._verify_token(token);
BEGIN
    -- SET LOCAL ROLE (the SET clause above restores search_path only, not this)
    PERFORM set_config('role', CASE k.role WHEN 'viewer' THEN 'jobqueue_viewer' WHEN 'producer' THEN 'jobqueue_producer'
                                           WHEN 'operator' THEN 'jobqueue_operator' WHEN 'admin' THEN 'jobqueue_admin' END,
                       true);
    RETURN jobqueue.enqueue(type => type, payload => payload, queue => queue, priority => priority, run_at => run_at,
        delay => delay, max_attempts => max_attempts, retry_policy => retry_policy, unique_key => unique_key,
        expires_at => expires_at, tenant_id => tenant_id, user_id => user_id, tags => tags, metadata => metadata,
        depends_on => depends_on, timeout => timeout, visibility_timeout => visibility_timeout);
END
$$;
COMMENT ON FUNCTION jobqueue.enqueue_as_token(text, text, jsonb, text, anycompatible, timestamptz, interval, integer,
    jsonb, text, timestamptz, text, text, text[], jsonb, bigint[], interval, interval) IS
    'jobqueue serve: act_as_token, SET LOCAL ROLE to the token''s role and enqueue as it, in one statement';

CREATE VIEW jobqueue.api_tokens AS
    SELECT t.id, t.name, t.role, t.tenant_id, t.created_at, t.created_by, t.expires_at, t.last_used_at, t.revoked_at,
           t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now()) AS active
    FROM jobqueue.api_token t
    -- a tenant's caller sees its own tenant's tokens only
    WHERE t.tenant_id IS NOT DISTINCT FROM coalesce((SELECT jobqueue._tenant()), t.tenant_id);
COMMENT ON VIEW jobqueue.api_tokens IS 'API tokens of jobqueue serve (never the token or its hash)';

-- Delete one finished (completed, cancelled) or dead (dead_letter, archived) job; returns the
-- state it had. Its audit events and log lines stay until reconcile prunes them by age. A live job raises 55000 (cancel it first);
-- an id the caller cannot see (another tenant's, or none) raises P0002. jobqueue_admin.
CREATE FUNCTION jobqueue.delete_job(id bigint) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    gone text;
BEGIN
    IF delete_job.id IS NULL THEN
        PERFORM jobqueue._raise('id', 'must not be null');
    END IF;
    SELECT x.state::text INTO gone FROM jobqueue.job x WHERE x.id = delete_job.id;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '55000', COLUMN = 'id',
            MESSAGE = format('id: job %s is %s; only finished or dead jobs are deleted (cancel it first)',
                             delete_job.id, gone);
    END IF;
    DELETE FROM jobqueue.job_history x WHERE x.id = delete_job.id RETURNING x.state::text INTO gone;
    IF NOT FOUND THEN
        DELETE FROM jobqueue.dead_letter x WHERE x.id = delete_job.id RETURNING x.state::text INTO gone;
    END IF;
    IF gone IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', COLUMN = 'id', MESSAGE = format('id: no job %s', delete_job.id);
    END IF;
    RETURN gone;
END
$$;
COMMENT ON FUNCTION jobqueue.delete_job(bigint) IS
    'Delete a finished or dead job (its events and logs age out); returns the state it had';

-- Jobs newest first, as jobqueue.jobs shows them to the caller (a producer its own jobs,
-- row-level security its tenant's), filtered by every argument given (NULL: any) and
-- keyset-paged by before_id: states, queue, type, tenant_id, tag (jobs carrying it),
-- created_by, created_after/created_before and finished_after/finished_before (half-open
-- ranges), lim (1..10001) rows. The statement is a constant text run by EXECUTE so that it
-- is planned for each call's values: a given queue becomes an ordered (queue, id) index
-- scan per table, the filters left NULL fold away, and 50 jobs out of a million read about
-- 50 rows (the view's owner check, two sub-selects, would make the planner guess badly).
CREATE FUNCTION jobqueue.list_jobs(states text[] DEFAULT NULL, queue text DEFAULT NULL, type text DEFAULT NULL,
                                   tenant_id text DEFAULT NULL, tag text DEFAULT NULL, created_by text DEFAULT NULL,
                                   created_after timestamptz DEFAULT NULL, created_before timestamptz DEFAULT NULL,
                                   finished_after timestamptz DEFAULT NULL, finished_before timestamptz DEFAULT NULL,
                                   before_id bigint DEFAULT NULL, lim integer DEFAULT 50)
RETURNS SETOF jobqueue.jobs
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$
DECLARE
    wanted jobqueue.job_state[];
BEGIN
    IF lim IS NULL OR lim < 1 OR lim > 10001 THEN
        PERFORM jobqueue._raise('limit', 'must be between 1 and 10001');
    END IF;
    BEGIN
        -- compared as the enum, so that the planner uses the column's statistics
        wanted := states::jobqueue.job_state[];
    EXCEPTION WHEN invalid_text_representation THEN
        PERFORM jobqueue._raise('states', format('unknown state in %s (known: %s)', states,
                                                 enum_range(NULL::jobqueue.job_state)));
    END;
    RETURN QUERY EXECUTE $q$
        SELECT x.id, x.queue, x.type, x.state, x.priority, x.base_priority, x.payload, x.run_at, x.attempt,
               x.max_attempts, x.retry_policy, x.unique_key, x.expires_at, x.tenant_id, x.user_id, x.tags,
               x.metadata, x.depends_on, x.waiting_on, x.timeout, x.visibility_timeout, x.token, x.worker_id,
               x.claimed_at, x.lease_expires_at, x.cancel_requested, x.progress, x.errors,
               x.errors->-1->>'message' AS last_error, x.created_at, x.created_by, x.finished_at, x.output, x.reason,
               x.archived_at
        FROM (
            SELECT * FROM jobqueue.job
            UNION ALL SELECT * FROM jobqueue.job_history
            UNION ALL SELECT * FROM jobqueue.dead_letter
        ) AS x
        WHERE ($1 OR x.created_by = $2)
          AND ($3::jobqueue.job_state[] IS NULL OR x.state = ANY($3))
          AND ($4::text IS NULL OR x.queue = $4)
          AND ($5::text IS NULL OR x.type = $5)
          AND ($6::text IS NULL OR x.tenant_id = $6)
          AND ($7::text IS NULL OR x.tags @> ARRAY[$7::text])
          AND ($8::text IS NULL OR x.created_by = $8)
          AND ($9::timestamptz IS NULL OR x.created_at >= $9)
          AND ($10::timestamptz IS NULL OR x.created_at < $10)
          AND ($11::timestamptz IS NULL OR x.finished_at >= $11)
          AND ($12::timestamptz IS NULL OR x.finished_at < $12)
          AND ($13::bigint IS NULL OR x.id < $13)
        ORDER BY x.id DESC
        LIMIT $14
    $q$ USING jobqueue._sees_all_jobs(), jobqueue._actor(), wanted, queue, type, tenant_id, tag, created_by,
              created_after, created_before, finished_after, finished_before, before_id, lim;
END
$$;
COMMENT ON FUNCTION jobqueue.list_jobs(text[], text, text, text, text, text, timestamptz, timestamptz, timestamptz,
                                       timestamptz, bigint, integer) IS
    'Jobs newest first as jobqueue.jobs shows them, filtered and keyset-paged (index-backed)';

-- Row-level security. ENABLE + FORCE: without FORCE the tables' owner -- the role every
-- definer function and view runs as -- would bypass every policy. The tenant is looked up
-- from session_user in a scalar sub-select, an InitPlan run once per statement; an unmapped
-- caller (NULL tenant) passes every row. Superusers and BYPASSRLS roles bypass RLS
-- whatever is set here; set_tenant_role refuses to map anyone while such a role owns
-- jobqueue objects.
ALTER TABLE jobqueue.job ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobqueue.job FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON jobqueue.job
    USING (tenant_id IS NOT DISTINCT FROM coalesce(
        (SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END), tenant_id));
-- The parent's policy applies to every partition's rows read or written through it (the
-- only way the API reaches them; no role but the owner has any privilege on a partition).
ALTER TABLE jobqueue.job_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobqueue.job_history FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON jobqueue.job_history
    USING (tenant_id IS NOT DISTINCT FROM coalesce(
        (SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END), tenant_id));
ALTER TABLE jobqueue.dead_letter ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobqueue.dead_letter FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON jobqueue.dead_letter
    USING (tenant_id IS NOT DISTINCT FROM coalesce(
        (SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END), tenant_id));
-- Audit rows and log lines belong to their job's tenant: a mapped caller reads (and
-- reconcile prunes) those of the jobs it can see. They are written only by the definer
-- functions, right after a transition the job's own policy already allowed, so INSERT is
-- not re-checked (within one statement the new job row is not yet visible to a check).
ALTER TABLE jobqueue.job_event ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobqueue.job_event FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON jobqueue.job_event FOR SELECT
    USING ((SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END) IS NULL
           OR job_event.job_id IS NULL
           OR EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.id = job_event.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.job_history h WHERE h.id = job_event.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.dead_letter d WHERE d.id = job_event.job_id));
CREATE POLICY tenant_prune ON jobqueue.job_event FOR DELETE
    USING ((SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END) IS NULL
           OR EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.id = job_event.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.job_history h WHERE h.id = job_event.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.dead_letter d WHERE d.id = job_event.job_id));
CREATE POLICY append ON jobqueue.job_event FOR INSERT WITH CHECK (true);
ALTER TABLE jobqueue.job_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobqueue.job_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON jobqueue.job_log FOR SELECT
    USING ((SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END) IS NULL
           OR EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.id = job_log.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.job_history h WHERE h.id = job_log.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.dead_letter d WHERE d.id = job_log.job_id));
CREATE POLICY tenant_prune ON jobqueue.job_log FOR DELETE
    USING ((SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END) IS NULL
           OR EXISTS (SELECT 1 FROM jobqueue.job j WHERE j.id = job_log.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.job_history h WHERE h.id = job_log.job_id)
           OR EXISTS (SELECT 1 FROM jobqueue.dead_letter d WHERE d.id = job_log.job_id));
CREATE POLICY append ON jobqueue.job_log FOR INSERT WITH CHECK (true);
-- Worker registrations: a mapped caller sees (and may heartbeat or unregister) only the
-- workers registered for its own tenant (the tenant stamped at registration).
ALTER TABLE jobqueue.worker ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobqueue.worker FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON jobqueue.worker
    USING (tenant_id IS NOT DISTINCT FROM coalesce(
        (SELECT CASE WHEN session_user = 'jobqueue_web' THEN (jobqueue._web_token()).tenant_id
                     ELSE (SELECT t.tenant_id FROM jobqueue.tenant_role t WHERE t.role_name = session_user) END), tenant_id));

-- =======================================================================================
-- == 11. GRANTS ==
-- The first history partitions (they need the functions above), then privileges per role.
-- =======================================================================================

------------------------------------------------------------------------------------------
-- The first history partitions (reconcile keeps creating them ahead)
------------------------------------------------------------------------------------------
DO $$ BEGIN PERFORM jobqueue._maintain_partitions(false); END $$;

------------------------------------------------------------------------------------------
-- Privileges
------------------------------------------------------------------------------------------
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA jobqueue FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA jobqueue FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA jobqueue FROM PUBLIC;
GRANT USAGE ON SCHEMA jobqueue TO jobqueue_producer, jobqueue_worker, jobqueue_admin;

GRANT EXECUTE ON FUNCTION jobqueue.schema_version() TO jobqueue_producer, jobqueue_worker, jobqueue_admin;

GRANT EXECUTE ON FUNCTION
    jobqueue.enqueue(text, jsonb, text, anycompatible, timestamptz, interval, integer, jsonb, text, timestamptz,
                     text, text, text[], jsonb, bigint[], interval, interval),
    jobqueue.enqueue_many(jsonb),
    jobqueue.enqueue_batch(text[], jsonb[], text[], integer[], integer[]),
    jobqueue.priority(text),
    jobqueue.cancel(bigint, text)
TO jobqueue_producer;

GRANT EXECUTE ON FUNCTION
    jobqueue.claim(text[], text, integer, interval, text[]),
    jobqueue.heartbeat(bigint, bigint, interval),
    jobqueue.complete(bigint, bigint, jsonb),
    jobqueue.complete_many(bigint[], bigint[], jsonb[]),
    jobqueue.fail(bigint, bigint, text, text, interval, text),
    jobqueue.snooze(bigint, bigint, interval),
    jobqueue.release(bigint, bigint),
    jobqueue.add_log(bigint, bigint, text),
    jobqueue.set_progress(bigint, bigint, numeric),
    jobqueue.register_worker(text, text, integer, text[], integer, jsonb),
    jobqueue.worker_heartbeat(text, bigint),
    jobqueue.unregister_worker(text),
    jobqueue.reconcile(integer, boolean),
    jobqueue.retry_delay(jsonb, integer, text, double precision),
    jobqueue.next_due(text[])
TO jobqueue_worker;

GRANT EXECUTE ON FUNCTION jobqueue.job_logs(bigint) TO jobqueue_producer, jobqueue_worker, jobqueue_admin;
GRANT EXECUTE ON FUNCTION jobqueue.job_events(bigint, timestamptz, integer, bigint, boolean),
    jobqueue.event_counts(interval, interval)
TO jobqueue_producer, jobqueue_worker, jobqueue_admin, jobqueue_viewer;

GRANT EXECUTE ON FUNCTION
    jobqueue.retry(bigint),
    jobqueue.redrive(jsonb, integer, boolean),
    jobqueue.archive_dead_letters(integer),
    jobqueue.purge_dead_letters(jsonb, integer),
    jobqueue.pause_queue(text),
    jobqueue.resume_queue(text),
    jobqueue.configure_queue(text, jsonb),
    jobqueue.set_retry_policy(text, jsonb),
    jobqueue.queue_stats(),
    jobqueue.metrics(interval),
    jobqueue.health(interval, bigint, interval, interval, double precision, interval, bigint, bigint),
    jobqueue.counters(),
    jobqueue.histogram_buckets()
TO jobqueue_admin;

GRANT SELECT ON jobqueue.jobs, jobqueue.queues TO jobqueue_producer, jobqueue_worker, jobqueue_admin;
GRANT SELECT ON jobqueue.workers TO jobqueue_worker, jobqueue_admin;
GRANT SELECT ON jobqueue.dead_letters TO jobqueue_admin;

GRANT EXECUTE ON FUNCTION
    jobqueue.set_tenant_role(text, text),
    jobqueue.unset_tenant_role(text),
    jobqueue.set_tenant_rate_limit(text, double precision, integer),
    jobqueue.clear_tenant_rate_limit(text)
TO jobqueue_admin;
GRANT SELECT ON jobqueue.tenant_roles, jobqueue.tenant_rate_limits TO jobqueue_admin;

GRANT EXECUTE ON FUNCTION jobqueue.cron_next(text, timestamptz, text, integer)
TO jobqueue_producer, jobqueue_worker, jobqueue_admin;
GRANT EXECUTE ON FUNCTION
    jobqueue.set_schedule(text, text, jsonb, text, text, integer, boolean, text),
    jobqueue.pause_schedule(text),
    jobqueue.resume_schedule(text),
    jobqueue.remove_schedule(text),
    jobqueue.schedule_next(text, integer)
TO jobqueue_admin;
GRANT EXECUTE ON FUNCTION jobqueue.list_schedules() TO jobqueue_worker, jobqueue_admin;
GRANT EXECUTE ON FUNCTION jobqueue.sync_schedules(text, jsonb) TO jobqueue_worker;
GRANT SELECT ON jobqueue.schedules TO jobqueue_worker, jobqueue_admin;

GRANT EXECUTE ON FUNCTION
    jobqueue.check_alerts(boolean),
    jobqueue.list_alerts(text, integer),
    jobqueue.get_alert(bigint),
    jobqueue.ack_alert(bigint, text),
    jobqueue.resolve_alert(bigint, text),
    jobqueue.set_alert_rule(text, jsonb, text, text),
    jobqueue.remove_alert_rule(text, text, text),
    jobqueue.list_alert_rules(),
    jobqueue.add_alert_channel(text, text, jsonb, jsonb),
    jobqueue.set_alert_route(text, jsonb),
    jobqueue.remove_alert_channel(text),
    jobqueue.list_alert_channels(),
    jobqueue.test_alert_channel(text)
TO jobqueue_admin;
GRANT SELECT ON jobqueue.alerts, jobqueue.alert_rules, jobqueue.alert_channels TO jobqueue_admin;
GRANT USAGE ON SCHEMA jobqueue TO jobqueue_viewer, jobqueue_web;
GRANT EXECUTE ON FUNCTION jobqueue.schema_version() TO jobqueue_viewer, jobqueue_web;
GRANT EXECUTE ON FUNCTION jobqueue.act_as_token(text), jobqueue._verify_token(text) TO jobqueue_web;
GRANT EXECUTE ON FUNCTION jobqueue.enqueue_as_token(text, text, jsonb, text, anycompatible, timestamptz, interval,
    integer, jsonb, text, timestamptz, text, text, text[], jsonb, bigint[], interval, interval) TO jobqueue_web;
GRANT EXECUTE ON FUNCTION jobqueue._web_token(), jobqueue._actor(), jobqueue._tenant(), jobqueue._sees_all_jobs()
TO jobqueue_producer, jobqueue_worker, jobqueue_admin, jobqueue_viewer;
GRANT EXECUTE ON FUNCTION
    jobqueue.job_logs(bigint),
    jobqueue.queue_stats(),
    jobqueue.metrics(interval),
    jobqueue.list_schedules(),
    jobqueue.cron_next(text, timestamptz, text, integer)
TO jobqueue_viewer;
GRANT SELECT ON jobqueue.jobs, jobqueue.queues, jobqueue.workers, jobqueue.dead_letters, jobqueue.schedules
TO jobqueue_viewer;
GRANT EXECUTE ON FUNCTION
    jobqueue.create_token(text, text, interval, text),
    jobqueue.revoke_token(bigint),
    jobqueue.delete_job(bigint)
TO jobqueue_admin;
GRANT SELECT ON jobqueue.api_tokens TO jobqueue_admin;
GRANT EXECUTE ON FUNCTION
    jobqueue.list_jobs(text[], text, text, text, text, text, timestamptz, timestamptz, timestamptz, timestamptz,
                       bigint, integer)
TO jobqueue_producer, jobqueue_worker, jobqueue_admin, jobqueue_viewer;
GRANT EXECUTE ON FUNCTION jobqueue.list_alerts(text, integer), jobqueue.get_alert(bigint) TO jobqueue_viewer;
GRANT SELECT ON jobqueue.alerts TO jobqueue_viewer;
-- An operator token (jobqueue serve) acts as jobqueue_operator: a viewer's reads, a
-- producer's enqueue and cancel, and the day-to-day actions below. Not: purging or archiving
-- dead letters, deleting jobs, queue settings, retry policies, tenants, schedules' and
-- alerts' definitions, API tokens -- those stay with jobqueue_admin (an admin token).
GRANT USAGE ON SCHEMA jobqueue TO jobqueue_operator;
GRANT EXECUTE ON FUNCTION
    jobqueue.retry(bigint),
    jobqueue.redrive(jsonb, integer, boolean),
    jobqueue.pause_queue(text),
    jobqueue.resume_queue(text),
    jobqueue.pause_schedule(text),
    jobqueue.resume_schedule(text),
    jobqueue.schedule_next(text, integer),
    jobqueue.ack_alert(bigint, text),
    jobqueue.resolve_alert(bigint, text),
    jobqueue.counters(),
    jobqueue.histogram_buckets()
TO jobqueue_operator;
