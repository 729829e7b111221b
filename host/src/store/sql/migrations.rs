//! The schema migrations, compiled into the binary so a deployment is one file.
//!
//! `sqlx::migrate!` would embed the directories itself but needs sqlx's `macros` feature (a proc-macro stack
//! this crate does not otherwise build), so the files are listed here; the test below fails when a file in
//! `migrations/` is missing from the list. Versions and descriptions follow sqlx's `<VERSION>_<DESCRIPTION>.sql`
//! naming, and checksums are sqlx's own, so `sqlx migrate info` agrees with what this code applied.

use std::borrow::Cow;

use futures_util::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use super::Dialect;
use crate::store::StoreResult;

/// `(version, description, SQL)` in version order.
type EmbeddedMigration = (i64, &'static str, &'static str);

const SQLITE: &[EmbeddedMigration] = &[
    (1, "core", include_str!("../../../../migrations/sqlite/0001_core.sql")),
    (2, "plugins", include_str!("../../../../migrations/sqlite/0002_plugins.sql")),
    (3, "claim order", include_str!("../../../../migrations/sqlite/0003_claim_order.sql")),
    (4, "status indexes", include_str!("../../../../migrations/sqlite/0004_status_indexes.sql")),
    (
        5,
        "in flight out of status index",
        include_str!("../../../../migrations/sqlite/0005_in_flight_out_of_status_index.sql"),
    ),
    (6, "endpoint rate limit", include_str!("../../../../migrations/sqlite/0006_endpoint_rate_limit.sql")),
    (7, "plugin uploads", include_str!("../../../../migrations/sqlite/0007_plugin_uploads.sql")),
    (8, "api key scope", include_str!("../../../../migrations/sqlite/0008_api_key_scope.sql")),
    (9, "endpoint hours", include_str!("../../../../migrations/sqlite/0009_endpoint_hours.sql")),
    (10, "attempt time", include_str!("../../../../migrations/sqlite/0010_attempt_time.sql")),
    (11, "retried", include_str!("../../../../migrations/sqlite/0011_retried.sql")),
    (12, "event type hours", include_str!("../../../../migrations/sqlite/0012_event_type_hours.sql")),
    (13, "dead attempts", include_str!("../../../../migrations/sqlite/0013_dead_attempts.sql")),
    (14, "tenant rate limit", include_str!("../../../../migrations/sqlite/0014_tenant_rate_limit.sql")),
    (15, "read keys", include_str!("../../../../migrations/sqlite/0015_read_keys.sql")),
    (16, "hmac signature", include_str!("../../../../migrations/sqlite/0016_hmac_signature.sql")),
    (17, "key networks", include_str!("../../../../migrations/sqlite/0017_key_networks.sql")),
    (18, "signature key id", include_str!("../../../../migrations/sqlite/0018_signature_key_id.sql")),
    (19, "event type schemas", include_str!("../../../../migrations/sqlite/0019_event_type_schemas.sql")),
];
const POSTGRES: &[EmbeddedMigration] = &[
    (1, "core", include_str!("../../../../migrations/postgres/0001_core.sql")),
    (2, "plugins", include_str!("../../../../migrations/postgres/0002_plugins.sql")),
    (3, "claim order", include_str!("../../../../migrations/postgres/0003_claim_order.sql")),
    (4, "status indexes", include_str!("../../../../migrations/postgres/0004_status_indexes.sql")),
    (
        5,
        "in flight out of status index",
        include_str!("../../../../migrations/postgres/0005_in_flight_out_of_status_index.sql"),
    ),
    (6, "endpoint rate limit", include_str!("../../../../migrations/postgres/0006_endpoint_rate_limit.sql")),
    (7, "plugin uploads", include_str!("../../../../migrations/postgres/0007_plugin_uploads.sql")),
    (8, "api key scope", include_str!("../../../../migrations/postgres/0008_api_key_scope.sql")),
    (9, "endpoint hours", include_str!("../../../../migrations/postgres/0009_endpoint_hours.sql")),
    (10, "attempt time", include_str!("../../../../migrations/postgres/0010_attempt_time.sql")),
    (11, "retried", include_str!("../../../../migrations/postgres/0011_retried.sql")),
    (12, "event type hours", include_str!("../../../../migrations/postgres/0012_event_type_hours.sql")),
    (13, "dead attempts", include_str!("../../../../migrations/postgres/0013_dead_attempts.sql")),
    (14, "tenant rate limit", include_str!("../../../../migrations/postgres/0014_tenant_rate_limit.sql")),
    (15, "read keys", include_str!("../../../../migrations/postgres/0015_read_keys.sql")),
    (16, "hmac signature", include_str!("../../../../migrations/postgres/0016_hmac_signature.sql")),
    (17, "key networks", include_str!("../../../../migrations/postgres/0017_key_networks.sql")),
    (18, "signature key id", include_str!("../../../../migrations/postgres/0018_signature_key_id.sql")),
    (19, "event type schemas", include_str!("../../../../migrations/postgres/0019_event_type_schemas.sql")),
];

#[derive(Debug)]
struct Embedded(&'static [EmbeddedMigration]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        let migrations = self
            .0
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(version, Cow::Borrowed(description), MigrationType::Simple, Cow::Borrowed(sql), false)
            })
            .collect();
        Box::pin(async move { Ok(migrations) })
    }
}

/// Brings the schema up to date. On PostgreSQL sqlx holds an advisory lock meanwhile, so nodes starting together
/// migrate once.
pub(super) async fn run(dialect: Dialect, connection: &mut sqlx::AnyConnection) -> StoreResult<()> {
    let embedded = match dialect {
        Dialect::Sqlite => SQLITE,
        Dialect::Postgres => POSTGRES,
    };
    Migrator::new(Embedded(embedded)).await?.run_direct(connection).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_lists_every_file(directory: &str, embedded: &[EmbeddedMigration]) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("migrations").join(directory);
        let mut files: Vec<(i64, String, String)> = std::fs::read_dir(&path)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|file| file.extension().is_some_and(|ext| ext == "sql"))
            .map(|file| {
                let stem = file.file_stem().unwrap().to_str().unwrap().to_string();
                let (version, description) = stem.split_once('_').unwrap();
                let sql = std::fs::read_to_string(&file).unwrap();
                (version.parse().unwrap(), description.replace('_', " "), sql)
            })
            .collect();
        files.sort();
        let listed: Vec<(i64, String, String)> =
            embedded.iter().map(|&(v, d, sql)| (v, d.to_string(), sql.to_string())).collect();
        assert_eq!(files, listed, "migrations/{directory} and the embedded list differ");
    }

    #[test]
    fn every_migration_file_is_embedded() {
        assert_lists_every_file("sqlite", SQLITE);
        assert_lists_every_file("postgres", POSTGRES);
    }

    /// A SQLite database migrated up to `version` with `rows` inserted, then opened by the store, which applies
    /// the migrations after it: an upgrade from that version.
    async fn upgraded_from(version: i64, rows: &[&str]) -> (tempfile::TempDir, super::super::SqlStore) {
        use sqlx::Connection;

        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("old.db").display());
        let mut connection = sqlx::AnyConnection::connect(&format!("{url}?mode=rwc")).await.unwrap();
        let before = &SQLITE[..usize::try_from(version).unwrap()];
        assert_eq!(before.last().map(|m| m.0), Some(version));
        Migrator::new(Embedded(before)).await.unwrap().run_direct(&mut connection).await.unwrap();
        for statement in rows {
            sqlx::query(statement).execute(&mut connection).await.unwrap();
        }
        connection.close().await.unwrap();
        let store = super::super::SqlStore::connect(&url).await.unwrap();
        (dir, store)
    }

    /// A key made before scopes (migration 8) keeps the full access it had: an upgrade must not lock out every
    /// service using one, nor turn it into something else.
    #[tokio::test]
    async fn a_key_from_before_scopes_keeps_its_full_access() {
        use crate::model::KeyScope;
        use crate::store::Store;

        let (_dir, store) = upgraded_from(
            7,
            &[
                "INSERT INTO tenants (id, name, created_at) VALUES ('ten_old', 'Old', 1)",
                "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, created_at) \
                 VALUES ('key_old', 'ten_old', 'ci', 'sy_abcd', 'hash-of-an-old-key', 1)",
            ],
        )
        .await;
        let key = store.find_api_key("hash-of-an-old-key").await.unwrap().expect("the old key is still found");
        assert_eq!((key.tenant_id.as_str(), key.scope), ("ten_old", KeyScope::All));
    }

    /// The table rebuild that admits `read` keys keeps every key as it was: scope, revocation, hash.
    #[tokio::test]
    async fn keys_keep_their_scope_and_revocation_across_the_rebuild_for_read_keys() {
        use crate::model::KeyScope;
        use crate::store::Store;

        let (_dir, store) = upgraded_from(
            14,
            &[
                "INSERT INTO tenants (id, name, created_at) VALUES ('ten_old', 'Old', 1)",
                "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, created_at, scope) \
                 VALUES ('key_pub', 'ten_old', 'checkout', 'syp_abc', 'hash-pub', 2, 'publish')",
                "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, created_at, revoked_at) \
                 VALUES ('key_gone', 'ten_old', 'old ci', 'sy_abcd', 'hash-gone', 3, 4)",
            ],
        )
        .await;
        let publish = store.find_api_key("hash-pub").await.unwrap().expect("the publish key");
        assert_eq!((publish.id.as_str(), publish.scope, publish.created_at), ("key_pub", KeyScope::Publish, 2));
        assert_eq!(store.find_api_key("hash-gone").await.unwrap(), None, "still revoked");
        let page = store.list_api_keys("ten_old", &crate::store::Page { cursor: None, limit: 10 }).await.unwrap();
        let revoked = page.iter().find(|key| key.id == "key_gone").expect("the revoked key is listed");
        assert_eq!(
            (revoked.scope, revoked.revoked_at, revoked.key_hash.as_str()),
            (KeyScope::All, Some(4), "hash-gone")
        );
        assert_eq!(page.len(), 2);
        assert!(page.iter().all(|key| key.allowed_networks.is_empty()), "keys made before are usable from anywhere");
    }

    /// `key_id` lives in a column of its own, so the `signature_header` JSON keeps the shape older nodes read
    /// strictly; and this version reads JSON a newer one wrote with fields it does not know.
    #[tokio::test]
    async fn signature_headers_are_stored_in_a_shape_older_nodes_read() {
        use crate::model::{SignatureHeader, SignatureScheme, TimestampUnit};
        use crate::store::Store;

        let (_dir, store) =
            upgraded_from(17, &["INSERT INTO tenants (id, name, created_at) VALUES ('ten_1', 'Old', 1)"]).await;
        let header = SignatureHeader {
            name: "Molam-Signature".into(),
            prefix: String::new(),
            timestamp: Some(TimestampUnit::Milliseconds),
            key_id: true,
        };
        let mut endpoint = crate::dispatch::send::tests::endpoint("https://example.com/", &[]);
        endpoint.signature_scheme = SignatureScheme::Stripe;
        endpoint.signature_header = Some(header.clone());
        let secret = crate::store::NewSecret { id: "sec_1".into(), ciphertext: vec![1], hint: "whsec_x…".into() };
        store.create_endpoint(&endpoint, &secret).await.unwrap();
        let stored: String = sqlx::query_scalar("SELECT signature_header FROM endpoints WHERE id = 'ep_1'")
            .fetch_one(&store.reader)
            .await
            .unwrap();
        assert_eq!(stored, r#"{"name":"Molam-Signature","prefix":"","timestamp":"milliseconds"}"#);
        let read = store.get_endpoint("ten_1", "ep_1").await.unwrap().unwrap();
        assert_eq!(read.signature_header, Some(header.clone()));

        let newer = r#"{"name":"Molam-Signature","prefix":"","timestamp":"seconds","encoding":"base64"}"#;
        sqlx::query("UPDATE endpoints SET signature_header = $1, signature_key_id = 0 WHERE id = 'ep_1'")
            .bind(newer)
            .execute(&mut *store.writer.acquire().await.unwrap())
            .await
            .unwrap();
        let read = store.get_endpoint("ten_1", "ep_1").await.unwrap().unwrap();
        let expected = SignatureHeader { timestamp: Some(TimestampUnit::Seconds), key_id: false, ..header };
        assert_eq!(read.signature_header, Some(expected));
    }

    #[test]
    fn both_databases_have_the_same_migration_versions() {
        let versions = |list: &[EmbeddedMigration]| list.iter().map(|m| (m.0, m.1)).collect::<Vec<_>>();
        assert_eq!(versions(SQLITE), versions(POSTGRES));
    }
}
