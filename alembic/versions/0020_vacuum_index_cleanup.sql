-- Revision 0020: autovacuum of jobqueue.job follows its churn, not its size, and always
-- removes the dead entries of its indexes (issue 13).
-- A claim leaves the version it claimed dead, its entry at the head of job_claim_idx where
-- every later claim starts its scan, until a vacuum removes it. Two settings let that dead
-- head grow with the backlog:
-- * autovacuum_vacuum_scale_factor 0.02 waited for 2 % of the table's rows to be dead: at
--   10 million waiting jobs 200,000, two or more autovacuum visits of 10 s under load, and
--   the claims read twice as many index blocks per job before each vacuum (11 -> 26).
--   Now a fixed 20,000 dead rows, whatever the table's size: under load every visit
--   vacuums, so the dead head is what 10 s of claims leave.
-- * vacuum_index_cleanup auto (PostgreSQL's default) skips the index pass while the dead
--   rows sit on under 2 % of the table's pages, a share that also grows with the backlog:
--   at 4.5 million waiting one vacuum left 106,857 dead entries in place for the claims to
--   step over. Now on: each vacuum that finds dead rows clears them from every index.
-- The price: every such vacuum reads the indexes in full, ~0.35 s of a core at 10 million
-- waiting jobs (docs/performance.md, "The vacuum that skipped the claim index").
ALTER TABLE jobqueue.job SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000,
                              vacuum_index_cleanup = on);
