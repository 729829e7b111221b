-- A third scope for tenant keys: 'read', every GET of the tenant's API and nothing else (see host/src/api/auth.rs).
-- SQLite cannot change a CHECK constraint in place, so the table is rebuilt with the wider one; nothing refers to
-- api_keys, and every key keeps its id, hash, scope and revocation.
-- Keep in step with migrations/postgres/0015_read_keys.sql.

CREATE TABLE api_keys_with_read (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    name       TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    scope      TEXT NOT NULL DEFAULT 'all' CHECK (scope IN ('all', 'publish', 'read'))
);
INSERT INTO api_keys_with_read (id, tenant_id, name, prefix, key_hash, created_at, revoked_at, scope)
    SELECT id, tenant_id, name, prefix, key_hash, created_at, revoked_at, scope FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_with_read RENAME TO api_keys;
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);
