//! `POST /endpoints/{id}/test`: a real event, stored and signed like any other, delivered to this one endpoint
//! only, whatever its subscriptions: how a receiver is tried out before real events flow, or after a fix.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::auth::Caller;
use super::events::{to_event, PublishBody};
use super::json::OptionalJson;
use super::{audit, PathId};
use crate::error::{ApiError, ApiResult};
use crate::model::{now_millis, EndpointStatus};
use crate::store::{DeliveryFilter, Page};
use crate::AppState;

/// The type of a test event sent without one: a receiver can tell it from real events.
pub const DEFAULT_TYPE: &str = "switchyard.test";

pub fn router() -> Router<AppState> {
    Router::new().route("/endpoints/{id}/test", post(send_test))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestBody {
    #[serde(default, rename = "type")]
    event_type: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

async fn send_test(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    OptionalJson(body): OptionalJson<TestBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let endpoint = state.store.get_endpoint(&caller.tenant_id, &id).await?.ok_or(ApiError::NotFound("endpoint"))?;
    if endpoint.status != EndpointStatus::Active {
        return Err(not_active(endpoint.status));
    }
    let data = match body.data {
        Some(data) => data,
        None => RawValue::from_string(json!({ "message": "A test event sent from Switchyard" }).to_string())
            .map_err(|e| ApiError::internal(format!("the default test payload: {e}")))?,
    };
    let event_type = body.event_type.unwrap_or_else(|| DEFAULT_TYPE.to_string());
    let now = now_millis();
    let event = to_event(PublishBody::new(event_type, data), "", None, &caller, state.config.max_payload_bytes, now)?;
    let event_type = event.event_type.clone();
    let published = state.ingest.publish_to(vec![event], &endpoint.id).await?;
    let published = published.into_iter().next().ok_or_else(|| ApiError::internal("the test event was not stored"))?;
    if published.deliveries == 0 {
        // Paused or disabled between the check above and the commit: the event is stored, with no delivery.
        return Err(ApiError::Conflict(format!(
            "endpoint {} was paused or disabled meanwhile: event {} is stored without a delivery",
            endpoint.id, published.event_id
        )));
    }
    state.metrics.published(1, 1);
    let filter = DeliveryFilter { event_id: Some(published.event_id.clone()), ..Default::default() };
    let deliveries = state.store.list_deliveries(&caller.tenant_id, &filter, &Page { cursor: None, limit: 1 }).await?;
    let delivery_id = deliveries.into_iter().next().map(|d| d.id);
    let details = json!({ "event_id": published.event_id, "type": event_type });
    audit::record(&state, &caller, "endpoint.tested", "endpoint", &endpoint.id, details).await;
    Ok((StatusCode::ACCEPTED, Json(json!({ "event_id": published.event_id, "delivery_id": delivery_id }))))
}

fn not_active(status: EndpointStatus) -> ApiError {
    ApiError::Conflict(format!("the endpoint is {status}: activate it to send it a test event"))
}
