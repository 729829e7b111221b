//! Liveness and readiness probes, outside `/api/v1` and without authentication.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the database answers; a load balancer then stops sending requests this node could not serve.
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    state.store.ping().await.map_err(|e| ApiError::Unavailable(format!("database ping failed: {e}")))?;
    Ok(Json(json!({ "status": "ready" })))
}
