//! `GET /metrics`: the server's [`Metrics`](crate::metrics::Metrics) in the OpenMetrics text format, for the admin
//! key (Prometheus sends it as a bearer token: `authorization: {credentials: …}` in the scrape config). Outside
//! `/api/v1`, as the health probes are. Also the layer that counts every API request.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::auth::AdminCaller;
use crate::model::now_millis;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(render))
}

async fn render(State(state): State<AppState>, _: AdminCaller) -> impl IntoResponse {
    match state.store.next_due_at().await {
        Ok(first_due) => {
            let lag = first_due.map_or(0, |at| now_millis().saturating_sub(at).max(0));
            state.metrics.set_due_lag(Duration::from_millis(u64::try_from(lag).unwrap_or(0)));
        }
        // The rest is in memory and still worth scraping; the lag keeps its last value.
        Err(e) => tracing::warn!(error = %e, "metrics: could not read the earliest due delivery"),
    }
    // The OpenMetrics text format (counters end in `_total`, the text in `# EOF`), which Prometheus reads.
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render())
}

/// Counts the request by its route's template, so ids in paths do not grow the label set.
pub async fn count_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map(MatchedPath::as_str);
    state.metrics.answered(method.as_str(), route, response.status().as_u16(), started.elapsed());
    response
}
