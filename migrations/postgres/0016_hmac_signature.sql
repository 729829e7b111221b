-- Where the hmac scheme puts its signature (see host/src/signing.rs): the header's name and the
-- text before the hex digest, as JSON {"name", "prefix"}. NULL: the scheme's default (X-Webhook-Signature, no
-- prefix); unused by the other schemes.
-- Keep in step with migrations/sqlite/0016_hmac_signature.sql.

ALTER TABLE endpoints ADD COLUMN signature_header TEXT;
