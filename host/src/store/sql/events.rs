//! Event types, publishing (events with their deliveries) and reading events back.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sqlx::{AnyConnection, AnyPool, Row};

use super::cache::ReadCache;
use super::dialect::Column;
use super::query::{conflict_on_unique, json_rows, KeyRange, Order, Payloads, SqlBuilder, MAX_LIST};
use super::rows::{self, EVENT_COLUMNS, EVENT_TYPE_COLUMNS};
use super::timed_ids::TimedIds;
use super::Dialect;
use crate::model::{schema_digest, Event, EventType, Millis};
use crate::routing::is_reserved_event_type;
use crate::store::{EventFilter, NewDelivery, NewEvent, Page, Published, StoreError, StoreResult};

/// Inserts the type, or replaces the description and schema of the stored one: whichever happened is reported, as
/// two registrations within a millisecond cannot be told apart by their `created_at`.
pub(super) async fn register_event_type(
    connection: &mut AnyConnection,
    tenant_id: &str,
    wanted: &EventType,
) -> StoreResult<(EventType, bool)> {
    let digest = wanted.schema.as_deref().map(schema_digest);
    // Event types are only deleted with their tenant, so the update finds the row the insert stopped at; the
    // second round is for a row that vanished in between all the same.
    for _ in 0..2 {
        let inserted = sqlx::query(&format!(
            "INSERT INTO event_types (tenant_id, name, description, json_schema, json_schema_sha256, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, name) DO NOTHING RETURNING {EVENT_TYPE_COLUMNS}"
        ))
        .bind(tenant_id)
        .bind(&wanted.name)
        .bind(&wanted.description)
        .bind(wanted.schema.as_deref())
        .bind(digest.as_deref())
        .bind(wanted.created_at)
        .fetch_optional(&mut *connection)
        .await?;
        if let Some(row) = inserted {
            return Ok((rows::event_type(&row)?, true));
        }
        let updated = sqlx::query(&format!(
            "UPDATE event_types SET description = $3, json_schema = $4, json_schema_sha256 = $5 \
             WHERE tenant_id = $1 AND name = $2 RETURNING {EVENT_TYPE_COLUMNS}"
        ))
        .bind(tenant_id)
        .bind(&wanted.name)
        .bind(&wanted.description)
        .bind(wanted.schema.as_deref())
        .bind(digest.as_deref())
        .fetch_optional(&mut *connection)
        .await?;
        if let Some(row) = updated {
            return Ok((rows::event_type(&row)?, false));
        }
    }
    Err(StoreError::Conflict(format!("event type {} changed while being registered", wanted.name)))
}

pub(super) async fn get_event_type(pool: &AnyPool, tenant_id: &str, name: &str) -> StoreResult<Option<EventType>> {
    let found =
        sqlx::query(&format!("SELECT {EVENT_TYPE_COLUMNS} FROM event_types WHERE tenant_id = $1 AND name = $2"))
            .bind(tenant_id)
            .bind(name)
            .fetch_optional(pool)
            .await?;
    found.as_ref().map(rows::event_type).transpose()
}

/// `(name, digest)` of the tenant's types that have a schema. A digest missing beside its schema (the row edited
/// by hand) reads as `""`, which names no compiled schema, so its text is read whenever it is needed.
pub(super) async fn event_type_schemas(pool: &AnyPool, tenant_id: &str) -> StoreResult<Vec<(String, String)>> {
    let found = sqlx::query(
        "SELECT name, COALESCE(json_schema_sha256, '') AS digest FROM event_types \
         WHERE tenant_id = $1 AND json_schema IS NOT NULL ORDER BY name",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    found.iter().map(|row| Ok((row.try_get("name")?, row.try_get("digest")?))).collect()
}

pub(super) async fn list_event_types(pool: &AnyPool, tenant_id: &str, page: &Page) -> StoreResult<Vec<EventType>> {
    let mut sql = SqlBuilder::new(format!("SELECT {EVENT_TYPE_COLUMNS} FROM event_types"));
    sql.compare("tenant_id", "=", tenant_id).keyset_page("name", Order::Ascending, page);
    rows::all(&sql.query().fetch_all(pool).await?, rows::event_type)
}

/// Stores the events with their deliveries in the caller's transaction. Once it commits, tell the cache with
/// [`committed`].
pub(super) async fn publish(
    tx: &mut AnyConnection,
    dialect: Dialect,
    cache: &ReadCache,
    events: &[NewEvent],
) -> StoreResult<Vec<Published>> {
    let endpoints = existing_endpoints(tx, dialect, events).await?;
    register_types(tx, cache, events).await?;
    let mut published: Vec<Option<Published>> = vec![None; events.len()];
    // Events with an idempotency key go one by one (a key may repeat within the batch); the rest are written
    // with a few multi-row statements, whatever their number.
    let (mut keyed, plain): (Vec<usize>, Vec<usize>) =
        (0..events.len()).partition(|&i| events[i].event.idempotency_key.is_some());
    // In one order in every transaction: two nodes storing the same keys in opposite orders each waited for a key
    // the other had just taken, and PostgreSQL broke the deadlock by failing one of them.
    keyed.sort_by(|&a, &b| {
        let key = |i: usize| (&events[i].event.tenant_id, &events[i].event.idempotency_key);
        key(a).cmp(&key(b))
    });
    for i in keyed {
        published[i] = Some(publish_one(tx, dialect, &events[i], &endpoints).await?);
    }
    let plain: Vec<&NewEvent> = plain.iter().map(|&i| &events[i]).collect();
    let mut stored = publish_plain(tx, dialect, &plain, &endpoints).await?.into_iter();
    for slot in published.iter_mut().filter(|slot| slot.is_none()) {
        *slot = stored.next();
    }
    published
        .into_iter()
        .map(|p| p.ok_or_else(|| StoreError::Corrupt("an event of the batch has no result".into())))
        .collect()
}

/// Registers the events' types the cache does not know, before any event is inserted, in one order: two
/// PostgreSQL transactions that each took an idempotency key the other's new type then waited for deadlocked.
/// (A type of an event then replayed rather than stored is registered too; it is the type the client publishes.)
async fn register_types(connection: &mut AnyConnection, cache: &ReadCache, events: &[NewEvent]) -> StoreResult<()> {
    let mut types = distinct_types(events);
    types.retain(|(tenant_id, name)| !cache.event_type_known(tenant_id, name));
    let first_seen = events.iter().map(|new| new.event.received_at).min().unwrap_or_default();
    for chunk in types.into_iter().collect::<Vec<_>>().chunks(MAX_LIST / 4) {
        let mut sql = SqlBuilder::new("INSERT INTO event_types (tenant_id, name, description, created_at) VALUES ");
        for (n, (tenant_id, name)) in chunk.iter().enumerate() {
            let row = [sql.bind(*tenant_id), sql.bind(*name), "''".to_string(), sql.bind(first_seen)];
            sql.push(if n == 0 { "(" } else { ", (" }).push(&row.join(", ")).push(")");
        }
        sql.push(" ON CONFLICT (tenant_id, name) DO NOTHING");
        sql.query().execute(&mut *connection).await?;
    }
    Ok(())
}

/// Remembers the event types of a publish that has committed. A batch nearly always holds few types, all known
/// already: each is looked up once, and only a new one is inserted (a cache insert costs far more than a lookup).
pub(super) fn committed(cache: &ReadCache, events: &[NewEvent]) {
    for (tenant_id, name) in distinct_types(events) {
        if !cache.event_type_known(tenant_id, name) {
            cache.event_type_committed(tenant_id, name);
        }
    }
}

/// The `(tenant id, event type)` pairs of `events` to register, each once. Switchyard's own types (its test
/// events) are not the tenant's to list among those it publishes.
pub(super) fn distinct_types<'a>(events: impl IntoIterator<Item = &'a NewEvent>) -> BTreeSet<(&'a str, &'a str)> {
    events
        .into_iter()
        .map(|new| (new.event.tenant_id.as_str(), new.event.event_type.as_str()))
        .filter(|(_, name)| !is_reserved_event_type(name))
        .collect()
}

/// The deliveries of `new` whose endpoints still exist.
fn routed<'a>(new: &'a NewEvent, existing_endpoints: &HashMap<String, HashSet<String>>) -> Vec<&'a NewDelivery> {
    let existing = existing_endpoints.get(&new.event.tenant_id);
    new.deliveries.iter().filter(|d| existing.is_some_and(|ids| ids.contains(&d.endpoint_id))).collect()
}

fn published(new: &NewEvent, routed: &[&NewDelivery]) -> Published {
    Published {
        event_id: new.event.id.clone(),
        deliveries: routed.len() as i64,
        replayed: false,
        leased: routed.iter().filter(|d| d.lease.is_some()).map(|d| d.id.clone()).collect(),
    }
}

/// Rows per multi-row statement: bounds the JSON text one statement carries.
const ROWS_PER_STATEMENT: usize = 1000;

/// The JSON rows of new deliveries, as [`delivery_rows`] builds them.
pub(super) const DELIVERY_ROWS: &[(&str, Column)] = &[
    ("id", Column::Text),
    ("tenant_id", Column::Text),
    ("event_id", Column::Text),
    ("endpoint_id", Column::Text),
    ("event_type", Column::Text),
    ("status", Column::Text),
    ("at", Column::Int),
    ("lease_owner", Column::Text),
    ("lease_expires_at", Column::Int),
];

type DeliveryRow<'a> =
    (&'a str, &'a str, &'a str, &'a str, &'a str, &'static str, Millis, Option<&'a str>, Option<Millis>);

pub(super) fn delivery_rows<'a>(deliveries: &[(&'a Event, &'a NewDelivery)]) -> Vec<DeliveryRow<'a>> {
    deliveries
        .iter()
        .map(|(event, delivery)| {
            let lease = delivery.lease.as_ref();
            (
                delivery.id.as_str(),
                event.tenant_id.as_str(),
                event.id.as_str(),
                delivery.endpoint_id.as_str(),
                event.event_type.as_str(),
                if lease.is_some() { "delivering" } else { "pending" },
                event.received_at,
                lease.map(|lease| lease.owner.as_str()),
                lease.map(|lease| lease.until),
            )
        })
        .collect()
}

/// `INSERT INTO deliveries` from `values`, a SELECT of [`DELIVERY_ROWS`]: due at once, `pending`, or
/// `delivering` under their lease.
pub(super) fn insert_deliveries_from(values: &str) -> String {
    format!(
        "INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type, status, attempts, \
         schedule_offset, next_attempt_at, created_at, updated_at, lease_owner, lease_expires_at) \
         SELECT id, tenant_id, event_id, endpoint_id, event_type, status, 0, 0, at, at, at, lease_owner, \
         lease_expires_at FROM ({values}) AS v"
    )
}

async fn insert_deliveries(
    connection: &mut AnyConnection,
    dialect: Dialect,
    deliveries: &[(&Event, &NewDelivery)],
) -> StoreResult<()> {
    let sql = insert_deliveries_from(&dialect.json_rows("$1", DELIVERY_ROWS));
    for chunk in deliveries.chunks(ROWS_PER_STATEMENT) {
        let rows = delivery_rows(chunk);
        sqlx::query(&sql)
            .bind(json_rows(&rows)?)
            .execute(&mut *connection)
            .await
            .map_err(conflict_on_unique(|| "a delivery reuses an existing id".into()))?;
    }
    Ok(())
}

const EVENT_ROWS: &[(&str, Column)] = &[
    ("id", Column::Text),
    ("tenant_id", Column::Text),
    ("event_type", Column::Text),
    // Where the event's payload lies in `$2`, the statement's payloads end to end (see `Payloads`).
    ("data_start", Column::Int),
    ("data_length", Column::Int),
    ("received_at", Column::Int),
    ("deliveries", Column::Int),
];

/// Stores events without idempotency keys: multi-row inserts of the events and their deliveries.
async fn publish_plain(
    connection: &mut AnyConnection,
    dialect: Dialect,
    events: &[&NewEvent],
    existing_endpoints: &HashMap<String, HashSet<String>>,
) -> StoreResult<Vec<Published>> {
    let routed: Vec<Vec<&NewDelivery>> = events.iter().map(|new| routed(new, existing_endpoints)).collect();
    let sql = format!(
        "INSERT INTO events ({EVENT_COLUMNS}, deliveries) \
         SELECT id, tenant_id, event_type, {}, NULL, received_at, deliveries FROM ({}) AS v",
        dialect.payload_at("$2", "v.data_start", "v.data_length"),
        dialect.json_rows("$1", EVENT_ROWS)
    );
    for chunk in events.iter().zip(&routed).collect::<Vec<_>>().chunks(ROWS_PER_STATEMENT) {
        let mut payloads = Payloads::with_capacity(chunk.iter().map(|(new, _)| new.event.data.get().len()).sum());
        let rows: Vec<_> = chunk
            .iter()
            .map(|(new, deliveries)| {
                let event = &new.event;
                let (data_start, data_length) = payloads.push(event.data.get());
                (
                    &event.id,
                    &event.tenant_id,
                    &event.event_type,
                    data_start,
                    data_length,
                    event.received_at,
                    deliveries.len(),
                )
            })
            .collect();
        sqlx::query(&sql)
            .bind(json_rows(&rows)?)
            .bind(payloads.into_bytes())
            .execute(&mut *connection)
            .await
            .map_err(conflict_on_unique(|| "an event id already exists".into()))?;
    }

    let rows: Vec<(&Event, &NewDelivery)> = events
        .iter()
        .zip(&routed)
        .flat_map(|(new, deliveries)| deliveries.iter().map(move |d| (&new.event, *d)))
        .collect();
    insert_deliveries(connection, dialect, &rows).await?;
    Ok(events.iter().zip(&routed).map(|(new, deliveries)| published(new, deliveries)).collect())
}

/// The endpoints the events fan out to that exist, by tenant, held against deletion until the
/// transaction ends (see [`Dialect::key_share_clause`]). An endpoint deleted after the caller matched it gets no
/// delivery: one would wait forever, as nothing claims deliveries of a missing endpoint.
async fn existing_endpoints(
    connection: &mut AnyConnection,
    dialect: Dialect,
    events: &[NewEvent],
) -> StoreResult<HashMap<String, HashSet<String>>> {
    let mut wanted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for new in events {
        let ids = wanted.entry(new.event.tenant_id.as_str()).or_default();
        ids.extend(new.deliveries.iter().map(|d| d.endpoint_id.as_str()));
    }
    let mut existing: HashMap<String, HashSet<String>> = HashMap::new();
    for (tenant_id, endpoint_ids) in wanted {
        let endpoint_ids: Vec<&str> = endpoint_ids.into_iter().collect();
        for chunk in endpoint_ids.chunks(MAX_LIST) {
            let mut sql = SqlBuilder::new("SELECT id FROM endpoints");
            sql.compare("tenant_id", "=", tenant_id).in_list("id", chunk.iter().copied());
            // Sorted, so concurrent publishes take their locks in one order.
            sql.push(" ORDER BY id").push(dialect.key_share_clause());
            for row in sql.query().fetch_all(&mut *connection).await? {
                existing.entry(tenant_id.to_string()).or_default().insert(row.try_get("id")?);
            }
        }
    }
    Ok(existing)
}

async fn publish_one(
    connection: &mut AnyConnection,
    dialect: Dialect,
    new: &NewEvent,
    existing_endpoints: &HashMap<String, HashSet<String>>,
) -> StoreResult<Published> {
    let event = &new.event;
    let routed = routed(new, existing_endpoints);
    let deliveries = routed.len() as i64;
    // Inserting and letting the idempotency index reject a reused key, rather than looking first, is what makes
    // two concurrent publishes with the same key safe on PostgreSQL: the second waits for the first to commit,
    // inserts nothing, and then reads the first one's row. It also covers a key used twice in one batch.
    let inserted = sqlx::query(&format!(
        "INSERT INTO events ({EVENT_COLUMNS}, deliveries) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
    ))
    .bind(&event.id)
    .bind(&event.tenant_id)
    .bind(&event.event_type)
    .bind(event.data.get())
    .bind(event.idempotency_key.as_deref())
    .bind(event.received_at)
    .bind(deliveries)
    .execute(&mut *connection)
    .await
    .map_err(conflict_on_unique(|| format!("event `{}` already exists", event.id)))?;

    if inserted.rows_affected() == 0 {
        let first = sqlx::query("SELECT id, deliveries FROM events WHERE tenant_id = $1 AND idempotency_key = $2")
            .bind(&event.tenant_id)
            .bind(event.idempotency_key.as_deref())
            .fetch_optional(&mut *connection)
            .await?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("event `{}` was neither stored nor found by its idempotency key", event.id))
            })?;
        return Ok(Published {
            event_id: first.try_get("id")?,
            deliveries: first.try_get("deliveries")?,
            replayed: true,
            leased: Vec::new(),
        });
    }

    let rows: Vec<(&Event, &NewDelivery)> = routed.iter().map(|delivery| (event, *delivery)).collect();
    insert_deliveries(connection, dialect, &rows).await?;
    Ok(published(new, &routed))
}

pub(super) async fn get_event(pool: &AnyPool, tenant_id: &str, id: &str) -> StoreResult<Option<Event>> {
    let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(rows::event).transpose()
}

pub(super) async fn events_by_idempotency_keys(
    pool: &AnyPool,
    tenant_id: &str,
    keys: &[String],
) -> StoreResult<Vec<Event>> {
    let mut found = Vec::new();
    for chunk in keys.chunks(MAX_LIST) {
        let mut sql = SqlBuilder::new(format!("SELECT {EVENT_COLUMNS} FROM events"));
        sql.compare("tenant_id", "=", tenant_id).in_list("idempotency_key", chunk);
        found.extend(rows::all(&sql.query().fetch_all(pool).await?, rows::event)?);
    }
    Ok(found)
}

/// The tenant's events `filter` selects, with their columns, and the ids they lie among (for the page).
fn filtered(tenant_id: &str, filter: &EventFilter, ids: TimedIds) -> (SqlBuilder, KeyRange) {
    let mut sql = SqlBuilder::new(format!("SELECT {EVENT_COLUMNS} FROM events"));
    sql.compare("tenant_id", "=", tenant_id)
        .compare_if("event_type", "=", filter.event_type.as_deref())
        .compare_if("received_at", ">=", filter.since)
        .compare_if("received_at", "<", filter.until);
    (sql, ids.range("evt", filter.since, filter.until))
}

pub(super) async fn list_events(
    pool: &AnyPool,
    tenant_id: &str,
    filter: &EventFilter,
    ids: TimedIds,
    page: &Page,
) -> StoreResult<Vec<Event>> {
    let (mut sql, range) = filtered(tenant_id, filter, ids);
    sql.keyset_page_within("id", Order::Descending, page, &range);
    rows::all(&sql.query().fetch_all(pool).await?, rows::event)
}

pub(super) async fn events_missed_by(
    pool: &AnyPool,
    tenant_id: &str,
    endpoint_id: &str,
    filter: &EventFilter,
    ids: TimedIds,
    page: &Page,
) -> StoreResult<Vec<Event>> {
    let sql = missed_by(tenant_id, endpoint_id, filter, ids, page);
    rows::all(&sql.query().fetch_all(pool).await?, rows::event)
}

/// The page of the tenant's events without a delivery to the endpoint. Asked of each event's own deliveries (as
/// [`super::deliveries::SEND_EVENT_TO`] explains): PostgreSQL without statistics would otherwise read all of the
/// endpoint's deliveries again for each event, or for each page.
fn missed_by(tenant_id: &str, endpoint_id: &str, filter: &EventFilter, ids: TimedIds, page: &Page) -> SqlBuilder {
    let (mut sql, range) = filtered(tenant_id, filter, ids);
    sql.condition()
        .push_bind(endpoint_id)
        .push(" NOT IN (SELECT d.endpoint_id FROM deliveries AS d WHERE d.event_id = events.id)");
    sql.keyset_page_within("id", Order::Ascending, page, &range);
    sql
}

/// Events by id, in any order; used to complete claimed deliveries.
pub(super) async fn events_by_id(connection: &mut AnyConnection, ids: &[String]) -> StoreResult<Vec<Event>> {
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_LIST) {
        let mut sql = SqlBuilder::new(format!("SELECT {EVENT_COLUMNS} FROM events"));
        sql.in_list("id", chunk);
        for row in sql.query().fetch_all(&mut *connection).await? {
            found.push(rows::event(&row)?);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::super::deliveries::tests::sqlite_plan;
    use super::super::SqlStore;
    use super::*;

    /// Replaying the last hour of a tenant with years of events must not read those years: the window is sought
    /// in the index by id, for listings (newest first) and replays (oldest first) alike.
    #[tokio::test]
    async fn a_time_window_is_a_range_of_the_tenants_event_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::connect(&format!("sqlite://{}", dir.path().join("plans.db").display())).await.unwrap();
        assert_eq!(store.event_ids, TimedIds::Timed, "a new database");
        let window = EventFilter { since: Some(1_700_000_000_000), until: Some(1_700_003_600_000), event_type: None };
        // A later page's cursor, on the window's far side, must not become the bound the index is sought from.
        let pages = [
            (Order::Descending, None),
            (Order::Ascending, None),
            (Order::Descending, Some("evt_z")),
            (Order::Ascending, Some("evt_0")),
        ];
        for (order, cursor) in pages {
            let page = Page { cursor: cursor.map(str::to_string), limit: 50 };
            let (mut sql, range) = filtered("ten_a", &window, TimedIds::Timed);
            sql.keyset_page_within("id", order, &page, &range);
            let plan = sqlite_plan(&store.reader, &sql.explained()).await;
            assert!(
                plan.iter().any(|line| line.contains("events_tenant (tenant_id=? AND id>? AND id<?)")),
                "{order:?} after {cursor:?}: {plan:?}"
            );
        }

        // A database with an id of the old format keeps finding windows by receipt time alone.
        sqlx::query(
            "INSERT INTO tenants (id, name, created_at) VALUES ('ten_a', 'a', 0); \
             INSERT INTO events (id, tenant_id, event_type, data, received_at, deliveries) \
             VALUES ('evt_019a0000000070008000000000000000', 'ten_a', 'a.b', '{}', 0, 0)",
        )
        .execute(&mut *store.writer.acquire().await.unwrap())
        .await
        .unwrap();
        assert_eq!(TimedIds::of(&store.reader, "events", "evt").await.unwrap(), TimedIds::Legacy);
        store.close().await;
    }

    /// A replay into an endpoint with a long history must not read that history once per event or per page.
    /// PostgreSQL plans without statistics until its tables are first analysed (after a bulk load, or always
    /// with autovacuum off), and then judges an endpoint's index entries as cheap as an event's. Asked as "is
    /// this endpoint among the event's deliveries", only the event's entries can answer.
    #[tokio::test]
    async fn missed_events_are_found_by_the_events_own_deliveries_without_statistics() {
        let test_name = "missed_events_are_found_by_the_events_own_deliveries_without_statistics";
        let Some(db) = super::super::store_pg::PostgresTestDatabase::create(test_name).await else { return };
        let store = SqlStore::connect(&db.url).await.unwrap();
        let mut connection = store.reader.acquire().await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO events (id, tenant_id, event_type, data, received_at, deliveries) \
             SELECT 'evt_' || lpad(n::text, 22, '0'), 'ten_a', 'a.b', '{}', n, 1 FROM generate_series(1, 3000) AS n; \
             INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type, status, attempts, \
             schedule_offset, created_at, updated_at) \
             SELECT 'dlv_' || lpad(n::text, 22, '0'), 'ten_a', 'evt_' || lpad(n::text, 22, '0'), 'ep_a', 'a.b', \
             'succeeded', 1, 0, n, n FROM generate_series(1, 2000) AS n; \
             SET plan_cache_mode = force_generic_plan",
        )
        .execute(&mut *connection)
        .await
        .unwrap();

        let page = Page { cursor: Some(format!("evt_{:022}", 1500)), limit: 500 };
        let replay_page = missed_by("ten_a", "ep_a", &EventFilter::default(), TimedIds::Timed, &page);
        let mut send = SqlBuilder::new(super::super::deliveries::SEND_EVENT_TO);
        for value in ["dlv_x", "ten_a", "evt_0000000000000000002500", "ep_a"] {
            send.bind(value);
        }
        send.bind(1_i64);
        for (name, statement) in [("the replay's page", replay_page), ("the replay's insert", send)] {
            let plan: Vec<String> = statement
                .prefixed("EXPLAIN")
                .query()
                .fetch_all(&mut *connection)
                .await
                .unwrap()
                .iter()
                .map(|row| row.try_get::<String, _>(0).unwrap())
                .collect();
            assert!(plan.iter().any(|line| line.contains("deliveries_event")), "{name}: {plan:#?}");
            assert!(!plan.iter().any(|line| line.contains("deliveries_endpoint")), "{name}: {plan:#?}");
        }
        drop(connection);
        store.close().await;
        db.drop_database().await;
    }
}
