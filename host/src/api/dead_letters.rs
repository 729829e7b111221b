//! The dead-letter queue: deliveries that ran out of attempts (or lost their endpoint), and requeueing them.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::audit;
use super::auth::Caller;
use super::deliveries::{common_filter, DeliveryView};
use super::json::ApiJson;
use super::pagination::{PageOf, Query};
use super::validate;
use crate::error::{ApiError, ApiResult};
use crate::model::{now_millis, DeliveryStatus};
use crate::store::{DeliveryFilter, RequeueSelector};
use crate::AppState;

pub const MAX_REQUEUE_IDS: usize = 1000;

pub fn router() -> Router<AppState> {
    Router::new().route("/dead-letters", get(list)).route("/dead-letters/requeue", post(requeue))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    mut query: Query,
) -> ApiResult<Json<PageOf<DeliveryView>>> {
    let filter = DeliveryFilter { status: Some(DeliveryStatus::Dead), ..common_filter(&mut query)? };
    let page = query.page()?;
    query.finish()?;
    let rows = state.store.list_deliveries(&caller.tenant_id, &filter, &page.store_page()).await?;
    Ok(Json(page.respond(rows, |d| &d.id, DeliveryView::from)))
}

/// Either a list of ids or a filter (`{}` selects every dead letter of the tenant).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequeueBody {
    #[serde(default)]
    delivery_ids: Option<Vec<String>>,
    #[serde(default)]
    endpoint_id: Option<String>,
    #[serde(default)]
    event_type: Option<String>,
}

#[derive(Debug, Serialize)]
struct Requeued {
    requeued: u64,
}

async fn requeue(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RequeueBody>,
) -> ApiResult<Json<Requeued>> {
    if let Some(event_type) = &body.event_type {
        validate::event_type_filter("event_type", event_type)?;
    }
    let selector = match body.delivery_ids {
        Some(_) if body.endpoint_id.is_some() || body.event_type.is_some() => {
            return Err(ApiError::invalid("delivery_ids", "cannot be combined with endpoint_id or event_type"));
        }
        Some(ids) if ids.is_empty() || ids.len() > MAX_REQUEUE_IDS => {
            return Err(ApiError::invalid("delivery_ids", format!("must hold 1 to {MAX_REQUEUE_IDS} ids")));
        }
        Some(ids) => RequeueSelector::Ids(ids),
        None => RequeueSelector::Matching { endpoint_id: body.endpoint_id, event_type: body.event_type },
    };
    let requeued = state.store.requeue_dead(&caller.tenant_id, &selector, now_millis()).await?;
    let details = match &selector {
        RequeueSelector::Ids(ids) => json!({ "requeued": requeued, "delivery_ids": ids }),
        RequeueSelector::Matching { endpoint_id, event_type } => {
            json!({ "requeued": requeued, "endpoint_id": endpoint_id, "event_type": event_type })
        }
    };
    audit::record(&state, &caller, "dead_letters.requeued", "delivery", "*", details).await;
    if requeued > 0 {
        state.dispatch_wakeup.notify_one();
    }
    Ok(Json(Requeued { requeued }))
}
