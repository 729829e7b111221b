-- The latest version of each plugin uploaded through the API, so every node installs it (see
-- host/src/plugin/sync.rs). `wasm` is NULL once the plugin was deleted through the API, `sha256` then naming
-- the version deleted.
-- Keep in step with migrations/sqlite/0007_plugin_uploads.sql.

CREATE TABLE plugin_uploads (
    name       TEXT PRIMARY KEY,
    sha256     TEXT NOT NULL,
    wasm       BYTEA,
    changed_at BIGINT NOT NULL
);
