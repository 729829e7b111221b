//! `send` against a real HTTP server on 127.0.0.1, plus the pure helpers around it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap as AxumHeaders, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use axum::Router;

use super::*;
use crate::model::SignatureScheme;
use crate::signing;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

type Captured = Arc<Mutex<Vec<(AxumHeaders, Bytes)>>>;

/// An active endpoint with the shipped defaults; other tests override the fields they care about.
pub(crate) fn endpoint(url: &str, headers: &[(&str, &str)]) -> Endpoint {
    Endpoint {
        id: "ep_1".into(),
        tenant_id: "ten_1".into(),
        url: url.into(),
        description: String::new(),
        status: crate::model::EndpointStatus::Active,
        status_reason: None,
        timeout_ms: 2_000,
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        retry_schedule_ms: None,
        max_attempts: None,
        rate_limit: None,
        signature_scheme: SignatureScheme::Standard,
        signature_header: None,
        metadata: BTreeMap::new(),
        plugins: Default::default(),
        subscriptions: Vec::new(),
        created_at: 0,
        updated_at: 0,
    }
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

/// A sender that may reach loopback, where these tests' receivers run, as in dev mode.
fn outbound() -> Outbound {
    Outbound::new(&[], Arc::new(Destinations::new(Vec::new(), true)))
}

async fn post_to(url: &str, timeout: Duration) -> Answer {
    outbound().send(url.parse().unwrap(), HeaderMap::new(), Bytes::from_static(b"{}"), timeout).await
}

/// A receiver on loopback is out of reach without dev mode or an allowed network, whether the URL names its address
/// (which the client would connect to without resolving) or a name that resolves to it; plain http is not sent
/// outside dev mode even to an allowed address. Nothing reaches the receiver.
#[tokio::test]
async fn refused_destinations_get_no_request() {
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    let base = serve(Router::new().route(
        "/hook",
        post(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { StatusCode::NO_CONTENT }
        }),
    ))
    .await;
    let port = base.rsplit(':').next().unwrap();
    let production = Outbound::new(&[], Arc::new(Destinations::new(Vec::new(), false)));
    let allowing = Outbound::new(&[], Arc::new(Destinations::new(vec!["127.0.0.0/8".parse().unwrap()], false)));
    let cases = [
        (&production, format!("https://127.0.0.1:{port}/hook"), "127.0.0.1 is a loopback address"),
        (&production, format!("https://[::ffff:127.0.0.1]:{port}/hook"), "::ffff:127.0.0.1 is a loopback address"),
        // A name goes through the resolver, which drops the addresses it may not connect to.
        (&production, format!("https://localhost:{port}/hook"), "`localhost` resolves only to addresses outside the"),
        (&allowing, format!("http://127.0.0.1:{port}/hook"), "http:// is sent only in dev mode"),
        (&allowing, format!("http://localhost:{port}/hook"), "http:// is sent only in dev mode"),
    ];
    for (outbound, url, named) in cases {
        let answer = outbound.send(url.parse().unwrap(), HeaderMap::new(), Bytes::new(), Duration::from_secs(5)).await;
        assert_eq!(answer.status, None, "{url}");
        let (kind, text) = answer.failure.clone().expect("a failure");
        assert_eq!(kind, FailureKind::Connect, "{url}");
        assert!(text.starts_with("connection refused by Switchyard: ") && text.contains(named), "{url}: {text}");
        assert!(!text.contains("/hook"), "no URL in the record: {text}");
        assert!(matches!(answer.verdict(SystemTime::now()), Verdict::Retry { .. }), "{url}");
    }
    assert_eq!(reached.load(Ordering::SeqCst), 0);

    // In dev mode, by name and by address.
    let dev = outbound();
    for url in [format!("http://localhost:{port}/hook"), format!("http://127.0.0.1:{port}/hook")] {
        let answer = dev.send(url.parse().unwrap(), HeaderMap::new(), Bytes::new(), Duration::from_secs(5)).await;
        assert_eq!(answer.status, Some(204), "{url}: {:?}", answer.failure);
    }
    assert_eq!(reached.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn request_carries_verifiable_signature_and_reserved_headers_win() {
    let captured = Captured::default();
    async fn capture(State(captured): State<Captured>, headers: AxumHeaders, body: Bytes) -> &'static str {
        captured.lock().unwrap().push((headers, body));
        "thanks"
    }
    let base = serve(Router::new().route("/hook", post(capture)).with_state(captured.clone())).await;
    let endpoint = endpoint(
        &format!("{base}/hook"),
        &[("X-Team", "billing"), ("Webhook-Signature", "v1,forged"), ("User-Agent", "evil"), ("Switchyard-X", "no")],
    );
    let body = Bytes::from_static(br#"{"id":"evt_1","type":"a.b","data":{}}"#);
    let signature =
        signing::signature_headers(SignatureScheme::Standard, &[SECRET.into()], "evt_1", 1_700_000_000_000, &body);
    let identity = RequestIdentity { event_id: "evt_1", event_type: "a.b", attempt: Some(("dlv_1", 3)) };
    let headers = request_headers(&endpoint, None, identity, signature);

    let url = endpoint.url.parse().unwrap();
    let answer = outbound().send(url, headers, body.clone(), request_timeout(&endpoint)).await;
    assert_eq!(answer.status, Some(200));
    assert_eq!(answer.body.as_deref(), Some("thanks"));
    assert!(answer.failure.is_none());
    assert_eq!(answer.verdict(SystemTime::now()), Verdict::Succeeded);

    let (headers, received) = captured.lock().unwrap().pop().unwrap();
    let get = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(received, body);
    assert_eq!(get("content-type").as_deref(), Some("application/json"));
    assert_eq!(get("user-agent"), Some(format!("Switchyard/{}", env!("CARGO_PKG_VERSION"))));
    assert_eq!(get("idempotency-key").as_deref(), Some("evt_1"));
    assert_eq!(get("webhook-id").as_deref(), Some("evt_1"));
    assert_eq!(get("webhook-timestamp").as_deref(), Some("1700000000"));
    assert_eq!(get("x-team").as_deref(), Some("billing"));
    assert_eq!(get("switchyard-x"), None);
    assert_eq!(get("switchyard-event-type").as_deref(), Some("a.b"));
    assert_eq!(get("switchyard-delivery-id").as_deref(), Some("dlv_1"));
    assert_eq!(get("switchyard-attempt").as_deref(), Some("3"));
    assert_eq!(headers.get_all("webhook-signature").iter().count(), 1);
    let signature = get("webhook-signature").unwrap();
    assert!(signing::verify_standard(SECRET, "evt_1", 1_700_000_000, &received, &signature));
}

#[tokio::test]
async fn response_body_is_capped_at_4_kib_on_a_char_boundary() {
    // 1 ASCII byte then 2-byte characters: byte 4096 falls in the middle of one.
    let big = format!("a{}", "é".repeat(10_000));
    let base = serve(Router::new().route("/big", any(move || async move { big }))).await;
    let answer = post_to(&format!("{base}/big"), Duration::from_secs(5)).await;
    assert_eq!(answer.status, Some(200));
    let body = answer.body.unwrap();
    assert_eq!(body.len(), 4095);
    assert!(body.starts_with("aé") && body.ends_with('é') && !body.contains('\u{FFFD}'));
    assert!(answer.failure.is_none());
}

#[tokio::test]
async fn slow_receiver_times_out_and_is_retried() {
    let base = serve(Router::new().route(
        "/slow",
        any(|| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            "late"
        }),
    ))
    .await;
    let answer = post_to(&format!("{base}/slow"), Duration::from_millis(200)).await;
    assert_eq!(answer.status, None);
    assert!(matches!(answer.failure, Some((FailureKind::Timeout, ref text)) if text == "timed out after 200 ms"));
    assert!(answer.duration < Duration::from_secs(5));
    assert_eq!(answer.verdict(SystemTime::now()), Verdict::Retry { retry_after: None });
}

#[tokio::test]
async fn timeout_also_covers_reading_the_body() {
    let base = serve(Router::new().route(
        "/stall",
        any(|| async {
            let chunks = futures_util::stream::unfold(0, |sent| async move {
                if sent > 0 {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b"part")), sent + 1))
            });
            Body::from_stream(chunks)
        }),
    ))
    .await;
    let answer = post_to(&format!("{base}/stall"), Duration::from_millis(300)).await;
    assert_eq!(answer.status, Some(200));
    assert!(matches!(answer.failure, Some((FailureKind::Timeout, _))), "{:?}", answer.failure);
    assert!(answer.duration < Duration::from_secs(5));
    assert_eq!(answer.verdict(SystemTime::now()), Verdict::Retry { retry_after: None });
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let followed = Arc::new(AtomicUsize::new(0));
    let counter = followed.clone();
    let router = Router::new()
        .route("/moved", any(|| async { (StatusCode::FOUND, [("location", "/target?token=s3cret")]) }))
        .route(
            "/away",
            any(|| async { (StatusCode::PERMANENT_REDIRECT, [("location", "https://u:pw@x.test/h?k=s3cret")]) }),
        )
        .route(
            "/target",
            any(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { "should not be reached" }
            }),
        );
    let base = serve(router).await;
    let answer = post_to(&format!("{base}/moved"), Duration::from_secs(5)).await;
    assert_eq!(answer.status, Some(302));
    assert_eq!(followed.load(Ordering::SeqCst), 0);
    assert_eq!(answer.verdict(SystemTime::now()), Verdict::Retry { retry_after: None });
    // The record says why, and where to, without the token the target's query carries.
    let error = answer.error_text().unwrap();
    assert!(error.starts_with("redirected (HTTP 302) to /target;"), "{error}");
    assert!(error.contains("set the endpoint's URL"), "{error}");
    let away = post_to(&format!("{base}/away"), Duration::from_secs(5)).await;
    let error = away.error_text().unwrap();
    assert!(error.contains("to https://u:***@x.test/h?k=***;"), "{error}");
    assert!(!error.contains("s3cret") && !error.contains("pw@"), "{error}");
}

#[tokio::test]
async fn retry_after_and_status_reach_the_verdict() {
    let router = Router::new()
        .route("/busy", any(|| async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "30")], "slow down") }))
        .route("/gone", any(|| async { StatusCode::GONE.into_response() }))
        .route("/bad", any(|| async { (StatusCode::UNPROCESSABLE_ENTITY, "nope") }));
    let base = serve(router).await;
    let busy = post_to(&format!("{base}/busy"), Duration::from_secs(5)).await;
    assert_eq!(busy.body.as_deref(), Some("slow down"));
    assert_eq!(busy.verdict(SystemTime::now()), Verdict::Retry { retry_after: Some(Duration::from_secs(30)) });
    assert_eq!(
        post_to(&format!("{base}/gone"), Duration::from_secs(5)).await.verdict(SystemTime::now()),
        Verdict::Gone
    );
    assert_eq!(post_to(&format!("{base}/bad"), Duration::from_secs(5)).await.verdict(SystemTime::now()), Verdict::Dead);
}

#[tokio::test]
async fn refused_connection_is_a_connect_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let answer = post_to(&format!("http://{address}/x"), Duration::from_secs(5)).await;
    let (kind, text) = answer.failure.clone().unwrap();
    assert_eq!(kind, FailureKind::Connect);
    assert!(text.starts_with("connection failed: ") && !text.contains(&address.to_string()), "{text}");
    assert_eq!(answer.verdict(SystemTime::now()), Verdict::Retry { retry_after: None });
}

#[test]
fn body_text_handles_invalid_and_cut_utf8() {
    assert_eq!(body_text(b"plain"), "plain");
    assert_eq!(body_text(b"bad \xff byte"), "bad \u{FFFD} byte");
    // A body exactly at the cap whose last character was cut loses that character only.
    let mut cut = vec![b'x'; MAX_RESPONSE_BODY - 1];
    cut.push(0xE2);
    assert_eq!(body_text(&cut), "x".repeat(MAX_RESPONSE_BODY - 1));
    // Replacement characters (3 bytes each) cannot push the text past the cap.
    let garbage = vec![0xFF; MAX_RESPONSE_BODY];
    let text = body_text(&garbage);
    assert!(text.len() <= MAX_RESPONSE_BODY && text.chars().all(|c| c == '\u{FFFD}'));
}

#[test]
fn helpers_truncate_and_reserve_as_documented() {
    assert_eq!(truncate_chars("ééé", 2), "éé");
    assert_eq!(truncate_chars("ab", 5), "ab");
    assert_eq!(Answer::local_failure(&"x".repeat(900)).error_text().unwrap().len(), MAX_ERROR_CHARS);
    for name in [
        "Content-Type",
        "HOST",
        "webhook-id",
        "Webhook-Anything",
        "switchyard-signature",
        "Stripe-Signature",
        "Transfer-Encoding",
        "Expect",
        "Proxy-Authorization",
    ] {
        assert!(is_reserved_header(name), "{name}");
    }
    for name in ["x-team", "authorization", "webhooks"] {
        assert!(!is_reserved_header(name), "{name}");
    }
    let mut short = endpoint("http://x", &[]);
    short.timeout_ms = 0;
    assert_eq!(request_timeout(&short), Duration::from_millis(1));
    short.timeout_ms = 10_000_000;
    assert_eq!(request_timeout(&short), MAX_ENDPOINT_TIMEOUT);
}
