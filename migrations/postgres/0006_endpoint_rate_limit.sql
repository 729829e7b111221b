-- The most requests per second an endpoint is sent, NULL for no limit (see host/src/dispatch/throttle.rs).
-- Keep in step with migrations/sqlite/0006_endpoint_rate_limit.sql.

ALTER TABLE endpoints ADD COLUMN rate_limit BIGINT;
