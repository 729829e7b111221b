-- A tenant's own request rate limit (requests per second on each node), in place of the server's
-- `tenant_rate_limit`: a large tenant can be given more, a noisy one less. NULL: the server's.
-- Keep in step with migrations/postgres/0014_tenant_rate_limit.sql.

ALTER TABLE tenants ADD COLUMN rate_limit BIGINT;
