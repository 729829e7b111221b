//! What one attempt's result means for the delivery. Pure: the HTTP answer (or transport failure) goes in, the
//! delivery's next state comes out; the dispatcher only performs it.

use std::time::{Duration, SystemTime};

use crate::model::{DeliveryStatus, Millis};
use crate::retry::{self, RetryPolicy};

/// Why the endpoint is disabled when a receiver answers 410.
pub const GONE_REASON: &str = "receiver answered 410 Gone";

/// How a request failed before a complete answer arrived. Every kind is retried: none of them is the receiver
/// saying "no".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The endpoint's timeout elapsed (connecting, waiting, or reading the answer).
    Timeout,
    /// DNS, TCP or TLS could not establish a connection.
    Connect,
    /// Anything else: reset mid-request, broken response body, a request that could not be built, or a local
    /// problem such as an undecryptable signing secret.
    Other,
}

/// The attempt's meaning, before the retry policy is consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    /// Worth another attempt; `retry_after` is what the receiver asked for (uncapped), if anything.
    Retry {
        retry_after: Option<Duration>,
    },
    /// Refused for good: dead letter at once.
    Dead,
    /// 410: the receiver wants no more deliveries at all.
    Gone,
}

/// Classifies a received status code. Redirects are retried rather than followed: following one would POST
/// signed payloads to a URL the tenant never configured.
pub fn classify_status(status: u16, retry_after: Option<&str>, now: SystemTime) -> Verdict {
    let retry = || Verdict::Retry { retry_after: retry_after.and_then(|v| parse_retry_after(v, now)) };
    match status {
        200..=299 => Verdict::Succeeded,
        410 => Verdict::Gone,
        408 | 425 | 429 => retry(),
        400..=499 => Verdict::Dead,
        // 3xx, 5xx, and anything outside the known classes (a broken or exotic server) may well be transient.
        _ => retry(),
    }
}

/// Classifies a transport failure. A response that started (`retry_after` from its headers) but broke off is
/// still retried, honouring the receiver's Retry-After if it sent one.
pub fn classify_failure(kind: FailureKind, retry_after: Option<&str>, now: SystemTime) -> Verdict {
    // Spelled out so a new kind has to decide; none of today's is the receiver refusing.
    match kind {
        FailureKind::Timeout | FailureKind::Connect | FailureKind::Other => {
            Verdict::Retry { retry_after: retry_after.and_then(|v| parse_retry_after(v, now)) }
        }
    }
}

/// `Retry-After` as delta-seconds or an HTTP-date. A date in the past means "now"; anything unparseable is
/// ignored rather than trusted.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits to fit a u64 is still "a very long time"; the caller's cap applies.
        return Some(value.parse::<u64>().map(Duration::from_secs).unwrap_or(Duration::MAX));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The delivery's next state after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The attempt's recorded outcome: "succeeded", "retry", "dead" or "gone".
    pub outcome: &'static str,
    pub status: DeliveryStatus,
    pub next_attempt_at: Option<Millis>,
    pub disable_endpoint: Option<String>,
}

/// Applies the retry policy to a verdict. `index` is the attempt's 0-based index in the current schedule cycle,
/// `jitter` a random number in [-1, 1].
pub fn resolve(
    verdict: Verdict,
    policy: &RetryPolicy<'_>,
    index: i64,
    jitter: f64,
    now: Millis,
    max_retry_after: Duration,
) -> Resolution {
    let end =
        |outcome, status, disable_endpoint| Resolution { outcome, status, next_attempt_at: None, disable_endpoint };
    match verdict {
        Verdict::Succeeded => end("succeeded", DeliveryStatus::Succeeded, None),
        Verdict::Dead => end("dead", DeliveryStatus::Dead, None),
        Verdict::Gone => end("gone", DeliveryStatus::Dead, Some(GONE_REASON.to_string())),
        Verdict::Retry { retry_after } => {
            match retry::next_delay(policy, index, jitter, retry_after, max_retry_after) {
                Some(delay) => Resolution {
                    outcome: "retry",
                    status: DeliveryStatus::Failed,
                    next_attempt_at: Some(now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))),
                    disable_endpoint: None,
                },
                None => end("dead", DeliveryStatus::Dead, None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: Millis = 1_700_000_000_000;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_MS as u64)
    }

    fn retry(secs: Option<u64>) -> Verdict {
        Verdict::Retry { retry_after: secs.map(Duration::from_secs) }
    }

    #[test]
    fn status_codes_classify_as_specified() {
        let cases: &[(u16, Verdict)] = &[
            (200, Verdict::Succeeded),
            (201, Verdict::Succeeded),
            (204, Verdict::Succeeded),
            (299, Verdict::Succeeded),
            (410, Verdict::Gone),
            (408, retry(None)),
            (425, retry(None)),
            (429, retry(None)),
            (500, retry(None)),
            (502, retry(None)),
            (503, retry(None)),
            (599, retry(None)),
            (301, retry(None)),
            (302, retry(None)),
            (307, retry(None)),
            (308, retry(None)),
            (400, Verdict::Dead),
            (401, Verdict::Dead),
            (403, Verdict::Dead),
            (404, Verdict::Dead),
            (405, Verdict::Dead),
            (409, Verdict::Dead),
            (413, Verdict::Dead),
            (422, Verdict::Dead),
            (499, Verdict::Dead),
            (101, retry(None)),
            (600, retry(None)),
        ];
        for (status, want) in cases {
            assert_eq!(classify_status(*status, None, now()), *want, "status {status}");
        }
    }

    #[test]
    fn retry_after_is_honoured_only_where_a_retry_happens() {
        assert_eq!(classify_status(429, Some("120"), now()), retry(Some(120)));
        assert_eq!(classify_status(503, Some(" 7 "), now()), retry(Some(7)));
        assert_eq!(classify_status(302, Some("30"), now()), retry(Some(30)));
        assert_eq!(classify_status(200, Some("30"), now()), Verdict::Succeeded);
        assert_eq!(classify_status(400, Some("30"), now()), Verdict::Dead);
        assert_eq!(classify_failure(FailureKind::Timeout, None, now()), retry(None));
        assert_eq!(classify_failure(FailureKind::Other, Some("9"), now()), retry(Some(9)));
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let date_in = |secs: u64| httpdate::fmt_http_date(now() + Duration::from_secs(secs));
        let cases: &[(&str, Option<Duration>)] = &[
            ("0", Some(Duration::ZERO)),
            ("3600", Some(Duration::from_secs(3600))),
            ("99999999999999999999999", Some(Duration::MAX)),
            ("-5", None),
            ("1.5", None),
            ("", None),
            ("soon", None),
            ("Thu, 01 Jan 1970 00:00:00 GMT", Some(Duration::ZERO)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_retry_after(text, now()), *want, "{text:?}");
        }
        assert_eq!(parse_retry_after(&date_in(90), now()), Some(Duration::from_secs(90)));
    }

    #[test]
    fn resolution_maps_verdicts_to_delivery_states() {
        let schedule = [200, 400];
        let policy = RetryPolicy::new(Some(&schedule), None);
        let hour = Duration::from_secs(3600);
        let cases: &[(Verdict, i64, &str, DeliveryStatus, Option<Millis>)] = &[
            (Verdict::Succeeded, 0, "succeeded", DeliveryStatus::Succeeded, None),
            (Verdict::Dead, 0, "dead", DeliveryStatus::Dead, None),
            (Verdict::Gone, 0, "gone", DeliveryStatus::Dead, None),
            (retry(None), 0, "retry", DeliveryStatus::Failed, Some(NOW_MS + 200)),
            (retry(None), 1, "retry", DeliveryStatus::Failed, Some(NOW_MS + 400)),
            // Retries exhausted: the attempt itself is recorded as dead.
            (retry(None), 2, "dead", DeliveryStatus::Dead, None),
            (retry(Some(5)), 0, "retry", DeliveryStatus::Failed, Some(NOW_MS + 5000)),
            (retry(Some(86_400)), 0, "retry", DeliveryStatus::Failed, Some(NOW_MS + 3_600_000)),
            (retry(Some(5)), 2, "dead", DeliveryStatus::Dead, None),
        ];
        for (verdict, index, outcome, status, next) in cases {
            let got = resolve(*verdict, &policy, *index, 0.0, NOW_MS, hour);
            assert_eq!(
                (got.outcome, got.status, got.next_attempt_at),
                (*outcome, *status, *next),
                "{verdict:?} #{index}"
            );
            let disabled = got.disable_endpoint.as_deref();
            assert_eq!(disabled, (*verdict == Verdict::Gone).then_some(GONE_REASON));
        }
    }
}
