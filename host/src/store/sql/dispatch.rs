//! The dispatcher's side: leasing due deliveries, recording attempts, giving leases back.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use sqlx::any::AnyArguments;
use sqlx::any::AnyRow;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Row};

use super::audit::append_audit;
use super::dialect::Column;
use super::endpoint_secrets::signing_secrets_of;
use super::endpoints::with_subscriptions;
use super::events::events_by_id;
use super::query::{json_rows, SqlBuilder, MAX_LIST};
use super::rows::{self, to_json, RequestMeta, ATTEMPT_COLUMNS, DELIVERY_COLUMNS, ENDPOINT_COLUMNS};
use super::Dialect;
use crate::model::{new_id, Attempt, AuditEntry, Delivery, Endpoint, EndpointSecret, Event, Millis, PreparedRequest};
use crate::store::{
    secrets_by_endpoint, AttemptOutcome, DispatchJob, Dropped, JobEndpoint, JobEvent, StoreError, StoreResult,
    ENDPOINT_DISABLED, SERVER_ACTOR,
};

/// Rows per multi-row statement: bounds the JSON text one statement carries.
const ROWS_PER_STATEMENT: usize = 500;

/// Back to waiting: `failed` if an attempt was already made (so listings still say the last one failed),
/// `pending` otherwise. `next_attempt_at` is kept, so the delivery is due again at once if it was due.
const GIVE_BACK: &str = "status = CASE WHEN attempts > 0 THEN 'failed' ELSE 'pending' END, lease_owner = NULL, \
    lease_expires_at = NULL";

/// What a claim takes, in this order: expired leases (their holder is gone, and they were due before anything
/// waiting was), then what waits. Two conditions rather than one with an OR: each walks its own index in claim
/// order and stops at the limit, where one OR over both indexes would sort every due delivery, a whole backlog,
/// on every claim. Conditions on `d` with `$3` = now, then their ORDER BY.
pub(super) const EXPIRED: &str =
    "d.status = 'delivering' AND d.lease_expires_at <= $3 ORDER BY d.lease_expires_at, d.id";
pub(super) const WAITING: &str =
    "d.status IN ('pending', 'failed') AND d.next_attempt_at <= $3 ORDER BY d.next_attempt_at, d.id";

/// The ids of deliveries of active endpoints that match `condition_and_order` ([`EXPIRED`], [`WAITING`]), up to
/// `limit` (an SQL expression).
pub(super) fn claimable(condition_and_order: &str, limit: &str) -> String {
    format!(
        "SELECT d.id FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id AND e.tenant_id = d.tenant_id \
         WHERE e.status = 'active' AND {condition_and_order} LIMIT {limit}"
    )
}

/// The claim statement by statement (PostgreSQL; SQLite runs [`sqlite_claim`](super::sqlite_claim)).
pub(super) async fn claim_due(
    connection: &mut AnyConnection,
    dialect: Dialect,
    owner: &str,
    now: Millis,
    lease_until: Millis,
    limit: i64,
) -> StoreResult<Vec<DispatchJob>> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let mut tx = connection.begin().await?;
    let mut claimed = claim_where(&mut tx, dialect, EXPIRED, owner, now, lease_until, limit).await?;
    let room = limit - claimed.len() as i64;
    if room > 0 {
        claimed.extend(claim_where(&mut tx, dialect, WAITING, owner, now, lease_until, room).await?);
    }
    let deliveries = rows::all(&claimed, rows::delivery)?;
    let jobs = complete_jobs(&mut tx, deliveries, now).await?;
    tx.commit().await?;
    Ok(jobs)
}

/// Leases up to `limit` deliveries of active endpoints that match `condition_and_order` ([`claimable`]).
async fn claim_where(
    tx: &mut AnyConnection,
    dialect: Dialect,
    condition_and_order: &str,
    owner: &str,
    now: Millis,
    lease_until: Millis,
    limit: i64,
) -> StoreResult<Vec<AnyRow>> {
    Ok(sqlx::query(&format!(
        "UPDATE deliveries SET status = 'delivering', lease_owner = $1, lease_expires_at = $2, updated_at = $3 \
         WHERE id IN ({}{}) RETURNING {DELIVERY_COLUMNS}",
        claimable(condition_and_order, "$4"),
        dialect.claim_lock_clause()
    ))
    .bind(owner)
    .bind(lease_until)
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?)
}

/// Adds each claimed delivery's event and endpoint, loaded together rather than row by row. Both must exist:
/// events are never deleted, and deleting an endpoint also changes its unfinished deliveries, so it cannot commit
/// while this transaction holds them (row locks on PostgreSQL, the single connection on SQLite).
async fn complete_jobs(
    connection: &mut AnyConnection,
    deliveries: Vec<Delivery>,
    now: Millis,
) -> StoreResult<Vec<DispatchJob>> {
    if deliveries.is_empty() {
        return Ok(Vec::new());
    }
    let event_ids: Vec<String> =
        deliveries.iter().map(|d| d.event_id.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let endpoint_ids: Vec<String> =
        deliveries.iter().map(|d| d.endpoint_id.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let events = events_by_id(connection, &event_ids).await?;
    let endpoints = endpoints_by_id(connection, &endpoint_ids).await?;
    let secrets = signing_secrets_of(connection, &endpoint_ids, now).await?;
    jobs_from(deliveries, events, endpoints, secrets)
}

/// The jobs of claimed `deliveries`, in claim order, each with its event, endpoint and signing secrets (each
/// shared by the jobs that need it).
pub(super) fn jobs_from(
    mut deliveries: Vec<Delivery>,
    events: Vec<Event>,
    endpoints: Vec<Endpoint>,
    secrets: Vec<EndpointSecret>,
) -> StoreResult<Vec<DispatchJob>> {
    // Claims come back in no order of their own.
    deliveries.sort_by(|a, b| (a.next_attempt_at, &a.id).cmp(&(b.next_attempt_at, &b.id)));
    let events: HashMap<String, Arc<JobEvent>> =
        events.into_iter().map(|event| (event.id.clone(), Arc::new(event.into()))).collect();
    let endpoints: HashMap<String, Arc<JobEndpoint>> =
        endpoints.into_iter().map(|endpoint| (endpoint.id.clone(), Arc::new(endpoint.into()))).collect();
    let secrets = secrets_by_endpoint(secrets);

    let mut jobs = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let missing = |what: &str, id: &str| {
            StoreError::Corrupt(format!("claimed delivery `{}` refers to a missing {what} `{id}`", delivery.id))
        };
        let event = events.get(&delivery.event_id).cloned().ok_or_else(|| missing("event", &delivery.event_id))?;
        let endpoint =
            endpoints.get(&delivery.endpoint_id).cloned().ok_or_else(|| missing("endpoint", &delivery.endpoint_id))?;
        let signing_secrets = secrets.get(&delivery.endpoint_id).cloned().unwrap_or_default();
        jobs.push(DispatchJob { delivery, event, endpoint, signing_secrets });
    }
    Ok(jobs)
}

async fn endpoints_by_id(connection: &mut AnyConnection, ids: &[String]) -> StoreResult<Vec<Endpoint>> {
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_LIST) {
        let mut sql = SqlBuilder::new(format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints"));
        sql.in_list("id", chunk);
        let rows = sql.query().fetch_all(&mut *connection).await?;
        found.extend(with_subscriptions(connection, None, rows).await?);
    }
    Ok(found)
}

/// Records a batch of attempts in the caller's transaction: one commit (one fsync) for all of them, which is what
/// lets the dispatcher keep up with the receiver. The deliveries' endpoints are locked first (see
/// [`lock_endpoints_of`]). Outcomes that disable their endpoint go first, one by one; the rest are written with one
/// multi-row UPDATE and one multi-row INSERT per chunk.
pub(super) async fn record_attempts(
    tx: &mut AnyConnection,
    dialect: Dialect,
    owner: &str,
    outcomes: &[AttemptOutcome],
) -> StoreResult<Vec<bool>> {
    // `FOR KEY SHARE` even for an outcome that disables its endpoint: that update keeps the row's key, so it
    // waits for no publish (which takes the same lock), only for a deletion. A stronger lock here deadlocked with
    // group commits, which lock each tenant's endpoints in id order but not all of them in one order.
    let delivery_ids: Vec<&str> = outcomes.iter().map(|outcome| outcome.attempt.delivery_id.as_str()).collect();
    lock_endpoints_of(tx, dialect, &delivery_ids).await?;
    let mut recorded = vec![false; outcomes.len()];
    let (disabling, plain): (Vec<usize>, Vec<usize>) =
        (0..outcomes.len()).partition(|&i| outcomes[i].disable_endpoint.is_some());
    for i in disabling {
        recorded[i] = record_one(tx, owner, &outcomes[i]).await?;
    }
    for indices in plain.chunks(ROWS_PER_STATEMENT) {
        let chunk: Vec<&AttemptOutcome> = indices.iter().map(|&i| &outcomes[i]).collect();
        let updated = update_deliveries(tx, dialect, owner, &chunk).await?;
        let mut inserts = Vec::new();
        for (&i, outcome) in indices.iter().zip(&chunk) {
            if updated.contains(&outcome.attempt.delivery_id) {
                recorded[i] = true;
                inserts.push(&outcome.attempt);
            }
        }
        insert_attempts(tx, dialect, &inserts).await?;
    }
    Ok(recorded)
}

/// Locks, on PostgreSQL, the endpoints of the deliveries `delivery_ids` `FOR KEY SHARE`, all of them in id order,
/// before the caller changes those deliveries. A deletion locks its endpoint before the endpoint's deliveries; a
/// transaction that took the deliveries first, in an order of its own, could hold one the deletion
/// needs while waiting for one it has taken: a deadlock, which PostgreSQL breaks by failing one of the two.
/// Taking endpoints first, in one order, makes them wait for each other instead.
pub(super) async fn lock_endpoints_of(
    tx: &mut AnyConnection,
    dialect: Dialect,
    delivery_ids: &[&str],
) -> StoreResult<()> {
    if dialect != Dialect::Postgres || delivery_ids.is_empty() {
        return Ok(());
    }
    let lock = dialect.key_share_clause();
    let endpoints_of = |chunk: &[&str]| {
        let mut sql = SqlBuilder::new("SELECT id FROM endpoints WHERE id IN (SELECT endpoint_id FROM deliveries");
        sql.in_list("id", chunk.iter().copied());
        sql
    };
    if delivery_ids.len() <= MAX_LIST {
        let mut sql = endpoints_of(delivery_ids);
        sql.push(&format!(") ORDER BY id{lock}"));
        sql.query().fetch_all(&mut *tx).await?;
        return Ok(());
    }
    // One order across chunks: the endpoints are found first, then locked in chunks of the sorted ids.
    let mut endpoint_ids = BTreeSet::new();
    for chunk in delivery_ids.chunks(MAX_LIST) {
        let mut sql = endpoints_of(chunk);
        sql.push(")");
        for row in sql.query().fetch_all(&mut *tx).await? {
            endpoint_ids.insert(row.try_get::<String, _>(0)?);
        }
    }
    let endpoint_ids: Vec<String> = endpoint_ids.into_iter().collect();
    for chunk in endpoint_ids.chunks(MAX_LIST) {
        let mut sql = SqlBuilder::new("SELECT id FROM endpoints");
        sql.in_list("id", chunk.iter().map(String::as_str));
        sql.push(&format!(" ORDER BY id{lock}"));
        sql.query().fetch_all(&mut *tx).await?;
    }
    Ok(())
}

/// The JSON rows of attempt outcomes ([`Dialect::json_rows`]), as [`outcome_rows`] builds them.
pub(super) const OUTCOME_ROWS: &[(&str, Column)] = &[
    ("id", Column::Text),
    ("tenant_id", Column::Text),
    ("status", Column::Text),
    ("next_attempt_at", Column::Int),
    ("attempts", Column::Int),
    ("last_status_code", Column::Int),
    ("last_error", Column::Text),
    ("updated_at", Column::Int),
    ("prepared", Column::Int),
    ("plugin_versions", Column::Text),
    ("request_body", Column::Blob),
    ("request_meta", Column::Text),
];

type OutcomeRow<'a> = (
    &'a str,
    &'a str,
    &'static str,
    Option<Millis>,
    i64,
    Option<i64>,
    Option<&'a str>,
    Millis,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
);

pub(super) fn outcome_rows<'a>(outcomes: &[&'a AttemptOutcome]) -> StoreResult<Vec<OutcomeRow<'a>>> {
    let mut rows = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        let attempt = &outcome.attempt;
        let prepared = outcome.prepared.as_ref().map(PreparedColumns::new).transpose()?;
        rows.push((
            attempt.delivery_id.as_str(),
            attempt.tenant_id.as_str(),
            outcome.status.as_str(),
            outcome.next_attempt_at,
            attempt.attempt_number,
            attempt.status_code,
            attempt.error.as_deref(),
            attempt.started_at + attempt.duration_ms,
            i64::from(prepared.is_some()),
            prepared.as_ref().map(|p| p.plugin_versions.clone()),
            prepared.as_ref().and_then(|p| p.request_body.as_ref().map(hex::encode)),
            prepared.and_then(|p| p.request_meta),
        ));
    }
    Ok(rows)
}

/// Which outcome rows an [`update_from_outcomes`] statement applies. Every mention of a row's column decodes it
/// from the JSON row again, so a statement given only rows of one kind decodes only what that kind stores.
#[derive(Clone, Copy)]
pub(super) enum Preparation {
    /// Any row: the request is stored where the row's `prepared` is 1, and left alone elsewhere.
    Any,
    /// Only rows without a prepared request: the request columns are left alone and not decoded.
    Absent,
    /// Only rows with a prepared request (the first attempt's, if only with the plugin versions): it is stored.
    Present,
}

/// Applies the outcome rows `values` (a SELECT of [`OUTCOME_ROWS`]) to deliveries still leased to `owner` (a
/// placeholder), returning the ids it updated if `returning`.
pub(super) fn update_from_outcomes(values: &str, owner: &str, returning: bool, rows: Preparation) -> String {
    let returning = if returning { " RETURNING deliveries.id" } else { "" };
    let prepared = match rows {
        Preparation::Any => {
            ", plugin_versions = CASE WHEN v.prepared = 1 THEN v.plugin_versions ELSE deliveries.plugin_versions END, \
             request_body = CASE WHEN v.prepared = 1 THEN v.request_body ELSE deliveries.request_body END, \
             request_meta = CASE WHEN v.prepared = 1 THEN v.request_meta ELSE deliveries.request_meta END"
        }
        Preparation::Absent => "",
        Preparation::Present => {
            ", plugin_versions = v.plugin_versions, request_body = v.request_body, request_meta = v.request_meta"
        }
    };
    format!(
        "UPDATE deliveries SET status = v.status, next_attempt_at = v.next_attempt_at, attempts = v.attempts, \
         last_status_code = v.last_status_code, last_error = v.last_error, lease_owner = NULL, \
         lease_expires_at = NULL, updated_at = v.updated_at{prepared} \
         FROM ({values}) AS v WHERE deliveries.id = v.id AND deliveries.tenant_id = v.tenant_id \
         AND deliveries.lease_owner = {owner} AND deliveries.status = 'delivering'{returning}"
    )
}

/// Applies each outcome to its delivery if `owner` still holds the lease; returns the ids it updated.
async fn update_deliveries(
    connection: &mut AnyConnection,
    dialect: Dialect,
    owner: &str,
    outcomes: &[&AttemptOutcome],
) -> StoreResult<HashSet<String>> {
    if outcomes.is_empty() {
        return Ok(HashSet::new());
    }
    let sql = update_from_outcomes(&dialect.json_rows("$1", OUTCOME_ROWS), "$2", true, Preparation::Any);
    let rows = outcome_rows(outcomes)?;
    let found = sqlx::query(&sql).bind(json_rows(&rows)?).bind(owner).fetch_all(&mut *connection).await?;
    found.iter().map(|row| Ok(row.try_get::<String, _>(0)?)).collect()
}

/// The JSON rows of attempts, as [`attempt_rows`] builds them; named like the `attempts` columns.
pub(super) const ATTEMPT_ROWS: &[(&str, Column)] = &[
    ("id", Column::Text),
    ("tenant_id", Column::Text),
    ("delivery_id", Column::Text),
    ("attempt_number", Column::Int),
    ("started_at", Column::Int),
    ("duration_ms", Column::Int),
    ("status_code", Column::Int),
    ("response_body", Column::Text),
    ("error", Column::Text),
    ("outcome", Column::Text),
];

type AttemptRow<'a> =
    (&'a str, &'a str, &'a str, i64, Millis, i64, Option<i64>, Option<&'a str>, Option<&'a str>, &'a str);

pub(super) fn attempt_rows<'a>(attempts: impl Iterator<Item = &'a Attempt>) -> Vec<AttemptRow<'a>> {
    attempts
        .map(|a| {
            (
                a.id.as_str(),
                a.tenant_id.as_str(),
                a.delivery_id.as_str(),
                a.attempt_number,
                a.started_at,
                a.duration_ms,
                a.status_code,
                a.response_body.as_deref(),
                a.error.as_deref(),
                a.outcome.as_str(),
            )
        })
        .collect()
}

async fn insert_attempts(connection: &mut AnyConnection, dialect: Dialect, attempts: &[&Attempt]) -> StoreResult<()> {
    if attempts.is_empty() {
        return Ok(());
    }
    let rows = attempt_rows(attempts.iter().copied());
    let sql = format!(
        "INSERT INTO attempts ({ATTEMPT_COLUMNS}) SELECT {ATTEMPT_COLUMNS} FROM ({}) AS v",
        dialect.json_rows("$1", ATTEMPT_ROWS)
    );
    sqlx::query(&sql).bind(json_rows(&rows)?).execute(&mut *connection).await?;
    Ok(())
}

/// One attempt and the delivery's new state, if `owner` still holds the lease; writes nothing otherwise.
async fn record_one(tx: &mut AnyConnection, owner: &str, outcome: &AttemptOutcome) -> StoreResult<bool> {
    let attempt = &outcome.attempt;
    let finished_at = attempt.started_at + attempt.duration_ms;
    // The endpoint is already locked (see `record_attempts`).
    let mut endpoint_to_disable = None;
    if let Some(reason) = &outcome.disable_endpoint {
        let endpoint_id: Option<String> =
            sqlx::query("SELECT endpoint_id FROM deliveries WHERE tenant_id = $1 AND id = $2")
                .bind(&attempt.tenant_id)
                .bind(&attempt.delivery_id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| row.try_get("endpoint_id"))
                .transpose()?;
        let Some(endpoint_id) = endpoint_id else { return Ok(false) };
        endpoint_to_disable = Some((endpoint_id, reason));
    }

    let prepared = outcome.prepared.as_ref().map(PreparedColumns::new).transpose()?;
    let update = format!(
        "UPDATE deliveries SET status = $1, next_attempt_at = $2, attempts = $3, last_status_code = $4, \
         last_error = $5, lease_owner = NULL, lease_expires_at = NULL, updated_at = $6{} \
         WHERE tenant_id = $7 AND id = $8 AND lease_owner = $9 AND status = 'delivering'",
        if prepared.is_some() { PreparedColumns::set(10) } else { String::new() }
    );
    let leased = sqlx::query(&update)
        .bind(outcome.status.as_str())
        .bind(outcome.next_attempt_at)
        .bind(attempt.attempt_number)
        .bind(attempt.status_code)
        .bind(attempt.error.as_deref())
        .bind(finished_at)
        .bind(&attempt.tenant_id)
        .bind(&attempt.delivery_id)
        .bind(owner);
    let leased = match prepared {
        Some(columns) => columns.bind(leased),
        None => leased,
    }
    .execute(&mut *tx)
    .await?;
    if leased.rows_affected() == 0 {
        return Ok(false);
    }

    sqlx::query(&format!("INSERT INTO attempts ({ATTEMPT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"))
        .bind(&attempt.id)
        .bind(&attempt.tenant_id)
        .bind(&attempt.delivery_id)
        .bind(attempt.attempt_number)
        .bind(attempt.started_at)
        .bind(attempt.duration_ms)
        .bind(attempt.status_code)
        .bind(attempt.response_body.as_deref())
        .bind(attempt.error.as_deref())
        .bind(&attempt.outcome)
        .execute(&mut *tx)
        .await?;

    if let Some((endpoint_id, reason)) = endpoint_to_disable {
        // Only an active endpoint: an operator's pause made while the attempt was in flight stands.
        let disabled = sqlx::query(
            "UPDATE endpoints SET status = 'disabled', status_reason = $3, updated_at = $4 \
             WHERE tenant_id = $1 AND id = $2 AND status = 'active'",
        )
        .bind(&attempt.tenant_id)
        .bind(&endpoint_id)
        .bind(reason)
        .bind(finished_at)
        .execute(&mut *tx)
        .await?;
        if disabled.rows_affected() == 1 {
            append_audit(tx, &disabled_audit_entry(outcome, &endpoint_id, new_id("aud"))).await?;
        }
    }
    Ok(true)
}

/// The audit entry of an endpoint the server disabled (a receiver's `410`, or every attempt failing for
/// `disable_failing_after`): the server's decision rather than an operator's, but whoever finds an endpoint
/// disabled looks there for when and why. Written in the transaction that disables it, by the attempt that did.
pub(super) fn disabled_audit_entry(outcome: &AttemptOutcome, endpoint_id: &str, id: String) -> AuditEntry {
    let attempt = &outcome.attempt;
    AuditEntry {
        id,
        tenant_id: Some(attempt.tenant_id.clone()),
        actor: SERVER_ACTOR.into(),
        action: ENDPOINT_DISABLED.into(),
        resource_type: "endpoint".into(),
        resource_id: endpoint_id.to_string(),
        details: serde_json::json!({
            "reason": outcome.disable_endpoint,
            "delivery_id": attempt.delivery_id,
            "status_code": attempt.status_code,
        }),
        at: attempt.started_at + attempt.duration_ms,
    }
}

/// A prepared request as the three columns that store it.
struct PreparedColumns {
    plugin_versions: String,
    request_body: Option<Vec<u8>>,
    request_meta: Option<String>,
}

impl PreparedColumns {
    /// The assignments, with parameters numbered from `first`.
    fn set(first: usize) -> String {
        format!(", plugin_versions = ${first}, request_body = ${}, request_meta = ${}", first + 1, first + 2)
    }

    fn new(prepared: &PreparedRequest) -> StoreResult<Self> {
        let meta = RequestMeta { content_type: prepared.content_type.clone(), headers: prepared.headers.clone() };
        Ok(PreparedColumns {
            plugin_versions: to_json("plugin_versions", &prepared.plugin_versions)?,
            request_body: prepared.body.clone(),
            request_meta: prepared.body.is_some().then(|| to_json("request_meta", &meta)).transpose()?,
        })
    }

    fn bind<'q>(self, query: Query<'q, Any, AnyArguments<'q>>) -> Query<'q, Any, AnyArguments<'q>> {
        query.bind(self.plugin_versions).bind(self.request_body).bind(self.request_meta)
    }
}

pub(super) async fn record_drop(connection: &mut AnyConnection, owner: &str, dropped: &Dropped) -> StoreResult<bool> {
    let columns = PreparedColumns::new(&dropped.prepared)?;
    let update = format!(
        "UPDATE deliveries SET status = 'dropped', next_attempt_at = NULL, last_error = $1, lease_owner = NULL, \
         lease_expires_at = NULL, updated_at = $2{} \
         WHERE tenant_id = $3 AND id = $4 AND lease_owner = $5 AND status = 'delivering'",
        PreparedColumns::set(6)
    );
    let query = sqlx::query(&update)
        .bind(&dropped.reason)
        .bind(dropped.at)
        .bind(&dropped.tenant_id)
        .bind(&dropped.delivery_id)
        .bind(owner);
    let updated = columns.bind(query).execute(&mut *connection).await?;
    Ok(updated.rows_affected() == 1)
}

pub(super) async fn release(
    connection: &mut AnyConnection,
    dialect: Dialect,
    owner: &str,
    delivery_ids: &[String],
) -> StoreResult<()> {
    let mut tx = connection.begin().await?;
    let ids: Vec<&str> = delivery_ids.iter().map(String::as_str).collect();
    lock_endpoints_of(&mut tx, dialect, &ids).await?;
    for chunk in delivery_ids.chunks(MAX_LIST) {
        let mut sql = SqlBuilder::new(format!("UPDATE deliveries SET {GIVE_BACK}"));
        sql.compare("lease_owner", "=", owner).condition().push("status = 'delivering'").in_list("id", chunk);
        sql.query().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn defer(
    connection: &mut AnyConnection,
    dialect: Dialect,
    owner: &str,
    deferrals: &[(String, Millis)],
) -> StoreResult<()> {
    let mut deferrals = deferrals.to_vec();
    deferrals.sort();
    let mut tx = connection.begin().await?;
    let ids: Vec<&str> = deferrals.iter().map(|(id, _)| id.as_str()).collect();
    lock_endpoints_of(&mut tx, dialect, &ids).await?;
    let update = format!(
        "UPDATE deliveries SET {GIVE_BACK}, next_attempt_at = $1 WHERE id = $2 AND lease_owner = $3 \
         AND status = 'delivering'"
    );
    for (delivery_id, due_at) in &deferrals {
        sqlx::query(&update).bind(due_at).bind(delivery_id).bind(owner).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Makes endpoint `$2` of tenant `$1`'s deliveries that wait for their first attempt due at `$3`, those due later.
/// They are the only pending ones due later than now (nothing else moves a delivery not yet attempted into the
/// future: a rate limit, or the endpoint's share of the attempts in flight). The condition repeats the due index's.
pub(super) const BRING_FORWARD: &str = "UPDATE deliveries SET next_attempt_at = $3 \
     WHERE status IN ('pending', 'failed') AND next_attempt_at > $3 AND status = 'pending' \
     AND tenant_id = $1 AND endpoint_id = $2";

pub(super) async fn bring_forward(
    connection: &mut AnyConnection,
    dialect: Dialect,
    tenant_id: &str,
    endpoint_id: &str,
    now: Millis,
) -> StoreResult<u64> {
    let mut tx = connection.begin().await?;
    // The endpoint before its deliveries, as every change to them takes it (see `lock_endpoints_of`).
    sqlx::query(&format!("SELECT id FROM endpoints WHERE tenant_id = $1 AND id = $2{}", dialect.key_share_clause()))
        .bind(tenant_id)
        .bind(endpoint_id)
        .fetch_optional(&mut *tx)
        .await?;
    let moved = sqlx::query(BRING_FORWARD).bind(tenant_id).bind(endpoint_id).bind(now).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(moved.rows_affected())
}

pub(super) async fn release_foreign_leases(connection: &mut AnyConnection, owner: &str) -> StoreResult<u64> {
    let released = sqlx::query(&format!(
        "UPDATE deliveries SET {GIVE_BACK} \
         WHERE status = 'delivering' AND (lease_owner IS NULL OR lease_owner <> $1)"
    ))
    .bind(owner)
    .execute(&mut *connection)
    .await?;
    Ok(released.rows_affected())
}

pub(super) async fn next_due_at(pool: &AnyPool) -> StoreResult<Option<Millis>> {
    // A lease counts at its expiry: if its holder dies, that is when the delivery becomes due again. Each half
    // reads the first entry of its index (see `claim_due`), not every waiting delivery.
    let first = |column: &str, status: &str| {
        format!(
            "(SELECT d.{column} FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id AND e.tenant_id = d.tenant_id \
             WHERE e.status = 'active' AND d.status {status} ORDER BY d.{column}, d.id LIMIT 1)"
        )
    };
    let row = sqlx::query(&format!(
        "SELECT {} AS waiting, {} AS leased",
        first("next_attempt_at", "IN ('pending', 'failed')"),
        first("lease_expires_at", "= 'delivering'")
    ))
    .fetch_one(pool)
    .await?;
    let waiting: Option<Millis> = row.try_get("waiting")?;
    let leased: Option<Millis> = row.try_get("leased")?;
    Ok(waiting.into_iter().chain(leased).min())
}
