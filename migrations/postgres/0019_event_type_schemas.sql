-- An event type's JSON Schema, as the JSON text the tenant registered; NULL when the type has none. Publishing an
-- event of the type checks its `data` against it (see host/src/event_schemas.rs). A node of an older version ignores
-- the column: it neither checks nor clears it.
-- Keep in step with migrations/sqlite/0019_event_type_schemas.sql.

ALTER TABLE event_types ADD COLUMN json_schema TEXT;
-- A publishing tenant's schemas are read about once a second per node; most of its types have none (publishing
-- registers every type it meets).
CREATE INDEX event_types_with_schema ON event_types (tenant_id, name) WHERE json_schema IS NOT NULL;
