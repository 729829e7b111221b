//! The REST API (`docs/api.md` is its specification). Each resource has its own module and router; this one
//! merges them and makes sure even unknown routes, wrong methods and bad path segments answer with the JSON error
//! shape.
//!
//! Only this module knows HTTP: handlers validate, call the [`Store`](crate::store::Store) and render.

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod dashboard;
pub mod dead_letters;
pub mod deliveries;
pub mod drain;
pub mod endpoint_view;
pub mod endpoints;
pub mod event_types;
pub mod events;
pub mod export;
pub mod health;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod pagination;
pub mod plugins;
pub mod replay;
pub mod simulate;
pub mod stats;
pub mod tenants;
pub mod test_event;
pub mod validate;

use std::time::Duration;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::Request;
use axum::Router;
use tower_http::map_request_body::MapRequestBodyLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;
use tracing::{Level, Span};

use crate::error::ApiError;
use crate::AppState;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(tenants::router())
        .merge(api_keys::router())
        .merge(endpoints::router())
        .merge(event_types::router())
        .merge(events::router())
        .merge(deliveries::router())
        .merge(dead_letters::router())
        .merge(export::router())
        .merge(audit::router())
        .merge(plugins::router())
        .merge(simulate::router())
        .merge(replay::router())
        .merge(stats::router())
        .merge(test_event::router());
    // The span carries the method and the path only: never headers (Authorization) or bodies (payloads,
    // secrets), and not the query string.
    let trace = TraceLayer::new_for_http()
        .make_span_with(
            |req: &Request<_>| tracing::debug_span!("request", method = %req.method(), path = %req.uri().path()),
        )
        .on_request(())
        // Debug, not info: at thousands of publishes per second an access line per request costs more CPU than
        // the request, and the deliveries API is where operators look.
        .on_response(DefaultOnResponse::new().level(Level::DEBUG).latency_unit(LatencyUnit::Millis))
        .on_failure(DefaultOnFailure::new().level(Level::ERROR).latency_unit(LatencyUnit::Millis))
        .on_body_chunk(())
        .on_eos(|_: Option<&_>, _: Duration, _: &Span| {});
    Router::new()
        .nest("/api/v1", api)
        .merge(health::router())
        .merge(dashboard::router())
        .merge(metrics::router())
        .fallback(route_not_found)
        // Must come after every route is added: it applies to the routes present when it is called.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(metrics::CountRequestsLayer(state.metrics.clone()))
        .layer(MapRequestBodyLayer::new(drain::drained_if_unread))
        .layer(trace)
        .with_state(state)
}

async fn route_not_found() -> ApiError {
    ApiError::NotFound("route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The `{id}` segment of a path. A segment that does not even decode cannot name an object, so it is a JSON 404
/// rather than axum's plain-text 400.
#[derive(Debug, Clone)]
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(PathId(id)),
            Err(_) => Err(ApiError::NotFound("object")),
        }
    }
}
