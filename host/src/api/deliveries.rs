//! Deliveries (one per event and endpoint) with their attempt history, manual retry, and sending a stored event
//! to an endpoint by hand.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Caller;
use super::endpoint_view::{is_credential_header, REDACTED};
use super::json::{ApiJson, OptionalJson};
use super::pagination::{PageOf, Query};
use super::{audit, PathId};
use crate::error::{ApiError, ApiResult};
use std::collections::BTreeMap;

use crate::model::{
    new_id_and_time, now_millis, rfc3339, Attempt, Delivery, DeliveryStatus, PluginUse, PreparedRequest,
};
use crate::store::{DeliveryFilter, Resend, SentTo};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/deliveries", get(list))
        .route("/deliveries/{id}", get(fetch))
        .route("/deliveries/{id}/retry", post(retry))
        .route("/events/{id}/deliveries", post(send_event))
}

#[derive(Debug, Serialize)]
pub struct DeliveryView {
    id: String,
    event_id: String,
    endpoint_id: String,
    event_type: String,
    status: DeliveryStatus,
    attempts: i64,
    next_attempt_at: Option<String>,
    last_status_code: Option<i64>,
    last_error: Option<String>,
    /// Role → `{plugin, sha256}` of each plugin version the delivery used; empty before its first attempt.
    plugin_versions: BTreeMap<String, PluginUse>,
    created_at: String,
    updated_at: String,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id,
            event_id: d.event_id,
            endpoint_id: d.endpoint_id,
            event_type: d.event_type,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at.map(rfc3339),
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            plugin_versions: d.prepared.map(|p| p.plugin_versions).unwrap_or_default(),
            created_at: rfc3339(d.created_at),
            updated_at: rfc3339(d.updated_at),
        }
    }
}

#[derive(Debug, Serialize)]
struct AttemptView {
    attempt: i64,
    started_at: String,
    duration_ms: i64,
    status_code: Option<i64>,
    response_body: Option<String>,
    error: Option<String>,
    outcome: String,
}

impl From<Attempt> for AttemptView {
    fn from(a: Attempt) -> Self {
        Self {
            attempt: a.attempt_number,
            started_at: rfc3339(a.started_at),
            duration_ms: a.duration_ms,
            status_code: a.status_code,
            response_body: a.response_body,
            error: a.error,
            outcome: a.outcome,
        }
    }
}

#[derive(Debug, Serialize)]
struct DeliveryDetail {
    #[serde(flatten)]
    delivery: DeliveryView,
    /// What the transform made at the first attempt, which every attempt since has sent; null without one.
    transform_output: Option<TransformOutput>,
    attempts_log: Vec<AttemptView>,
}

#[derive(Debug, Serialize)]
struct TransformOutput {
    content_type: Option<String>,
    /// The transform's extra headers; values that carry credentials redacted, as on endpoints.
    headers: BTreeMap<String, String>,
    /// The body as text when it is UTF-8, else null (see `body_base64`).
    body: Option<String>,
    body_base64: String,
}

impl TransformOutput {
    fn of(prepared: &PreparedRequest) -> Option<TransformOutput> {
        let body = prepared.body.as_ref()?;
        let headers = prepared
            .headers
            .iter()
            .map(|(name, value)| {
                let value = if is_credential_header(name) { REDACTED.to_string() } else { value.clone() };
                (name.clone(), value)
            })
            .collect();
        Some(TransformOutput {
            content_type: prepared.content_type.clone(),
            headers,
            body: String::from_utf8(body.clone()).ok(),
            body_base64: base64::engine::general_purpose::STANDARD.encode(body),
        })
    }
}

/// Reads the filters deliveries and dead letters share (`status` is the caller's business).
pub fn common_filter(query: &mut Query) -> ApiResult<DeliveryFilter> {
    Ok(DeliveryFilter {
        endpoint_id: query.take("endpoint_id")?,
        event_type: query.event_type("event_type")?,
        since: query.time("since")?,
        until: query.time("until")?,
        updated_since: query.time("updated_since")?,
        updated_until: query.time("updated_until")?,
        ..DeliveryFilter::default()
    })
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    mut query: Query,
) -> ApiResult<Json<PageOf<DeliveryView>>> {
    let filter = DeliveryFilter {
        event_id: query.take("event_id")?,
        status: query.parsed("status")?,
        ..common_filter(&mut query)?
    };
    let page = query.page()?;
    query.finish()?;
    let rows = state.store.list_deliveries(&caller.tenant_id, &filter, &page.store_page()).await?;
    Ok(Json(page.respond(rows, |d| &d.id, DeliveryView::from)))
}

async fn fetch(State(state): State<AppState>, caller: Caller, PathId(id): PathId) -> ApiResult<Json<DeliveryDetail>> {
    let delivery = state.store.get_delivery(&caller.tenant_id, &id).await?.ok_or(ApiError::NotFound("delivery"))?;
    let attempts = state.store.list_attempts(&caller.tenant_id, &id).await?;
    Ok(Json(DeliveryDetail {
        transform_output: delivery.prepared.as_ref().and_then(TransformOutput::of),
        delivery: delivery.into(),
        attempts_log: attempts.into_iter().map(AttemptView::from).collect(),
    }))
}

fn in_flight() -> ApiError {
    ApiError::Conflict("the delivery is being delivered right now; retry after the attempt finishes".into())
}

/// A retry's optional body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    /// Run the endpoint's filter and transform again instead of resending what the first attempt prepared.
    #[serde(default)]
    rerun_plugins: bool,
}

async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    OptionalJson(body): OptionalJson<RetryBody>,
) -> ApiResult<(StatusCode, Json<DeliveryView>)> {
    let current = state.store.get_delivery(&caller.tenant_id, &id).await?.ok_or(ApiError::NotFound("delivery"))?;
    if current.status == DeliveryStatus::Delivering {
        return Err(in_flight());
    }
    // A delivery of a deleted endpoint could never be attempted: requeued, it would wait forever.
    if state.store.get_endpoint(&caller.tenant_id, &current.endpoint_id).await?.is_none() {
        return Err(ApiError::Conflict("its endpoint was deleted; the delivery cannot be retried".into()));
    }
    // None here means a worker claimed it between the two calls (the id is known to exist).
    let delivery = state
        .store
        .retry_delivery(&caller.tenant_id, &id, now_millis(), Resend::rerunning_plugins(body.rerun_plugins))
        .await?
        .ok_or_else(in_flight)?;
    let details = json!({
        "previous_status": current.status,
        "attempts": current.attempts,
        "rerun_plugins": body.rerun_plugins,
    });
    audit::record(&state, &caller, "delivery.retried", "delivery", &id, details).await;
    state.dispatch_wakeup.notify_one();
    Ok((StatusCode::ACCEPTED, Json(delivery.into())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendEvent {
    endpoint_id: String,
}

/// Sends a stored event to one of the tenant's endpoints, whatever its subscriptions: how an operator delivers
/// what an endpoint missed (events published while it was paused, disabled or not yet subscribed).
async fn send_event(
    State(state): State<AppState>,
    caller: Caller,
    PathId(event_id): PathId,
    ApiJson(body): ApiJson<SendEvent>,
) -> ApiResult<(StatusCode, Json<DeliveryView>)> {
    let endpoint_id = body.endpoint_id;
    let (delivery_id, at) = new_id_and_time("dlv");
    match state.store.send_event_to(&caller.tenant_id, &event_id, &endpoint_id, &delivery_id, at).await? {
        SentTo::Created(delivery) => {
            let details = json!({ "event_id": event_id, "endpoint_id": endpoint_id });
            audit::record(&state, &caller, "delivery.created", "delivery", &delivery.id, details).await;
            state.dispatch_wakeup.notify_one();
            Ok((StatusCode::CREATED, Json((*delivery).into())))
        }
        SentTo::Exists(id) => Err(ApiError::Conflict(format!(
            "the event already has delivery {id} to this endpoint; send it again with POST /api/v1/deliveries/{id}/retry"
        ))),
        SentTo::NoEvent => Err(ApiError::NotFound("event")),
        SentTo::NoEndpoint => Err(ApiError::invalid("endpoint_id", "no endpoint of this tenant has this id")),
    }
}
