//! Endpoints and their subscriptions.

use std::collections::HashMap;

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Row};

use super::deliveries::{IN_FLIGHT, STATUS_INDEXED};
use super::query::{conflict_on_unique, Order, SqlBuilder, MAX_LIST};
use super::rows::{self, stored_signature_header, to_json, ENDPOINT_COLUMNS, SUBSCRIPTION_COLUMNS};
use super::Dialect;
use crate::model::{Endpoint, EndpointPlugins, EndpointStatus, Millis, Subscription};
use crate::store::{EndpointFilter, NewSecret, Page, StatusBefore, StoreResult};

pub(super) async fn create_endpoint(
    connection: &mut AnyConnection,
    endpoint: &Endpoint,
    secret: &NewSecret,
) -> StoreResult<()> {
    let mut tx = connection.begin().await?;
    // Placeholders in `bind_settings` order: the settings, then the status, then the times; `signature_header` and
    // `signature_key_id`, the last settings bound, are the last columns.
    let insert = format!(
        "INSERT INTO endpoints ({ENDPOINT_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $15, $16, $5, $6, $7, $8, $9, $10, $11, $12, $17, $18, $13, $14)"
    );
    bind_settings(sqlx::query(&insert).bind(&endpoint.id).bind(&endpoint.tenant_id), endpoint)?
        .bind(endpoint.status.as_str())
        .bind(endpoint.status_reason.as_deref())
        .bind(endpoint.created_at)
        .bind(endpoint.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(conflict_on_unique(|| format!("endpoint `{}` already exists", endpoint.id)))?;
    insert_subscriptions(&mut tx, &endpoint.tenant_id, &endpoint.id, &endpoint.subscriptions).await?;
    sqlx::query(
        "INSERT INTO endpoint_secrets (id, endpoint_id, tenant_id, version, status, ciphertext, hint, created_at) \
         VALUES ($1, $2, $3, 1, 'active', $4, $5, $6)",
    )
    .bind(&secret.id)
    .bind(&endpoint.id)
    .bind(&endpoint.tenant_id)
    .bind(secret.ciphertext.clone())
    .bind(&secret.hint)
    .bind(endpoint.created_at)
    .execute(&mut *tx)
    .await
    .map_err(conflict_on_unique(|| format!("secret `{}` already exists", secret.id)))?;
    tx.commit().await?;
    Ok(())
}

/// Binds the endpoint's settings, url through plugins, for both the insert and the update. Not the status, which
/// only the insert and `set_endpoint_status` write.
fn bind_settings<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    endpoint: &'q Endpoint,
) -> StoreResult<Query<'q, Any, AnyArguments<'q>>> {
    Ok(query
        .bind(&endpoint.url)
        .bind(&endpoint.description)
        .bind(endpoint.timeout_ms)
        .bind(to_json("headers", &endpoint.headers)?)
        .bind(endpoint.retry_schedule_ms.as_ref().map(|schedule| to_json("retry_schedule_ms", schedule)).transpose()?)
        .bind(endpoint.max_attempts)
        .bind(endpoint.signature_scheme.as_str())
        .bind(to_json("metadata", &endpoint.metadata)?)
        .bind(to_json("plugins", &endpoint.plugins)?)
        .bind(endpoint.rate_limit)
        .bind(endpoint.signature_header.as_ref().map(stored_signature_header).transpose()?)
        .bind(i64::from(endpoint.signature_header.as_ref().is_some_and(|header| header.key_id))))
}

// Reads of endpoints with their subscriptions take two statements; a transaction gives both one snapshot, so a
// concurrent update on another connection cannot pair an endpoint with another version of its subscriptions.

pub(super) async fn get_endpoint(pool: &AnyPool, tenant_id: &str, id: &str) -> StoreResult<Option<Endpoint>> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(&format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let endpoints = match row {
        Some(row) => with_subscriptions(&mut tx, Some(tenant_id), vec![row]).await?,
        None => Vec::new(),
    };
    tx.commit().await?;
    Ok(endpoints.into_iter().next())
}

pub(super) async fn list_endpoints(
    pool: &AnyPool,
    tenant_id: &str,
    filter: &EndpointFilter,
    page: &Page,
) -> StoreResult<Vec<Endpoint>> {
    let mut tx = pool.begin().await?;
    let mut sql = SqlBuilder::new(format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints"));
    sql.compare("tenant_id", "=", tenant_id).compare_if("status", "=", filter.status.map(EndpointStatus::as_str));
    if let Some(event_type) = &filter.event_type {
        // Each endpoint's subscriptions are found by the primary key's leading column; the patterns that would
        // select the type are few (one per segment, and `*`), so no pattern is evaluated in SQL.
        sql.condition().push(
            "EXISTS (SELECT 1 FROM subscriptions WHERE subscriptions.endpoint_id = endpoints.id AND \
             subscriptions.event_type IN (",
        );
        for (n, pattern) in crate::routing::patterns_matching(event_type).into_iter().enumerate() {
            if n > 0 {
                sql.push(", ");
            }
            sql.push_bind(Some(pattern));
        }
        sql.push("))");
    }
    sql.keyset_page("id", Order::Descending, page);
    let found = sql.query().fetch_all(&mut *tx).await?;
    let endpoints = with_subscriptions(&mut tx, Some(tenant_id), found).await?;
    tx.commit().await?;
    Ok(endpoints)
}

pub(super) async fn endpoints_binding_plugin(pool: &AnyPool, name: &str) -> StoreResult<Vec<(String, String)>> {
    // The LIKE only narrows the scan (bindings are compact JSON written by `bind_settings`); the decoded bindings
    // decide, so a plugin whose name merely appears in a config value does not count.
    let rows = sqlx::query("SELECT id, tenant_id, plugins FROM endpoints WHERE plugins LIKE $1")
        .bind(format!("%{}%", serde_json::Value::String(name.to_string())))
        .fetch_all(pool)
        .await?;
    let mut bound = Vec::new();
    for row in rows {
        let plugins: String = row.try_get("plugins")?;
        let plugins: EndpointPlugins = serde_json::from_str(&plugins)
            .map_err(|e| crate::store::StoreError::Corrupt(format!("column `plugins`: {e}")))?;
        if plugins.bound().any(|(_, binding)| binding.plugin == name) {
            bound.push((row.try_get("tenant_id")?, row.try_get("id")?));
        }
    }
    Ok(bound)
}

pub(super) async fn update_endpoint(connection: &mut AnyConnection, endpoint: &Endpoint) -> StoreResult<bool> {
    let mut tx = connection.begin().await?;
    let rate_limit_before: Option<Option<i64>> =
        sqlx::query("SELECT rate_limit FROM endpoints WHERE tenant_id = $1 AND id = $2")
            .bind(&endpoint.tenant_id)
            .bind(&endpoint.id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get("rate_limit"))
            .transpose()?;
    // The status is left alone: a pause, or the dispatcher disabling the endpoint on a 410, that lands between a
    // PATCH's read and this write must not be undone by it.
    let update = sqlx::query(
        "UPDATE endpoints SET url = $3, description = $4, timeout_ms = $5, headers = $6, retry_schedule_ms = $7, \
         max_attempts = $8, signature_scheme = $9, metadata = $10, plugins = $11, rate_limit = $12, \
         signature_header = $13, signature_key_id = $14, updated_at = $15 WHERE tenant_id = $1 AND id = $2",
    );
    let updated = bind_settings(update.bind(&endpoint.tenant_id).bind(&endpoint.id), endpoint)?
        .bind(endpoint.updated_at)
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    if rate_limit_before.is_some_and(|before| before != endpoint.rate_limit) {
        // Deliveries put off for the old limit wait for turns it gave them, hours ahead after a long backlog: they
        // line up again under the new limit.
        sqlx::query(super::dispatch::BRING_FORWARD)
            .bind(&endpoint.tenant_id)
            .bind(&endpoint.id)
            .bind(endpoint.updated_at)
            .execute(&mut *tx)
            .await?;
    }
    delete_subscriptions(&mut tx, &endpoint.tenant_id, &endpoint.id).await?;
    insert_subscriptions(&mut tx, &endpoint.tenant_id, &endpoint.id, &endpoint.subscriptions).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn delete_endpoint(
    connection: &mut AnyConnection,
    dialect: Dialect,
    tenant_id: &str,
    id: &str,
    at: Millis,
) -> StoreResult<bool> {
    let mut tx = connection.begin().await?;
    // Locked first, a concurrent publish to this endpoint commits before the deliveries below are read, so its
    // deliveries are dead-lettered too rather than left waiting for an endpoint that is gone.
    if !lock_endpoint(&mut tx, dialect, tenant_id, id).await? {
        return Ok(false);
    }
    // A dispatcher holding one of these leases loses it: its record_attempt finds the row no longer delivering.
    for statement in dead_letter_unfinished() {
        sqlx::query(&statement).bind(tenant_id).bind(id).bind(at).execute(&mut *tx).await?;
    }
    delete_subscriptions(&mut tx, tenant_id, id).await?;
    for statement in [
        "DELETE FROM endpoint_secrets WHERE tenant_id = $1 AND endpoint_id = $2",
        "DELETE FROM endpoints WHERE tenant_id = $1 AND id = $2",
    ] {
        sqlx::query(statement).bind(tenant_id).bind(id).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Dead-letters the unfinished deliveries of endpoint `$2` of tenant `$1` at `$3`. Waiting and in-flight
/// deliveries are held by different indexes, so each kind is found by a statement of its own.
pub(super) fn dead_letter_unfinished() -> [String; 2] {
    [format!("status IN ('pending', 'failed') AND {STATUS_INDEXED}"), IN_FLIGHT.to_string()].map(|unfinished| {
        format!(
            "UPDATE deliveries SET status = 'dead', last_error = 'endpoint deleted', next_attempt_at = NULL, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $3 \
             WHERE tenant_id = $1 AND endpoint_id = $2 AND {unfinished}"
        )
    })
}

pub(super) async fn set_endpoint_status(
    connection: &mut AnyConnection,
    dialect: Dialect,
    tenant_id: &str,
    id: &str,
    status: EndpointStatus,
    reason: Option<&str>,
    at: Millis,
) -> StoreResult<Option<StatusBefore>> {
    let mut tx = connection.begin().await?;
    // Read under the row's lock, so what is reported replaced is what this update replaced.
    let before = sqlx::query(&format!(
        "SELECT status, status_reason FROM endpoints WHERE tenant_id = $1 AND id = $2{}",
        dialect.row_lock_clause()
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(before) = before else {
        tx.rollback().await?;
        return Ok(None);
    };
    let before = rows::status_before(&before)?;
    sqlx::query(
        "UPDATE endpoints SET status = $3, status_reason = $4, updated_at = $5 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(status.as_str())
    .bind(reason)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(before))
}

pub(super) async fn replace_subscriptions(
    connection: &mut AnyConnection,
    tenant_id: &str,
    endpoint_id: &str,
    subscriptions: &[Subscription],
    at: Millis,
) -> StoreResult<bool> {
    let mut tx = connection.begin().await?;
    let touched = sqlx::query("UPDATE endpoints SET updated_at = $3 WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(endpoint_id)
        .bind(at)
        .execute(&mut *tx)
        .await?;
    if touched.rows_affected() == 0 {
        return Ok(false);
    }
    delete_subscriptions(&mut tx, tenant_id, endpoint_id).await?;
    insert_subscriptions(&mut tx, tenant_id, endpoint_id, subscriptions).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn active_endpoints(pool: &AnyPool, tenant_id: &str) -> StoreResult<Vec<Endpoint>> {
    let mut tx = pool.begin().await?;
    let found = sqlx::query(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE tenant_id = $1 AND status = 'active' ORDER BY id"
    ))
    .bind(tenant_id)
    .fetch_all(&mut *tx)
    .await?;
    let endpoints = with_subscriptions(&mut tx, Some(tenant_id), found).await?;
    tx.commit().await?;
    Ok(endpoints)
}

/// Locks the tenant's endpoint for the rest of the transaction (see [`Dialect::for_update_clause`]); false when
/// the tenant has no such endpoint.
pub(super) async fn lock_endpoint(
    connection: &mut AnyConnection,
    dialect: Dialect,
    tenant_id: &str,
    id: &str,
) -> StoreResult<bool> {
    let found = sqlx::query(&format!(
        "SELECT id FROM endpoints WHERE tenant_id = $1 AND id = $2{}",
        dialect.for_update_clause()
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(found.is_some())
}

/// Maps endpoint rows to endpoints with their subscriptions, keeping the rows' order. `tenant_id` narrows the
/// subscription lookup when the caller is tenant-scoped; the dispatcher's lookup spans tenants.
pub(super) async fn with_subscriptions(
    connection: &mut AnyConnection,
    tenant_id: Option<&str>,
    endpoint_rows: Vec<AnyRow>,
) -> StoreResult<Vec<Endpoint>> {
    let ids =
        endpoint_rows.iter().map(|row| sqlx::Row::try_get::<String, _>(row, "id")).collect::<Result<Vec<_>, _>>()?;
    let mut subscriptions = load_subscriptions(connection, tenant_id, &ids).await?;
    endpoint_rows
        .iter()
        .zip(&ids)
        .map(|(row, id)| rows::endpoint(row, subscriptions.remove(id).unwrap_or_default()))
        .collect()
}

async fn load_subscriptions(
    connection: &mut AnyConnection,
    tenant_id: Option<&str>,
    endpoint_ids: &[String],
) -> StoreResult<HashMap<String, Vec<Subscription>>> {
    let mut by_endpoint: HashMap<String, Vec<Subscription>> = HashMap::new();
    for chunk in endpoint_ids.chunks(MAX_LIST) {
        let mut sql = SqlBuilder::new(format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions"));
        sql.compare_if("tenant_id", "=", tenant_id)
            .in_list("endpoint_id", chunk)
            .push(" ORDER BY endpoint_id, position");
        for row in sql.query().fetch_all(&mut *connection).await? {
            let (endpoint_id, subscription) = rows::subscription(&row)?;
            by_endpoint.entry(endpoint_id).or_default().push(subscription);
        }
    }
    Ok(by_endpoint)
}

async fn insert_subscriptions(
    connection: &mut AnyConnection,
    tenant_id: &str,
    endpoint_id: &str,
    subscriptions: &[Subscription],
) -> StoreResult<()> {
    for (chunk_index, chunk) in subscriptions.chunks(MAX_LIST).enumerate() {
        let mut sql =
            SqlBuilder::new("INSERT INTO subscriptions (endpoint_id, tenant_id, position, event_type, filter) VALUES ");
        let endpoint = sql.bind(endpoint_id);
        let tenant = sql.bind(tenant_id);
        for (index, subscription) in chunk.iter().enumerate() {
            let position = sql.bind((chunk_index * MAX_LIST + index) as i64);
            let event_type = sql.bind(subscription.event_type.as_str());
            let filter = sql.bind(subscription.filter.as_deref());
            let separator = if index == 0 { "" } else { ", " };
            sql.push(&format!("{separator}({endpoint}, {tenant}, {position}, {event_type}, {filter})"));
        }
        sql.query().execute(&mut *connection).await?;
    }
    Ok(())
}

async fn delete_subscriptions(connection: &mut AnyConnection, tenant_id: &str, endpoint_id: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM subscriptions WHERE tenant_id = $1 AND endpoint_id = $2")
        .bind(tenant_id)
        .bind(endpoint_id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}
