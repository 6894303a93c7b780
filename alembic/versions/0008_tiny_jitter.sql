-- Revision 0008: retry_delay counts a jitter ratio under 1e-9 as 0, so a policy such as
-- {"jitter": 5e-324} gives a delay instead of a float underflow error (which would make
-- every failure of that job type an error).

CREATE OR REPLACE FUNCTION jobqueue.retry_delay(policy jsonb, attempt integer, error_class text DEFAULT 'transient',
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
