-- Revision 0016: _enqueue (enqueue_many's core) runs its statements with generic plans.
-- With plan_cache_mode = auto, the statements whose arrays are parameters (the queue-cap
-- check over the inserted queues, the id allotment over generate_series(1, n)) were given a
-- custom plan at every call: planning cost more than running them (pg_stat_statements with
-- track_planning: plans = calls, 0.095 ms of planning per call for the cap check alone).
ALTER FUNCTION jobqueue._enqueue(jsonb, boolean) SET plan_cache_mode = force_generic_plan;
