-- Deliveries in flight leave the status index too. A delivery handed to the dispatcher when it is published is
-- stored `delivering` and becomes `succeeded` on its first attempt, nearly always: with `delivering` in this
-- index it went in and out again, two B-tree writes (and the pages they dirty) of the dozen or so a delivery
-- costs. `deliveries_leased` already holds exactly the deliveries in flight, and they are few (each node leases
-- about twice its dispatch concurrency at most), so queries on them go through it instead; see IN_FLIGHT and
-- STATUS_INDEXED in host/src/store/sql/deliveries.rs.
-- Keep in step with migrations/sqlite/0005_in_flight_out_of_status_index.sql.

DROP INDEX deliveries_tenant_status;
CREATE INDEX deliveries_tenant_status ON deliveries (tenant_id, status, id) WHERE status NOT IN ('succeeded', 'delivering');
