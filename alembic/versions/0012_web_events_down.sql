-- Down from revision 0012: drop the audit-trail readers.
DROP FUNCTION jobqueue.job_events(bigint, timestamptz, integer, bigint);
DROP FUNCTION jobqueue.event_counts(interval, interval);
