//! A tenant's overview in numbers: deliveries waiting, in flight and parked, and endpoints by status. What the
//! dashboard's first page shows, and what an operator's script polls.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::auth::Caller;
use crate::error::ApiResult;
use crate::AppState;

/// Delivery counts stop here: counting reads index entries, and a dead-letter queue of millions would make every
/// refresh of an overview as slow as its size. "10,000 or more" is enough to act on.
pub const COUNT_LIMIT: u64 = 10_000;

pub fn router() -> Router<AppState> {
    Router::new().route("/stats", get(stats))
}

async fn stats(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let counts = state.store.tenant_counts(&caller.tenant_id, COUNT_LIMIT).await?;
    let deliveries: Map<String, Value> =
        counts.deliveries.into_iter().map(|(status, n)| (status.to_string(), Value::from(n))).collect();
    let endpoints: Map<String, Value> =
        counts.endpoints.into_iter().map(|(status, n)| (status.to_string(), Value::from(n))).collect();
    Ok(Json(json!({ "deliveries": deliveries, "endpoints": endpoints, "count_limit": COUNT_LIMIT })))
}
