//! What the host accepts from a plugin. "Garbage" is defined here, and in the contract's comments: output over the
//! size cap, a content type that is not a valid header value, a JSON content type whose body is not JSON, and
//! headers that are invalid or that the host owns (framing and signature headers).

use reqwest::header::{HeaderName, HeaderValue};

use super::bindings::{Attempt, Endpoint, Event, Request, RetryDecision};
use super::errors::CallError;
use crate::dispatch::send::is_reserved_header;

pub(crate) fn check_input(size: usize, limit: usize) -> Result<(), CallError> {
    if size > limit {
        return Err(CallError::InputTooLarge { size, limit });
    }
    Ok(())
}

pub(crate) fn event_size(event: &Event, endpoint: &Endpoint) -> usize {
    event.id.len() + event.event_type.len() + event.tenant.len() + event.payload.len() + endpoint_size(endpoint)
}

pub(crate) fn endpoint_size(endpoint: &Endpoint) -> usize {
    endpoint.id.len() + endpoint.url.len() + endpoint.config.len()
}

pub(crate) fn attempt_size(attempt: &Attempt) -> usize {
    attempt.headers.iter().map(|(name, value)| name.len() + value.len()).sum()
}

fn check_output(size: usize, limit: usize) -> Result<(), CallError> {
    if size > limit {
        return Err(CallError::OutputTooLarge { size, limit });
    }
    Ok(())
}

/// A plugin's own error message is bounded too: it ends up in delivery records.
pub(crate) fn plugin_error(message: String, limit: usize) -> CallError {
    match check_output(message.len(), limit) {
        Ok(()) => CallError::Plugin(message),
        Err(error) => error,
    }
}

pub(crate) fn is_json_content_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

pub(crate) fn check_request(request: &Request, limit: usize) -> Result<(), CallError> {
    let header_bytes: usize = request.headers.iter().map(|(name, value)| name.len() + value.len()).sum();
    check_output(request.body.len() + request.content_type.len() + header_bytes, limit)?;
    if request.content_type.trim().is_empty() || HeaderValue::from_str(&request.content_type).is_err() {
        return Err(CallError::InvalidOutput(format!(
            "content type {:?} is not a valid header value",
            request.content_type
        )));
    }
    if is_json_content_type(&request.content_type)
        && serde_json::from_slice::<serde::de::IgnoredAny>(&request.body).is_err()
    {
        return Err(CallError::InvalidOutput(format!(
            "the body is not valid JSON but the content type is {}",
            request.content_type
        )));
    }
    for (name, value) in &request.headers {
        if HeaderName::from_bytes(name.as_bytes()).is_err() || HeaderValue::from_str(value).is_err() {
            return Err(CallError::InvalidOutput(format!("header {name:?} is not a valid HTTP header")));
        }
        if is_reserved_header(name) {
            return Err(CallError::InvalidOutput(format!("header {name:?} is set by the host, not by plugins")));
        }
    }
    Ok(())
}

pub(crate) fn check_retry_decision(decision: &RetryDecision, limit: usize) -> Result<(), CallError> {
    if let RetryDecision::GiveUp(reason) = decision {
        check_output(reason.len(), limit)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str, content_type: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            body: body.as_bytes().to_vec(),
            content_type: content_type.into(),
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn json_bodies_must_parse_when_the_content_type_says_json() {
        assert!(check_request(&request(r#"{"a":1}"#, "application/json", &[]), 100).is_ok());
        assert!(check_request(&request("not json", "text/plain", &[]), 100).is_ok());
        for content_type in ["application/json", "application/cloudevents+json; charset=utf-8"] {
            let err = check_request(&request("{nope", content_type, &[]), 100).unwrap_err();
            assert!(matches!(err, CallError::InvalidOutput(_)), "{err}");
        }
    }

    #[test]
    fn reserved_and_invalid_headers_are_rejected() {
        assert!(check_request(&request("x", "text/plain", &[("x-team", "billing")]), 100).is_ok());
        for header in [("webhook-signature", "v1,forged"), ("Content-Length", "1"), ("bad header", "x"), ("x", "a\nb")]
        {
            let err = check_request(&request("x", "text/plain", &[header]), 100).unwrap_err();
            assert!(matches!(err, CallError::InvalidOutput(_)), "{header:?}: {err}");
        }
        assert!(check_request(&request("x", "", &[]), 100).is_err());
    }

    #[test]
    fn sizes_are_capped() {
        let err = check_request(&request(&"x".repeat(101), "text/plain", &[]), 100).unwrap_err();
        assert!(matches!(err, CallError::OutputTooLarge { limit: 100, .. }), "{err}");
        assert!(matches!(plugin_error("e".repeat(11), 10), CallError::OutputTooLarge { .. }));
        assert_eq!(check_input(11, 10), Err(CallError::InputTooLarge { size: 11, limit: 10 }));
    }
}
