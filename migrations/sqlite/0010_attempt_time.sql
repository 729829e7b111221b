-- The time each hour's attempts took, summed (milliseconds), beside their counts: the mean attempt time an
-- endpoint's owner watches for a receiver slowing down. `timed_attempts` counts the attempts whose time is in
-- `attempt_ms`: those of hours counted before this migration are not, and must not pull the mean down.
-- Keep in step with migrations/postgres/0010_attempt_time.sql.

ALTER TABLE endpoint_hours ADD COLUMN attempt_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE endpoint_hours ADD COLUMN timed_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenant_hours ADD COLUMN attempt_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenant_hours ADD COLUMN timed_attempts BIGINT NOT NULL DEFAULT 0;
