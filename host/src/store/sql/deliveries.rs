//! Reading deliveries and their attempts, and sending them again by hand (retry, dead-letter requeue).

use sqlx::{AnyConnection, AnyPool, Connection};

use super::query::{Order, SqlBuilder, MAX_LIST};
use super::rows::{self, ATTEMPT_COLUMNS, DELIVERY_COLUMNS};
use super::Dialect;
use crate::model::{Attempt, Delivery, DeliveryStatus, Millis};
use crate::store::{DeliveryFilter, RequeueSelector, StoreResult};

/// The condition of the `deliveries_tenant_status` index, repeated by queries on the statuses it holds so that
/// both databases use it (SQLite only uses a partial index whose condition appears in the query).
pub(super) const NOT_SUCCEEDED: &str = "status <> 'succeeded'";

/// The state a delivery sent again by hand starts from: due at once (`at` is the time's placeholder), its retry
/// schedule counted from the attempts made so far; `last_error` stays as the record of why it stopped.
fn send_again(at: &str) -> String {
    format!(
        "status = 'pending', next_attempt_at = {at}, schedule_offset = attempts, lease_owner = NULL, \
         lease_expires_at = NULL, updated_at = {at}, \
         plugin_versions = CASE WHEN status = 'dropped' THEN NULL ELSE plugin_versions END"
    )
}

pub(super) async fn get_delivery(pool: &AnyPool, tenant_id: &str, id: &str) -> StoreResult<Option<Delivery>> {
    let row = sqlx::query(&format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(rows::delivery).transpose()
}

pub(super) async fn list_deliveries(
    pool: &AnyPool,
    tenant_id: &str,
    filter: &DeliveryFilter,
    page: &crate::store::Page,
) -> StoreResult<Vec<Delivery>> {
    let mut sql = SqlBuilder::new(format!("SELECT {DELIVERY_COLUMNS} FROM deliveries"));
    sql.compare("tenant_id", "=", tenant_id)
        .compare_if("endpoint_id", "=", filter.endpoint_id.as_deref())
        .compare_if("event_id", "=", filter.event_id.as_deref())
        .compare_if("event_type", "=", filter.event_type.as_deref())
        .compare_if("status", "=", filter.status.map(DeliveryStatus::as_str))
        .compare_if("created_at", ">=", filter.since)
        .compare_if("created_at", "<", filter.until);
    if filter.status.is_some_and(|status| status != DeliveryStatus::Succeeded) {
        sql.condition().push(NOT_SUCCEEDED);
    }
    sql.keyset_page("id", Order::Descending, page);
    rows::all(&sql.query().fetch_all(pool).await?, rows::delivery)
}

pub(super) async fn list_attempts(pool: &AnyPool, tenant_id: &str, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
    let found = sqlx::query(&format!(
        "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE tenant_id = $1 AND delivery_id = $2 ORDER BY attempt_number, id"
    ))
    .bind(tenant_id)
    .bind(delivery_id)
    .fetch_all(pool)
    .await?;
    rows::all(&found, rows::attempt)
}

pub(super) async fn retry_delivery(
    connection: &mut AnyConnection,
    tenant_id: &str,
    id: &str,
    at: Millis,
) -> StoreResult<Option<Delivery>> {
    let row = sqlx::query(&format!(
        "UPDATE deliveries SET {} WHERE tenant_id = $2 AND id = $3 AND status <> 'delivering' \
         RETURNING {DELIVERY_COLUMNS}",
        send_again("$1")
    ))
    .bind(at)
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut *connection)
    .await?;
    row.as_ref().map(rows::delivery).transpose()
}

pub(super) async fn requeue_dead(
    connection: &mut AnyConnection,
    dialect: Dialect,
    tenant_id: &str,
    selector: &RequeueSelector,
    at: Millis,
) -> StoreResult<u64> {
    let requeue = || {
        let mut sql = SqlBuilder::new("UPDATE deliveries SET ");
        let at = sql.bind(at);
        let tenant = sql.bind(tenant_id);
        sql.push(&send_again(&at));
        // A dead letter of a deleted endpoint has nowhere to go: requeued, it would wait forever. The lock keeps
        // the endpoints from being deleted until the requeue commits (and then dead-letters what it requeued).
        sql.condition().push(&format!(
            "tenant_id = {tenant} AND status = 'dead' AND {NOT_SUCCEEDED} \
             AND endpoint_id IN (SELECT id FROM endpoints WHERE tenant_id = {tenant}{})",
            dialect.key_share_clause()
        ));
        sql
    };
    let mut requeued = 0;
    match selector {
        RequeueSelector::Ids(ids) => {
            let mut tx = connection.begin().await?;
            for chunk in ids.chunks(MAX_LIST) {
                let mut sql = requeue();
                sql.in_list("id", chunk);
                requeued += sql.query().execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
        }
        RequeueSelector::Matching { endpoint_id, event_type } => {
            let mut sql = requeue();
            sql.compare_if("endpoint_id", "=", endpoint_id.as_deref()).compare_if(
                "event_type",
                "=",
                event_type.as_deref(),
            );
            requeued = sql.query().execute(&mut *connection).await?.rows_affected();
        }
    }
    Ok(requeued)
}
