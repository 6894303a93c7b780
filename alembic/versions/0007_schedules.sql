-- Revision 0007: periodic schedules (frozen; sql/schema.sql is the current truth).
--   * jobqueue.cron_next and the private cron evaluator (cronsim semantics, in SQL);
--   * jobqueue.schedule / schedule_tick, the schedules view, set/pause/resume/remove_schedule,
--     schedule_next, list_schedules, sync_schedules;
--   * reconcile fires due schedules (jobqueue._fire_schedules) exactly once per tick;
--   * schema_version() 5.
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
          coalesce((SELECT m.tenant_id FROM jobqueue.tenant_role m WHERE m.role_name = session_user), s.tenant_id);
COMMENT ON VIEW jobqueue.schedules IS
    'Periodic schedules with their next and last fire time and the last job''s id and state';

CREATE FUNCTION jobqueue.list_schedules() RETURNS SETOF jobqueue.schedules
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT * FROM jobqueue.schedules v ORDER BY v.name, v.tenant_id $$;
COMMENT ON FUNCTION jobqueue.list_schedules() IS 'Every schedule the caller can see (the schedules view), by name';

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
        'aged', aged) || parts || jobqueue._fire_schedules(batch, dry);
END
$$;
COMMENT ON FUNCTION jobqueue.reconcile(integer, boolean) IS
    'Maintenance (expire leases, expire TTL''d jobs, archive, prune, age priorities, partitions, fire schedules); JSON summary';

CREATE OR REPLACE FUNCTION jobqueue.schema_version() RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, jobqueue, pg_temp
AS $$ SELECT 4 $$;
COMMENT ON FUNCTION jobqueue.schema_version() IS
    'The jobqueue schema version (2: health; 3: output caps, per-tenant worker ids; 4: schedules); clients check it at startup';

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA jobqueue FROM PUBLIC;

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
