//! Installation facts (`meta`), tenants and API keys.

use sqlx::{AnyConnection, AnyPool, Row};

use super::query::{conflict_on_unique, Order, SqlBuilder};
use super::rows::{self, to_json, API_KEY_COLUMNS, TENANT_COLUMNS};
use crate::model::{ApiKey, Millis, Tenant};
use crate::store::{Page, StoreResult};

pub(super) async fn get_meta(pool: &AnyPool, key: &str) -> StoreResult<Option<String>> {
    let row = sqlx::query("SELECT value FROM meta WHERE key = $1").bind(key).fetch_optional(pool).await?;
    Ok(row.map(|row| row.try_get("value")).transpose()?)
}

pub(super) async fn put_meta(connection: &mut AnyConnection, key: &str, value: &str) -> StoreResult<()> {
    sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
        .bind(key)
        .bind(value)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

pub(super) async fn create_tenant(connection: &mut AnyConnection, tenant: &Tenant) -> StoreResult<()> {
    sqlx::query(&format!("INSERT INTO tenants ({TENANT_COLUMNS}) VALUES ($1, $2, $3, $4)"))
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(tenant.rate_limit)
        .bind(tenant.created_at)
        .execute(&mut *connection)
        .await
        .map_err(conflict_on_unique(|| format!("tenant `{}` already exists", tenant.id)))?;
    Ok(())
}

pub(super) async fn update_tenant(connection: &mut AnyConnection, tenant: &Tenant) -> StoreResult<bool> {
    let updated = sqlx::query("UPDATE tenants SET name = $2, rate_limit = $3 WHERE id = $1")
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(tenant.rate_limit)
        .execute(&mut *connection)
        .await?;
    Ok(updated.rows_affected() > 0)
}

pub(super) async fn get_tenant(pool: &AnyPool, id: &str) -> StoreResult<Option<Tenant>> {
    let row = sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(rows::tenant).transpose()
}

pub(super) async fn list_tenants(pool: &AnyPool, page: &Page) -> StoreResult<Vec<Tenant>> {
    let mut sql = SqlBuilder::new(format!("SELECT {TENANT_COLUMNS} FROM tenants"));
    sql.keyset_page("id", Order::Descending, page);
    rows::all(&sql.query().fetch_all(pool).await?, rows::tenant)
}

/// A key's networks as stored: NULL when it may be used from anywhere, as for every key made before them.
fn stored_networks(key: &ApiKey) -> StoreResult<Option<String>> {
    (!key.allowed_networks.is_empty()).then(|| to_json("allowed_networks", &key.allowed_networks)).transpose()
}

pub(super) async fn create_api_key(connection: &mut AnyConnection, key: &ApiKey) -> StoreResult<()> {
    let networks = stored_networks(key)?;
    sqlx::query(&format!("INSERT INTO api_keys ({API_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
        .bind(&key.id)
        .bind(&key.tenant_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.key_hash)
        .bind(key.scope.as_str())
        .bind(key.created_at)
        .bind(key.revoked_at)
        .bind(networks)
        .execute(&mut *connection)
        .await
        .map_err(conflict_on_unique(|| format!("API key `{}` or a key with the same hash already exists", key.id)))?;
    Ok(())
}

pub(super) async fn list_api_keys(pool: &AnyPool, tenant_id: &str, page: &Page) -> StoreResult<Vec<ApiKey>> {
    let mut sql = SqlBuilder::new(format!("SELECT {API_KEY_COLUMNS} FROM api_keys"));
    sql.compare("tenant_id", "=", tenant_id).keyset_page("id", Order::Descending, page);
    rows::all(&sql.query().fetch_all(pool).await?, rows::api_key)
}

pub(super) async fn get_api_key(pool: &AnyPool, tenant_id: &str, id: &str) -> StoreResult<Option<ApiKey>> {
    let row = sqlx::query(&format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(rows::api_key).transpose()
}

pub(super) async fn update_api_key(
    connection: &mut AnyConnection,
    before: &ApiKey,
    after: &ApiKey,
) -> StoreResult<bool> {
    // Compared whole, so a change made on a stale read cannot undo a narrowing that came first.
    let result = sqlx::query(
        "UPDATE api_keys SET name = $3, key_hash = $4, allowed_networks = $5 \
         WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL \
         AND name = $6 AND key_hash = $7 AND COALESCE(allowed_networks, '') = COALESCE($8, '')",
    )
    .bind(&after.tenant_id)
    .bind(&after.id)
    .bind(&after.name)
    .bind(&after.key_hash)
    .bind(stored_networks(after)?)
    .bind(&before.name)
    .bind(&before.key_hash)
    .bind(stored_networks(before)?)
    .execute(&mut *connection)
    .await
    .map_err(conflict_on_unique(|| format!("another API key has the hash of `{}`", after.id)))?;
    Ok(result.rows_affected() > 0)
}

pub(super) async fn revoke_api_key(
    connection: &mut AnyConnection,
    tenant_id: &str,
    id: &str,
    at: Millis,
) -> StoreResult<bool> {
    let result =
        sqlx::query("UPDATE api_keys SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL")
            .bind(tenant_id)
            .bind(id)
            .bind(at)
            .execute(&mut *connection)
            .await?;
    Ok(result.rows_affected() > 0)
}

pub(super) async fn find_api_key(pool: &AnyPool, key_hash: &str) -> StoreResult<Option<ApiKey>> {
    let row =
        sqlx::query(&format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"))
            .bind(key_hash)
            .fetch_optional(pool)
            .await?;
    row.as_ref().map(rows::api_key).transpose()
}
