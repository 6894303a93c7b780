-- Revision 0020 undone: autovacuum of jobqueue.job after 500 + 2 % of its rows are dead, and
-- it decides on its own again whether to skip the index pass (vacuum_index_cleanup = auto).
ALTER TABLE jobqueue.job SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 500);
ALTER TABLE jobqueue.job RESET (vacuum_index_cleanup);
