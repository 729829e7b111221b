//! Each endpoint's attempt counts by the hour (`endpoint_hours`), what the success rate over the last day is read
//! from.

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
];

const COUNTS: [&str; 4] = ["attempts", "failed_attempts", "succeeded", "dead"];

pub(super) async fn add_endpoint_hours(
    connection: &mut AnyConnection,
    dialect: Dialect,
    hours: &[EndpointHour],
) -> StoreResult<()> {
    if hours.is_empty() {
        return Ok(());
    }
    // Rows in key order: two nodes adding to the same hours on PostgreSQL lock them in the same order, so they
    // wait for each other instead of deadlocking.
    let mut hours: Vec<&EndpointHour> = hours.iter().collect();
    hours.sort_by(|a, b| {
        (&a.tenant_id, &a.endpoint_id, a.hour_start).cmp(&(&b.tenant_id, &b.endpoint_id, b.hour_start))
    });
    let added: Vec<String> = COUNTS.iter().map(|c| format!("{c} = endpoint_hours.{c} + excluded.{c}")).collect();
    // `WHERE true` tells SQLite's parser that ON CONFLICT is an upsert here, not a join constraint.
    let sql = format!(
        "INSERT INTO endpoint_hours (tenant_id, endpoint_id, hour_start, {counts}) \
         SELECT tenant_id, endpoint_id, hour_start, {counts} FROM ({rows}) AS v WHERE true \
         ON CONFLICT (tenant_id, endpoint_id, hour_start) DO UPDATE SET {added}",
        counts = COUNTS.join(", "),
        rows = dialect.json_rows("$1", HOUR_ROWS),
        added = added.join(", "),
    );
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut tx = connection.begin().await?;
    for chunk in hours.chunks(MAX_LIST) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|h| {
                let c = h.counts;
                (
                    &h.tenant_id,
                    &h.endpoint_id,
                    h.hour_start,
                    count(c.attempts),
                    count(c.failed_attempts),
                    count(c.succeeded),
                    count(c.dead),
                )
            })
            .collect();
        sqlx::query(&sql).bind(json_rows(&rows)?).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn tenant_hours(
    pool: &AnyPool,
    tenant_id: &str,
    endpoint_id: Option<&str>,
    since: Millis,
) -> StoreResult<Vec<(Millis, AttemptCounts)>> {
    // PostgreSQL sums BIGINTs as NUMERIC, which the `Any` driver cannot read.
    let sums: Vec<String> = COUNTS.iter().map(|c| format!("CAST(SUM({c}) AS BIGINT)")).collect();
    let mut sql = SqlBuilder::new(format!("SELECT hour_start, {} FROM endpoint_hours", sums.join(", ")));
    sql.compare("tenant_id", "=", tenant_id);
    if let Some(endpoint_id) = endpoint_id {
        sql.compare("endpoint_id", "=", endpoint_id);
    }
    sql.compare("hour_start", ">=", since);
    sql.push(" GROUP BY hour_start ORDER BY hour_start");
    let rows = sql.query().fetch_all(pool).await?;
    let count = |row: &sqlx::any::AnyRow, i: usize| -> StoreResult<u64> { Ok(row.try_get::<i64, _>(i)?.max(0) as u64) };
    rows.iter()
        .map(|row| {
            let counts = AttemptCounts {
                attempts: count(row, 1)?,
                failed_attempts: count(row, 2)?,
                succeeded: count(row, 3)?,
                dead: count(row, 4)?,
            };
            Ok((row.try_get::<i64, _>(0)?, counts))
        })
        .collect()
}

pub(super) async fn prune_endpoint_hours(connection: &mut AnyConnection, before: Millis) -> StoreResult<u64> {
    let pruned =
        sqlx::query("DELETE FROM endpoint_hours WHERE hour_start < $1").bind(before).execute(connection).await?;
    Ok(pruned.rows_affected())
}
