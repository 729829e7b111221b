//! JSON request bodies. axum's own `Json` answers errors in plain text and without the offending field; this
//! extractor checks the media type (415), caps the body while reading it (413) and parses with
//! `serde_path_to_error`, so a wrong type, an unknown field or a missing field is a 400 naming its JSON path.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};

/// Management bodies (endpoints, keys, requeue lists) are small; 1 MiB leaves ample room for 100 subscriptions
/// with filters while bounding what one request can make the server buffer.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// A JSON body parsed into `T` (whose types should all `deny_unknown_fields`).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> ApiResult<Self> {
        let (parts, body) = req.into_parts();
        parse_body(&parts.headers, body, DEFAULT_BODY_LIMIT).await.map(ApiJson)
    }
}

/// Like [`ApiJson`] for a body that may be left out entirely: an empty body reads as `T::default()`.
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> ApiResult<Self> {
        let (parts, body) = req.into_parts();
        parse_optional_body(&parts.headers, body, DEFAULT_BODY_LIMIT).await.map(OptionalJson)
    }
}

/// [`OptionalJson`] with a limit of the route's own: an empty body reads as `T::default()`.
pub async fn parse_optional_body<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> ApiResult<T> {
    let bytes = read_limited(headers, body, limit).await?;
    // Whatever the content type says, nothing at all is the "left out" case.
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    if !is_json(headers) {
        return Err(unsupported_media_type());
    }
    parse_slice(&bytes)
}

/// Checks the content type, reads at most `limit` bytes and parses them.
pub async fn parse_body<T: DeserializeOwned>(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<T> {
    if !is_json(headers) {
        return Err(unsupported_media_type());
    }
    let bytes = read_limited(headers, body, limit).await?;
    parse_slice(&bytes)
}

fn unsupported_media_type() -> ApiError {
    ApiError::UnsupportedMediaType("the request body must be JSON with `Content-Type: application/json`".into())
}

/// `application/json` or a structured `+json` type, with any parameters (`; charset=utf-8`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge { field: None, message: format!("the request body exceeds {limit} bytes") }
}

/// Reads the body, failing as soon as it passes `limit` rather than after buffering all of it.
pub async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Vec<u8>> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if declared.is_some_and(|len: usize| len > limit) {
        return Err(too_large(limit));
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::Invalid { field: None, message: "the request body was cut off".into() })?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Parses a complete JSON document into `T`, mapping every failure to a 400 that names the field when there is
/// one.
pub fn parse_slice<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    // serde lets a struct be read from an array (`["https://…"]` as `{"url": …}`); every body of this API is an
    // object, and saying so is clearer than an error about element 0.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|&b| b != b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
    {
        return Err(ApiError::Invalid { field: None, message: "the body must be a JSON object".into() });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        // serde_json reports a value of the wrong type for an enum (`"signature_scheme": 1`) as a syntax error,
        // "expected value"; in a document that parses, it is the field's fault, not the JSON's.
        // (serde_json skips an ignored string without checking its UTF-8, so that is checked too.)
        let parses =
            || std::str::from_utf8(bytes).is_ok() && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok();
        let path = err.path().to_string();
        if err.inner().is_syntax() && path != "." && !path.contains('?') && parses() {
            ApiError::Invalid { field: Some(path), message: "has the wrong type".into() }
        } else {
            path_error(err)
        }
    })?;
    de.end().map_err(|e| ApiError::Invalid { field: None, message: format!("malformed JSON: {e}") })?;
    Ok(value)
}

fn path_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    if !inner.is_data() {
        let message = if inner.is_eof() { "malformed JSON: the body ended early" } else { "malformed JSON" };
        return ApiError::Invalid { field: None, message: format!("{message} ({inner})") };
    }
    let message = strip_position(&inner.to_string());
    // serde reports a missing field at its parent; the client wants the field itself.
    let missing = message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next());
    let field = match (path.as_str(), missing) {
        (".", Some(name)) => Some(name.to_string()),
        (".", None) => None,
        (parent, Some(name)) => Some(format!("{parent}.{name}")),
        (path, None) => Some(path.to_string()),
    };
    ApiError::Invalid { field, message }
}

/// serde_json appends " at line L column C"; the field path already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::http::HeaderValue;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        event_type: String,
        filter: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code)]
    enum Mode {
        Fast,
        Slow,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        url: String,
        #[serde(default)]
        mode: Option<Mode>,
        #[serde(default)]
        subscriptions: Vec<Item>,
        #[serde(default)]
        headers: BTreeMap<String, String>,
    }

    fn error_of(json: &str) -> (Option<String>, String) {
        match parse_slice::<Doc>(json.as_bytes()) {
            Err(ApiError::Invalid { field, message }) => (field, message),
            other => panic!("expected a 400 for {json}, got {other:?}"),
        }
    }

    #[test]
    fn wrong_types_name_the_json_path() {
        let (field, message) =
            error_of(r#"{"url":"u","subscriptions":[{"event_type":"*"},{"event_type":"*","filter":5}]}"#);
        assert_eq!(field.as_deref(), Some("subscriptions[1].filter"));
        assert!(message.starts_with("invalid type: integer `5`"), "{message}");
        assert!(!message.contains("line"), "{message}");
        assert_eq!(error_of(r#"{"url":"u","headers":{"X-A":1}}"#).0.as_deref(), Some("headers.X-A"));
        assert_eq!(error_of(r#"{"url":7}"#).0.as_deref(), Some("url"));
        // serde_json calls these syntax errors; the document parses, so they are the field's.
        for mode in ["1", "true", "[]", "1.5"] {
            let json = format!(r#"{{"url":"u","mode":{mode}}}"#);
            assert_eq!(error_of(&json), (Some("mode".to_string()), "has the wrong type".to_string()), "{json}");
        }
        assert_eq!(error_of(r#"{"url":"u","mode":"medium"}"#).0.as_deref(), Some("mode"));
        // A key that is not UTF-8 is the JSON's fault.
        let bad_key = [&b"{\"url\":\"u\",\""[..], &[0xff], &b"\":1}"[..]].concat();
        match parse_slice::<Doc>(&bad_key) {
            Err(ApiError::Invalid { field: None, message }) => {
                assert!(message.starts_with("malformed JSON"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        assert_eq!(error_of(r#"{"url":"u","colour":"red"}"#).0.as_deref(), Some("colour"));
        assert_eq!(
            error_of(r#"{"url":"u","subscriptions":[{"evnt_type":"*"}]}"#).0.as_deref(),
            Some("subscriptions[0].evnt_type")
        );
        assert_eq!(error_of(r#"{}"#).0.as_deref(), Some("url"));
        assert_eq!(error_of(r#"{"url":"u","subscriptions":[{}]}"#).0.as_deref(), Some("subscriptions[0].event_type"));
    }

    #[test]
    fn broken_json_is_a_400_without_field() {
        for json in [r#"{"url":"#, "not json", r#"{"url":"u"} trailing"#, "", r#"{"url":"u",}"#] {
            let (field, message) = error_of(json);
            assert_eq!(field, None, "{json}");
            assert!(message.starts_with("malformed JSON"), "{json}: {message}");
        }
        for json in ["[1,2]", "\"https://x\"", " null"] {
            assert_eq!(error_of(json), (None, "the body must be a JSON object".to_string()), "{json}");
        }
    }

    fn headers(content_type: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[tokio::test]
    async fn content_type_must_be_json() {
        for ok in ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/vnd.x+json"]
        {
            let parsed = parse_body::<Doc>(&headers(Some(ok)), r#"{"url":"u"}"#.into(), 100).await;
            assert!(parsed.is_ok(), "{ok}");
        }
        for bad in [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("application/jsonx")] {
            let parsed = parse_body::<Doc>(&headers(bad), r#"{"url":"u"}"#.into(), 100).await;
            assert!(matches!(parsed, Err(ApiError::UnsupportedMediaType(_))), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_413() {
        let json = format!(r#"{{"url":"{}"}}"#, "u".repeat(200));
        let parsed = parse_body::<Doc>(&headers(Some("application/json")), json.clone().into(), 100).await;
        assert!(matches!(parsed, Err(ApiError::PayloadTooLarge { field: None, .. })));
        let mut declared = headers(Some("application/json"));
        declared.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5000000"));
        let parsed = parse_body::<Doc>(&declared, "{}".into(), 100).await;
        assert!(matches!(parsed, Err(ApiError::PayloadTooLarge { .. })));
        let parsed = parse_body::<Doc>(&headers(Some("application/json")), json.into(), 300).await;
        assert!(parsed.is_ok());
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Grace {
        grace_period: Option<String>,
    }

    #[tokio::test]
    async fn optional_body_may_be_absent() {
        let req = Request::builder().method("POST").uri("/").body(axum::body::Body::empty()).unwrap();
        let OptionalJson(grace) = OptionalJson::<Grace>::from_request(req, &()).await.unwrap();
        assert_eq!(grace, Grace::default());
        let req = Request::builder()
            .method("POST")
            .uri("/")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(" \n"))
            .unwrap();
        let OptionalJson(grace) = OptionalJson::<Grace>::from_request(req, &()).await.unwrap();
        assert_eq!(grace, Grace::default());
        let req = Request::builder().method("POST").uri("/").body(axum::body::Body::from("x")).unwrap();
        let rejected = OptionalJson::<Grace>::from_request(req, &()).await;
        assert!(matches!(rejected, Err(ApiError::UnsupportedMediaType(_))));
        let req = Request::builder()
            .method("POST")
            .uri("/")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(r#"{"grace_period":"1h"}"#))
            .unwrap();
        let OptionalJson(grace) = OptionalJson::<Grace>::from_request(req, &()).await.unwrap();
        assert_eq!(grace.grace_period.as_deref(), Some("1h"));
    }
}
