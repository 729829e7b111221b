-- An event type's JSON Schema, as the JSON text the tenant registered, and the SHA-256 of that text (hex); NULL
-- when the type has none. Publishing an event of the type checks its `data` against it (see
-- host/src/event_schemas.rs): nodes read the digests of a tenant's schemas about once a second, and a schema's text
-- only when its digest is new to them. A node of an older version ignores the columns: it neither checks nor clears
-- them.
-- Keep in step with migrations/sqlite/0019_event_type_schemas.sql.

ALTER TABLE event_types ADD COLUMN json_schema TEXT;
ALTER TABLE event_types ADD COLUMN json_schema_sha256 TEXT;
-- A publishing tenant's schemas are read about once a second per node; most of its types have none (publishing
-- registers every type it meets).
CREATE INDEX event_types_with_schema ON event_types (tenant_id, name) WHERE json_schema IS NOT NULL;
