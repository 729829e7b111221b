-- Each endpoint's attempts and finished deliveries by the hour, for the success rate over the last day. Counted in
-- memory as attempt records commit and added here every few seconds, so publishing and recording pay nothing for it.
-- No foreign key to endpoints: a deleted endpoint's hours still count in its tenant's totals until they age out.
-- Keep in step with migrations/postgres/0009_endpoint_hours.sql.

CREATE TABLE endpoint_hours (
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    endpoint_id     TEXT NOT NULL,
    -- The start of the hour, in milliseconds since the epoch (UTC).
    hour_start      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    -- Deliveries an attempt finished: delivered, or dead after their last attempt.
    succeeded       BIGINT NOT NULL DEFAULT 0,
    dead            BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, endpoint_id, hour_start)
);
-- Old hours are removed by their age alone.
CREATE INDEX endpoint_hours_age ON endpoint_hours (hour_start);

-- The same counts summed over each tenant's endpoints, written with them: the overview reads a tenant's day from
-- 24 rows, not from 24 for each of its endpoints.
CREATE TABLE tenant_hours (
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    hour_start      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    succeeded       BIGINT NOT NULL DEFAULT 0,
    dead            BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, hour_start)
);
