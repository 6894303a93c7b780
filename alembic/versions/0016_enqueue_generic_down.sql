-- Revision 0016 down: _enqueue back to the session's plan_cache_mode.
ALTER FUNCTION jobqueue._enqueue(jsonb, boolean) RESET plan_cache_mode;
