-- temporary bootstrap (replaced by the copy of sql/schema.sql)
CREATE SCHEMA IF NOT EXISTS jobqueue;
CREATE FUNCTION jobqueue.schema_version() RETURNS integer LANGUAGE sql IMMUTABLE AS $$ SELECT 1 $$;
