-- What each tenant published of each event type by the hour: the events stored and the deliveries they were routed
-- to. Counted in memory as publishes commit and added here every few seconds, like endpoint_hours, so a publish
-- pays a map update for it, not a row. What "which events do we send most" is answered from.
-- Keep in step with migrations/postgres/0012_event_type_hours.sql.

CREATE TABLE event_type_hours (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    event_type  TEXT NOT NULL,
    -- The start of the hour the events were received in, in milliseconds since the epoch (UTC).
    hour_start  BIGINT NOT NULL,
    events      BIGINT NOT NULL DEFAULT 0,
    deliveries  BIGINT NOT NULL DEFAULT 0,
    -- A tenant's span of hours is one range of the key, whatever its types.
    PRIMARY KEY (tenant_id, hour_start, event_type)
) WITHOUT ROWID; -- The rows live in the key's order: a span is read in one pass, not a lookup per row.
-- Old hours are removed by their age alone.
CREATE INDEX event_type_hours_age ON event_type_hours (hour_start);
