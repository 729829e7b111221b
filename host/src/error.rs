//! The API's error type. Every failure a client can see is one of these; its `IntoResponse` picks the status and
//! writes `{"error":{"code","message","field"}}`. Internal failures are logged in full and answered with a
//! generic 500 body, so database or crypto details never reach a client.

use std::time::Duration;

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or invalid input. `field` names the offending field (a JSON path such as `events[2].type`, a
    /// query parameter or a header) when there is one.
    #[error("{message}")]
    Invalid { field: Option<String>, message: String },
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// An idempotency key the tenant already used, sent with another event: repeating the request cannot help.
    #[error("{message}")]
    KeyReused { field: String, message: String },
    /// An event's `data` that its type's JSON Schema refuses: well formed, but not what the tenant said it sends.
    #[error("{message}")]
    SchemaMismatch { field: String, message: String },
    /// The path exists but not with this method; axum adds the `Allow` header.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("{message}")]
    PayloadTooLarge { field: Option<String>, message: String },
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The tenant's keys went over `tenant_rate_limit` on this node; the next request is allowed after `retry_after`.
    #[error("this tenant is over its request rate on this server: retry after the Retry-After header's seconds")]
    RateLimited { retry_after: Duration },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: Some(field.into()), message: message.into() }
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        Self::Internal(err.to_string())
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::KeyReused { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            Self::SchemaMismatch { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "schema_mismatch"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(what) => Self::Conflict(what),
            StoreError::Unavailable(why) => Self::Unavailable(why),
            // A 503 tells the client to try again later, which will work once an operator frees space.
            full if full.is_out_of_space() => Self::Unavailable(full.to_string()),
            // Retried, the request meets other transactions than the one it collided with.
            conflict if conflict.is_transient_conflict() => Self::Unavailable(conflict.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl ApiError {
    /// `{"code", "message", "field"}`, what a client is shown: also for an error inside a `2xx` body (one event
    /// of a batch).
    pub fn body(&self) -> serde_json::Value {
        let (_, code) = self.status_and_code();
        let (message, field) = match self {
            Self::Internal(_) => ("internal error; see the server log".to_string(), None),
            Self::Unavailable(_) => ("service unavailable; retry later".to_string(), None),
            Self::Invalid { field, message } | Self::PayloadTooLarge { field, message } => {
                (message.clone(), field.clone())
            }
            Self::KeyReused { field, message } | Self::SchemaMismatch { field, message } => {
                (message.clone(), Some(field.clone()))
            }
            other => (other.to_string(), None),
        };
        json!({ "code": code, "message": message, "field": field })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) | Self::Unavailable(detail) = &self {
            tracing::error!(error = %detail, "request failed");
        }
        let (status, _) = self.status_and_code();
        let mut response = (status, Json(json!({ "error": self.body() }))).into_response();
        if let Self::RateLimited { retry_after } = &self {
            // Whole seconds, rounded up: a client that waits that long is let in.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;

    /// A database that is out of space (here SQLite's page limit, which fails as a full disk does) answers 503, so
    /// clients retry; other database errors stay 500.
    #[tokio::test]
    async fn a_full_database_is_unavailable_not_internal() {
        sqlx::any::install_default_drivers();
        let mut connection = sqlx::AnyConnection::connect("sqlite::memory:").await.unwrap();
        for statement in ["CREATE TABLE t (x BLOB)", "PRAGMA max_page_count = 4"] {
            sqlx::query(statement).execute(&mut connection).await.unwrap();
        }
        let full = sqlx::query("INSERT INTO t VALUES (zeroblob(1000000))").execute(&mut connection).await.unwrap_err();
        let full = StoreError::Database(full);
        assert!(full.is_out_of_space(), "{full}");
        assert_eq!(ApiError::from(full).status_and_code(), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"));

        let other = sqlx::query("SELECT * FROM missing").execute(&mut connection).await.unwrap_err();
        let other = StoreError::Database(other);
        assert!(!other.is_out_of_space());
        assert_eq!(ApiError::from(other).status_and_code(), (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"));
    }
}
