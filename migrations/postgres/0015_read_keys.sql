-- A third scope for tenant keys: 'read', every GET of the tenant's API and nothing else (see host/src/api/auth.rs).
-- Keep in step with migrations/sqlite/0015_read_keys.sql.

ALTER TABLE api_keys DROP CONSTRAINT api_keys_scope_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scope_check CHECK (scope IN ('all', 'publish', 'read'));
