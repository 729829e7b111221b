-- The networks an API key may be used from (see host/src/api/auth.rs), as a JSON array of CIDR blocks. NULL: from
-- anywhere. Such a key's hash is labelled, so a node of an older version, which would not read this column,
-- finds no key and refuses it rather than accepting it from anywhere.
-- Keep in step with migrations/postgres/0017_key_networks.sql.

ALTER TABLE api_keys ADD COLUMN allowed_networks TEXT;
