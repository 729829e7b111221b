-- Whether the `stripe` scheme names each signature's secret version (`kid=`; see host/src/signing.rs), kept out of
-- the `signature_header` JSON: a node of an older version reads that JSON strictly, and a field it does not know
-- would make every claim holding a delivery to the endpoint fail there. Such a node ignores this column and signs
-- without `kid=`.
-- Keep in step with migrations/sqlite/0018_signature_key_id.sql.

ALTER TABLE endpoints ADD COLUMN signature_key_id INTEGER NOT NULL DEFAULT 0;
