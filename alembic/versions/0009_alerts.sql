-- Revision 0009: alerts (frozen; sql/schema.sql is the current truth).
--   * jobqueue.alert_rule (built-in default rules, on out of the box), alert_incident,
--     alert_channel (with its route), alert_notice, alert_tally, alert_state; settings
--     alert_tally_lag_s, alert_retention_s;
--   * detection (jobqueue._detect_alerts) as reconcile's last step, also check_alerts();
--     notifications enqueued as jobs (queue jobqueue.alerts, type jobqueue.notify);
--   * the alerts, alert_rules, alert_channels views; list_alerts, get_alert, ack_alert,
--     resolve_alert, set_alert_rule, remove_alert_rule, list_alert_rules, add_alert_channel,
--     set_alert_route, remove_alert_channel, list_alert_channels, test_alert_channel;
--   * schema_version() 5.
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
    SELECT jsonb_agg(jsonb_build_object(
               'queue', 'jobqueue.alerts', 'type', 'jobqueue.notify',
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
                           ORDER BY j.run_at LIMIT 1) AS m), 0) END AS value) AS v
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
CREATE FUNCTION jobqueue._detect_alerts(dry_run boolean) RETURNS jsonb
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

------------------------------------------------------------------------------------------
-- Alerts: the operator's functions and views
------------------------------------------------------------------------------------------
-- Incidents. A mapped (tenant) role sees none: detection aggregates every tenant's jobs.
CREATE VIEW jobqueue.alerts AS
    SELECT i.id, i.rule, i.kind, i.severity, i.state, i.queue, i.type, i.subject, i.dedupe_key, i.value, i.threshold,
           i.first_seen, i.last_seen, i.count, i.acknowledged_by, i.acknowledged_at, i.resolved_at, i.resolved_by,
           i.clear_since, i.summary
    FROM jobqueue.alert_incident i
    WHERE NOT EXISTS (SELECT 1 FROM jobqueue.tenant_role m WHERE m.role_name = session_user);
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
        'queue', 'jobqueue.alerts', 'type', 'jobqueue.notify',
        'payload', jobqueue._alert_payload('trigger', c, i) || '{"test": true}',
        'metadata', jsonb_build_object('alert_id', 0, 'channel', c.name, 'event', 'test'))), false) AS e(id));
END
$$;
COMMENT ON FUNCTION jobqueue.test_alert_channel(text) IS
    'Enqueue a test notification (event trigger, rule/kind test, severity info, "test": true) to one channel, '
    'whatever its route; returns the job id';

CREATE OR REPLACE FUNCTION jobqueue.reconcile(batch integer DEFAULT 1000, dry_run boolean DEFAULT false) RETURNS jsonb
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
            RETURNING j.id, j.token, j.queue, j.attempt, j.run_at
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
        || jobqueue._detect_alerts(dry);
END
$$;
COMMENT ON FUNCTION jobqueue.reconcile(integer, boolean) IS
    'Maintenance (expire leases, expire TTL''d jobs, archive, prune, age priorities, partitions, fire schedules, '
    'detect alerts); JSON summary';

CREATE OR REPLACE FUNCTION jobqueue.schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT 5 $$;
COMMENT ON FUNCTION jobqueue.schema_version() IS
    'The jobqueue schema version (2: health; 3: output caps, per-tenant worker ids; 4: schedules; 5: alerts); '
    'clients check it at startup';

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA jobqueue FROM PUBLIC;

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
