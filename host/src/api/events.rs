//! Publishing events (one or a batch) and reading them back. The payload is kept as the raw JSON text the client
//! sent, so receivers get it byte for byte.

use std::collections::{HashMap, HashSet};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::auth::{Caller, Publisher};
use super::json::parse_body;
use super::pagination::{PageOf, Query};
use super::{validate, PathId};
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::ingest::Route;
use crate::model::{new_id_and_time, rfc3339, Event};
use crate::store::{EventFilter, Published};
use crate::{event_schemas, routing, AppState};

const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");
pub const MAX_BATCH: usize = 100;
/// Room around `data` for `type`, `idempotency_key`, punctuation and whitespace, so that a body whose `data` is
/// just within `max_payload_bytes` is read in full and gets the precise 413 naming `data`.
pub const ENVELOPE_OVERHEAD: usize = 64 << 10;
/// A batch body may be smaller than 100 maximal events: 16 MiB bounds the memory one request can pin.
pub const BATCH_BODY_LIMIT: usize = 16 << 20;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/events", get(list).post(publish))
        .route("/events/batch", post(publish_batch))
        .route("/events/{id}", get(fetch))
}

pub fn body_limit(config: &Config) -> usize {
    config.max_payload_bytes + ENVELOPE_OVERHEAD
}

pub fn batch_body_limit(config: &Config) -> usize {
    BATCH_BODY_LIMIT.max(body_limit(config))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishBody {
    #[serde(rename = "type")]
    event_type: String,
    data: Box<RawValue>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    events: Vec<PublishBody>,
}

#[derive(Debug, Serialize)]
struct PublishedView {
    id: String,
    deliveries: i64,
}

#[derive(Debug, Serialize)]
struct BatchView {
    data: Vec<BatchItemView>,
}

#[derive(Debug, Serialize)]
struct BatchItemView {
    id: String,
    deliveries: i64,
    replayed: bool,
    /// Only on an event that was not stored although the batch was: its key was first used, with another event,
    /// by a request that committed while this batch was being stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
}

/// Checks one event of a request and turns it into an [`Event`]; `at` prefixes field names (`events[3].`).
pub(super) fn to_event(
    body: PublishBody,
    at: &str,
    idempotency_key: Option<String>,
    caller: &Caller,
    max_payload: usize,
) -> ApiResult<Event> {
    routing::validate_publishable_event_type(&body.event_type)
        .map_err(|message| ApiError::invalid(format!("{at}type"), message))?;
    check_data(&body.data, &format!("{at}data"), max_payload)?;
    let (id, received_at) = new_id_and_time("evt");
    Ok(Event {
        id,
        tenant_id: caller.tenant_id.clone(),
        event_type: body.event_type,
        data: body.data,
        idempotency_key,
        received_at,
    })
}

/// An event's `data`: a JSON object of at most `max_payload` bytes.
pub(super) fn check_data(data: &RawValue, field: &str, max_payload: usize) -> ApiResult<()> {
    // A RawValue is valid JSON with no leading whitespace, so its first byte tells an object.
    if !data.get().starts_with('{') {
        return Err(ApiError::invalid(field, "must be a JSON object"));
    }
    if data.get().len() > max_payload {
        return Err(ApiError::PayloadTooLarge {
            field: Some(field.to_string()),
            message: format!("must be at most {max_payload} bytes of JSON"),
        });
    }
    if validate::json_depth(data.get()) > validate::MAX_DATA_DEPTH {
        return Err(ApiError::invalid(
            field,
            format!("must not nest arrays and objects more than {} levels deep", validate::MAX_DATA_DEPTH),
        ));
    }
    Ok(())
}

/// Refuses the first event whose `data` its type's JSON Schema does not accept (`422`, `field(index)` named).
pub(super) async fn check_schemas(
    state: &AppState,
    tenant_id: &str,
    events: &[Event],
    field: impl Fn(usize) -> String,
) -> ApiResult<()> {
    if !state.config.event_type_schemas {
        return Ok(());
    }
    let schemas = state.event_schemas.of_tenant(&*state.store, tenant_id).await?;
    if schemas.is_empty() {
        return Ok(());
    }
    for (i, event) in events.iter().enumerate() {
        let Some(digest) = schemas.get(&event.event_type) else { continue };
        let schema = state.event_schemas.validator(&*state.store, tenant_id, &event.event_type, digest).await?;
        if let Some(schema) = schema {
            event_schemas::check_where_it_fits(&schema, &event.data)
                .await
                .map_err(|message| ApiError::SchemaMismatch { field: field(i), message })?;
        }
    }
    Ok(())
}

/// Stores the events, each with one delivery per matching active endpoint, or to the one endpoint `route` names
/// (the ingest writer hands them to the dispatcher or wakes it).
pub(super) async fn store_events(state: &AppState, events: Vec<Event>, route: Route) -> ApiResult<Vec<Published>> {
    let expected = events.len();
    let published = state.ingest.publish(events, route).await?;
    if published.len() != expected {
        return Err(ApiError::internal(format!("store published {} of {expected} events", published.len())));
    }
    let stored = published.iter().filter(|p| !p.replayed);
    let deliveries = stored.clone().map(|p| u64::try_from(p.deliveries).unwrap_or(0)).sum();
    state.metrics.published(stored.count() as u64, deliveries);
    Ok(published)
}

/// Matches the events against the tenant's subscription filters before they go to the writer (see
/// [`FilterWork`](crate::filter_work::FilterWork)). Work over the budget is a 413 naming the event's `data`
/// (`field_of(i)` for the i-th), and nothing is stored. Events under `stored_keys` (idempotency keys already
/// used) are repeats and cost nothing; when `stored_keys` is None and the budget runs out, the events' keys are
/// looked up, so that a retry of a stored event is answered as the repeat it is.
async fn subscriptions_route(
    state: &AppState,
    tenant_id: &str,
    events: &[Event],
    stored_keys: Option<&HashSet<String>>,
    field_of: impl Fn(usize) -> String,
) -> ApiResult<Route> {
    let endpoints = state.store.active_endpoints(tenant_id).await?;
    let work = &state.filter_work;
    let mut found = match stored_keys {
        Some(keys) => work.verdicts_for_new(tenant_id, &endpoints, events, keys).await,
        None => work.verdicts(tenant_id, &endpoints, events).await,
    };
    if let (Err(_), None) = (&found, stored_keys) {
        let keys: Vec<String> = events.iter().filter_map(|e| e.idempotency_key.clone()).collect();
        if !keys.is_empty() {
            let stored: HashSet<String> = state
                .store
                .events_by_idempotency_keys(tenant_id, &keys)
                .await?
                .into_iter()
                .filter_map(|first| first.idempotency_key)
                .collect();
            if !stored.is_empty() {
                found = work.verdicts_for_new(tenant_id, &endpoints, events, &stored).await;
            }
        }
    }
    let verdicts = found.map_err(|over| {
        // The operator's clue that a tenant's filters outgrew its payloads (or that the budget is too tight).
        tracing::warn!(tenant_id, events = events.len(), filters = over.filters, budget = ?over.budget,
            "publish refused: matching its events against the tenant's filters went over filter_budget");
        ApiError::PayloadTooLarge {
            field: Some(field_of(over.event)),
            message: format!(
                "{over}; the limit is for the whole request: send less data, or have the tenant use fewer or \
                 narrower filters"
            ),
        }
    })?;
    Ok(Route::Matched { endpoints, verdicts })
}

/// Refuses a batch that reuses a key with another event before anything is stored; returns the keys already
/// used (their events are replayed, not stored again).
async fn check_reused_keys(state: &AppState, caller: &Caller, events: &[Event]) -> ApiResult<HashSet<String>> {
    // A few at a time: each earlier event comes with its payload, up to `max_payload_bytes`.
    const KEYS_PER_READ: usize = 8;
    let keyed: Vec<(usize, &Event)> = events.iter().enumerate().filter(|(_, e)| e.idempotency_key.is_some()).collect();
    let mut used = HashSet::new();
    for chunk in keyed.chunks(KEYS_PER_READ) {
        let keys: Vec<String> = chunk.iter().filter_map(|(_, e)| e.idempotency_key.clone()).collect();
        let found = state.store.events_by_idempotency_keys(&caller.tenant_id, &keys).await?;
        for (i, event) in chunk {
            let Some(first) = found.iter().find(|first| first.idempotency_key == event.idempotency_key) else {
                continue;
            };
            if !first.same_content(event) {
                return Err(key_reused(format!("events[{i}].idempotency_key"), &first.id, "Nothing was stored."));
            }
        }
        used.extend(found.into_iter().filter_map(|first| first.idempotency_key));
    }
    Ok(used)
}

/// The id of the event first stored under a replayed key, if `sent` differs from it. A client must not take
/// the first event's `202` for an event that was never stored.
async fn differing_first(state: &AppState, sent: &Event, first_id: &str) -> ApiResult<Option<String>> {
    // Events are never deleted, and the store has just found this one by its key.
    let first = state.store.get_event(&sent.tenant_id, first_id).await?.ok_or_else(|| {
        ApiError::internal(format!("event {first_id}, replayed for an idempotency key, cannot be read"))
    })?;
    Ok((!first.same_content(sent)).then_some(first.id))
}

/// The message names the first event but not its type or data: a key of scope `publish` may send this request,
/// and may not read events.
fn key_reused(field: String, first_id: &str, outcome: &str) -> ApiError {
    ApiError::KeyReused {
        field,
        message: format!(
            "was first used for another event ({first_id}): a key may only be repeated with the same type and \
             data; use a new key for a new event. {outcome}"
        ),
    }
}

fn header_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let mut values = headers.get_all(IDEMPOTENCY_HEADER).iter();
    let (first, second) = (values.next(), values.next());
    if second.is_some() {
        // Which one names the event would be a guess: a proxy may have added one.
        return Err(ApiError::invalid(IDEMPOTENCY_HEADER, "must appear once"));
    }
    first
        .map(|v| v.to_str().map(str::to_string).map_err(|_| ApiError::invalid(IDEMPOTENCY_HEADER, "must be ASCII")))
        .transpose()
}

async fn publish(
    State(state): State<AppState>,
    Publisher(caller): Publisher,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let mut body: PublishBody = parse_body(&headers, body, body_limit(&state.config)).await?;
    let (key, key_field) = match (body.idempotency_key.take(), header_key(&headers)?) {
        (Some(in_body), Some(in_header)) if in_body != in_header => {
            return Err(ApiError::invalid("idempotency_key", "differs from the Idempotency-Key header"));
        }
        (Some(key), _) => {
            validate::idempotency_key("idempotency_key", &key)?;
            (Some(key), "idempotency_key")
        }
        (None, Some(key)) => {
            validate::idempotency_key(IDEMPOTENCY_HEADER, &key)?;
            (Some(key), IDEMPOTENCY_HEADER)
        }
        (None, None) => (None, ""),
    };
    let event = to_event(body, "", key, &caller, state.config.max_payload_bytes)?;
    check_schemas(&state, &caller.tenant_id, std::slice::from_ref(&event), |_| "data".into()).await?;
    let sent = event.idempotency_key.is_some().then(|| event.clone());
    let route =
        subscriptions_route(&state, &caller.tenant_id, std::slice::from_ref(&event), None, |_| "data".into()).await?;
    let published = store_events(&state, vec![event], route).await?.remove(0);
    if let (true, Some(sent)) = (published.replayed, &sent) {
        if let Some(first_id) = differing_first(&state, sent, &published.event_id).await? {
            return Err(key_reused(key_field.to_string(), &first_id, "Nothing was stored."));
        }
    }
    let view = PublishedView { id: published.event_id, deliveries: published.deliveries };
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    if published.replayed {
        response.headers_mut().insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
}

async fn publish_batch(
    State(state): State<AppState>,
    Publisher(caller): Publisher,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<BatchView>)> {
    if headers.contains_key(IDEMPOTENCY_HEADER) {
        return Err(ApiError::invalid(
            IDEMPOTENCY_HEADER,
            "is not used by batches; give each event an idempotency_key",
        ));
    }
    let body: BatchBody = parse_body(&headers, body, batch_body_limit(&state.config)).await?;
    if body.events.is_empty() || body.events.len() > MAX_BATCH {
        return Err(ApiError::invalid("events", format!("must hold 1 to {MAX_BATCH} events")));
    }
    let mut keys_seen = HashMap::new();
    let mut events = Vec::with_capacity(body.events.len());
    for (i, mut item) in body.events.into_iter().enumerate() {
        let key = item.idempotency_key.take();
        if let Some(key) = &key {
            let field = format!("events[{i}].idempotency_key");
            validate::idempotency_key(&field, key)?;
            // Two events with one key in one batch is a client bug: which one wins would be arbitrary.
            if let Some(first) = keys_seen.insert(key.clone(), i) {
                return Err(ApiError::invalid(field, format!("repeats the key of events[{first}]")));
            }
        }
        events.push(to_event(item, &format!("events[{i}]."), key, &caller, state.config.max_payload_bytes)?);
    }
    check_schemas(&state, &caller.tenant_id, &events, |i| format!("events[{i}].data")).await?;
    let earlier = check_reused_keys(&state, &caller, &events).await?;
    // Keys first used by a request that commits between that check and this batch's.
    let racing: Vec<(usize, Event)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.idempotency_key.as_ref().is_some_and(|key| !earlier.contains(key)))
        .map(|(i, e)| (i, e.clone()))
        .collect();
    let route =
        subscriptions_route(&state, &caller.tenant_id, &events, Some(&earlier), |i| format!("events[{i}].data"))
            .await?;
    let published = store_events(&state, events, route).await?;
    let mut data: Vec<BatchItemView> = published
        .into_iter()
        .map(|p| BatchItemView { id: p.event_id, deliveries: p.deliveries, replayed: p.replayed, error: None })
        .collect();
    // The rest of the batch is stored by now: refusing it all would hide that. The one event is marked instead.
    for (i, sent) in &racing {
        if !data[*i].replayed {
            continue;
        }
        if let Some(first_id) = differing_first(&state, sent, &data[*i].id).await? {
            let error = key_reused(format!("events[{i}].idempotency_key"), &first_id, "This event was not stored.");
            data[*i].error = Some(error.body());
        }
    }
    Ok((StatusCode::ACCEPTED, Json(BatchView { data })))
}

#[derive(Debug, Serialize)]
struct EventView {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    data: Box<RawValue>,
    idempotency_key: Option<String>,
    received_at: String,
}

impl From<Event> for EventView {
    fn from(e: Event) -> Self {
        Self {
            id: e.id,
            event_type: e.event_type,
            data: e.data,
            idempotency_key: e.idempotency_key,
            received_at: rfc3339(e.received_at),
        }
    }
}

async fn list(State(state): State<AppState>, caller: Caller, mut query: Query) -> ApiResult<Json<PageOf<EventView>>> {
    let filter = EventFilter {
        event_type: query.event_type("event_type")?,
        since: query.time("since")?,
        until: query.time("until")?,
    };
    let page = query.page()?;
    query.finish()?;
    let rows = state.store.list_events(&caller.tenant_id, &filter, &page.store_page()).await?;
    Ok(Json(page.respond(rows, |e| &e.id, EventView::from)))
}

async fn fetch(State(state): State<AppState>, caller: Caller, PathId(id): PathId) -> ApiResult<Json<EventView>> {
    let event = state.store.get_event(&caller.tenant_id, &id).await?.ok_or(ApiError::NotFound("event"))?;
    Ok(Json(event.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::json::parse_slice;

    fn caller() -> Caller {
        Caller { tenant_id: "ten_1".into(), actor: "admin".into(), allowed_networks: Vec::new() }
    }

    fn field_of(err: ApiError) -> Option<String> {
        match err {
            ApiError::Invalid { field, .. } | ApiError::PayloadTooLarge { field, .. } => field,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn payload_is_kept_byte_for_byte() {
        let body: PublishBody =
            parse_slice(br#"{"type": "payment.succeeded", "data": {"amount": 1.50,  "z": [1e3]} }"#).unwrap();
        assert_eq!(body.data.get(), r#"{"amount": 1.50,  "z": [1e3]}"#);
        let event = to_event(body, "", None, &caller(), 1024).unwrap();
        assert_eq!(event.data.get(), r#"{"amount": 1.50,  "z": [1e3]}"#);
        assert_eq!(event.tenant_id.as_str(), "ten_1");
        assert!(event.id.starts_with("evt_"));
        // Received when its id was minted (see `first_id_at`).
        assert!(crate::model::first_id_at("evt", event.received_at) <= event.id);
        assert!(event.id < crate::model::first_id_at("evt", event.received_at + 1));
    }

    #[test]
    fn batch_errors_carry_the_element_path() {
        let err =
            parse_slice::<BatchBody>(br#"{"events": [{"type": "a.b", "data": {}}, {"type": "a.b"}]}"#).unwrap_err();
        assert_eq!(field_of(err).as_deref(), Some("events[1].data"));
        let err = parse_slice::<BatchBody>(br#"{"events": [{"type": 5, "data": {}}]}"#).unwrap_err();
        assert_eq!(field_of(err).as_deref(), Some("events[0].type"));
        let err = parse_slice::<BatchBody>(br#"{"events": [{"type": "a.b", "data": {}, "extra": 1}]}"#).unwrap_err();
        assert_eq!(field_of(err).as_deref(), Some("events[0].extra"));
        let err = parse_slice::<PublishBody>(br#"{"type": "a.b", "data": {"x": }}"#).unwrap_err();
        assert_eq!(field_of(err), None);
    }

    #[test]
    fn data_must_be_an_object_within_the_limit() {
        let event = |json: &str, max| {
            let body: PublishBody = parse_slice(json.as_bytes()).unwrap();
            to_event(body, "events[3].", None, &caller(), max)
        };
        for data in ["[1]", "null", "\"s\"", "5"] {
            let err = event(&format!(r#"{{"type": "a.b", "data": {data}}}"#), 100).unwrap_err();
            assert_eq!(field_of(err).as_deref(), Some("events[3].data"), "{data}");
        }
        let json = r#"{"type": "a.b", "data": {"k": "0123456789"}}"#;
        assert!(event(json, 19).is_ok());
        let err = event(json, 18).unwrap_err();
        assert!(matches!(&err, ApiError::PayloadTooLarge { .. }));
        assert_eq!(field_of(err).as_deref(), Some("events[3].data"));
        let err = event(r#"{"type": "Payment", "data": {}}"#, 100).unwrap_err();
        assert_eq!(field_of(err).as_deref(), Some("events[3].type"));
    }

    #[test]
    fn body_limits_leave_room_for_the_envelope() {
        let dir = std::path::Path::new("/nonexistent");
        let mut config = Config::for_data_dir(dir);
        assert_eq!(body_limit(&config), (1 << 20) + ENVELOPE_OVERHEAD);
        assert_eq!(batch_body_limit(&config), BATCH_BODY_LIMIT);
        config.max_payload_bytes = 32 << 20;
        assert_eq!(batch_body_limit(&config), (32 << 20) + ENVELOPE_OVERHEAD);
    }
}
