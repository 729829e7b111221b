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
    let by_status = |pairs: Vec<(&'static str, u64)>| -> Map<String, Value> {
        pairs.into_iter().map(|(status, n)| (status.to_string(), Value::from(n))).collect()
    };
    Ok(Json(json!({
        "deliveries": by_status(counts.deliveries.into_iter().map(|(s, n)| (s.as_str(), n)).collect()),
        "endpoints": by_status(counts.endpoints.into_iter().map(|(s, n)| (s.as_str(), n)).collect()),
        "count_limit": COUNT_LIMIT,
    })))
}
