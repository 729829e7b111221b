-- Core schema for the embedded SQLite database. Times are Unix milliseconds; JSON is stored as text.
-- Keep in step with migrations/postgres/0001_core.sql: the same columns, names and meanings.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    name       TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);

CREATE TABLE endpoints (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id),
    url               TEXT NOT NULL,
    description       TEXT NOT NULL,
    status            TEXT NOT NULL,
    status_reason     TEXT,
    timeout_ms        BIGINT NOT NULL,
    headers           TEXT NOT NULL,   -- JSON object
    retry_schedule_ms TEXT,            -- JSON array of delays, NULL = default schedule
    max_attempts      BIGINT,
    signature_scheme  TEXT NOT NULL,
    metadata          TEXT NOT NULL,   -- JSON object
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX endpoints_tenant ON endpoints (tenant_id, id);

CREATE TABLE subscriptions (
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    tenant_id   TEXT NOT NULL,
    position    BIGINT NOT NULL,
    event_type  TEXT NOT NULL,
    filter      TEXT,
    PRIMARY KEY (endpoint_id, position)
);

CREATE TABLE endpoint_secrets (
    id          TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    tenant_id   TEXT NOT NULL,
    version     BIGINT NOT NULL,
    status      TEXT NOT NULL,
    ciphertext  BLOB NOT NULL,
    hint        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    UNIQUE (endpoint_id, version)
);

CREATE TABLE event_types (
    tenant_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE events (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    data            TEXT NOT NULL,
    idempotency_key TEXT,
    received_at     BIGINT NOT NULL,
    deliveries      BIGINT NOT NULL
);
CREATE INDEX events_tenant ON events (tenant_id, id);
CREATE UNIQUE INDEX events_idempotency ON events (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    event_id         TEXT NOT NULL REFERENCES events(id),
    endpoint_id      TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL,
    schedule_offset  BIGINT NOT NULL,
    next_attempt_at  BIGINT,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    last_status_code BIGINT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX deliveries_tenant ON deliveries (tenant_id, id);
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, status);
CREATE INDEX deliveries_event ON deliveries (event_id);
-- Listings by status (the dead-letter queue) and requeues: a tenant's deliveries in one status, newest first.
CREATE INDEX deliveries_tenant_status ON deliveries (tenant_id, status, id);
-- The dispatcher's claim query: waiting deliveries by due time, and leases by expiry.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status IN ('pending', 'failed');
CREATE INDEX deliveries_leased ON deliveries (lease_expires_at) WHERE status = 'delivering';

CREATE TABLE attempts (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    delivery_id    TEXT NOT NULL REFERENCES deliveries(id),
    attempt_number BIGINT NOT NULL,
    started_at     BIGINT NOT NULL,
    duration_ms    BIGINT NOT NULL,
    status_code    BIGINT,
    response_body  TEXT,
    error          TEXT,
    outcome        TEXT NOT NULL
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, attempt_number);

CREATE TABLE audit_log (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    details       TEXT NOT NULL,
    at            BIGINT NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are immutable'); END;
CREATE TRIGGER attempts_no_update BEFORE UPDATE ON attempts
BEGIN SELECT RAISE(ABORT, 'attempts are immutable'); END;
