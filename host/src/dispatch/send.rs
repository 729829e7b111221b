//! The HTTP side of an attempt: the shared client, the request's headers, and a bounded read of the answer.
//!
//! Nothing here decides what an answer means (see `outcome`) or touches the store.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, LOCATION, RETRY_AFTER, USER_AGENT};
use reqwest::{redirect, Client, Method, Request, Url};
use url::Host;

use super::outcome::{self, FailureKind, Verdict};
use crate::config::{redact_url, MAX_ENDPOINT_TIMEOUT};
use crate::destinations::{Destinations, Refused};
use crate::model::{Endpoint, PreparedRequest};

/// At most this much of a response body is read and kept: enough to debug a rejection, bounded so a receiver
/// cannot make us buffer an arbitrarily large answer.
pub const MAX_RESPONSE_BODY: usize = 4096;
/// Recorded error texts are cut to this many characters.
pub const MAX_ERROR_CHARS: usize = 500;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The one client every attempt shares, and where it may connect. The client keeps connections to a receiver
/// alive and reuses them. Redirects are never followed: that would send signed payloads to a URL the tenant did
/// not configure. Nor does the client retry on its own: every attempt is one request, recorded as such (a pooled
/// connection the receiver had already closed is still replaced before anything is sent). Its retry layer would
/// also copy every request's headers up front in case it retried. `extra_roots` are trusted beside the bundled
/// public roots (`ca_file`).
pub struct Outbound {
    client: Client,
    destinations: Arc<Destinations>,
}

impl Outbound {
    pub fn new(extra_roots: &[reqwest::Certificate], destinations: Arc<Destinations>) -> Self {
        let builder = Client::builder()
            .redirect(redirect::Policy::none())
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(60))
            .dns_resolver(Arc::new(GuardedResolver { destinations: destinations.clone() }));
        let client = extra_roots
            .iter()
            .fold(builder, |builder, root| builder.add_root_certificate(root.clone()))
            .build()
            .expect("a client with static settings, bundled TLS roots and parsed extra roots builds");
        Self { client, destinations }
    }

    /// POSTs `body` and reads at most [`MAX_RESPONSE_BODY`] bytes of the answer. `timeout` bounds everything from
    /// connecting to the last byte read. A URL whose host is a refused address is not sent (the client connects to
    /// an address literal without asking the resolver), nor a plain `http://` one outside dev mode.
    pub async fn send(&self, url: Url, headers: HeaderMap, body: Bytes, timeout: Duration) -> Answer {
        let literal = match url.host() {
            Some(Host::Ipv4(address)) => Some(IpAddr::V4(address)),
            Some(Host::Ipv6(address)) => Some(IpAddr::V6(address)),
            _ => None,
        };
        let refused = match literal.map(|address| self.destinations.check(address)) {
            Some(Err(refused)) => Some(refused.to_string()),
            _ if url.scheme() != "https" && !self.destinations.allows_plain_http() => {
                Some("http:// is sent only in dev mode; give the endpoint an https:// URL".to_string())
            }
            _ => None,
        };
        if let Some(refused) = refused {
            let text = format!("connection refused by Switchyard: {refused}");
            return Answer { failure: Some((FailureKind::Connect, text)), ..Answer::default() };
        }
        send(&self.client, url, headers, body, timeout).await
    }
}

/// Resolves receivers' names as the system does, then keeps only the addresses deliveries may go to. Checking
/// here, where the connection's addresses come from, rather than resolving once when the URL is saved, leaves a
/// name no way to point somewhere else later (DNS rebinding).
struct GuardedResolver {
    destinations: Arc<Destinations>,
}

#[derive(Debug, thiserror::Error)]
#[error("connection refused by Switchyard: `{name}` resolves only to addresses outside the public internet: {refused}")]
struct RefusedName {
    name: String,
    refused: Refused,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let destinations = self.destinations.clone();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|address| match destinations.check(address.ip()) {
                    Ok(()) => true,
                    Err(refused) => {
                        refusal.get_or_insert(refused);
                        false
                    }
                })
                .collect();
            match refusal {
                Some(refused) if allowed.is_empty() => {
                    Err(Box::new(RefusedName { name: name.as_str().to_string(), refused }) as _)
                }
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

/// Headers Switchyard sets or that frame the request. A custom header by one of these names is dropped: it must
/// never replace or pose as a signature (`stripe-signature` too, which no plugin or static value can compute), and
/// a stray `transfer-encoding`, `host` or `expect` would corrupt the request itself. The API and the plugin host
/// reject them with this same rule; dropping them here is the sender's own guarantee.
pub fn is_reserved_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    const EXACT: &[&str] = &[
        "content-type",
        "content-length",
        "host",
        "user-agent",
        "idempotency-key",
        "stripe-signature",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
    ];
    EXACT.contains(&name.as_str())
        || name.starts_with("webhook-")
        || name.starts_with("switchyard-")
        || name.starts_with("proxy-")
}

const EVENT_TYPE: HeaderName = HeaderName::from_static("switchyard-event-type");
const DELIVERY_ID: HeaderName = HeaderName::from_static("switchyard-delivery-id");
const ATTEMPT: HeaderName = HeaderName::from_static("switchyard-attempt");

/// What a request is, told to the receiver beside the signature: the event (its id is `webhook-id` and
/// `Idempotency-Key`) and its type, so a receiver can route without parsing the body, and, for a real delivery,
/// which delivery and attempt it is (a simulation has neither).
#[derive(Debug, Clone, Copy)]
pub struct RequestIdentity<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    /// The delivery's id and this attempt's number (1 for the first).
    pub attempt: Option<(&'a str, i64)>,
}

/// All headers of one attempt: the endpoint's custom ones first, then a transform's, then ours, which always win.
pub fn request_headers(
    endpoint: &Endpoint,
    prepared: Option<&PreparedRequest>,
    identity: RequestIdentity<'_>,
    signature: Vec<(HeaderName, String)>,
) -> HeaderMap {
    let transform_headers = prepared.map(|p| p.headers.as_slice()).unwrap_or_default();
    // Sized up front, with room for the `accept` reqwest adds: grown one insert at a time, the map was
    // reallocated and rehashed on every request.
    let ours = 6 + signature.len() + 1;
    let mut headers = HeaderMap::with_capacity(endpoint.headers.len() + transform_headers.len() + ours);
    let custom = endpoint.headers.iter().map(|(name, value)| (name.as_str(), value.as_str()));
    for (name, value) in custom.chain(transform_headers.iter().map(|(name, value)| (name.as_str(), value.as_str()))) {
        if is_reserved_header(name) {
            continue;
        }
        // Validated on write (API) or on return (plugin host); an invalid pair read back is skipped, not fatal.
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.insert(name, value);
        }
    }
    let content_type = prepared.and_then(|p| p.content_type.as_deref()).unwrap_or("application/json");
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::try_from(content_type).unwrap_or_else(|_| HeaderValue::from_static("application/json")),
    );
    headers.insert(USER_AGENT, HeaderValue::from_static(concat!("Switchyard/", env!("CARGO_PKG_VERSION"))));
    if let Ok(value) = HeaderValue::try_from(identity.event_id) {
        headers.insert(IDEMPOTENCY_KEY, value);
    }
    // Event types, ids and numbers are visible ASCII by construction; `try_from` only guards against the odd one.
    if let Ok(value) = HeaderValue::try_from(identity.event_type) {
        headers.insert(EVENT_TYPE, value);
    }
    if let Some((delivery_id, attempt)) = identity.attempt {
        if let Ok(value) = HeaderValue::try_from(delivery_id) {
            headers.insert(DELIVERY_ID, value);
        }
        headers.insert(ATTEMPT, HeaderValue::from(attempt));
    }
    for (name, value) in signature {
        // Signature values are ids, digits, base64 and hex; `try_from` only guards against an odd event id.
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    }
    headers
}

/// The endpoint's timeout as used for a request: at least 1 ms, at most the longest a lease allows for.
pub fn request_timeout(endpoint: &Endpoint) -> Duration {
    Duration::from_millis(u64::try_from(endpoint.timeout_ms).unwrap_or(0))
        .clamp(Duration::from_millis(1), MAX_ENDPOINT_TIMEOUT)
}

/// What came back from one request.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// None when no status line arrived.
    pub status: Option<u16>,
    pub retry_after: Option<String>,
    /// The first [`MAX_RESPONSE_BODY`] bytes as text; None when no status line arrived.
    pub body: Option<String>,
    /// Set when the request or the body read failed, with a short description (no URL, no payload).
    pub failure: Option<(FailureKind, String)>,
    /// A redirect's `Location`, its query and credentials masked (receivers put tokens there).
    pub location: Option<String>,
    pub duration: Duration,
}

impl Answer {
    /// A failure that happened before any request was made (e.g. the secret could not be decrypted).
    pub fn local_failure(text: &str) -> Self {
        Self { failure: Some((FailureKind::Other, truncate_chars(text, MAX_ERROR_CHARS))), ..Self::default() }
    }

    pub fn verdict(&self, now: SystemTime) -> Verdict {
        let retry_after = self.retry_after.as_deref();
        match (&self.failure, self.status) {
            (Some((kind, _)), _) => outcome::classify_failure(*kind, retry_after, now),
            (None, Some(status)) => outcome::classify_status(status, retry_after, now),
            (None, None) => outcome::classify_failure(FailureKind::Other, retry_after, now),
        }
    }

    /// What went wrong, for the attempt's record: the failure, or why a redirect was not followed (it is retried
    /// like a 5xx, and the same answer would come back every time until the endpoint's URL changes).
    pub fn error_text(&self) -> Option<String> {
        if let Some((_, text)) = &self.failure {
            return Some(text.clone());
        }
        let status = self.status.filter(|status| (300..400).contains(status))?;
        let target = self.location.as_deref().map(|location| format!(" to {location}")).unwrap_or_default();
        let text = format!(
            "redirected (HTTP {status}){target}; redirects are not followed: set the endpoint's URL to the final one"
        );
        Some(truncate_chars(&text, MAX_ERROR_CHARS))
    }
}

async fn send(client: &Client, url: Url, headers: HeaderMap, body: Bytes, timeout: Duration) -> Answer {
    let started = Instant::now();
    // The request is assembled here rather than through `RequestBuilder`, which would copy every header into a
    // map of its own, one insert at a time.
    let mut request = Request::new(Method::POST, url);
    *request.headers_mut() = headers;
    *request.body_mut() = Some(body.into());
    *request.timeout_mut() = Some(timeout);
    let mut response = match client.execute(request).await {
        Ok(response) => response,
        Err(e) => {
            return Answer { failure: Some(describe(e, timeout)), duration: started.elapsed(), ..Answer::default() }
        }
    };
    let status = response.status().as_u16();
    let retry_after = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let location = response.status().is_redirection().then(|| response.headers().get(LOCATION)).flatten();
    let location = location.and_then(|v| v.to_str().ok()).map(shown_location);
    let mut kept = Vec::new();
    let mut failure = None;
    while kept.len() < MAX_RESPONSE_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_BODY - kept.len();
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) => break,
            Err(e) => {
                failure = Some(describe(e, timeout));
                break;
            }
        }
    }
    // Dropping the response here abandons whatever is left unread, which is the point of the cap.
    drop(response);
    Answer {
        status: Some(status),
        retry_after,
        body: Some(body_text(&kept)),
        failure,
        location,
        duration: started.elapsed(),
    }
}

/// A `Location` as it may be recorded: an absolute URL with its password and query values masked, a relative one
/// without its query.
fn shown_location(location: &str) -> String {
    if Url::parse(location).is_ok() {
        redact_url(location)
    } else {
        location.split(['?', '#']).next().unwrap_or_default().to_string()
    }
}

fn describe(error: reqwest::Error, timeout: Duration) -> (FailureKind, String) {
    // The URL may carry a token in its query string; it is on the endpoint already and stays out of the record.
    let error = error.without_url();
    let (kind, text) = if let Some(refused) = refused_name(&error) {
        (FailureKind::Connect, refused.to_string())
    } else if error.is_timeout() {
        (FailureKind::Timeout, format!("timed out after {} ms", timeout.as_millis()))
    } else if error.is_connect() {
        (FailureKind::Connect, format!("connection failed: {}", error_chain(&error)))
    } else if error.is_body() || error.is_decode() {
        (FailureKind::Other, format!("reading the response failed: {}", error_chain(&error)))
    } else {
        (FailureKind::Other, format!("request failed: {}", error_chain(&error)))
    };
    (kind, truncate_chars(&text, MAX_ERROR_CHARS))
}

/// The resolver's refusal, if that is why the request failed: said alone, without the layers reqwest wraps it in.
fn refused_name<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a RefusedName> {
    std::iter::successors(Some(error), |error| error.source()).find_map(|error| error.downcast_ref::<RefusedName>())
}

/// The error with its causes, because reqwest's own message ("error sending request") hides the useful part.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// The kept bytes as text: a multi-byte character cut by the cap is dropped rather than shown as garbage,
/// other invalid UTF-8 is replaced, and the result never exceeds [`MAX_RESPONSE_BODY`] bytes.
pub fn body_text(bytes: &[u8]) -> String {
    let bytes = if bytes.len() >= MAX_RESPONSE_BODY { without_cut_char(bytes) } else { bytes };
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if text.len() > MAX_RESPONSE_BODY {
        let mut end = MAX_RESPONSE_BODY;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn without_cut_char(bytes: &[u8]) -> &[u8] {
    for back in 1..=bytes.len().min(4) {
        let byte = bytes[bytes.len() - back];
        if byte & 0xC0 != 0x80 {
            let width = match byte {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            return if width > back { &bytes[..bytes.len() - back] } else { bytes };
        }
    }
    bytes
}

pub fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => text[..end].to_string(),
        None => text.to_string(),
    }
}

#[cfg(test)]
#[path = "send_tests.rs"]
pub(crate) mod tests;
