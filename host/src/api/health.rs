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

/// Alive unless the writer's task has ended (it panicked): the node would refuse every publish until restarted, so
/// the orchestrator should restart it.
async fn healthz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    writer_running(&state)?;
    Ok(Json(json!({ "status": "ok" })))
}

fn writer_running(state: &AppState) -> ApiResult<()> {
    if state.ingest.is_stopped() {
        return Err(ApiError::Unavailable("the event writer has stopped; restart the node".into()));
    }
    Ok(())
}

/// Ready when the database answers; a load balancer then stops sending requests this node could not serve.
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    writer_running(&state)?;
    state.store.ping().await.map_err(|e| ApiError::Unavailable(format!("database ping failed: {e}")))?;
    Ok(Json(json!({ "status": "ready" })))
}
