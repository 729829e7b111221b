//! A tenant's deliveries and endpoints counted by status, for the operators' overview, and the server's for
//! `/metrics`.

use std::collections::HashMap;

use sqlx::{AnyPool, Row};

use super::deliveries::{IN_FLIGHT, STATUS_INDEXED};
use crate::model::{DeliveryStatus, EndpointStatus};
use crate::store::{ServerCounts, StoreResult, TenantCounts};

/// `succeeded` is left out: it is in no index of its own, and counting it would walk every delivery the tenant has.
fn counted_statuses() -> Vec<DeliveryStatus> {
    DeliveryStatus::ALL.iter().copied().filter(|s| *s != DeliveryStatus::Succeeded).collect()
}

/// One row per status: its name and its count, up to the limit (`$2`) for the tenant (`$1`). Each count reads at
/// most that many entries of an index that holds only its status (`deliveries_leased` for the deliveries in
/// flight), so a dead-letter queue of millions costs no more than one of the limit.
fn counting_deliveries(counted: &[DeliveryStatus]) -> String {
    let selects: Vec<String> = counted
        .iter()
        .map(|status| {
            let condition = match status {
                DeliveryStatus::Delivering => IN_FLIGHT.to_string(),
                other => format!("status = '{}' AND {STATUS_INDEXED}", other.as_str()),
            };
            format!(
                "SELECT '{}' AS status, COUNT(*) AS n FROM \
                 (SELECT 1 FROM deliveries WHERE tenant_id = $1 AND {condition} LIMIT $2) AS capped",
                status.as_str()
            )
        })
        .collect();
    selects.join(" UNION ALL ")
}

pub(super) async fn tenant_counts(pool: &AnyPool, tenant_id: &str, limit: u64) -> StoreResult<TenantCounts> {
    let counted = counted_statuses();
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = sqlx::query(&counting_deliveries(&counted)).bind(tenant_id).bind(limit).fetch_all(pool).await?;
    let mut found = HashMap::new();
    for row in &rows {
        found.insert(row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?);
    }
    let deliveries =
        counted.into_iter().map(|s| (s, found.get(s.as_str()).copied().unwrap_or(0).max(0) as u64)).collect();

    let endpoints = endpoints_by_status(pool, Some(tenant_id)).await?;
    Ok(TenantCounts { deliveries, endpoints })
}

/// Waiting deliveries are read from the index the dispatcher claims from (`deliveries_due`), which holds them and
/// nothing else, up to the limit; endpoints, a small table, are counted whole.
const COUNTING_WAITING: &str = "SELECT COUNT(*) FROM \
    (SELECT 1 FROM deliveries WHERE status IN ('pending', 'failed') LIMIT $1) AS capped";

pub(super) async fn server_counts(pool: &AnyPool, limit: u64) -> StoreResult<ServerCounts> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let waiting: i64 = sqlx::query(COUNTING_WAITING).bind(limit).fetch_one(pool).await?.try_get(0)?;
    let endpoints = endpoints_by_status(pool, None).await?;
    Ok(ServerCounts { waiting_deliveries: waiting.max(0) as u64, endpoints })
}

/// Every endpoint status with its count, of one tenant or of all.
async fn endpoints_by_status(pool: &AnyPool, tenant_id: Option<&str>) -> StoreResult<Vec<(EndpointStatus, u64)>> {
    let rows = match tenant_id {
        Some(tenant_id) => {
            sqlx::query("SELECT status, COUNT(*) FROM endpoints WHERE tenant_id = $1 GROUP BY status")
                .bind(tenant_id)
                .fetch_all(pool)
                .await?
        }
        None => sqlx::query("SELECT status, COUNT(*) FROM endpoints GROUP BY status").fetch_all(pool).await?,
    };
    let mut found = HashMap::new();
    for row in &rows {
        found.insert(row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?);
    }
    Ok(EndpointStatus::ALL.iter().map(|s| (*s, found.get(s.as_str()).copied().unwrap_or(0).max(0) as u64)).collect())
}

#[cfg(test)]
mod tests {
    use super::super::deliveries::tests::{sqlite_plan, walks_too_much};
    use super::super::query::SqlBuilder;
    use super::super::SqlStore;
    use super::*;

    /// The overview is refreshed every few seconds: a count that walked a tenant's whole history instead of the
    /// index of its status would grow with every delivery ever made.
    #[tokio::test]
    async fn each_count_reads_the_index_of_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::connect(&format!("sqlite://{}", dir.path().join("plans.db").display())).await.unwrap();
        let mut sql = SqlBuilder::new(format!("EXPLAIN QUERY PLAN {}", counting_deliveries(&counted_statuses())));
        sql.bind("ten_a");
        sql.bind(10_000_i64);
        let plan = sqlite_plan(&store.reader, &sql).await;
        let by_status = plan.iter().filter(|line| line.contains("deliveries_tenant_status")).count();
        assert_eq!(by_status, 4, "pending, failed, dead and dropped: {plan:?}");
        assert!(plan.iter().any(|line| line.contains("deliveries_leased")), "delivering: {plan:?}");
        assert!(!walks_too_much(&plan), "{plan:?}");

        // The server's waiting deliveries: a walk of the claim index, which holds them alone, never of the table.
        let mut sql = SqlBuilder::new(format!("EXPLAIN QUERY PLAN {COUNTING_WAITING}"));
        sql.bind(1_000_000_i64);
        let plan = sqlite_plan(&store.reader, &sql).await;
        let deliveries: Vec<&String> = plan.iter().filter(|line| line.contains(" deliveries")).collect();
        assert_eq!(deliveries.len(), 1, "{plan:?}");
        assert!(deliveries[0].contains("INDEX deliveries_due"), "{plan:?}");
        store.close().await;
    }
}
