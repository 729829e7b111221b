-- Indexes a delivery's status change does not have to touch. A delivery is inserted once and changes status at
-- least once (delivering → succeeded, usually), and every index holding the status is updated twice for it.
-- By endpoint, deliveries are now listed in id order (what keyset pages want) rather than by status. Succeeded
-- deliveries, the great majority, leave the status index: listing them walks the tenant index, where nearly every
-- row matches; the statuses worth finding (waiting, dead, dropped) stay indexed. Queries on those statuses repeat
-- the index's condition so both databases see that it applies.
-- Keep in step with migrations/sqlite/0004_status_indexes.sql.

DROP INDEX deliveries_endpoint;
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, id);
DROP INDEX deliveries_tenant_status;
CREATE INDEX deliveries_tenant_status ON deliveries (tenant_id, status, id) WHERE status <> 'succeeded';
