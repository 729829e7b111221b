//! A tenant's deliveries and endpoints counted by status, for the operators' overview.

use std::collections::HashMap;

use sqlx::{AnyPool, Row};

use super::deliveries::{IN_FLIGHT, STATUS_INDEXED};
use crate::model::{DeliveryStatus, EndpointStatus};
use crate::store::{StoreResult, TenantCounts};

pub(super) async fn tenant_counts(pool: &AnyPool, tenant_id: &str, limit: u64) -> StoreResult<TenantCounts> {
    // Each count reads at most `limit` entries of an index that holds only its status (`deliveries_leased` for
    // the deliveries in flight), so a dead-letter queue of millions costs no more than one of `limit`.
    // `succeeded` is left out: it is in no such index, and counting it would walk every delivery the tenant has.
    let counted: Vec<DeliveryStatus> =
        DeliveryStatus::ALL.iter().copied().filter(|s| *s != DeliveryStatus::Succeeded).collect();
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
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = sqlx::query(&selects.join(" UNION ALL ")).bind(tenant_id).bind(limit).fetch_all(pool).await?;
    let mut found = HashMap::new();
    for row in &rows {
        found.insert(row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?);
    }
    let deliveries =
        counted.into_iter().map(|s| (s, found.get(s.as_str()).copied().unwrap_or(0).max(0) as u64)).collect();

    let rows = sqlx::query("SELECT status, COUNT(*) FROM endpoints WHERE tenant_id = $1 GROUP BY status")
        .bind(tenant_id)
        .fetch_all(pool)
        .await?;
    let mut found = HashMap::new();
    for row in &rows {
        found.insert(row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?);
    }
    let endpoints =
        EndpointStatus::ALL.iter().map(|s| (*s, found.get(s.as_str()).copied().unwrap_or(0).max(0) as u64)).collect();
    Ok(TenantCounts { deliveries, endpoints })
}
