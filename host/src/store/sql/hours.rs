//! Each endpoint's attempt counts by the hour (`endpoint_hours`), and their sums by tenant (`tenant_hours`): what
//! the success rate over the last day is read from. Beside them, what each tenant published of each event type by
//! the hour (`event_type_hours`).

use std::collections::BTreeMap;
use std::ops::Range;

use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Connection, Row};

use super::dialect::Column;
use super::query::{json_rows, SqlBuilder, MAX_LIST};
use super::Dialect;
use crate::model::Millis;
use crate::store::{AttemptCounts, EndpointHour, EventTypeHour, PublishedCounts, StoreResult};

/// A table of counts by the hour: rows of its `key` columns, whose `counts` a flush adds to.
struct CountTable {
    name: &'static str,
    key: &'static [(&'static str, Column)],
    counts: &'static [&'static str],
}

const COUNTS: &[&str] = &[
    "attempts",
    "failed_attempts",
    "succeeded",
    "dead",
    "attempt_ms",
    "timed_attempts",
    "retried",
    "counted_finishes",
];

const ENDPOINT_HOURS: CountTable = CountTable {
    name: "endpoint_hours",
    key: &[("tenant_id", Column::Text), ("endpoint_id", Column::Text), ("hour_start", Column::Int)],
    counts: COUNTS,
};

const TENANT_HOURS: CountTable = CountTable {
    name: "tenant_hours",
    key: &[("tenant_id", Column::Text), ("hour_start", Column::Int)],
    counts: COUNTS,
};

const EVENT_TYPE_HOURS: CountTable = CountTable {
    name: "event_type_hours",
    key: &[("tenant_id", Column::Text), ("event_type", Column::Text), ("hour_start", Column::Int)],
    counts: &["events", "deliveries"],
};

/// Every table of hours, as old hours are removed from them.
const HOUR_TABLES: [&CountTable; 3] = [&ENDPOINT_HOURS, &TENANT_HOURS, &EVENT_TYPE_HOURS];

fn attempt_counts(counts: AttemptCounts) -> [u64; 8] {
    let c = counts;
    [c.attempts, c.failed_attempts, c.succeeded, c.dead, c.attempt_ms, c.timed_attempts, c.retried, c.counted_finishes]
}

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
    let endpoint_rows = by_endpoint
        .iter()
        .map(|h| row([json!(h.tenant_id), json!(h.endpoint_id), json!(h.hour_start)], attempt_counts(h.counts)));
    let tenant_rows = by_tenant
        .into_iter()
        .map(|((tenant_id, hour_start), counts)| row([json!(tenant_id), json!(hour_start)], attempt_counts(counts)));
    let mut tx = connection.begin().await?;
    add_to(&mut tx, dialect, &ENDPOINT_HOURS, endpoint_rows.collect()).await?;
    add_to(&mut tx, dialect, &TENANT_HOURS, tenant_rows.collect()).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn add_event_type_hours(
    connection: &mut AnyConnection,
    dialect: Dialect,
    hours: &[EventTypeHour],
) -> StoreResult<()> {
    if hours.is_empty() {
        return Ok(());
    }
    // In key order, as `add_endpoint_hours` does, so that nodes adding together do not deadlock.
    let mut sorted: Vec<&EventTypeHour> = hours.iter().collect();
    sorted
        .sort_by(|a, b| (&a.tenant_id, &a.event_type, a.hour_start).cmp(&(&b.tenant_id, &b.event_type, b.hour_start)));
    let rows = sorted.iter().map(|h| {
        row([json!(h.tenant_id), json!(h.event_type), json!(h.hour_start)], [h.counts.events, h.counts.deliveries])
    });
    let mut tx = connection.begin().await?;
    add_to(&mut tx, dialect, &EVENT_TYPE_HOURS, rows.collect()).await?;
    tx.commit().await?;
    Ok(())
}

/// One row of JSON values, flat, as [`Dialect::json_rows`] reads them by position: the key's, then the counts.
fn row<const K: usize, const C: usize>(key: [Value; K], counts: [u64; C]) -> Vec<Value> {
    let count = |n: u64| json!(i64::try_from(n).unwrap_or(i64::MAX));
    key.into_iter().chain(counts.map(count)).collect()
}

/// Adds each row's counts to `table`'s row of the same key.
async fn add_to(
    tx: &mut AnyConnection,
    dialect: Dialect,
    table: &CountTable,
    rows: Vec<Vec<Value>>,
) -> StoreResult<()> {
    let name = table.name;
    let key: Vec<&str> = table.key.iter().map(|(column, _)| *column).collect();
    let columns: Vec<(&str, Column)> =
        table.key.iter().copied().chain(table.counts.iter().map(|count| (*count, Column::Int))).collect();
    let names: Vec<&str> = columns.iter().map(|(column, _)| *column).collect();
    let added: Vec<String> = table.counts.iter().map(|c| format!("{c} = {name}.{c} + excluded.{c}")).collect();
    // `WHERE true` tells SQLite's parser that ON CONFLICT is an upsert here, not a join constraint.
    let sql = format!(
        "INSERT INTO {name} ({names}) SELECT {names} FROM ({rows}) AS v WHERE true \
         ON CONFLICT ({key}) DO UPDATE SET {added}",
        names = names.join(", "),
        rows = dialect.json_rows("$1", &columns),
        key = key.join(", "),
        added = added.join(", "),
    );
    for chunk in rows.chunks(MAX_LIST) {
        sqlx::query(&sql).bind(json_rows(chunk)?).execute(&mut *tx).await?;
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

/// The counts in columns 1 to 8 of `row`, in [`COUNTS`] order.
fn counts_from(row: &AnyRow) -> StoreResult<AttemptCounts> {
    let count = |i: usize| -> StoreResult<u64> { Ok(row.try_get::<i64, _>(i)?.max(0) as u64) };
    Ok(AttemptCounts {
        attempts: count(1)?,
        failed_attempts: count(2)?,
        succeeded: count(3)?,
        dead: count(4)?,
        attempt_ms: count(5)?,
        timed_attempts: count(6)?,
        retried: count(7)?,
        counted_finishes: count(8)?,
    })
}

pub(super) async fn event_type_totals(
    pool: &AnyPool,
    tenant_id: &str,
    hours: Range<Millis>,
) -> StoreResult<Vec<(String, PublishedCounts)>> {
    // Summed in one pass: a tenant has a few dozen types, and the dashboard wants their total as well as the top.
    let mut sql = SqlBuilder::new(
        "SELECT event_type, CAST(SUM(events) AS BIGINT), CAST(SUM(deliveries) AS BIGINT) FROM event_type_hours",
    );
    sql.compare("tenant_id", "=", tenant_id).compare("hour_start", ">=", hours.start).compare(
        "hour_start",
        "<",
        hours.end,
    );
    sql.push(" GROUP BY event_type");
    let count = |row: &AnyRow, i: usize| -> StoreResult<u64> { Ok(row.try_get::<i64, _>(i)?.max(0) as u64) };
    let rows = sql.query().fetch_all(pool).await?;
    rows.iter()
        .map(|row| {
            let counts = PublishedCounts { events: count(row, 1)?, deliveries: count(row, 2)? };
            Ok((row.try_get::<String, _>(0)?, counts))
        })
        .collect()
}

pub(super) async fn prune_hours(connection: &mut AnyConnection, before: Millis) -> StoreResult<u64> {
    let mut tx = connection.begin().await?;
    let mut pruned = 0;
    for table in HOUR_TABLES {
        let sql = format!("DELETE FROM {} WHERE hour_start < $1", table.name);
        pruned += sqlx::query(&sql).bind(before).execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(pruned)
}
