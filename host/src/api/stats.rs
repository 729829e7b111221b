//! A tenant's overview in numbers: deliveries waiting, in flight and parked, endpoints by status, what attempts
//! did over the last day, and which event types were published most. What the dashboard's first page shows, and what an operator's script polls.

use std::collections::HashMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::auth::Caller;
use super::pagination::Query;
use crate::error::{ApiError, ApiResult};
use crate::hourly::{hour_start, HOUR, KEPT_HOURS};
use crate::model::{now_millis, rfc3339, Millis};
use crate::store::{AttemptCounts, PublishedCounts};
use crate::AppState;

/// Delivery counts stop here: counting reads index entries, and a dead-letter queue of millions would make every
/// refresh of an overview as slow as its size. "10,000 or more" is enough to act on.
pub const COUNT_LIMIT: u64 = 10_000;

/// The hours `GET /stats` sums: the current one and the 23 before it.
const DAY_HOURS: i64 = 24;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/stats", get(stats))
        .route("/stats/hourly", get(hourly))
        .route("/stats/endpoints", get(by_endpoint))
        .route("/stats/event-types", get(by_event_type))
}

/// [`AttemptCounts`] as the API shows them, with the success and retry rates worked out (`null` when nothing
/// finished) and the mean attempt time (`null` without attempts).
#[derive(Debug, Serialize)]
struct CountsView {
    attempts: u64,
    failed_attempts: u64,
    succeeded: u64,
    dead: u64,
    success_rate: Option<f64>,
    retried: u64,
    retry_rate: Option<f64>,
    mean_attempt_ms: Option<f64>,
}

impl From<AttemptCounts> for CountsView {
    fn from(counts: AttemptCounts) -> Self {
        CountsView {
            attempts: counts.attempts,
            failed_attempts: counts.failed_attempts,
            succeeded: counts.succeeded,
            dead: counts.dead,
            success_rate: counts.success_rate(),
            retried: counts.retried,
            retry_rate: counts.retry_rate(),
            // A tenth of a millisecond is as fine as anyone reads it.
            mean_attempt_ms: counts.mean_attempt_ms().map(|ms| (ms * 10.0).round() / 10.0),
        }
    }
}

#[derive(Debug, Serialize)]
struct HourView {
    hour_start: String,
    #[serde(flatten)]
    counts: CountsView,
}

#[derive(Debug, Serialize)]
struct EndpointTotal {
    endpoint_id: String,
    #[serde(flatten)]
    counts: CountsView,
}

async fn stats(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let counts = state.store.tenant_counts(&caller.tenant_id, COUNT_LIMIT).await?;
    let deliveries: Map<String, Value> =
        counts.deliveries.into_iter().map(|(status, n)| (status.to_string(), Value::from(n))).collect();
    let endpoints: Map<String, Value> =
        counts.endpoints.into_iter().map(|(status, n)| (status.to_string(), Value::from(n))).collect();
    let mut day = AttemptCounts::default();
    for (_, counts) in last_hours(&state, &caller.tenant_id, None, DAY_HOURS).await? {
        day.add(counts);
    }
    Ok(Json(json!({
        "deliveries": deliveries,
        "endpoints": endpoints,
        "count_limit": COUNT_LIMIT,
        "last_24h": CountsView::from(day),
    })))
}

/// Endpoint ids `by_endpoint` takes at once: two pages of the dashboard's endpoint list.
const MAX_ENDPOINT_IDS: usize = 100;

/// `?endpoint_ids=a,b,…` (1 to 100) and `?hours=`: each endpoint's totals over the span, in the order asked, zeros
/// for one with nothing counted (unknown ids too: this answers a list page, where a 404 would hide the rest).
async fn by_endpoint(State(state): State<AppState>, caller: Caller, mut query: Query) -> ApiResult<Json<Value>> {
    let hours = hours_param(&mut query)?;
    let ids: Vec<String> = match query.take("endpoint_ids")? {
        Some(text) => text.split(',').map(str::to_string).collect(),
        None => return Err(ApiError::invalid("endpoint_ids", "is required: endpoint ids separated by commas")),
    };
    if ids.len() > MAX_ENDPOINT_IDS || ids.iter().any(|id| id.is_empty() || id.len() > 100) {
        return Err(ApiError::invalid(
            "endpoint_ids",
            format!("must be 1 to {MAX_ENDPOINT_IDS} endpoint ids separated by commas"),
        ));
    }
    query.finish()?;
    // The span ends with the current hour, as `hourly`'s does: a node whose clock runs ahead may have counted a
    // later one already.
    let span = first_of_last(hours)..hour_start(now_millis()) + HOUR;
    let found: HashMap<String, AttemptCounts> =
        state.store.endpoint_totals(&caller.tenant_id, &ids, span).await?.into_iter().collect();
    let endpoints: Vec<EndpointTotal> = ids
        .into_iter()
        .map(|id| {
            let counts = found.get(&id).copied().unwrap_or_default().into();
            EndpointTotal { endpoint_id: id, counts }
        })
        .collect();
    Ok(Json(json!({ "hours": hours, "endpoints": endpoints })))
}

/// Event types `by_event_type` lists by default, and at most.
const EVENT_TYPES_SHOWN: i64 = 10;
const MAX_EVENT_TYPES: i64 = 100;

#[derive(Debug, Serialize)]
struct EventTypeTotal {
    event_type: String,
    events: u64,
    deliveries: u64,
}

/// `?hours=` (1 to a week, default 24) and `?limit=` (1 to 100, default 10): the event types the tenant published
/// most in the span, most events first (ties by name), with the span's totals over every type, so a share of the
/// whole can be shown beside each.
async fn by_event_type(State(state): State<AppState>, caller: Caller, mut query: Query) -> ApiResult<Json<Value>> {
    let hours = hours_param(&mut query)?;
    let limit = query.integer("limit", 1..=MAX_EVENT_TYPES, EVENT_TYPES_SHOWN)? as usize;
    query.finish()?;
    let span = first_of_last(hours)..hour_start(now_millis()) + HOUR;
    let mut found = state.store.event_type_totals(&caller.tenant_id, span).await?;
    let mut total = PublishedCounts::default();
    for (_, counts) in &found {
        total.add(*counts);
    }
    let types = found.len();
    found.sort_by(|(a_type, a), (b_type, b)| b.events.cmp(&a.events).then_with(|| a_type.cmp(b_type)));
    let top: Vec<EventTypeTotal> = found
        .into_iter()
        .take(limit)
        .map(|(event_type, counts)| EventTypeTotal { event_type, events: counts.events, deliveries: counts.deliveries })
        .collect();
    Ok(Json(json!({
        "hours": hours,
        "events": total.events,
        "deliveries": total.deliveries,
        "types": types,
        "event_types": top,
    })))
}

/// `hours`: 1 to a week, default 24.
fn hours_param(query: &mut Query) -> ApiResult<i64> {
    query.integer("hours", 1..=KEPT_HOURS - 1, DAY_HOURS)
}

/// `?hours=` (1 to a week, default 24) and `?endpoint_id=`: every hour of the span, oldest first, the current
/// one last, with zeros where nothing was counted, so a chart needs no gaps filled. 404 for an `endpoint_id` that
/// is no endpoint of the tenant and has nothing counted in the span.
async fn hourly(State(state): State<AppState>, caller: Caller, mut query: Query) -> ApiResult<Json<Value>> {
    let hours = hours_param(&mut query)?;
    let endpoint_id = query.take("endpoint_id")?;
    query.finish()?;
    let series = last_hours(&state, &caller.tenant_id, endpoint_id.as_deref(), hours).await?;
    let mut total = AttemptCounts::default();
    let series: Vec<HourView> = series
        .into_iter()
        .map(|(start, counts)| {
            total.add(counts);
            HourView { hour_start: rfc3339(start), counts: counts.into() }
        })
        .collect();
    // A deleted endpoint's hours are still there to read; an id that names nothing counted is checked, so a typo
    // (or another tenant's endpoint) is told apart from an endpoint that had no traffic.
    if let Some(endpoint_id) = endpoint_id.as_deref().filter(|_| total.attempts == 0) {
        if state.store.get_endpoint(&caller.tenant_id, endpoint_id).await?.is_none() {
            return Err(ApiError::NotFound("endpoint"));
        }
    }
    Ok(Json(json!({ "endpoint_id": endpoint_id, "hours": series, "total": CountsView::from(total) })))
}

/// Each of the last `hours` hours, the current one last, with its counts (zero where none were stored). Hours
/// after the current one, from a node whose clock runs ahead, wait until they come.
async fn last_hours(
    state: &AppState,
    tenant_id: &str,
    endpoint_id: Option<&str>,
    hours: i64,
) -> ApiResult<Vec<(Millis, AttemptCounts)>> {
    let first = first_of_last(hours);
    let found: HashMap<Millis, AttemptCounts> =
        state.store.tenant_hours(tenant_id, endpoint_id, first).await?.into_iter().collect();
    Ok((0..hours)
        .map(|i| first + i * HOUR)
        .map(|start| (start, found.get(&start).copied().unwrap_or_default()))
        .collect())
}

/// The start of the first of the last `hours` hours, the current one included.
fn first_of_last(hours: i64) -> Millis {
    hour_start(now_millis()) - (hours - 1) * HOUR
}
