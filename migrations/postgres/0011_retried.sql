-- Finished deliveries that needed more than one attempt, beside the counts of finished ones: the retry rate an
-- endpoint's owner watches before deliveries start to die. `counted_finishes` counts the finished deliveries
-- whose attempt number was looked at: those of hours counted before this migration were not, and must not pull
-- the rate down.
-- Keep in step with migrations/sqlite/0011_retried.sql.

ALTER TABLE endpoint_hours ADD COLUMN retried BIGINT NOT NULL DEFAULT 0;
ALTER TABLE endpoint_hours ADD COLUMN counted_finishes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenant_hours ADD COLUMN retried BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenant_hours ADD COLUMN counted_finishes BIGINT NOT NULL DEFAULT 0;
