//! `POST /endpoints/{id}/test`: a real event, stored and signed like any other, delivered to this one endpoint
//! only, whatever its subscriptions: how a receiver is tried out before real events flow, or after a fix. Its
//! type is always [`TEST_EVENT_TYPE`], which publishers may not use, so a receiver can tell it from a real event
//! and replaying what another endpoint missed never sends it there.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::value::{to_raw_value, RawValue};
use serde_json::{json, Value};

use super::auth::Caller;
use super::events::{body_limit, check_data, store_events};
use super::json::parse_optional_body;
use super::{audit, PathId};
use crate::error::{ApiError, ApiResult};
use crate::ingest::Route;
use crate::model::{new_id_and_time, EndpointStatus, Event};
use crate::routing::TEST_EVENT_TYPE;
use crate::store::{DeliveryFilter, Page};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/endpoints/{id}/test", post(send_test))
}

/// The whole body may be left out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestBody {
    /// What the receiver gets as the event's `data`; a greeting when left out.
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

async fn send_test(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    // The limit of `POST /events`, so any payload a publish takes can be tried out here.
    let body: TestBody = parse_optional_body(&headers, body, body_limit(&state.config)).await?;
    let endpoint = state.store.get_endpoint(&caller.tenant_id, &id).await?.ok_or(ApiError::NotFound("endpoint"))?;
    if endpoint.status != EndpointStatus::Active {
        return Err(ApiError::Conflict(format!(
            "the endpoint is {}: activate it to send it a test event",
            endpoint.status
        )));
    }
    let data = match body.data {
        Some(data) => data,
        None => to_raw_value(&json!({ "message": "A test event sent from Switchyard" }))
            .map_err(|e| ApiError::internal(format!("the default test payload: {e}")))?,
    };
    check_data(&data, "data", state.config.max_payload_bytes)?;
    let (id, received_at) = new_id_and_time("evt");
    let event = Event {
        id,
        tenant_id: caller.tenant_id.clone(),
        event_type: TEST_EVENT_TYPE.to_string(),
        data,
        idempotency_key: None,
        received_at,
    };
    // A conflict, with nothing stored, if the endpoint was paused or deleted since it was read above.
    let published = store_events(&state, vec![event], Route::Only(endpoint.id.clone())).await?;
    let event_id = published.into_iter().next().map(|p| p.event_id).ok_or_else(|| ApiError::internal("no event"))?;
    let filter = DeliveryFilter { event_id: Some(event_id.clone()), ..Default::default() };
    let deliveries = state.store.list_deliveries(&caller.tenant_id, &filter, &Page { cursor: None, limit: 1 }).await?;
    let delivery_id = deliveries.into_iter().next().map(|d| d.id);
    audit::record(&state, &caller, "endpoint.tested", "endpoint", &endpoint.id, json!({ "event_id": event_id })).await;
    Ok((StatusCode::ACCEPTED, Json(json!({ "event_id": event_id, "delivery_id": delivery_id }))))
}
