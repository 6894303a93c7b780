-- Downgrade of 0001: removes every jobqueue object (jobs included). The cluster-wide roles
-- jobqueue_producer/worker/admin stay: other databases on the same server may use them.
-- Alembic keeps its version table in this schema and deletes the '0001' row after this
-- script, so the table is put back as alembic created it.
DROP SCHEMA IF EXISTS jobqueue CASCADE;
CREATE SCHEMA jobqueue;
CREATE TABLE jobqueue.alembic_version (
    version_num varchar(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO jobqueue.alembic_version (version_num) VALUES ('0001');
