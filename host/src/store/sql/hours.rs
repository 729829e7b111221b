//! Each endpoint's attempt counts by the hour (`endpoint_hours`), and their sums by tenant (`tenant_hours`): what
//! the success rate over the last day is read from.

use std::collections::BTreeMap;
use std::ops::Range;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Connection, Row};

use super::dialect::Column;
use super::query::{json_rows, SqlBuilder, MAX_LIST};
use super::Dialect;
use crate::model::Millis;
use crate::store::{AttemptCounts, EndpointHour, StoreResult};

const HOUR_ROWS: &[(&str, Column)] = &[
    ("tenant_id", Column::Text),
    ("endpoint_id", Column::Text),
    ("hour_start", Column::Int),
    ("attempts", Column::Int),
    ("failed_attempts", Column::Int),
    ("succeeded", Column::Int),
    ("dead", Column::Int),
    ("attempt_ms", Column::Int),
    ("timed_attempts", Column::Int),
];

const COUNTS: [&str; 6] = ["attempts", "failed_attempts", "succeeded", "dead", "attempt_ms", "timed_attempts"];

pub(super) async fn add_endpoint_hours(
    connection: &mut AnyConnection,
    dialect: Dialect,
    hours: &[EndpointHour],
) -> StoreResult<()> {
    if hours.is_empty() {
        return Ok(());
    }
    // Rows in key order, endpoints' before tenants': two nodes adding to the same hours on PostgreSQL lock them in
    // the same order, so they wait for each other instead of deadlocking.
    let mut by_endpoint: Vec<&EndpointHour> = hours.iter().collect();
    by_endpoint.sort_by(|a, b| {
        (&a.tenant_id, &a.endpoint_id, a.hour_start).cmp(&(&b.tenant_id, &b.endpoint_id, b.hour_start))
    });
    let mut by_tenant: BTreeMap<(&str, Millis), AttemptCounts> = BTreeMap::new();
    for hour in hours {
        by_tenant.entry((hour.tenant_id.as_str(), hour.hour_start)).or_default().add(hour.counts);
    }
    let by_tenant: Vec<EndpointHour> = by_tenant
        .into_iter()
        .map(|((tenant_id, hour_start), counts)| EndpointHour {
            tenant_id: tenant_id.into(),
            endpoint_id: String::new(),
            hour_start,
            counts,
        })
        .collect();
    let mut tx = connection.begin().await?;
    add_to(&mut tx, dialect, "endpoint_hours", "tenant_id, endpoint_id, hour_start", &by_endpoint).await?;
    add_to(&mut tx, dialect, "tenant_hours", "tenant_id, hour_start", &by_tenant.iter().collect::<Vec<_>>()).await?;
    tx.commit().await?;
    Ok(())
}

/// Adds each row's counts to `table`'s row of the same `key` (columns of [`HOUR_ROWS`]).
async fn add_to(
    tx: &mut AnyConnection,
    dialect: Dialect,
    table: &str,
    key: &str,
    hours: &[&EndpointHour],
) -> StoreResult<()> {
    let added: Vec<String> = COUNTS.iter().map(|c| format!("{c} = {table}.{c} + excluded.{c}")).collect();
    // `WHERE true` tells SQLite's parser that ON CONFLICT is an upsert here, not a join constraint.
    let sql = format!(
        "INSERT INTO {table} ({key}, {counts}) SELECT {key}, {counts} FROM ({rows}) AS v WHERE true \
         ON CONFLICT ({key}) DO UPDATE SET {added}",
        counts = COUNTS.join(", "),
        rows = dialect.json_rows("$1", HOUR_ROWS),
        added = added.join(", "),
    );
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    for chunk in hours.chunks(MAX_LIST) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|h| {
                let c = h.counts;
                let counts =
                    [c.attempts, c.failed_attempts, c.succeeded, c.dead, c.attempt_ms, c.timed_attempts].map(count);
                let [attempts, failed, succeeded, dead, attempt_ms, timed] = counts;
                (&h.tenant_id, &h.endpoint_id, h.hour_start, attempts, failed, succeeded, dead, attempt_ms, timed)
            })
            .collect();
        sqlx::query(&sql).bind(json_rows(&rows)?).execute(&mut *tx).await?;
    }
    Ok(())
}

pub(super) async fn tenant_hours(
    pool: &AnyPool,
    tenant_id: &str,
    endpoint_id: Option<&str>,
    since: Millis,
) -> StoreResult<Vec<(Millis, AttemptCounts)>> {
    // One row per hour either way: the tenant's totals are kept beside its endpoints' hours.
    let table = if endpoint_id.is_some() { "endpoint_hours" } else { "tenant_hours" };
    let mut sql = SqlBuilder::new(format!("SELECT hour_start, {} FROM {table}", COUNTS.join(", ")));
    sql.compare("tenant_id", "=", tenant_id);
    if let Some(endpoint_id) = endpoint_id {
        sql.compare("endpoint_id", "=", endpoint_id);
    }
    sql.compare("hour_start", ">=", since);
    sql.push(" ORDER BY hour_start");
    let rows = sql.query().fetch_all(pool).await?;
    rows.iter().map(|row| Ok((row.try_get::<i64, _>(0)?, counts_from(row)?))).collect()
}

pub(super) async fn endpoint_totals(
    pool: &AnyPool,
    tenant_id: &str,
    endpoint_ids: &[String],
    hours: Range<Millis>,
) -> StoreResult<Vec<(String, AttemptCounts)>> {
    // PostgreSQL sums BIGINTs as NUMERIC, which the `Any` driver cannot read.
    let sums: Vec<String> = COUNTS.iter().map(|c| format!("CAST(SUM({c}) AS BIGINT)")).collect();
    let mut totals = Vec::with_capacity(endpoint_ids.len());
    for chunk in endpoint_ids.chunks(MAX_LIST) {
        let mut sql = SqlBuilder::new(format!("SELECT endpoint_id, {} FROM endpoint_hours", sums.join(", ")));
        sql.compare("tenant_id", "=", tenant_id)
            .in_list("endpoint_id", chunk)
            .compare("hour_start", ">=", hours.start)
            .compare("hour_start", "<", hours.end);
        sql.push(" GROUP BY endpoint_id");
        for row in sql.query().fetch_all(pool).await? {
            totals.push((row.try_get::<String, _>(0)?, counts_from(&row)?));
        }
    }
    Ok(totals)
}

/// The counts in columns 1 to 6 of `row`, in [`COUNTS`] order.
fn counts_from(row: &AnyRow) -> StoreResult<AttemptCounts> {
    let count = |i: usize| -> StoreResult<u64> { Ok(row.try_get::<i64, _>(i)?.max(0) as u64) };
    Ok(AttemptCounts {
        attempts: count(1)?,
        failed_attempts: count(2)?,
        succeeded: count(3)?,
        dead: count(4)?,
        attempt_ms: count(5)?,
        timed_attempts: count(6)?,
    })
}

pub(super) async fn prune_endpoint_hours(connection: &mut AnyConnection, before: Millis) -> StoreResult<u64> {
    let mut tx = connection.begin().await?;
    let mut pruned = 0;
    for table in ["endpoint_hours", "tenant_hours"] {
        let sql = format!("DELETE FROM {table} WHERE hour_start < $1");
        pruned += sqlx::query(&sql).bind(before).execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(pruned)
}
