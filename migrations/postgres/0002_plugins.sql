-- Plugin bindings on endpoints and what each delivery's plugins decided.
-- Keep in step with migrations/sqlite/0002_plugins.sql.

-- {"filter": {plugin, version?, config}, "transform": …, "retry_policy": …}; '{}' when none is bound.
ALTER TABLE endpoints ADD COLUMN plugins TEXT NOT NULL DEFAULT '{}';

-- Fixed at a delivery's first attempt so every retry sends the same bytes: the plugin versions used
-- ({"filter": {plugin, sha256}, …}), and the transform's output when one is bound (NULL body = the envelope).
ALTER TABLE deliveries ADD COLUMN plugin_versions TEXT;
ALTER TABLE deliveries ADD COLUMN request_body BYTEA;
ALTER TABLE deliveries ADD COLUMN request_meta TEXT;   -- JSON {content_type, headers}
