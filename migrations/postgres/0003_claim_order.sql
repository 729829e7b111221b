-- Claims take the oldest due deliveries first, ORDER BY next_attempt_at, id. With the id in the index that order
-- is the index's own: a claim reads as many entries as it takes instead of sorting every due delivery (a backlog
-- of them) on each claim. Expired leases likewise, by lease_expires_at, id.
-- Keep in step with migrations/sqlite/0003_claim_order.sql.

DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id) WHERE status IN ('pending', 'failed');
DROP INDEX deliveries_leased;
CREATE INDEX deliveries_leased ON deliveries (lease_expires_at, id) WHERE status = 'delivering';
