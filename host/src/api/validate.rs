//! Validation rules for request fields that are not mere types: URLs, custom headers, retry schedules, metadata,
//! durations and names. Each failure names the field with the same path a client used in its JSON body.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use url::Url;

use super::endpoint_view::REDACTED;
use crate::destinations::{is_loopback_host, Destinations};
use crate::dispatch::send::is_reserved_header;
use crate::error::{ApiError, ApiResult};
use crate::model::{EndpointPlugins, SignatureHeader, SignatureScheme, Subscription};
use crate::notices;
use crate::plugin::{self, PluginKind, PluginRegistry};
use crate::{retry, routing};

pub const MAX_URL_LEN: usize = 2048;
pub const MAX_HEADERS: usize = 20;
pub const MAX_HEADER_VALUE_LEN: usize = 4096;
pub const MAX_METADATA: usize = 50;
pub const MAX_METADATA_KEY_LEN: usize = 100;
pub const MAX_METADATA_VALUE_LEN: usize = 1000;
pub const MAX_DESCRIPTION_LEN: usize = 1000;
pub const MAX_NAME_LEN: usize = 200;
pub const MAX_SUBSCRIPTIONS: usize = 100;
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;
/// Arrays and objects in an event's `data` nest at most this deep. Filters read the envelope with serde_json,
/// which stops at 128 levels; real payloads stay far from either.
pub const MAX_DATA_DEPTH: usize = 64;
pub const TIMEOUT_SECS: std::ops::RangeInclusive<i64> = 1..=300;
pub const MAX_ATTEMPTS: std::ops::RangeInclusive<i64> = 1..=50;
pub const MAX_GRACE_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);

/// An event type used to filter a listing or a requeue. It names one type exactly: a pattern, which would
/// otherwise match nothing and answer an empty page, is refused with a pointer to where patterns belong.
pub fn event_type_filter(field: &str, name: &str) -> ApiResult<()> {
    if name.contains('*') {
        return Err(ApiError::invalid(
            field,
            "names one event type exactly; patterns such as `payment.*` are for subscriptions",
        ));
    }
    routing::validate_event_type(name).map_err(|message| ApiError::invalid(field, message))
}

/// An endpoint URL: absolute https without credentials; plain http only in dev mode and only to loopback, so a
/// production install never sends signed payloads in clear text. A host that is a non-public address the server
/// does not allow is refused here; a name is checked when a delivery connects (see [`crate::destinations`]).
pub fn endpoint_url(text: &str, dev_mode: bool, destinations: &Destinations) -> ApiResult<()> {
    let invalid = |message: &str| Err(ApiError::invalid("url", message));
    if text.len() > MAX_URL_LEN {
        return invalid("must be at most 2048 characters");
    }
    let Ok(url) = Url::parse(text) else {
        return invalid("must be an absolute URL such as https://example.com/webhooks");
    };
    if !url.username().is_empty() || url.password().is_some() {
        return invalid("must not contain credentials; use `headers` to authenticate to the receiver");
    }
    let Some(host) = url.host() else {
        return invalid("must have a host");
    };
    match url.scheme() {
        "https" => {}
        "http" if dev_mode && is_loopback_host(&host) => {}
        "http" if dev_mode => {
            return invalid("http:// is only allowed to loopback hosts (localhost, 127.0.0.0/8, ::1)")
        }
        "http" => return invalid("must use https:// (http:// to loopback hosts is allowed only in dev mode)"),
        _ => return invalid("must be an https:// URL"),
    }
    destinations
        .check_host(&host)
        .or_else(|refused| invalid(&format!("has a host Switchyard does not deliver to: {refused} (a server setting)")))
}

/// Where the `hmac` or `stripe` scheme signs: a header name Switchyard does not set itself, and what only one of
/// them uses (a short visible-ASCII prefix for `hmac`, a timestamp unit for `stripe`). A setting the scheme would
/// ignore is refused rather than left to surprise later.
pub fn signature_header(scheme: SignatureScheme, header: Option<&SignatureHeader>) -> ApiResult<()> {
    let Some(header) = header else { return Ok(()) };
    if scheme == SignatureScheme::Standard {
        return Err(ApiError::invalid(
            "signature_header",
            "is only used with signature_scheme `hmac` or `stripe` (Standard Webhooks fixes its headers)",
        ));
    }
    let field = "signature_header.name";
    if header.name.is_empty() || header.name.len() > 100 || HeaderName::from_bytes(header.name.as_bytes()).is_err() {
        return Err(ApiError::invalid(field, "must be an HTTP header name of at most 100 characters"));
    }
    if is_reserved_header(&header.name) {
        return Err(ApiError::invalid(field, "is a header Switchyard sets itself or one that frames the request"));
    }
    if HTTP_MEANINGS.iter().any(|name| header.name.eq_ignore_ascii_case(name)) {
        return Err(ApiError::invalid(field, "is a header the request needs for itself; name one of your own"));
    }
    let prefix = "signature_header.prefix";
    match scheme {
        SignatureScheme::Stripe if !header.prefix.is_empty() => {
            return Err(ApiError::invalid(prefix, "is only used with signature_scheme `hmac`"));
        }
        SignatureScheme::Hmac if header.timestamp.is_some() => {
            return Err(ApiError::invalid(
                "signature_header.timestamp",
                "is only used with signature_scheme `stripe` (`hmac` signs no timestamp)",
            ));
        }
        SignatureScheme::Hmac if header.key_id => {
            return Err(ApiError::invalid(
                "signature_header.key_id",
                "is only used with signature_scheme `stripe` (`hmac` sends one bare digest)",
            ));
        }
        _ => {}
    }
    if header.prefix.len() > 32 || !header.prefix.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(prefix, "must be at most 32 visible ASCII characters (no spaces)"));
    }
    Ok(())
}

/// Headers HTTP, proxies or the receiver's framework give a meaning of their own: a signature in one would replace
/// the receiver's credentials, change how the body or the answer is read, or pose as the client's address.
const HTTP_MEANINGS: &[&str] = &[
    "authorization",
    "cookie",
    "set-cookie",
    "accept",
    "accept-encoding",
    "accept-language",
    "content-encoding",
    "content-language",
    "content-location",
    "content-range",
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    "cache-control",
    "pragma",
    "date",
    "origin",
    "referer",
    "forwarded",
    "via",
    "max-forwards",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "x-http-method-override",
];

/// A custom header by the name the signature goes in would be dropped at every delivery, the signature taking its
/// place: refused, rather than stored and silently never sent.
pub fn headers_beside_signature(
    scheme: SignatureScheme,
    header: Option<&SignatureHeader>,
    headers: &BTreeMap<String, String>,
) -> ApiResult<()> {
    let Some(signature) = header.cloned().or_else(|| SignatureHeader::default_for(scheme)) else { return Ok(()) };
    match headers.keys().find(|name| name.eq_ignore_ascii_case(&signature.name)) {
        Some(name) => Err(ApiError::invalid(
            format!("headers.{name}"),
            "is the header the signature goes in (signature_header); a value of your own would never be sent",
        )),
        None => Ok(()),
    }
}

/// Custom headers sent with every delivery to the endpoint.
pub fn headers(headers: &BTreeMap<String, String>) -> ApiResult<()> {
    if headers.len() > MAX_HEADERS {
        return Err(ApiError::invalid("headers", format!("at most {MAX_HEADERS} headers are allowed")));
    }
    let mut seen = HashSet::new();
    for (name, value) in headers {
        let field = format!("headers.{name}");
        let Ok(parsed) = HeaderName::from_bytes(name.as_bytes()) else {
            return Err(ApiError::invalid(field, "is not a valid HTTP header name"));
        };
        let lower = parsed.as_str();
        // Sending back what a GET showed would otherwise replace the credential with the placeholder.
        if value == REDACTED {
            return Err(ApiError::invalid(
                field,
                "is the placeholder Switchyard shows for a credential; send the real value, or leave `headers` out \
                 to keep the stored ones",
            ));
        }
        // The sender drops these, so accepting one would store a header that is never sent.
        if is_reserved_header(lower) {
            return Err(ApiError::invalid(
                field,
                "is set by Switchyard or by the connection, and cannot be overridden",
            ));
        }
        if !seen.insert(lower.to_string()) {
            return Err(ApiError::invalid(field, "is given twice (header names are case-insensitive)"));
        }
        if value.len() > MAX_HEADER_VALUE_LEN {
            return Err(ApiError::invalid(field, format!("must be at most {MAX_HEADER_VALUE_LEN} bytes")));
        }
        if HeaderValue::from_str(value).is_err() {
            return Err(ApiError::invalid(field, "is not a valid header value (visible ASCII characters only)"));
        }
    }
    Ok(())
}

/// A retry override: the delays as milliseconds, and `max_attempts` if given.
pub fn retry(schedule: &[String], max_attempts: Option<i64>) -> ApiResult<(Vec<i64>, Option<i64>)> {
    let delays = retry::parse_schedule(schedule).map_err(|(step, problem)| match step {
        Some(step) => ApiError::invalid(format!("retry.schedule[{step}]"), problem),
        None => ApiError::invalid("retry.schedule", problem),
    })?;
    if let Some(n) = max_attempts {
        if !MAX_ATTEMPTS.contains(&n) {
            return Err(ApiError::invalid("retry.max_attempts", "must be between 1 and 50"));
        }
    }
    Ok((delays, max_attempts))
}

pub fn metadata(metadata: &BTreeMap<String, String>) -> ApiResult<()> {
    if metadata.len() > MAX_METADATA {
        return Err(ApiError::invalid("metadata", format!("at most {MAX_METADATA} entries are allowed")));
    }
    for (key, value) in metadata {
        let field = format!("metadata.{key}");
        if key.is_empty() || key.chars().count() > MAX_METADATA_KEY_LEN {
            return Err(ApiError::invalid(field, format!("keys must be 1 to {MAX_METADATA_KEY_LEN} characters")));
        }
        if value.chars().count() > MAX_METADATA_VALUE_LEN {
            return Err(ApiError::invalid(field, format!("must be at most {MAX_METADATA_VALUE_LEN} characters")));
        }
    }
    Ok(())
}

/// The most requests per second an endpoint may be sent: enough for any receiver that needs a limit at all.
pub const MAX_RATE_LIMIT: i64 = 10_000;

pub fn rate_limit(per_second: i64) -> ApiResult<i64> {
    if !(1..=MAX_RATE_LIMIT).contains(&per_second) {
        return Err(ApiError::invalid(
            "rate_limit",
            format!("must be between 1 and {MAX_RATE_LIMIT} requests per second, or null for no limit"),
        ));
    }
    Ok(per_second)
}

/// A tenant's own request rate limit (`null`: the server's `tenant_rate_limit`).
pub fn tenant_rate_limit(per_second: i64) -> ApiResult<i64> {
    let max = i64::from(crate::config::MAX_TENANT_RATE_LIMIT);
    if !(1..=max).contains(&per_second) {
        return Err(ApiError::invalid(
            "rate_limit",
            format!("must be between 1 and {max} requests per second, or null for the server's tenant_rate_limit"),
        ));
    }
    Ok(per_second)
}

pub fn timeout_secs(secs: i64) -> ApiResult<i64> {
    if !TIMEOUT_SECS.contains(&secs) {
        return Err(ApiError::invalid("timeout_secs", "must be between 1 and 300"));
    }
    Ok(secs * 1000)
}

pub fn description(field: &str, text: &str) -> ApiResult<()> {
    if text.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(ApiError::invalid(field, format!("must be at most {MAX_DESCRIPTION_LEN} characters")));
    }
    Ok(())
}

/// A display name (tenant, API key): 1–200 characters, not only whitespace.
pub fn name(field: &str, text: &str) -> ApiResult<()> {
    if text.trim().is_empty() || text.chars().count() > MAX_NAME_LEN {
        return Err(ApiError::invalid(field, format!("must be 1 to {MAX_NAME_LEN} characters and not blank")));
    }
    // A name is shown to people, next to other text: a control or bidirectional formatting character would hide
    // part of it or reorder what is around it.
    if text.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return Err(ApiError::invalid(field, "must not contain control or bidirectional formatting characters"));
    }
    Ok(())
}

/// The embeddings, overrides and isolates of Unicode's bidirectional algorithm (not the plain marks).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

pub fn idempotency_key(field: &str, key: &str) -> ApiResult<()> {
    if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(ApiError::invalid(field, format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters")));
    }
    if key.chars().any(char::is_control) {
        return Err(ApiError::invalid(field, "must not contain control characters"));
    }
    // Switchyard's own events are keyed so: a tenant's event under one of those keys would stand in for it.
    if key.starts_with(notices::RESERVED_KEY_PREFIX) {
        return Err(ApiError::invalid(
            field,
            format!("keys starting with `{}` are Switchyard's own", notices::RESERVED_KEY_PREFIX),
        ));
    }
    Ok(())
}

/// The grace period of a secret rotation; `0s` means "revoke the old secret now".
pub fn grace_period(text: &str) -> ApiResult<Duration> {
    let grace = duration("grace_period", text)?;
    if grace > MAX_GRACE_PERIOD {
        return Err(ApiError::invalid("grace_period", "must be at most 30 days"));
    }
    Ok(grace)
}

fn duration(field: &str, text: &str) -> ApiResult<Duration> {
    humantime::parse_duration(text.trim())
        .map_err(|_| ApiError::invalid(field, format!("`{text}` is not a duration such as 30s, 5m or 1h")))
}

/// Largest plugin `config` accepted, as JSON text: it is handed to the plugin on every call.
pub const MAX_PLUGIN_CONFIG_BYTES: usize = 64 * 1024;

/// Every bound plugin must be loaded (at its pinned version, if pinned) and export the interface of its role.
/// Checked against what is loaded now; a binding whose plugin later disappears fails its deliveries visibly
/// (recorded on the attempt, retried) rather than dropping them.
pub fn plugin_bindings(plugins: &EndpointPlugins, registry: &PluginRegistry) -> ApiResult<()> {
    for (role, binding) in plugins.bound() {
        let kind = match role {
            "filter" => PluginKind::Filter,
            "transform" => PluginKind::Transform,
            _ => PluginKind::RetryPolicy,
        };
        if !plugin::valid_plugin_name(&binding.plugin) {
            return Err(ApiError::invalid(
                format!("{role}.plugin"),
                "must be 1 to 64 letters, digits, `-` or `_` (the plugin's file name without `.wasm`)",
            ));
        }
        if let Some(pin) = &binding.version {
            if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(ApiError::invalid(
                    format!("{role}.version"),
                    "must be a sha256 as 64 lower-case hex digits",
                ));
            }
        }
        let Some(version) = registry.resolve(&binding.plugin, binding.version.as_deref()) else {
            return Err(match (&binding.version, registry.latest(&binding.plugin)) {
                (Some(pin), Some(_)) => ApiError::invalid(
                    format!("{role}.version"),
                    format!("plugin `{}` has no loaded version {pin}", binding.plugin),
                ),
                _ => ApiError::invalid(format!("{role}.plugin"), format!("no plugin `{}` is loaded", binding.plugin)),
            });
        };
        if !version.exports(kind) {
            let exported: Vec<&str> = version.kinds().iter().map(|kind| kind.as_str()).collect();
            return Err(ApiError::invalid(
                format!("{role}.plugin"),
                format!("plugin `{}` does not export `{kind}` (it exports: {})", binding.plugin, exported.join(", ")),
            ));
        }
        if binding.config.to_string().len() > MAX_PLUGIN_CONFIG_BYTES {
            return Err(ApiError::invalid(
                format!("{role}.config"),
                format!("must be at most {MAX_PLUGIN_CONFIG_BYTES} bytes of JSON"),
            ));
        }
    }
    Ok(())
}

/// A subscription list: 1–100 entries, each with a valid pattern and filter, no two identical.
pub fn subscriptions(subscriptions: &[Subscription]) -> ApiResult<()> {
    if subscriptions.is_empty() || subscriptions.len() > MAX_SUBSCRIPTIONS {
        return Err(ApiError::invalid("subscriptions", format!("must hold 1 to {MAX_SUBSCRIPTIONS} subscriptions")));
    }
    for (i, subscription) in subscriptions.iter().enumerate() {
        routing::validate_subscription(subscription)
            .map_err(|(part, message)| ApiError::invalid(format!("subscriptions[{i}].{part}"), message))?;
        if let Some(first) = subscriptions[..i].iter().position(|s| s == subscription) {
            return Err(ApiError::Conflict(format!("subscriptions[{i}] duplicates subscriptions[{first}]")));
        }
    }
    Ok(())
}

/// How deeply arrays and objects nest in the valid JSON `text` (0 for a scalar), counted in one pass over its
/// bytes: reading it into a value to find out is what a too deep payload must not get to.
pub fn json_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TimestampUnit;

    #[test]
    fn json_depth_counts_nesting_outside_strings() {
        for (text, depth) in [
            ("1", 0),
            ("{}", 1),
            (r#"{"a": [1, {"b": []}]}"#, 4),
            (r#"{"a": "[[[{{{"}"#, 1),
            (r#"{"a": "\\", "b": "\"[["}"#, 1),
            (r#"[[], [[]], []]"#, 3),
        ] {
            assert_eq!(json_depth(text), depth, "{text}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(json_depth(&deep), 200);
    }

    fn field(result: ApiResult<impl std::fmt::Debug>) -> String {
        match result {
            Err(ApiError::Invalid { field: Some(field), .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    /// The rule as in dev mode or production without allowed networks.
    fn endpoint_url(text: &str, dev_mode: bool) -> ApiResult<()> {
        super::endpoint_url(text, dev_mode, &Destinations::new(Vec::new(), dev_mode))
    }

    #[test]
    fn urls_must_be_https_without_credentials() {
        assert!(endpoint_url("https://example.com/hook?x=1", false).is_ok());
        for bad in [
            "example.com/hook",
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https://user@example.com/",
            "http://example.com/",
            "mailto:someone@example.com",
        ] {
            assert_eq!(field(endpoint_url(bad, true)), "url", "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(field(endpoint_url(&long, false)), "url");
    }

    #[test]
    fn plain_http_only_to_loopback_in_dev_mode() {
        for ok in [
            "http://localhost:8080/x",
            "http://LOCALHOST/",
            "http://127.0.0.1/",
            "http://127.9.9.9/",
            "http://[::1]:1/",
        ] {
            assert!(endpoint_url(ok, true).is_ok(), "{ok}");
            assert_eq!(field(endpoint_url(ok, false)), "url", "{ok}");
        }
        for bad in ["http://128.0.0.1/", "http://[::2]/", "http://localhost.example.com/", "http://10.0.0.1/"] {
            assert_eq!(field(endpoint_url(bad, true)), "url", "{bad}");
        }
    }

    #[test]
    fn a_signature_header_names_a_header_of_its_own_and_only_what_its_scheme_uses() {
        let header = |name: &str, prefix: &str| SignatureHeader {
            name: name.into(),
            prefix: prefix.into(),
            timestamp: None,
            key_id: false,
        };
        let (hmac, stripe) = (SignatureScheme::Hmac, SignatureScheme::Stripe);
        assert!(signature_header(hmac, None).is_ok());
        assert!(signature_header(SignatureScheme::Standard, None).is_ok());
        assert!(signature_header(hmac, Some(&header("X-Hub-Signature-256", "sha256="))).is_ok());
        assert!(signature_header(hmac, Some(&header("X-Signature", ""))).is_ok());
        assert!(signature_header(stripe, Some(&header("X-Signature", ""))).is_ok());
        let in_millis =
            SignatureHeader { timestamp: Some(TimestampUnit::Milliseconds), ..header("Molam-Signature", "") };
        assert!(signature_header(stripe, Some(&in_millis)).is_ok());
        let with_standard = signature_header(SignatureScheme::Standard, Some(&header("X-Signature", "")));
        assert_eq!(field(with_standard), "signature_header");
        assert_eq!(field(signature_header(hmac, Some(&in_millis))), "signature_header.timestamp");
        assert_eq!(field(signature_header(stripe, Some(&header("X-Signature", "sha256=")))), "signature_header.prefix");
        let naming_versions = SignatureHeader { key_id: true, ..in_millis.clone() };
        assert!(signature_header(stripe, Some(&naming_versions)).is_ok());
        let hmac_naming_versions = SignatureHeader { key_id: true, ..header("X-Signature", "") };
        assert_eq!(field(signature_header(hmac, Some(&hmac_naming_versions))), "signature_header.key_id");
        for name in [
            "",
            "bad name",
            "x:y",
            &"x".repeat(101),
            "webhook-signature",
            "Content-Type",
            "switchyard-x",
            "host",
            "Authorization",
            "accept",
            "Cookie",
        ] {
            for scheme in [hmac, stripe] {
                assert_eq!(field(signature_header(scheme, Some(&header(name, "")))), "signature_header.name", "{name}");
            }
        }
        for prefix in ["sha256 =", &"p".repeat(33), "é"] {
            assert_eq!(field(signature_header(hmac, Some(&header("x-sig", prefix)))), "signature_header.prefix");
        }
    }

    #[test]
    fn hosts_outside_the_public_internet_need_an_allowed_network() {
        let refused =
            ["https://10.0.0.1/", "https://169.254.169.254/latest", "https://[fd00::1]/", "https://localhost/"];
        for url in refused {
            assert_eq!(field(endpoint_url(url, false)), "url", "{url}");
        }
        // Dev mode allows loopback only.
        assert!(endpoint_url("https://localhost/", true).is_ok());
        assert_eq!(field(endpoint_url("https://10.0.0.1/", true)), "url");
        let allowed = Destinations::new(vec!["10.0.0.0/8".parse().unwrap()], false);
        assert!(super::endpoint_url("https://10.0.0.1/", false, &allowed).is_ok());
        assert_eq!(field(super::endpoint_url("https://169.254.169.254/", false, &allowed)), "url");
        let Err(ApiError::Invalid { message, .. }) = endpoint_url("https://169.254.169.254/", false) else {
            panic!("refused")
        };
        assert!(message.contains("169.254.169.254 is a link-local address"), "{message}");
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn headers_reject_reserved_invalid_and_too_many() {
        assert!(headers(&map(&[("X-Team", "billing"), ("Authorization", "Bearer abc")])).is_ok());
        for (name, value) in [
            ("Content-Type", "text/plain"),
            ("webhook-signature", "x"),
            ("Switchyard-Tenant", "x"),
            ("Host", "evil"),
            ("Transfer-Encoding", "chunked"),
            ("bad name", "x"),
            ("", "x"),
            ("X-Ok", "line\nbreak"),
        ] {
            assert_eq!(field(headers(&map(&[(name, value)]))), format!("headers.{name}"));
        }
        assert_eq!(field(headers(&map(&[("X-A", "1"), ("x-a", "2")]))), "headers.x-a");
        let many: BTreeMap<_, _> = (0..=MAX_HEADERS).map(|i| (format!("X-{i}"), "v".to_string())).collect();
        assert_eq!(field(headers(&many)), "headers");
    }

    #[test]
    fn retry_schedule_parses_humantime_within_bounds() {
        let schedule = ["30s", "5m", "1h"].map(String::from);
        assert_eq!(retry(&schedule, Some(5)).unwrap(), (vec![30_000, 300_000, 3_600_000], Some(5)));
        assert_eq!(field(retry(&[], None)), "retry.schedule");
        assert_eq!(field(retry(&vec!["1m".to_string(); 21], None)), "retry.schedule");
        assert_eq!(field(retry(&["1m", "soon"].map(String::from), None)), "retry.schedule[1]");
        assert_eq!(field(retry(&["500ms".to_string()], None)), "retry.schedule[0]");
        assert_eq!(field(retry(&["8d".to_string()], None)), "retry.schedule[0]");
        assert_eq!(field(retry(&["1m".to_string()], Some(0))), "retry.max_attempts");
        assert_eq!(field(retry(&["1m".to_string()], Some(51))), "retry.max_attempts");
    }

    #[test]
    fn metadata_limits() {
        assert!(metadata(&map(&[("team", "billing")])).is_ok());
        assert_eq!(field(metadata(&map(&[("", "x")]))), "metadata.");
        let long = "v".repeat(MAX_METADATA_VALUE_LEN + 1);
        assert_eq!(field(metadata(&map(&[("k", &long)]))), "metadata.k");
        let many: BTreeMap<_, _> = (0..=MAX_METADATA).map(|i| (i.to_string(), String::new())).collect();
        assert_eq!(field(metadata(&many)), "metadata");
    }

    #[test]
    fn scalar_rules() {
        assert_eq!(timeout_secs(10).unwrap(), 10_000);
        assert_eq!((rate_limit(1).unwrap(), rate_limit(MAX_RATE_LIMIT).unwrap()), (1, MAX_RATE_LIMIT));
        assert_eq!(field(rate_limit(0)), "rate_limit");
        assert_eq!(field(rate_limit(MAX_RATE_LIMIT + 1)), "rate_limit");
        assert_eq!(tenant_rate_limit(1_000_000).unwrap(), 1_000_000);
        assert_eq!(field(tenant_rate_limit(0)), "rate_limit");
        assert_eq!(field(tenant_rate_limit(1_000_001)), "rate_limit");
        assert_eq!(field(timeout_secs(0)), "timeout_secs");
        assert_eq!(field(timeout_secs(301)), "timeout_secs");
        assert_eq!(field(name("name", "  ")), "name");
        assert_eq!(field(name("name", &"n".repeat(201))), "name");
        assert!(name("name", &"é".repeat(200)).is_ok());
        assert_eq!(field(description("description", &"d".repeat(1001))), "description");
        assert_eq!(field(idempotency_key("idempotency_key", "")), "idempotency_key");
        assert_eq!(field(idempotency_key("Idempotency-Key", &"k".repeat(201))), "Idempotency-Key");
        assert_eq!(field(idempotency_key("idempotency_key", "a\u{0}b")), "idempotency_key");
    }

    #[test]
    fn grace_period_allows_zero_up_to_thirty_days() {
        assert_eq!(grace_period("0s").unwrap(), Duration::ZERO);
        assert_eq!(grace_period("30d").unwrap(), MAX_GRACE_PERIOD);
        assert_eq!(field(grace_period("31d")), "grace_period");
        assert_eq!(field(grace_period("tomorrow")), "grace_period");
    }

    #[test]
    fn subscription_lists_need_one_to_a_hundred_distinct_entries() {
        let sub = |t: &str| Subscription { event_type: t.into(), filter: None };
        assert!(subscriptions(&[sub("*"), sub("payment.*")]).is_ok());
        assert_eq!(field(subscriptions(&[])), "subscriptions");
        assert_eq!(field(subscriptions(&vec![sub("*"); 101])), "subscriptions");
        assert!(matches!(subscriptions(&[sub("a.b"), sub("*"), sub("a.b")]), Err(ApiError::Conflict(_))));
        let bad_filter = Subscription { event_type: "*".into(), filter: Some("$[?".into()) };
        assert_eq!(field(subscriptions(&[sub("*"), bad_filter])), "subscriptions[1].filter");
    }
}
