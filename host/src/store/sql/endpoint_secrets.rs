//! Endpoint signing secrets: versions, rotation with a grace period, and the set that signs at a given time.

use sqlx::{AnyConnection, AnyPool, Connection, Row};

use super::endpoints::lock_endpoint;
use super::query::{conflict_on_unique, SqlBuilder, MAX_LIST};
use super::rows::{self, SECRET_COLUMNS};
use super::Dialect;
use crate::model::{EndpointSecret, Millis};
use crate::store::{NewSecret, StoreResult};

pub(super) async fn list_secrets(
    pool: &AnyPool,
    tenant_id: &str,
    endpoint_id: &str,
) -> StoreResult<Vec<EndpointSecret>> {
    let found = sqlx::query(&format!(
        "SELECT {SECRET_COLUMNS} FROM endpoint_secrets WHERE tenant_id = $1 AND endpoint_id = $2 ORDER BY version DESC"
    ))
    .bind(tenant_id)
    .bind(endpoint_id)
    .fetch_all(pool)
    .await?;
    rows::all(&found, rows::secret)
}

pub(super) async fn rotate_secret(
    connection: &mut AnyConnection,
    dialect: Dialect,
    tenant_id: &str,
    endpoint_id: &str,
    secret: &NewSecret,
    retire_until: Millis,
    at: Millis,
) -> StoreResult<Option<EndpointSecret>> {
    let mut tx = connection.begin().await?;
    // Locking the endpoint serialises rotations of one endpoint, so two of them cannot both compute the same
    // next version or both demote the same active secret.
    if !lock_endpoint(&mut tx, dialect, tenant_id, endpoint_id).await? {
        return Ok(None);
    }

    // This rotation's grace period bounds every secret still in an earlier one too: a rotation with no grace
    // (the answer to a leaked secret) must leave only the new secret signing, not a retiring one beside it.
    let grace_ends = retire_until.max(at);
    sqlx::query(
        "UPDATE endpoint_secrets SET expires_at = $3 \
         WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'retiring' AND expires_at > $3",
    )
    .bind(tenant_id)
    .bind(endpoint_id)
    .bind(grace_ends)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE endpoint_secrets SET status = 'revoked' \
         WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'retiring' AND expires_at <= $3",
    )
    .bind(tenant_id)
    .bind(endpoint_id)
    .bind(at)
    .execute(&mut *tx)
    .await?;

    // A grace period that already ended retires nothing: the old secret stops signing now.
    let (previous_status, previous_expires_at) =
        if retire_until > at { ("retiring", retire_until) } else { ("revoked", at) };
    sqlx::query(
        "UPDATE endpoint_secrets SET status = $3, expires_at = $4 \
         WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'active'",
    )
    .bind(tenant_id)
    .bind(endpoint_id)
    .bind(previous_status)
    .bind(previous_expires_at)
    .execute(&mut *tx)
    .await?;

    let latest = sqlx::query("SELECT MAX(version) AS version FROM endpoint_secrets WHERE endpoint_id = $1")
        .bind(endpoint_id)
        .fetch_one(&mut *tx)
        .await?;
    let version = latest.try_get::<Option<i64>, _>("version")?.unwrap_or(0) + 1;
    let inserted = sqlx::query(&format!(
        "INSERT INTO endpoint_secrets ({SECRET_COLUMNS}) VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, NULL) \
         RETURNING {SECRET_COLUMNS}"
    ))
    .bind(&secret.id)
    .bind(endpoint_id)
    .bind(tenant_id)
    .bind(version)
    .bind(secret.ciphertext.clone())
    .bind(&secret.hint)
    .bind(at)
    .fetch_one(&mut *tx)
    .await
    .map_err(conflict_on_unique(|| format!("secret `{}` already exists", secret.id)))?;
    let rotated = rows::secret(&inserted)?;
    tx.commit().await?;
    Ok(Some(rotated))
}

/// The secrets that sign at the time bound at `at` (a placeholder): the active one, and retiring ones until they
/// expire.
pub(super) fn signing_at(at: &str) -> String {
    format!("(status = 'active' OR (status = 'retiring' AND expires_at > {at}))")
}

pub(super) async fn signing_secrets(pool: &AnyPool, endpoint_id: &str, at: Millis) -> StoreResult<Vec<EndpointSecret>> {
    let found = sqlx::query(&format!(
        "SELECT {SECRET_COLUMNS} FROM endpoint_secrets WHERE endpoint_id = $1 AND {} ORDER BY version DESC",
        signing_at("$2")
    ))
    .bind(endpoint_id)
    .bind(at)
    .fetch_all(pool)
    .await?;
    rows::all(&found, rows::secret)
}

/// The secrets that sign at `at` for each of `endpoint_ids`, as `signing_secrets` answers for one endpoint.
pub(super) async fn signing_secrets_of(
    connection: &mut AnyConnection,
    endpoint_ids: &[String],
    at: Millis,
) -> StoreResult<Vec<EndpointSecret>> {
    let mut found = Vec::new();
    for chunk in endpoint_ids.chunks(MAX_LIST) {
        let mut sql = SqlBuilder::new(format!("SELECT {SECRET_COLUMNS} FROM endpoint_secrets"));
        sql.in_list("endpoint_id", chunk);
        let at = sql.bind(at);
        sql.condition().push(&signing_at(&at)).push(" ORDER BY endpoint_id, version DESC");
        let rows = sql.query().fetch_all(&mut *connection).await?;
        found.extend(rows::all(&rows, rows::secret)?);
    }
    Ok(found)
}
