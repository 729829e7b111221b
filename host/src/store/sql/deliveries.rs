//! Reading deliveries and their attempts, and sending them again by hand (retry, dead-letter requeue).

use sqlx::{AnyConnection, AnyPool, Connection, Row};

use super::query::{Order, SqlBuilder, MAX_LIST};
use super::rows::{self, ATTEMPT_COLUMNS, DELIVERY_COLUMNS, LISTED_DELIVERY_COLUMNS};
use super::timed_ids::TimedIds;
use super::Dialect;
use crate::model::{new_id_at, Attempt, Delivery, DeliveryStatus, Millis};
use crate::store::{DeadAttempt, DeliveryFilter, Page, Resend, SentTo, StoreResult};

/// The condition of the `deliveries_tenant_status` index, repeated by queries on the statuses it holds so that
/// both databases use it (SQLite only uses a partial index whose condition appears in the query).
pub(super) const STATUS_INDEXED: &str = "status NOT IN ('succeeded', 'delivering')";

/// Deliveries in flight, found through `deliveries_leased`, which holds only them: about twice the nodes'
/// dispatch concurrency at most. Written as a subquery because, given `tenant_id = …` beside it, SQLite would
/// rather walk the tenant's every delivery in `deliveries_tenant` than the partial index.
pub(super) const IN_FLIGHT: &str = "id IN (SELECT id FROM deliveries WHERE status = 'delivering')";

/// The state a delivery sent again by hand starts from: due at once (`at` is the time's placeholder), its retry
/// schedule counted from the attempts made so far; `last_error` stays as the record of why it stopped. Without
/// plugin versions its next attempt runs the filter and transform again: always for a dropped delivery (nothing
/// was prepared), and for any with [`Resend::RerunPlugins`].
fn send_again(at: &str, resend: Resend) -> String {
    let prepared = match resend {
        Resend::SameRequest => "plugin_versions = CASE WHEN status = 'dropped' THEN NULL ELSE plugin_versions END",
        Resend::RerunPlugins => "plugin_versions = NULL, request_body = NULL, request_meta = NULL",
    };
    format!(
        "status = 'pending', next_attempt_at = {at}, schedule_offset = attempts, lease_owner = NULL, \
         lease_expires_at = NULL, updated_at = {at}, {prepared}"
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
    ids: TimedIds,
    page: &crate::store::Page,
) -> StoreResult<Vec<Delivery>> {
    let sql = listing(&format!("SELECT {LISTED_DELIVERY_COLUMNS} FROM deliveries"), tenant_id, filter, ids, page);
    rows::all(&sql.query().fetch_all(pool).await?, rows::delivery)
}

fn listing(
    select: &str,
    tenant_id: &str,
    filter: &DeliveryFilter,
    ids: TimedIds,
    page: &crate::store::Page,
) -> SqlBuilder {
    let mut sql = SqlBuilder::new(select);
    sql.compare("tenant_id", "=", tenant_id)
        .compare_if("endpoint_id", "=", filter.endpoint_id.as_deref())
        .compare_if("event_id", "=", filter.event_id.as_deref())
        .compare_if("event_type", "=", filter.event_type.as_deref())
        .compare_if("status", "=", filter.status.map(DeliveryStatus::as_str))
        .compare_if("created_at", ">=", filter.since)
        .compare_if("created_at", "<", filter.until)
        .compare_if("updated_at", ">=", filter.updated_since)
        .compare_if("updated_at", "<", filter.updated_until);
    match filter.status {
        None | Some(DeliveryStatus::Succeeded) => {}
        Some(DeliveryStatus::Delivering) => {
            sql.condition().push(IN_FLIGHT);
        }
        Some(_) => {
            sql.condition().push(STATUS_INDEXED);
        }
    }
    // A delivery is updated at or after its creation, so one updated before `updated_until` was created before it.
    let created_before = [filter.until, filter.updated_until].into_iter().flatten().min();
    sql.keyset_page_within("id", Order::Descending, page, &ids.range("dlv", filter.since, created_before));
    sql
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

/// The condition of the `attempts_dead` index, which the query repeats so that SQLite uses it.
const DEAD_ATTEMPT: &str = "outcome IN ('dead', 'gone')";

pub(super) async fn dead_attempts_after(pool: &AnyPool, page: &Page) -> StoreResult<Vec<DeadAttempt>> {
    // Walks `attempts_dead` from the cursor: only the attempts that dead-lettered, whatever else was attempted.
    let columns: Vec<String> = ATTEMPT_COLUMNS.split(", ").map(|column| format!("a.{column}")).collect();
    let found = sqlx::query(&format!(
        "SELECT {}, d.event_id, d.event_type, d.endpoint_id FROM attempts a JOIN deliveries d ON d.id = a.delivery_id \
         WHERE a.{DEAD_ATTEMPT} AND a.id > $1 ORDER BY a.id LIMIT $2",
        columns.join(", ")
    ))
    .bind(page.cursor.as_deref().unwrap_or_default())
    .bind(page.limit)
    .fetch_all(pool)
    .await?;
    rows::all(&found, |row| {
        Ok(DeadAttempt {
            attempt: rows::attempt(row)?,
            event_id: row.try_get("event_id")?,
            event_type: row.try_get("event_type")?,
            endpoint_id: row.try_get("endpoint_id")?,
        })
    })
}

pub(super) async fn retry_delivery(
    connection: &mut AnyConnection,
    dialect: Dialect,
    tenant_id: &str,
    id: &str,
    at: Millis,
    resend: Resend,
) -> StoreResult<Option<Delivery>> {
    // As in `requeue_dead`: only while the endpoint exists, locked against a delete until this commits (which then
    // dead-letters the delivery again), so a retry racing a delete cannot leave a delivery pending forever.
    let row = sqlx::query(&format!(
        "UPDATE deliveries SET {} WHERE tenant_id = $2 AND id = $3 AND status <> 'delivering' \
         AND endpoint_id IN (SELECT id FROM endpoints WHERE tenant_id = $2{}) \
         RETURNING {DELIVERY_COLUMNS}",
        send_again("$1", resend),
        dialect.key_share_clause()
    ))
    .bind(at)
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut *connection)
    .await?;
    row.as_ref().map(rows::delivery).transpose()
}

/// Locks an endpoint that deliveries are about to be created for, until the transaction commits: a delete of
/// the endpoint waits (and then dead-letters them with the rest), and a second send of the same events to it
/// waits, then finds them. Publishes, which only share the row, go on. False if the tenant has no such endpoint.
async fn lock_to_send(
    connection: &mut AnyConnection,
    dialect: Dialect,
    tenant_id: &str,
    endpoint_id: &str,
) -> StoreResult<bool> {
    let endpoint =
        sqlx::query(&format!("SELECT id FROM endpoints WHERE tenant_id = $1 AND id = $2{}", dialect.row_lock_clause()))
            .bind(tenant_id)
            .bind(endpoint_id)
            .fetch_optional(&mut *connection)
            .await?;
    Ok(endpoint.is_some())
}

pub(super) async fn send_event_to(
    connection: &mut AnyConnection,
    dialect: Dialect,
    tenant_id: &str,
    event_id: &str,
    endpoint_id: &str,
    delivery_id: &str,
    at: Millis,
) -> StoreResult<SentTo> {
    let mut tx = connection.begin().await?;
    let sent = async {
        if !lock_to_send(&mut tx, dialect, tenant_id, endpoint_id).await? {
            return Ok(SentTo::NoEndpoint);
        }
        let existing = sqlx::query(
            "SELECT id FROM deliveries WHERE tenant_id = $1 AND event_id = $2 AND endpoint_id = $3 LIMIT 1",
        )
        .bind(tenant_id)
        .bind(event_id)
        .bind(endpoint_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            return Ok(SentTo::Exists(row.try_get(0)?));
        }
        let created = sqlx::query(&format!(
            "INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type, status, attempts, \
             schedule_offset, next_attempt_at, created_at, updated_at) \
             SELECT $1, tenant_id, id, $4, event_type, 'pending', 0, 0, $5, $5, $5 FROM events \
             WHERE tenant_id = $2 AND id = $3 \
             RETURNING {DELIVERY_COLUMNS}"
        ))
        .bind(delivery_id)
        .bind(tenant_id)
        .bind(event_id)
        .bind(endpoint_id)
        .bind(at)
        .fetch_optional(&mut *tx)
        .await?;
        match created {
            Some(row) => Ok(SentTo::Created(Box::new(rows::delivery(&row)?))),
            None => Ok(SentTo::NoEvent),
        }
    }
    .await;
    match sent {
        Ok(SentTo::Created(delivery)) => {
            tx.commit().await?;
            Ok(SentTo::Created(delivery))
        }
        other => {
            tx.rollback().await?;
            other
        }
    }
}

/// A delivery of event `$3` to endpoint `$4`, unless it has one. Asked as "is `$4` among the endpoints of the event's
/// deliveries" rather than "is there a delivery of this event and this endpoint" because the second lets PostgreSQL,
/// on tables it has no statistics for yet (after a bulk load, or with autovacuum off), intersect the event's index
/// entries with all of the endpoint's: a replay into an endpoint with a long history then took seconds per event.
/// Only the event's few deliveries can answer the first.
pub(super) const SEND_EVENT_TO: &str = "INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type, \
    status, attempts, schedule_offset, next_attempt_at, created_at, updated_at) \
    SELECT $1, tenant_id, id, $4, event_type, 'pending', 0, 0, $5, $5, $5 FROM events \
    WHERE tenant_id = $2 AND id = $3 AND $4 NOT IN (SELECT d.endpoint_id FROM deliveries AS d WHERE d.event_id = $3)";

pub(super) async fn send_events_to(
    connection: &mut AnyConnection,
    dialect: Dialect,
    tenant_id: &str,
    endpoint_id: &str,
    event_ids: &[String],
    at: Millis,
) -> StoreResult<Option<u64>> {
    let mut tx = connection.begin().await?;
    if !lock_to_send(&mut tx, dialect, tenant_id, endpoint_id).await? {
        tx.rollback().await?;
        return Ok(None);
    }
    let mut created = 0;
    for event_id in event_ids {
        let inserted = sqlx::query(SEND_EVENT_TO)
            .bind(new_id_at("dlv", at))
            .bind(tenant_id)
            .bind(event_id)
            .bind(endpoint_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        created += inserted.rows_affected();
    }
    tx.commit().await?;
    Ok(Some(created))
}

/// Requeues the dead letters among `ids` (at most a few thousand: one transaction).
pub(super) async fn requeue_dead(
    connection: &mut AnyConnection,
    dialect: Dialect,
    tenant_id: &str,
    ids: &[String],
    at: Millis,
    resend: Resend,
) -> StoreResult<u64> {
    let requeue = |chunk: &[String]| {
        let mut sql = SqlBuilder::new("UPDATE deliveries SET ");
        let at = sql.bind(at);
        let tenant = sql.bind(tenant_id);
        sql.push(&send_again(&at, resend));
        sql.push(" WHERE id IN (SELECT id FROM deliveries");
        // A dead letter of a deleted endpoint has nowhere to go: requeued, it would wait forever. The lock keeps
        // the endpoints from being deleted until the requeue commits (and then dead-letters what it requeued).
        sql.condition().push(&format!(
            "tenant_id = {tenant} AND status = 'dead' AND {STATUS_INDEXED} \
             AND endpoint_id IN (SELECT id FROM endpoints WHERE tenant_id = {tenant}{})",
            dialect.key_share_clause()
        ));
        sql.in_list("id", chunk);
        // Rows another transaction is changing are left to it: another requeue of the same dead letters, or an
        // attempt being recorded (not dead yet). Waiting for them, in an order of the plan's, deadlocked with
        // both on PostgreSQL.
        sql.push(&format!("{})", dialect.skip_locked_clause()));
        sql
    };
    let mut requeued = 0;
    let mut tx = connection.begin().await?;
    for chunk in ids.chunks(MAX_LIST) {
        requeued += requeue(chunk).query().execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(requeued)
}

/// Ids of up to `page.limit` dead letters `filter` selects, after `page.cursor`: what a requeue by filter
/// takes one chunk at a time.
pub(super) async fn dead_letter_ids(
    pool: &AnyPool,
    tenant_id: &str,
    filter: &DeliveryFilter,
    ids: TimedIds,
    page: &crate::store::Page,
) -> StoreResult<Vec<String>> {
    let filter = DeliveryFilter { status: Some(DeliveryStatus::Dead), ..filter.clone() };
    let sql = listing("SELECT id FROM deliveries", tenant_id, &filter, ids, page);
    let found = sql.query().fetch_all(pool).await?;
    Ok(found.iter().map(|row| row.try_get::<String, _>(0)).collect::<Result<_, _>>()?)
}

#[cfg(test)]
pub(super) mod tests {
    use sqlx::Row;

    use super::super::endpoints::dead_letter_unfinished;
    use super::super::SqlStore;
    use super::*;
    use crate::store::Page;

    pub(in crate::store::sql) async fn sqlite_plan(pool: &AnyPool, sql: &SqlBuilder) -> Vec<String> {
        let rows = sql.query().fetch_all(pool).await.unwrap();
        rows.iter().map(|row| row.try_get::<String, _>(3).unwrap()).collect()
    }

    /// A plan that reads every delivery of the table, the tenant or the endpoint (back to the page's cursor) to
    /// find a few.
    pub(in crate::store::sql) fn walks_too_much(plan: &[String]) -> bool {
        plan.iter().any(|line| {
            (line.starts_with("SCAN deliveries") && !line.contains("deliveries_leased"))
                || ["tenant_id", "endpoint_id"].iter().any(|column| {
                    line.ends_with(&format!("({column}=?)")) || line.ends_with(&format!("({column}=? AND id<?)"))
                })
        })
    }

    /// SQLite takes a partial index only where the query repeats its condition, and without statistics it would
    /// rather walk all of a tenant's deliveries in `deliveries_tenant` than a partial index. A query on the
    /// unfinished deliveries in the wrong shape would read a tenant's whole history to find a handful.
    #[tokio::test]
    async fn unfinished_deliveries_are_found_through_the_indexes_that_hold_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::connect(&format!("sqlite://{}", dir.path().join("plans.db").display())).await.unwrap();
        let page = Page { cursor: Some("dlv_z".into()), limit: 50 };
        for status in DeliveryStatus::ALL.iter().copied().filter(|s| *s != DeliveryStatus::Succeeded) {
            let index =
                if status == DeliveryStatus::Delivering { "deliveries_leased" } else { "deliveries_tenant_status" };
            for endpoint_id in [None, Some("ep_a".to_string())] {
                let filter = DeliveryFilter { status: Some(status), endpoint_id, ..Default::default() };
                let sql =
                    listing("EXPLAIN QUERY PLAN SELECT id FROM deliveries", "ten_a", &filter, TimedIds::Timed, &page);
                let plan = sqlite_plan(&store.reader, &sql).await;
                let by_endpoint = filter.endpoint_id.is_some();
                assert!(
                    plan.iter().any(|line| line.contains(index)),
                    "{status:?} (by endpoint: {by_endpoint}): {plan:?}"
                );
                assert!(!walks_too_much(&plan), "{status:?} (by endpoint: {by_endpoint}): {plan:?}");
            }
        }

        let [waiting, in_flight] = dead_letter_unfinished();
        for (statement, index) in [(waiting, "deliveries_tenant_status"), (in_flight, "deliveries_leased")] {
            let mut sql = SqlBuilder::new(format!("EXPLAIN QUERY PLAN {statement}"));
            for value in ["ten_a", "ep_a"] {
                sql.bind(value);
            }
            sql.bind(1_i64);
            let plan = sqlite_plan(&store.reader, &sql).await;
            assert!(plan.iter().any(|line| line.contains(index)), "{statement}: {plan:?}");
            assert!(!walks_too_much(&plan), "{statement}: {plan:?}");
        }
        store.close().await;
    }

    /// A window of creation times (or of last changes, which come after creation) is sought as a range of ids in
    /// the index the rest of the filter picks, instead of walked from the newest delivery down to its end: the
    /// last page of a listing, and every requeue by filter, read to the window's end.
    #[tokio::test]
    async fn a_time_window_is_a_range_of_delivery_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::connect(&format!("sqlite://{}", dir.path().join("plans.db").display())).await.unwrap();
        assert_eq!(store.delivery_ids, TimedIds::Timed, "a new database");
        let (since, until) = (Some(1_700_000_000_000), Some(1_700_003_600_000));
        let page = Page { cursor: Some("dlv_z".into()), limit: 50 };
        // Dead letters through the status index: a window of a busy tenant's deliveries holds mostly delivered ones.
        let windows = [
            (
                DeliveryFilter { since, until, ..Default::default() },
                "deliveries_tenant (tenant_id=? AND id>? AND id<?)",
            ),
            (
                DeliveryFilter {
                    since,
                    updated_until: until,
                    status: Some(DeliveryStatus::Dead),
                    ..Default::default()
                },
                "deliveries_tenant_status (tenant_id=? AND status=? AND id>? AND id<?)",
            ),
            (
                DeliveryFilter { since, until, endpoint_id: Some("ep_a".into()), ..Default::default() },
                "(endpoint_id=? AND id>? AND id<?)",
            ),
        ];
        for (filter, seek) in windows {
            let sql = listing("SELECT id FROM deliveries", "ten_a", &filter, store.delivery_ids, &page);
            let plan = sqlite_plan(&store.reader, &sql.explained()).await;
            assert!(plan.iter().any(|line| line.ends_with(seek)), "{filter:?}: {plan:?}");
            assert!(!walks_too_much(&plan), "{filter:?}: {plan:?}");
        }

        // A database with a delivery id of the old format keeps finding windows by creation time alone.
        sqlx::query(
            "INSERT INTO tenants (id, name, created_at) VALUES ('ten_a', 'a', 0); \
             INSERT INTO events (id, tenant_id, event_type, data, received_at, deliveries) \
             VALUES ('evt_a', 'ten_a', 'a.b', '{}', 0, 1); \
             INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type, status, attempts, \
             schedule_offset, next_attempt_at, created_at, updated_at) \
             VALUES ('dlv_019a0000000070008000000000000000', 'ten_a', 'evt_a', 'ep_a', 'a.b', 'dead', 1, 0, 0, 0, 0)",
        )
        .execute(&mut *store.writer.acquire().await.unwrap())
        .await
        .unwrap();
        assert_eq!(TimedIds::of(&store.reader, "deliveries", "dlv").await.unwrap(), TimedIds::Legacy);
        store.close().await;
    }
}
