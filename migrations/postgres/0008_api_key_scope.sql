-- What a tenant key may do: 'all' of the tenant's API, or only 'publish' events (see host/src/api/auth.rs).
-- Keys made before scopes existed keep their full access.
-- Keep in step with migrations/sqlite/0008_api_key_scope.sql.

ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'all' CHECK (scope IN ('all', 'publish'));
