//! `GET /metrics`: the server's [`Metrics`](crate::metrics::Metrics) in the OpenMetrics text format, for the
//! metrics token or the admin key (Prometheus sends it as a bearer token: `authorization: {credentials: …}` in
//! the scrape config). Outside
//! `/api/v1`, as the health probes are. Also [`CountRequestsLayer`], which counts every API request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_layer::Layer;
use tower_service::Service;

use super::auth::MetricsReader;
use crate::metrics::Metrics;
use crate::model::now_millis;
use crate::AppState;

/// Waiting deliveries are counted up to this many, so a scrape during a vast backlog reads a bounded part of its
/// index (a drill: 66 ms for 150,000 on SQLite, 0.7–1 s for a million): far past any alert's threshold, and the
/// lag tells how far behind the dispatcher is.
const WAITING_COUNTED_UP_TO: u64 = 100_000;

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(render))
}

async fn render(State(state): State<AppState>, _: MetricsReader) -> impl IntoResponse {
    match state.store.next_due_at().await {
        Ok(first_due) => {
            let lag = first_due.map_or(0, |at| now_millis().saturating_sub(at).max(0));
            state.metrics.set_due_lag(Some(Duration::from_millis(u64::try_from(lag).unwrap_or(0))));
        }
        // The rest is in memory and still worth scraping.
        Err(e) => {
            tracing::warn!(error = %e, "metrics: could not read the earliest due delivery");
            state.metrics.set_due_lag(None);
        }
    }
    match state.store.server_counts(WAITING_COUNTED_UP_TO).await {
        Ok(counts) => state.metrics.set_server_counts(Some(&counts)),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: could not count waiting deliveries and endpoints");
            state.metrics.set_server_counts(None);
        }
    }
    // The OpenMetrics text format (counters end in `_total`, the text in `# EOF`), which Prometheus reads.
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render())
}

/// Counts each request by its route's template, so ids in paths do not grow the label set. A plain tower layer
/// rather than `axum::middleware::from_fn`, which boxes the route and its future on every request: that cost 3 %
/// of the router's CPU in `single` (BENCHMARKS.md, twenty-second round).
#[derive(Clone)]
pub struct CountRequestsLayer(pub Arc<Metrics>);

impl<S> Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;

    fn layer(&self, inner: S) -> CountRequests<S> {
        CountRequests { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct CountRequests<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Service<Request> for CountRequests<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Counted<S::Future> {
        let method = request.method().clone();
        let route = request.extensions().get::<MatchedPath>().cloned();
        Counted {
            inner: self.inner.call(request),
            counted: Some(Counting { metrics: self.metrics.clone(), method, route, started: Instant::now() }),
        }
    }
}

struct Counting {
    metrics: Arc<Metrics>,
    method: Method,
    route: Option<MatchedPath>,
    started: Instant,
}

pin_project_lite::pin_project! {
    /// The route's future, and what to count once it has answered.
    pub struct Counted<F> {
        #[pin]
        inner: F,
        counted: Option<Counting>,
    }

    impl<F> PinnedDrop for Counted<F> {
        // Dropped before it answered: the client went away (or timed out), and these are the slow requests.
        fn drop(this: Pin<&mut Self>) {
            if let Some(counting) = this.project().counted.take() {
                counting.count(CLIENT_CLOSED_REQUEST);
            }
        }
    }
}

/// The status a request is counted with when its client went away first (nginx's convention).
const CLIENT_CLOSED_REQUEST: u16 = 499;

impl Counting {
    fn count(self, status: u16) {
        let route = self.route.as_ref().map(MatchedPath::as_str);
        self.metrics.answered(self.method.as_str(), route, status, self.started.elapsed());
    }
}

impl<F, E> Future for Counted<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answered = ready!(this.inner.poll(cx));
        if let Some(counting) = this.counted.take() {
            // axum's routes do not fail; a service that did would answer 500.
            counting.count(answered.as_ref().map_or(500, |response| response.status().as_u16()));
        }
        Poll::Ready(answered)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::body::Body;

    use super::*;

    /// A route that never answers.
    struct Silent;

    impl Service<Request> for Silent {
        type Response = Response;
        type Error = Infallible;
        type Future = std::future::Pending<Result<Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request) -> Self::Future {
            std::future::pending()
        }
    }

    #[test]
    fn a_request_whose_client_went_away_is_counted_as_499() {
        let metrics = Arc::new(Metrics::default());
        let mut service = CountRequestsLayer(metrics.clone()).layer(Silent);
        drop(service.call(Request::new(Body::empty())));
        let expected =
            r#"switchyard_http_request_duration_seconds_count{method="GET",route="unmatched",status="499"} 1"#;
        assert!(metrics.render().lines().any(|line| line == expected), "{}", metrics.render());
    }
}
