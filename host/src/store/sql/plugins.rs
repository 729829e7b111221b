//! Plugins uploaded through the API: each name's latest component, kept so every node installs it.

use sqlx::{AnyConnection, AnyPool, Row};

use crate::model::Millis;
use crate::store::{PluginUpload, StoreResult};

pub(super) async fn put_upload(
    connection: &mut AnyConnection,
    name: &str,
    sha256: &str,
    wasm: &[u8],
    at: Millis,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO plugin_uploads (name, sha256, wasm, changed_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET sha256 = excluded.sha256, wasm = excluded.wasm, \
         changed_at = excluded.changed_at",
    )
    .bind(name)
    .bind(sha256)
    .bind(wasm)
    .bind(at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub(super) async fn delete_upload(
    connection: &mut AnyConnection,
    name: &str,
    sha256: &str,
    at: Millis,
) -> StoreResult<bool> {
    let deleted = sqlx::query(
        "UPDATE plugin_uploads SET wasm = NULL, changed_at = $3 WHERE name = $1 AND sha256 = $2 AND wasm IS NOT NULL",
    )
    .bind(name)
    .bind(sha256)
    .bind(at)
    .execute(&mut *connection)
    .await?;
    Ok(deleted.rows_affected() > 0)
}

pub(super) async fn uploads(pool: &AnyPool) -> StoreResult<Vec<PluginUpload>> {
    // CAST: a comparison is a boolean on PostgreSQL and an integer on SQLite.
    let rows = sqlx::query(
        "SELECT name, sha256, CAST(CASE WHEN wasm IS NULL THEN 1 ELSE 0 END AS BIGINT) AS deleted, changed_at \
         FROM plugin_uploads ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    let upload = |row: &sqlx::any::AnyRow| -> Result<PluginUpload, sqlx::Error> {
        Ok(PluginUpload {
            name: row.try_get("name")?,
            sha256: row.try_get("sha256")?,
            deleted: row.try_get::<i64, _>("deleted")? != 0,
            changed_at: row.try_get("changed_at")?,
        })
    };
    Ok(rows.iter().map(upload).collect::<Result<_, _>>()?)
}

pub(super) async fn upload_wasm(pool: &AnyPool, name: &str, sha256: &str) -> StoreResult<Option<Vec<u8>>> {
    let row = sqlx::query("SELECT wasm FROM plugin_uploads WHERE name = $1 AND sha256 = $2 AND wasm IS NOT NULL")
        .bind(name)
        .bind(sha256)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|row| row.try_get("wasm")).transpose()?)
}
