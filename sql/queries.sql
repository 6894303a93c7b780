-- Every statement the Python library runs, each headed "-- name: <name>".
-- They call the public SQL API (schema jobqueue), the same functions other services call.
-- Parameters are psycopg named placeholders; casts pin the types so that one prepared
-- statement serves every call.

-- name: enqueue
SELECT jobqueue.enqueue(
    type => %(type)s::text,
    payload => %(payload)s::jsonb,
    queue => %(queue)s::text,
    priority => %(priority)s,
    run_at => %(run_at)s::timestamptz,
    delay => %(delay)s::interval,
    max_attempts => %(max_attempts)s::int,
    retry_policy => %(retry_policy)s::jsonb,
    unique_key => %(unique_key)s::text,
    expires_at => %(expires_at)s::timestamptz,
    tenant_id => %(tenant_id)s::text,
    user_id => %(user_id)s::text,
    tags => %(tags)s::text[],
    metadata => %(metadata)s::jsonb,
    depends_on => %(depends_on)s::bigint[],
    timeout => %(timeout)s::interval,
    visibility_timeout => %(visibility_timeout)s::interval
) AS id;

-- name: enqueue_many
SELECT id FROM jobqueue.enqueue_many(%(jobs)s::jsonb) AS id;

-- name: claim
SELECT * FROM jobqueue.claim(
    queues => %(queues)s::text[],
    worker_id => %(worker_id)s::text,
    batch => %(batch)s::int,
    visibility_timeout => %(visibility_timeout)s::interval,
    types => %(types)s::text[]
);

-- name: worker_round_ack
-- The worker's round (jobqueue/round.py): sent through libpq, in one pipeline with
-- worker_round_claim, committed together at its Sync; hence the positional parameters
-- ($1 ids, $2 tokens, $3 outputs). The same statements as complete_many and claim.
SELECT id, status FROM jobqueue.complete_many($1::bigint[], $2::bigint[], $3::jsonb[]);

-- name: worker_round_claim
-- $1 queues, $2 worker_id, $3 batch, $4 visibility_timeout, $5 types (see worker_round_ack).
SELECT * FROM jobqueue.claim(
    queues => $1::text[],
    worker_id => $2::text,
    batch => $3::int,
    visibility_timeout => $4::interval,
    types => $5::text[]
);

-- name: heartbeat_many
SELECT u.id, h.status, h.lease_expires_at, h.cancel_requested
FROM unnest(%(ids)s::bigint[], %(tokens)s::bigint[]) AS u(id, token)
CROSS JOIN LATERAL jobqueue.heartbeat(u.id, u.token, %(extend_by)s::interval) AS h;

-- name: complete
SELECT jobqueue.complete(%(id)s::bigint, %(token)s::bigint, %(output)s::jsonb) AS status;

-- name: complete_many
SELECT id, status FROM jobqueue.complete_many(%(ids)s::bigint[], %(tokens)s::bigint[], %(outputs)s::jsonb[]);

-- name: fail
SELECT jobqueue.fail(
    id => %(id)s::bigint,
    token => %(token)s::bigint,
    error => %(error)s::text,
    error_class => %(error_class)s::text,
    retry_in => %(retry_in)s::interval,
    traceback => %(traceback)s::text
) AS status;

-- name: snooze
SELECT jobqueue.snooze(%(id)s::bigint, %(token)s::bigint, %(delay)s::interval) AS status;

-- name: release
SELECT jobqueue.release(%(id)s::bigint, %(token)s::bigint) AS status;

-- name: add_log
SELECT jobqueue.add_log(%(id)s::bigint, %(token)s::bigint, %(message)s::text) AS status;

-- name: set_progress
SELECT jobqueue.set_progress(%(id)s::bigint, %(token)s::bigint, %(percent)s::numeric) AS status;

-- name: next_due
SELECT jobqueue.next_due(%(queues)s::text[]) AS seconds;

-- name: notify_probe
SELECT pg_notify('jobqueue', %(payload)s::text);

-- name: register_worker
SELECT jobqueue.register_worker(
    %(worker_id)s::text, %(host)s::text, %(pid)s::int, %(queues)s::text[], %(concurrency)s::int, %(metadata)s::jsonb
);

-- name: worker_heartbeat
SELECT jobqueue.worker_heartbeat(%(worker_id)s::text, %(jobs_done)s::bigint);

-- name: unregister_worker
SELECT jobqueue.unregister_worker(%(worker_id)s::text);

-- name: reconcile
SELECT jobqueue.reconcile(batch => %(batch)s::int, dry_run => %(dry_run)s::boolean) AS summary;

-- name: get_job
SELECT * FROM jobqueue.jobs WHERE id = %(id)s::bigint;

-- name: list_jobs
-- jobqueue.list_jobs: newest first, keyset-paged by id (before_id); the HTTP API counts a
-- filter by wrapping this statement with a capped limit (JobQueue.count).
SELECT * FROM jobqueue.list_jobs(
    %(states)s::text[], %(queue)s::text, %(type)s::text, %(tenant_id)s::text, %(tag)s::text, %(created_by)s::text,
    %(created_after)s::timestamptz, %(created_before)s::timestamptz,
    %(finished_after)s::timestamptz, %(finished_before)s::timestamptz,
    %(before_id)s::bigint, %(limit)s::int);

-- name: job_logs
SELECT * FROM jobqueue.job_logs(%(id)s::bigint);

-- name: list_dead_letters
SELECT * FROM jobqueue.dead_letters
WHERE (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(type)s::text IS NULL OR type = %(type)s::text)
  AND (%(reason)s::text IS NULL OR reason = %(reason)s::text)
  AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s::int;

-- name: delete_job
SELECT jobqueue.delete_job(%(id)s::bigint) AS state;

-- name: cancel
SELECT jobqueue.cancel(%(id)s::bigint, %(reason)s::text) AS status;

-- name: retry
SELECT jobqueue.retry(%(id)s::bigint) AS id;

-- name: redrive
SELECT id FROM jobqueue.redrive(%(filter)s::jsonb, %(limit)s::int, %(dry_run)s::boolean) AS id;

-- name: archive_dead_letters
SELECT jobqueue.archive_dead_letters(%(max_age_days)s::int) AS archived;

-- name: purge_dead_letters
SELECT jobqueue.purge_dead_letters(%(filter)s::jsonb, %(limit)s::int) AS purged;

-- name: pause_queue
SELECT jobqueue.pause_queue(%(queue)s::text);

-- name: resume_queue
SELECT jobqueue.resume_queue(%(queue)s::text);

-- name: configure_queue
SELECT jobqueue.configure_queue(%(queue)s::text, %(settings)s::jsonb) AS settings;

-- name: set_retry_policy
SELECT jobqueue.set_retry_policy(%(type)s::text, %(policy)s::jsonb);

-- name: list_queues
SELECT * FROM jobqueue.queues ORDER BY name;

-- name: queue_stats
SELECT * FROM jobqueue.queue_stats() ORDER BY queue;

-- name: metrics
SELECT * FROM jobqueue.metrics(%(window)s::interval) ORDER BY queue;

-- name: counters
SELECT * FROM jobqueue.counters();

-- name: histogram_buckets
SELECT jobqueue.histogram_buckets() AS bounds;

-- name: open_alerts
-- Open incidents by rule and severity, or nothing when this schema has no jobqueue.alerts view
-- (the alerting revision): the view is named through to_regclass, so no error either way.
SELECT to_regclass('jobqueue.alerts') IS NOT NULL AS present;

-- name: open_alerts_by_rule
SELECT a.rule::text AS rule, a.severity::text AS severity, count(*) AS n
FROM jobqueue.alerts a WHERE a.state::text <> 'resolved'
GROUP BY 1, 2 ORDER BY 1, 2;

-- name: list_workers
SELECT * FROM jobqueue.workers ORDER BY started_at DESC;

-- name: set_tenant_role
SELECT jobqueue.set_tenant_role(%(role_name)s::text, %(tenant_id)s::text);

-- name: unset_tenant_role
SELECT jobqueue.unset_tenant_role(%(role_name)s::text) AS removed;

-- name: list_tenant_roles
SELECT * FROM jobqueue.tenant_roles ORDER BY tenant_id, role_name;

-- name: set_tenant_rate_limit
SELECT jobqueue.set_tenant_rate_limit(%(tenant_id)s::text, %(rate)s::float8, %(burst)s::int);

-- name: clear_tenant_rate_limit
SELECT jobqueue.clear_tenant_rate_limit(%(tenant_id)s::text) AS removed;

-- name: list_tenant_rate_limits
SELECT * FROM jobqueue.tenant_rate_limits ORDER BY tenant_id;

-- name: health
SELECT * FROM jobqueue.health(
    max_xmin_age => %(max_xmin_age)s::interval,
    max_xmin_xids => %(max_xmin_xids)s::bigint,
    max_reconcile_age => %(max_reconcile_age)s::interval,
    max_lease_overdue => %(max_lease_overdue)s::interval,
    max_notify_queue_usage => %(max_notify_queue_usage)s::float8,
    max_pending_age => %(max_pending_age)s::interval,
    max_dead_letters => %(max_dead_letters)s::bigint,
    max_expired_leases => %(max_expired_leases)s::bigint
);

-- name: unhandled_pending_types
-- Job types runnable now on these queues that neither this worker (types) nor any healthy
-- worker on the queue has a handler for. A worker reports them at WARNING, once per type.
-- Reads at most %(scan)s jobs per queue, in claim order (the claim index), so it stays
-- cheap however long the backlog: jobs nobody claims collect at the front of that order.
SELECT s.type, array_agg(DISTINCT s.queue ORDER BY s.queue) AS queues, count(*) AS pending
FROM unnest(%(queues)s::text[]) AS q(name)
CROSS JOIN LATERAL (
    SELECT j.queue, j.type FROM jobqueue.jobs j
    WHERE j.queue = q.name AND j.state = 'pending' AND j.waiting_on = 0 AND j.run_at <= now()
    ORDER BY j.priority DESC, j.run_at, j.id
    LIMIT %(scan)s
) AS s
WHERE s.type <> ALL(%(types)s::text[])
  AND NOT EXISTS (
      SELECT 1 FROM jobqueue.workers w
      WHERE w.status = 'healthy' AND s.queue = ANY(w.queues) AND w.metadata->'types' ? s.type)
GROUP BY s.type
ORDER BY s.type;

-- name: set_schedule
SELECT jobqueue.set_schedule(
    name => %(name)s::text,
    cron => %(cron)s::text,
    job => %(job)s::jsonb,
    tz => %(tz)s::text,
    missed => %(missed)s::text,
    max_backfill => %(max_backfill)s::int,
    paused => %(paused)s::boolean
) AS schedule;

-- name: pause_schedule
SELECT jobqueue.pause_schedule(%(name)s::text) AS schedule;

-- name: resume_schedule
SELECT jobqueue.resume_schedule(%(name)s::text) AS schedule;

-- name: remove_schedule
SELECT jobqueue.remove_schedule(%(name)s::text) AS removed;

-- name: list_schedules
SELECT * FROM jobqueue.list_schedules();

-- name: schedule_next
SELECT at FROM jobqueue.schedule_next(%(name)s::text, %(n)s::int) AS at;

-- name: cron_next
SELECT at FROM jobqueue.cron_next(%(expr)s::text, %(after)s::timestamptz, %(tz)s::text, %(n)s::int) AS at;

-- name: sync_schedules
SELECT jobqueue.sync_schedules(%(app)s::text, %(schedules)s::jsonb) AS result;

-- name: live_events
-- A live stream's read, in one statement: the snapshot it reports is the one job_events
-- (STABLE) reads with. One row with NULL event columns when there is no event.
SELECT s.snapshot, s.now, e.*
FROM (SELECT pg_current_snapshot()::text AS snapshot, now() AS now) AS s
LEFT JOIN LATERAL jobqueue.job_events(after => %(after)s::bigint, since => %(since)s::timestamptz,
                                      max_rows => %(max_rows)s::int, queue_changes => true) AS e ON true
ORDER BY e.id;

-- name: job_timeline
SELECT * FROM jobqueue.job_events(of_job => %(id)s::bigint, max_rows => 10000);

-- name: event_counts
SELECT * FROM jobqueue.event_counts(%(window)s::interval, %(step)s::interval);

-- name: create_token
SELECT * FROM jobqueue.create_token(%(role)s::text, %(tenant_id)s::text, %(expires_in)s::interval, %(name)s::text);

-- name: list_tokens
SELECT * FROM jobqueue.api_tokens ORDER BY id;

-- name: revoke_token
SELECT jobqueue.revoke_token(%(id)s::bigint) AS revoked;

-- name: act_as_token
-- The web server's first statement per request: verify the token and, in the same round trip,
-- SET LOCAL ROLE (set_config('role', ..., true)) to the database role its role maps to
-- (%(roles)s: jobqueue.web.auth.ROLE_OF_TOKEN, constants, never input).
SELECT t.*, set_config('role', %(roles)s::jsonb->>t.role, true) AS acting_as
FROM jobqueue.act_as_token(%(token)s::text) AS t;

-- name: enqueue_as_token
-- POST /jobs's lean path (jobqueue/web/fastpost.py) in one statement: verify the token, act as
-- its role and enqueue. Sent through libpq directly (WebDatabase.enqueue_as_async), hence the
-- positional parameters, all text: $5 (priority) is JSON (7 or "high"), which enqueue takes as
-- it takes the integer or the name (to_jsonb).
SELECT jobqueue.enqueue_as_token(token => $1::text, type => $2::text, payload => $3::jsonb, queue => $4::text,
    priority => $5::jsonb, max_attempts => $6::int, unique_key => $7::text, tenant_id => $8::text,
    user_id => $9::text) AS id;

-- name: list_alerts
SELECT * FROM jobqueue.list_alerts(%(state)s::text, %(limit)s::int);

-- name: get_alert
SELECT jobqueue.get_alert(%(id)s::bigint) AS alert;

-- name: ack_alert
SELECT jobqueue.ack_alert(%(id)s::bigint, %(by)s::text) AS alert;

-- name: resolve_alert
SELECT jobqueue.resolve_alert(%(id)s::bigint, %(by)s::text) AS alert;

-- name: check_alerts
SELECT jobqueue.check_alerts(%(dry_run)s::boolean) AS summary;

-- name: list_alert_rules
SELECT * FROM jobqueue.list_alert_rules();

-- name: set_alert_rule
SELECT jobqueue.set_alert_rule(%(name)s::text, %(settings)s::jsonb, %(queue)s::text, %(type)s::text) AS rule;

-- name: remove_alert_rule
SELECT jobqueue.remove_alert_rule(%(name)s::text, %(queue)s::text, %(type)s::text) AS removed;

-- name: add_alert_channel
SELECT jobqueue.add_alert_channel(%(name)s::text, %(kind)s::text, %(config)s::jsonb, %(route)s::jsonb) AS channel;

-- name: set_alert_route
SELECT jobqueue.set_alert_route(%(channel)s::text, %(route)s::jsonb) AS channel;

-- name: remove_alert_channel
SELECT jobqueue.remove_alert_channel(%(name)s::text) AS removed;

-- name: list_alert_channels
SELECT * FROM jobqueue.list_alert_channels();

-- name: test_alert_channel
SELECT jobqueue.test_alert_channel(%(name)s::text) AS job_id;

-- name: demo_web_login
-- The demo's dashboard hint: may jobqueue_web (the role `jobqueue serve` logs in as) log in?
SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'jobqueue_web') AS web_exists,
       coalesce((SELECT rolcanlogin FROM pg_roles WHERE rolname = 'jobqueue_web'), false) AS web_can_login,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS is_superuser;

-- name: demo_allow_web_login
ALTER ROLE jobqueue_web LOGIN;
