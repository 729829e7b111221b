//! End-to-end delivery: a real Switchyard (in-process through `switchyard::run`, or the real binary), a real local
//! receiver, signatures checked with the reference Python libraries, retries, dead letters and crash safety.
//! Everything is driven and observed through the REST API and the receiver, as a user would.
//!
//! Signature checks need `SWITCHYARD_TEST_PYTHON` (see `support/python.rs`); without it they are skipped locally
//! and fail under `CI=true`.

#[path = "support/harness.rs"]
mod harness;
#[path = "support/python.rs"]
mod python;
#[path = "support/receiver.rs"]
mod receiver;
#[path = "support/tls_receiver.rs"]
mod tls_receiver;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use harness::{attempts_log, outcomes, str_field, Api, BinaryServer, Server};
use receiver::{Receiver, Recorded, Reply};

/// Upper bound for anything that should happen within a few seconds.
const WAIT: Duration = Duration::from_secs(20);
/// Another Standard Webhooks secret (the spec's example), which must not verify our deliveries.
const FOREIGN_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A running server and a client for a fresh tenant on it.
async fn setup() -> (Server, Api) {
    let server = Server::start().await;
    let api = Api::new_tenant(&server.base_url, "e2e").await;
    (server, api)
}

/// Creates an endpoint pointing at `receiver` (`/hook`), with `extra` fields merged into the request.
/// Returns `(endpoint id, secret)`.
async fn endpoint_to(api: &Api, receiver: &Receiver, extra: Value) -> (String, String) {
    let mut body = json!({ "url": receiver.url("/hook") });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let endpoint = api.create_endpoint(body).await;
    (str_field(&endpoint, "id").to_string(), str_field(&endpoint, "secret").to_string())
}

/// Publishes one event; returns `(event id, number of deliveries)`.
async fn publish(api: &Api, event_type: &str, data: Value) -> (String, u64) {
    let published = api.publish(event_type, data).await;
    let deliveries =
        published["deliveries"].as_u64().unwrap_or_else(|| panic!("202 body without deliveries: {published}"));
    (str_field(&published, "id").to_string(), deliveries)
}

/// Publishes one event to the single endpoint `endpoint_id`; returns `(event id, delivery id)`.
async fn publish_to(api: &Api, endpoint_id: &str, event_type: &str, data: Value) -> (String, String) {
    let (event_id, deliveries) = publish(api, event_type, data).await;
    assert_eq!(deliveries, 1, "event {event_id} should fan out to the one endpoint");
    let delivery = api.delivery_of(&event_id, endpoint_id).await;
    (event_id, str_field(&delivery, "id").to_string())
}

/// The `endpoint.disabled` audit entries of an endpoint, once there is one: the server writes it just after the
/// commit that disabled the endpoint.
/// The endpoint once the server has disabled it; fails after [`WAIT`].
async fn wait_until_disabled(api: &Api, endpoint_id: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    let mut endpoint = api.endpoint(endpoint_id).await;
    while endpoint["status"] == "active" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        endpoint = api.endpoint(endpoint_id).await;
    }
    assert_eq!(endpoint["status"], "disabled", "{endpoint:#}");
    endpoint
}

async fn disabled_audit(api: &Api, endpoint_id: &str) -> Value {
    let audit = format!("/api/v1/audit-log?action=endpoint.disabled&resource_id={endpoint_id}");
    let deadline = Instant::now() + WAIT;
    let mut disabled = api.get(&audit).await;
    while disabled["data"].as_array().is_some_and(Vec::is_empty) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        disabled = api.get(&audit).await;
    }
    disabled
}

fn retry(schedule: &[&str]) -> Value {
    json!({ "retry": { "schedule": schedule } })
}

fn attempts(delivery: &Value) -> u64 {
    delivery["attempts"].as_u64().unwrap_or_else(|| panic!("delivery without numeric `attempts`: {delivery:#}"))
}

fn status_codes(delivery: &Value) -> Vec<Option<u64>> {
    attempts_log(delivery).iter().map(|a| a["status_code"].as_u64()).collect()
}

/// Asserts every request carries `webhook-id` = `event_id` (the id is stable across retries).
fn assert_webhook_ids(requests: &[Recorded], event_id: &str) {
    for (i, request) in requests.iter().enumerate() {
        assert_eq!(request.header("webhook-id"), Some(event_id), "request #{i}: webhook-id should be the event id");
    }
}

/// The `v1,…` entries of a `webhook-signature` header.
fn signature_entries(request: &Recorded) -> Vec<String> {
    let header = request.header("webhook-signature").unwrap_or_else(|| {
        panic!("no webhook-signature header; headers: {:#?}", request.headers);
    });
    let entries: Vec<String> = header.split(' ').map(str::to_string).collect();
    for entry in &entries {
        assert!(entry.starts_with("v1,") && entry.len() > 3, "signature entry {entry:?} is not `v1,<base64>`");
    }
    entries
}

/// Verifies `request` under `secret` with the reference library; `Ok(())` when there is no Python to ask.
async fn reference_verify(scheme: &str, secret: &str, request: &Recorded) -> Result<(), String> {
    match python::verifier() {
        Some(verifier) => verifier.verify(scheme, secret, &request.headers, &request.body).await,
        None => Ok(()),
    }
}

async fn assert_verifies(scheme: &str, secret: &str, request: &Recorded, what: &str) {
    if let Err(e) = reference_verify(scheme, secret, request).await {
        panic!(
            "{what}: the {scheme} reference library rejected the delivery: {e}\nheaders: {:#?}\nbody: {}",
            request.headers,
            String::from_utf8_lossy(&request.body)
        );
    }
}

async fn assert_rejected(scheme: &str, secret: &str, request: &Recorded, what: &str) {
    if python::verifier().is_some() && reference_verify(scheme, secret, request).await.is_ok() {
        panic!("{what}: the {scheme} reference library accepted it, but it must not; headers: {:#?}", request.headers);
    }
}

fn with_body(request: &Recorded, body: &str) -> Recorded {
    Recorded { body: body.as_bytes().to_vec(), ..request.clone() }
}

/// 1. Standard Webhooks signature verified by `standardwebhooks` over the exact body; the headers we promise;
/// the body is the envelope with the published data, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_signature_headers_and_envelope() {
    let (_server, api) = setup().await;
    let receiver = Receiver::start().await;
    let custom = json!({ "headers": { "X-Team": "billing", "Authorization": "Bearer receiver-token" } });
    let (endpoint_id, secret) = endpoint_to(&api, &receiver, custom).await;

    // Sent as raw text so we know the exact bytes of `data`: the payload must reach the receiver unchanged
    // (`1.50`, the spacing and the non-ASCII text included).
    let raw_data = r#"{"amount": 1.50, "currency": "eur", "note": "Grüße"}"#;
    let (status, published) = api
        .send_text(
            Method::POST,
            "/api/v1/events",
            Some(format!(r#"{{"type": "payment.succeeded", "data": {raw_data}}}"#)),
        )
        .await;
    assert_eq!(status.as_u16(), 202, "publish: {published}");
    let event_id = str_field(&published, "id").to_string();
    let delivery_id = str_field(&api.delivery_of(&event_id, &endpoint_id).await, "id").to_string();

    let requests = receiver.wait_for_requests(1, WAIT).await;
    let request = &requests[0];
    let delivery = api.wait_status(&delivery_id, "succeeded", WAIT).await;

    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hook");
    assert_eq!(request.header("webhook-id"), Some(event_id.as_str()), "webhook-id must be the event id");
    let timestamp: i64 = request
        .header("webhook-timestamp")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("webhook-timestamp must be unix seconds; headers: {:#?}", request.headers));
    let now = chrono::Utc::now().timestamp();
    assert!((now - timestamp).abs() <= 60, "webhook-timestamp {timestamp} is not the time of sending ({now})");
    assert_eq!(signature_entries(request).len(), 1, "one secret, one signature");
    assert_eq!(
        request.header("user-agent"),
        Some(format!("Switchyard/{}", env!("CARGO_PKG_VERSION")).as_str()),
        "user-agent"
    );
    assert!(
        request.header("content-type").is_some_and(|c| c.starts_with("application/json")),
        "content-type should be application/json; headers: {:#?}",
        request.headers
    );
    assert!(
        request.header("idempotency-key").is_some_and(|k| !k.trim().is_empty()),
        "an Idempotency-Key header is expected; headers: {:#?}",
        request.headers
    );
    assert_eq!(request.header("x-team"), Some("billing"), "the endpoint's custom header");
    assert_eq!(request.header("authorization"), Some("Bearer receiver-token"), "shown redacted, sent as set");

    let envelope = request.json();
    let keys: BTreeSet<&str> =
        envelope.as_object().expect("envelope is an object").keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["id", "type", "timestamp", "tenant_id", "data"]), "envelope fields: {envelope}");
    assert_eq!(envelope["id"], event_id.as_str());
    assert_eq!(envelope["type"], "payment.succeeded");
    assert_eq!(envelope["tenant_id"], api.tenant_id());
    assert_eq!(envelope["data"], serde_json::from_str::<Value>(raw_data).unwrap());
    let event = api.get(&format!("/api/v1/events/{event_id}")).await;
    assert_eq!(envelope["timestamp"], event["received_at"], "envelope timestamp is the event's received_at");
    assert!(
        request.body_text().contains(&format!(r#""data":{raw_data}"#)),
        "the payload must be forwarded byte for byte; body: {}",
        request.body_text()
    );

    assert_verifies("standard", &secret, request, "standard signature").await;
    let tampered = request.body_text().replace("1.50", "1.5");
    assert_rejected("standard", &secret, &with_body(request, &tampered), "a tampered body").await;
    assert_rejected("standard", FOREIGN_SECRET, request, "another secret").await;

    assert_eq!(attempts(&delivery), 1, "{delivery:#}");
    assert_eq!(outcomes(&delivery), ["succeeded"], "{delivery:#}");
    assert_eq!(status_codes(&delivery), [Some(204)], "{delivery:#}");
}

/// 2. After a rotation the old secret keeps signing during its grace period (two `v1` entries, each verifying),
/// and `grace_period: "0s"` leaves only the new secret, even when an earlier rotation's secret was still retiring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_signs_with_both_secrets_during_grace() {
    let (_server, api) = setup().await;
    let graceful = Receiver::start().await;
    let abrupt = Receiver::start().await;

    let (graceful_id, graceful_old) = endpoint_to(&api, &graceful, json!({})).await;
    let rotated =
        api.expect(Method::POST, &format!("/api/v1/endpoints/{graceful_id}/rotate-secret"), Some(json!({})), 200).await;
    let graceful_new = str_field(&rotated, "secret").to_string();
    assert!(graceful_new.starts_with("whsec_") && graceful_new != graceful_old, "rotation gives a new secret");
    let statuses: Vec<&str> =
        rotated["secrets"].as_array().expect("secrets").iter().filter_map(|s| s["status"].as_str()).collect();
    assert!(
        statuses.contains(&"active") && statuses.contains(&"retiring"),
        "after a rotation with the default grace period, one active and one retiring secret: {rotated:#}"
    );

    // The leaked-secret case: a first rotation left the old secret retiring; one with no grace revokes it too.
    let (abrupt_id, abrupt_old) = endpoint_to(&api, &abrupt, json!({})).await;
    api.expect(Method::POST, &format!("/api/v1/endpoints/{abrupt_id}/rotate-secret"), Some(json!({})), 200).await;
    let rotated = api
        .expect(
            Method::POST,
            &format!("/api/v1/endpoints/{abrupt_id}/rotate-secret"),
            Some(json!({ "grace_period": "0s" })),
            200,
        )
        .await;
    let abrupt_new = str_field(&rotated, "secret").to_string();
    assert_ne!(abrupt_new, abrupt_old);
    let statuses: Vec<&str> =
        rotated["secrets"].as_array().expect("secrets").iter().filter_map(|s| s["status"].as_str()).collect();
    assert_eq!(statuses, ["active", "revoked", "revoked"], "{rotated:#}");

    let (_, deliveries) = publish(&api, "invoice.paid", json!({ "invoice": "in_1" })).await;
    assert_eq!(deliveries, 2, "both endpoints subscribe to everything");

    let request = &graceful.wait_for_requests(1, WAIT).await[0];
    assert_eq!(
        signature_entries(request).len(),
        2,
        "during the grace period both secrets sign: {:#?}",
        request.headers
    );
    assert_verifies("standard", &graceful_new, request, "grace period, new secret").await;
    assert_verifies("standard", &graceful_old, request, "grace period, old secret").await;

    let request = &abrupt.wait_for_requests(1, WAIT).await[0];
    assert_eq!(signature_entries(request).len(), 1, "with grace 0s only the new secret signs: {:#?}", request.headers);
    assert_verifies("standard", &abrupt_new, request, "grace 0s, new secret").await;
    assert_rejected("standard", &abrupt_old, request, "grace 0s, the revoked old secret").await;
}

/// 3. `signature_scheme: "stripe"` verifies with `stripe.Webhook.construct_event`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_scheme_verifies_with_stripe_library() {
    let (_server, api) = setup().await;
    let receiver = Receiver::start().await;
    let (endpoint_id, secret) = endpoint_to(&api, &receiver, json!({ "signature_scheme": "stripe" })).await;
    let (_, delivery_id) = publish_to(&api, &endpoint_id, "charge.refunded", json!({ "charge": "ch_1" })).await;

    let request = &receiver.wait_for_requests(1, WAIT).await[0];
    api.wait_status(&delivery_id, "succeeded", WAIT).await;
    let header = request
        .header("switchyard-signature")
        .unwrap_or_else(|| panic!("no Switchyard-Signature header; headers: {:#?}", request.headers));
    let parts: Vec<&str> = header.split(',').collect();
    assert!(
        parts.len() == 2
            && parts[0].strip_prefix("t=").is_some_and(|t| t.parse::<i64>().is_ok())
            && parts[1]
                .strip_prefix("v1=")
                .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())),
        "Switchyard-Signature should be `t=<unix>,v1=<64 lower-case hex>`, got {header:?}"
    );

    assert_verifies("stripe", &secret, request, "stripe scheme").await;
    let tampered = request.body_text().replace("ch_1", "ch_2");
    assert_rejected("stripe", &secret, &with_body(request, &tampered), "stripe scheme, tampered body").await;
    assert_rejected("stripe", FOREIGN_SECRET, request, "stripe scheme, another secret").await;
}

/// 4. Two 500s then success: three attempts, one message id, same body and idempotency key every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_after_server_errors_until_success() {
    let (_server, api) = setup().await;
    let receiver = Receiver::start().await;
    receiver.push([Reply::status(500).body("boom 1"), Reply::status(500).body("boom 2")]);
    let (endpoint_id, _) = endpoint_to(&api, &receiver, retry(&["1s", "1s"])).await;
    let (event_id, delivery_id) = publish_to(&api, &endpoint_id, "order.created", json!({ "order": 7 })).await;

    let delivery = api.wait_final(&delivery_id, WAIT).await;
    assert_eq!(delivery["status"], "succeeded", "{delivery:#}");
    assert_eq!(attempts(&delivery), 3, "{delivery:#}");
    assert_eq!(outcomes(&delivery), ["retry", "retry", "succeeded"], "{delivery:#}");
    assert_eq!(status_codes(&delivery), [Some(500), Some(500), Some(204)], "{delivery:#}");

    let requests = receiver.requests();
    assert_eq!(requests.len(), 3, "the receiver should have been called three times");
    assert_webhook_ids(&requests, &event_id);
    for request in &requests[1..] {
        assert_eq!(request.body, requests[0].body, "retries resend the same body");
        assert_eq!(request.header("idempotency-key"), requests[0].header("idempotency-key"), "idempotency key");
    }
    for pair in requests.windows(2) {
        let gap = pair[1].received_at - pair[0].received_at;
        // 1 s steps with at most 20 % jitter either way.
        assert!(gap >= Duration::from_millis(780), "retry came {gap:?} after the previous attempt; expected ≥ 0.8 s");
    }
}

/// 5. Always 500 with two retries: dead after exactly three attempts, listed as a dead letter, and a requeue
/// delivers it once the receiver recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_after_max_attempts_then_requeue() {
    let (_server, api) = setup().await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(500));
    let (endpoint_id, _) = endpoint_to(&api, &receiver, retry(&["1s", "1s"])).await;
    let (event_id, delivery_id) = publish_to(&api, &endpoint_id, "order.created", json!({ "order": 8 })).await;

    let delivery = api.wait_final(&delivery_id, WAIT).await;
    assert_eq!(delivery["status"], "dead", "{delivery:#}");
    assert_eq!(attempts(&delivery), 3, "{delivery:#}");
    assert_eq!(outcomes(&delivery), ["retry", "retry", "dead"], "{delivery:#}");
    assert_eq!(receiver.count(), 3, "dead after exactly three requests");

    let dead = api.get(&format!("/api/v1/dead-letters?endpoint_id={endpoint_id}")).await;
    let dead_ids: Vec<&str> = dead["data"].as_array().expect("data").iter().filter_map(|d| d["id"].as_str()).collect();
    assert_eq!(dead_ids, [delivery_id.as_str()], "dead letters: {dead}");

    receiver.set_default(Reply::status(204));
    let requeued = api
        .expect(Method::POST, "/api/v1/dead-letters/requeue", Some(json!({ "delivery_ids": [delivery_id] })), 200)
        .await;
    assert_eq!(requeued["requeued"], 1, "{requeued}");
    let delivery = api.wait_final(&delivery_id, WAIT).await;
    assert_eq!(delivery["status"], "succeeded", "{delivery:#}");
    assert_eq!(attempts(&delivery), 4, "{delivery:#}");
    assert_eq!(outcomes(&delivery), ["retry", "retry", "dead", "succeeded"], "{delivery:#}");
    let requests = receiver.requests();
    assert_eq!(requests.len(), 4);
    assert_webhook_ids(&requests, &event_id);

    let dead = api.get(&format!("/api/v1/dead-letters?endpoint_id={endpoint_id}")).await;
    assert_eq!(dead["data"].as_array().map(Vec::len), Some(0), "no dead letters left: {dead}");
}

/// 6. 410 Gone disables the endpoint with a reason and kills the delivery at once; later events skip it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_endpoint() {
    let (_server, api) = setup().await;
    let receiver = Receiver::start().await;
    receiver.push([Reply::status(410)]);
    let (endpoint_id, _) = endpoint_to(&api, &receiver, retry(&["1s"])).await;
    let (_, delivery_id) = publish_to(&api, &endpoint_id, "user.deleted", json!({ "user": 1 })).await;

    let delivery = api.wait_final(&delivery_id, WAIT).await;
    assert_eq!(delivery["status"], "dead", "{delivery:#}");
    assert_eq!(attempts(&delivery), 1, "{delivery:#}");
    assert_eq!(delivery["last_status_code"], 410, "{delivery:#}");
    assert_eq!(outcomes(&delivery), ["gone"], "{delivery:#}");

    let endpoint = api.endpoint(&endpoint_id).await;
    assert_eq!(endpoint["status"], "disabled", "{endpoint:#}");
    assert!(
        endpoint["status_reason"].as_str().is_some_and(|r| !r.trim().is_empty()),
        "a disabled endpoint records why: {endpoint:#}"
    );

    let (event_id, deliveries) = publish(&api, "user.deleted", json!({ "user": 2 })).await;
    assert_eq!(deliveries, 0, "a disabled endpoint gets no new deliveries");
    let page = api.get(&format!("/api/v1/deliveries?endpoint_id={endpoint_id}")).await;
    let ids: Vec<&str> = page["data"].as_array().expect("data").iter().filter_map(|d| d["id"].as_str()).collect();
    assert_eq!(ids, [delivery_id.as_str()], "only the first delivery exists (event {event_id} created none): {page}");
    assert_eq!(receiver.count(), 1);

    // The audit log says who disabled it: the server, for this delivery's 410 (written just after the commit).
    let disabled = disabled_audit(&api, &endpoint_id).await;
    assert_eq!(disabled["data"].as_array().map(Vec::len), Some(1), "one entry: {disabled:#}");
    let entry = &disabled["data"][0];
    assert_eq!((&entry["actor"], &entry["resource_type"]), (&json!("switchyard"), &json!("endpoint")), "{disabled:#}");
    let expected = json!({ "reason": endpoint["status_reason"], "delivery_id": delivery_id, "status_code": 410 });
    assert_eq!(entry["details"], expected, "{disabled:#}");

    // Activating clears the reason on the endpoint; the audit log keeps it.
    api.expect(Method::POST, &format!("/api/v1/endpoints/{endpoint_id}/activate"), Some(json!({})), 200).await;
    let activated = api.get("/api/v1/audit-log?action=endpoint.activated").await;
    assert_eq!(activated["data"][0]["details"]["previous_status"], "disabled", "{activated:#}");
    assert_eq!(activated["data"][0]["details"]["previous_reason"], endpoint["status_reason"], "{activated:#}");
}

/// 6b. An endpoint the server disables is announced: `switchyard.endpoint.disabled` goes to the tenant's endpoints
/// that subscribe to it, once, naming the endpoint and why; a catch-all `*` endpoint is not sent it, and a
/// publisher cannot send one itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_endpoint_is_announced_to_the_endpoints_that_subscribe() {
    let (_server, api) = setup().await;
    let gone = Receiver::start().await;
    gone.push([Reply::status(410)]);
    let only_users = json!({ "subscriptions": [{ "event_type": "user.*" }] });
    let (gone_id, _) = endpoint_to(&api, &gone, only_users).await;
    let watcher = Receiver::start().await;
    let notices = json!({ "subscriptions": [{ "event_type": "switchyard.endpoint.disabled" }] });
    let (watcher_id, watcher_secret) = endpoint_to(&api, &watcher, notices).await;
    let everything = Receiver::start().await;
    let (everything_id, _) = endpoint_to(&api, &everything, json!({})).await;

    let (_, deliveries) = publish(&api, "user.deleted", json!({ "user": 1 })).await;
    assert_eq!(deliveries, 2, "the endpoint that answers 410 and the catch-all");
    let announced = watcher.wait_for_requests(1, WAIT).await;
    let body: Value = serde_json::from_slice(&announced[0].body).unwrap();
    assert_eq!(body["type"], "switchyard.endpoint.disabled", "{body}");
    let data = &body["data"];
    let host = json!("127.0.0.1");
    assert_eq!((&data["endpoint_id"], &data["host"]), (&json!(gone_id), &host), "only the host: {body}");
    assert_eq!(data["status_code"], 410, "{body}");
    let endpoint = api.endpoint(&gone_id).await;
    assert_eq!(data["reason"], endpoint["status_reason"], "{body}");
    assert!(data["disabled_at"].as_str().is_some_and(|at| at.ends_with('Z')), "{body}");
    assert_verifies("standard", &watcher_secret, &announced[0], "the notice").await;

    // Listed among the tenant's events, with one delivery: to the endpoint that asked, not to the catch-all.
    let event_id = str_field(&body, "id").to_string();
    let delivered = api.get(&format!("/api/v1/deliveries?event_id={event_id}")).await;
    let to: Vec<&str> =
        delivered["data"].as_array().unwrap().iter().filter_map(|d| d["endpoint_id"].as_str()).collect();
    assert_eq!(to, [watcher_id.as_str()], "{delivered}");
    everything.wait_for_requests(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(watcher.count(), 1, "announced once");
    assert_eq!(everything.count(), 1, "the catch-all got the user event only");
    let user_event: Value = serde_json::from_slice(&everything.requests()[0].body).unwrap();
    assert_eq!(user_event["type"], "user.deleted", "{user_event}");
    let deliveries = api.get(&format!("/api/v1/deliveries?endpoint_id={everything_id}")).await;
    assert_eq!(deliveries["data"].as_array().map(Vec::len), Some(1), "{deliveries}");

    // An endpoint subscribed later gets the notice by replaying what it missed, as any event.
    let latecomer = Receiver::start().await;
    // (`switchyard.*` would replay the 410's dead letter's notice too.)
    let notices = json!({ "subscriptions": [{ "event_type": "switchyard.endpoint.*" }] });
    let (latecomer_id, _) = endpoint_to(&api, &latecomer, notices).await;
    let since = json!({ "since": "2020-01-01T00:00:00Z" });
    let replay = format!("/api/v1/endpoints/{latecomer_id}/replay-missing");
    assert_eq!(api.expect(Method::POST, &replay, Some(since), 200).await["created"], 1);
    let replayed = latecomer.wait_for_requests(1, WAIT).await;
    assert_eq!(serde_json::from_slice::<Value>(&replayed[0].body).unwrap()["id"], body["id"]);

    let notice = json!({ "type": "switchyard.endpoint.disabled", "data": {} });
    let refused = api.expect(Method::POST, "/api/v1/events", Some(notice), 400).await;
    assert_eq!(refused["error"]["field"], "type", "{refused}");
}

/// 6c. A delivery an attempt dead-letters is announced: `switchyard.delivery.dead` goes to the endpoints that
/// subscribe to it, once per dead-lettering (a requeued delivery that dies again is announced again), without the
/// receiver's words; a notice that itself dies is not announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_announced_to_the_endpoints_that_subscribe() {
    let (_server, api) = setup().await;
    let failing = Receiver::start().await;
    failing.push([Reply::status(503).body("down"), Reply::status(503).body("down")]);
    let mut orders = retry(&["1s"]);
    orders["subscriptions"] = json!([{ "event_type": "order.*" }]);
    let (failing_id, _) = endpoint_to(&api, &failing, orders).await;
    let watcher = Receiver::start().await;
    // The watcher refuses its first notice for good: that dead letter must not be announced in turn.
    watcher.push([Reply::status(400)]);
    let notices = json!({ "subscriptions": [{ "event_type": "switchyard.delivery.dead" }] });
    let (watcher_id, watcher_secret) = endpoint_to(&api, &watcher, notices).await;
    let everything = Receiver::start().await;
    endpoint_to(&api, &everything, json!({ "subscriptions": [{ "event_type": "*" }] })).await;

    let (event_id, deliveries) = publish(&api, "order.created", json!({ "order": 1 })).await;
    assert_eq!(deliveries, 2, "the failing endpoint and the catch-all");
    let delivery_id = str_field(&api.delivery_of(&event_id, &failing_id).await, "id").to_string();
    assert_eq!(api.wait_status(&delivery_id, "dead", WAIT).await["attempts"], 2);
    let announced = watcher.wait_for_requests(1, WAIT).await;
    let body: Value = serde_json::from_slice(&announced[0].body).unwrap();
    assert_eq!(body["type"], "switchyard.delivery.dead", "{body}");
    let data = &body["data"];
    let expected = json!({ "delivery_id": delivery_id, "event_id": event_id, "event_type": "order.created",
        "endpoint_id": failing_id, "host": "127.0.0.1", "attempts": 2, "status_code": 503 });
    for (field, value) in expected.as_object().unwrap() {
        assert_eq!(&data[field], value, "{field}: {body}");
    }
    assert!(data["dead_at"].as_str().is_some_and(|at| at.ends_with('Z')), "{body}");
    assert!(!String::from_utf8_lossy(&announced[0].body).contains("down"), "the receiver's answer stays out: {body}");
    assert_verifies("standard", &watcher_secret, &announced[0], "the notice").await;

    // The notice died at the watcher (400); nothing announces that.
    let notice_delivery = api.delivery_of(str_field(&body, "id"), &watcher_id).await;
    api.wait_status(str_field(&notice_delivery, "id"), "dead", WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(watcher.count(), 1, "announced once, and the dead notice not at all");
    let listed = api.get("/api/v1/events?event_type=switchyard.delivery.dead").await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1), "{listed:#}");
    assert_eq!(everything.count(), 1, "the catch-all got the order only");

    // Requeued and dead again: a second dead-lettering, a second notice, which the watcher accepts.
    failing.push([Reply::status(503), Reply::status(503)]);
    let requeue = json!({ "delivery_ids": [delivery_id] });
    api.expect(Method::POST, "/api/v1/dead-letters/requeue", Some(requeue), 200).await;
    let announced = watcher.wait_for_requests(2, WAIT).await;
    let again: Value = serde_json::from_slice(&announced[1].body).unwrap();
    assert_eq!((&again["data"]["delivery_id"], &again["data"]["attempts"]), (&json!(delivery_id), &json!(4)));
    assert_ne!(again["id"], body["id"], "{again}");
}

/// 7. A 400 is final: dead after one attempt, the response body kept for diagnosis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_error_is_dead_at_once() {
    let (_server, api) = setup().await;
    let receiver = Receiver::start().await;
    receiver.push([Reply::status(400).body("missing field customer")]);
    let (endpoint_id, _) = endpoint_to(&api, &receiver, retry(&["1s"])).await;
    let (_, delivery_id) = publish_to(&api, &endpoint_id, "user.created", json!({ "user": 3 })).await;

    let delivery = api.wait_final(&delivery_id, WAIT).await;
    assert_eq!(delivery["status"], "dead", "{delivery:#}");
    assert_eq!(attempts(&delivery), 1, "{delivery:#}");
    assert_eq!(outcomes(&delivery), ["dead"], "{delivery:#}");
    assert_eq!(status_codes(&delivery), [Some(400)], "{delivery:#}");
    assert_eq!(attempts_log(&delivery)[0]["response_body"], "missing field customer", "{delivery:#}");
    assert_eq!(receiver.count(), 1);
    assert_eq!(api.endpoint(&endpoint_id).await["status"], "active", "a 400 does not disable the endpoint");
}

/// 8. A receiver slower than the endpoint timeout: the attempt is recorded as a timeout and retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_is_retried() {
    let (_server, api) = setup().await;
    let receiver = Receiver::start().await;
    receiver.push([Reply::status(204).delay(Duration::from_secs(3))]);
    let mut settings = retry(&["1s"]);
    settings["timeout_secs"] = json!(1);
    let (endpoint_id, _) = endpoint_to(&api, &receiver, settings).await;
    let (event_id, delivery_id) = publish_to(&api, &endpoint_id, "report.ready", json!({ "report": 4 })).await;

    let delivery = api.wait_final(&delivery_id, WAIT).await;
    assert_eq!(delivery["status"], "succeeded", "{delivery:#}");
    assert_eq!(attempts(&delivery), 2, "{delivery:#}");
    assert_eq!(outcomes(&delivery), ["retry", "succeeded"], "{delivery:#}");
    let first = &attempts_log(&delivery)[0];
    assert!(first["status_code"].is_null(), "a timed-out attempt has no status code: {first}");
    assert!(
        first["error"].as_str().is_some_and(|e| e.to_ascii_lowercase().contains("time")),
        "the attempt error should say it timed out: {first}"
    );
    let took = first["duration_ms"].as_u64().unwrap_or_else(|| panic!("duration_ms: {first}"));
    assert!((900..2500).contains(&took), "the 1 s timeout should cut the 3 s answer short; took {took} ms");
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert_webhook_ids(&requests, &event_id);
}

/// 9. `Retry-After` postpones the retry beyond the endpoint's 1 s schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let (_server, api) = setup().await;
    let receiver = Receiver::start().await;
    receiver.push([Reply::status(503).header("Retry-After", "3")]);
    let (endpoint_id, _) = endpoint_to(&api, &receiver, retry(&["1s"])).await;
    let (_, delivery_id) = publish_to(&api, &endpoint_id, "report.ready", json!({ "report": 5 })).await;

    let delivery = api.wait_final(&delivery_id, WAIT).await;
    assert_eq!(delivery["status"], "succeeded", "{delivery:#}");
    assert_eq!(status_codes(&delivery), [Some(503), Some(204)], "{delivery:#}");
    // The router schedules a retry on the system clock (the due time is stored as Unix milliseconds), so the
    // wait is judged by the attempts' own start times, read from the same clock. The receiver's monotonic clock
    // drifts from the system clock whenever the system clock is adjusted: CI once saw 2.9926 s between the
    // two receipts, which no scheduling on one clock can produce (the retry is due 3 s after the router has the
    // first answer, which comes after the first receipt).
    let log = attempts_log(&delivery);
    let started_ms = |attempt: &Value| {
        let text = attempt["started_at"].as_str().unwrap_or_else(|| panic!("attempt without started_at: {attempt}"));
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|e| panic!("started_at {text:?}: {e}"))
            .timestamp_millis()
    };
    let waited_ms = started_ms(&log[1]) - started_ms(&log[0]);
    assert!(
        waited_ms >= 3000,
        "Retry-After: 3 was not honoured: the retry started {waited_ms} ms after the first attempt"
    );
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    // The receiver saw about the same wait: far from the endpoint's own 1 s schedule, and not far too long.
    let gap = requests[1].received_at - requests[0].received_at;
    assert!(gap >= Duration::from_millis(2500), "the retry reached the receiver after only {gap:?}");
    assert!(gap < Duration::from_secs(10), "the retry came far too late: {gap:?}");
}

/// 10. A manual retry of a succeeded delivery sends it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_retry_resends_succeeded_delivery() {
    let (_server, api) = setup().await;
    let receiver = Receiver::start().await;
    let (endpoint_id, _) = endpoint_to(&api, &receiver, json!({})).await;
    let (event_id, delivery_id) = publish_to(&api, &endpoint_id, "invoice.sent", json!({ "invoice": 10 })).await;
    api.wait_status(&delivery_id, "succeeded", WAIT).await;

    let retried = api.expect(Method::POST, &format!("/api/v1/deliveries/{delivery_id}/retry"), None, 202).await;
    assert_eq!(retried["id"], delivery_id.as_str(), "{retried}");
    let requests = receiver.wait_for_requests(2, WAIT).await;
    assert_webhook_ids(&requests, &event_id);
    assert_eq!(requests[1].body, requests[0].body, "the same payload is sent again");
    // The receiver can tell the resend from a duplicate: same event, next attempt.
    for (request, attempt) in requests.iter().zip(["1", "2"]) {
        assert_eq!(request.header("switchyard-event-type"), Some("invoice.sent"));
        assert_eq!(request.header("switchyard-delivery-id"), Some(delivery_id.as_str()));
        assert_eq!(request.header("switchyard-attempt"), Some(attempt));
    }
    let delivery = api
        .wait_delivery(&delivery_id, "a second successful attempt", WAIT, |d| {
            d["status"] == "succeeded" && d["attempts"] == 2
        })
        .await;
    assert_eq!(outcomes(&delivery), ["succeeded", "succeeded"], "{delivery:#}");
}

/// 11. SIGKILL of the real binary while deliveries are in flight or queued loses none of the accepted events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loses_no_accepted_event() {
    const EVENTS: usize = 50;
    let data_dir = tempfile::tempdir().expect("data dir");
    let log_dir = tempfile::tempdir().expect("log dir");
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(204).delay(Duration::from_secs(2)));

    let first = BinaryServer::start(data_dir.path(), log_dir.path()).await;
    let api = Api::new_tenant(&first.base_url, "crash").await;
    // A short schedule so that, should an interrupted attempt count as a failure, the retry still comes quickly.
    let (endpoint_id, _) =
        endpoint_to(&api, &receiver, json!({ "retry": { "schedule": ["1s"], "max_attempts": 10 } })).await;
    let mut accepted = BTreeSet::new();
    for n in 0..EVENTS {
        let (event_id, deliveries) = publish(&api, "order.created", json!({ "n": n })).await;
        assert_eq!(deliveries, 1, "event {n}");
        accepted.insert(event_id);
    }
    let killed_at = Instant::now();
    first.kill();

    // A request counts as delivered if it was answered before the kill or arrived after it (from the restarted
    // process); requests cut off by the kill do not.
    let delivered = |requests: &[Recorded]| -> BTreeSet<String> {
        requests
            .iter()
            .filter(|r| r.received_at > killed_at || r.answered_at.is_some_and(|at| at <= killed_at))
            .filter_map(|r| r.header("webhook-id").map(str::to_string))
            .collect()
    };
    let done_before_kill = delivered(&receiver.requests()).len();
    assert!(done_before_kill < EVENTS, "the scenario needs deliveries still unfinished at the kill");
    receiver.set_default(Reply::status(204));

    let second = BinaryServer::start(data_dir.path(), log_dir.path()).await;
    let api = api.at(&second.base_url);
    let requests = receiver
        .wait_until(&format!("all {EVENTS} accepted events"), Duration::from_secs(30), |requests| {
            accepted.is_subset(&delivered(requests))
        })
        .await;
    let unknown: BTreeSet<String> = delivered(&requests).difference(&accepted).cloned().collect();
    assert!(unknown.is_empty(), "the receiver got events that were never accepted: {unknown:?}");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = api.get(&format!("/api/v1/deliveries?endpoint_id={endpoint_id}&limit=1000")).await;
        let deliveries = page["data"].as_array().expect("data");
        let event_ids: BTreeSet<String> =
            deliveries.iter().filter_map(|d| d["event_id"].as_str().map(str::to_string)).collect();
        assert_eq!(deliveries.len(), EVENTS, "one delivery per accepted event");
        assert_eq!(event_ids, accepted, "deliveries are for exactly the accepted events");
        let unfinished: Vec<String> = deliveries
            .iter()
            .filter(|d| d["status"] != "succeeded")
            .map(|d| format!("{} {} attempts={}", d["id"], d["status"], d["attempts"]))
            .collect();
        if unfinished.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "deliveries not succeeded 30 s after the restart: {unfinished:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "crash test: {done_before_kill}/{EVENTS} delivered before the SIGKILL; {} requests in all",
        receiver.count()
    );
}

/// 12. A graceful shutdown with a delivery in flight returns promptly, and after a restart on the same data the
/// delivery is simply succeeded, with no failed attempt to show for the interruption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_keeps_in_flight_delivery() {
    let (server, api) = setup().await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(204).delay(Duration::from_secs(1)));
    let (endpoint_id, _) = endpoint_to(&api, &receiver, json!({})).await;
    let (event_id, delivery_id) = publish_to(&api, &endpoint_id, "shipment.sent", json!({ "shipment": 12 })).await;
    receiver.wait_for_requests(1, WAIT).await;

    let (took, data_dir) = server.stop(Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(5), "run() took {took:?} to return after the shutdown signal");

    receiver.set_default(Reply::status(204));
    let server = Server::start_in(data_dir).await;
    let api = api.at(&server.base_url);
    let delivery = api.wait_status(&delivery_id, "succeeded", WAIT).await;
    assert_eq!(outcomes(&delivery), ["succeeded"], "one successful attempt, nothing failed: {delivery:#}");
    assert_eq!(attempts(&delivery), 1, "{delivery:#}");
    assert_eq!(status_codes(&delivery), [Some(204)], "{delivery:#}");
    assert_webhook_ids(&receiver.requests(), &event_id);
}

/// 13. The binary's log, written to a file as a service manager or container runtime would keep it, is plain
/// text: colour escape codes only go to a terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_to_a_file_has_no_colour_codes() {
    let data_dir = tempfile::tempdir().expect("data dir");
    let log_dir = tempfile::tempdir().expect("log dir");
    let server = BinaryServer::start(data_dir.path(), log_dir.path()).await;
    let log = server.log();
    assert!(log.contains("switchyard listening"), "the startup line is logged: {log}");
    assert!(!log.contains('\u{1b}'), "escape codes in a log written to a file: {log:?}");
}

/// 14. A second process started on the same SQLite database is refused, naming the lock, and leaves the first
/// one's deliveries alone: before the lock, it took back the first's leases at start and sent the delivery the
/// first had in flight a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_database_is_refused() {
    let data_dir = tempfile::tempdir().expect("data dir");
    let log_dir = tempfile::tempdir().expect("log dir");
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(204).delay(Duration::from_secs(3)));
    let first = BinaryServer::start(data_dir.path(), log_dir.path()).await;
    let api = Api::new_tenant(&first.base_url, "one-process").await;
    let (endpoint_id, _) = endpoint_to(&api, &receiver, json!({})).await;
    let (_, delivery_id) = publish_to(&api, &endpoint_id, "order.created", json!({ "n": 14 })).await;
    receiver.wait_for_requests(1, WAIT).await;

    let mut second = BinaryServer::spawn(data_dir.path(), log_dir.path());
    let status = second.wait_exit(Duration::from_secs(20)).await;
    let log = second.log();
    assert!(!status.success(), "the second process exited with {status}; log:\n{log}");
    assert!(log.contains("in use by another Switchyard process"), "the refusal names its cause: {log}");
    assert!(log.contains("switchyard.db.lock"), "and the lock file: {log}");

    let delivery = api.wait_status(&delivery_id, "succeeded", WAIT).await;
    assert_eq!(attempts(&delivery), 1, "{delivery:#}");
    assert_eq!(receiver.count(), 1, "the delivery in flight was sent once");
}

/// 15. An event published while its endpoint was paused reached no delivery for it; after activation an operator
/// sends it by hand, and the receiver gets the event as published (same `webhook-id`, same payload), once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_missed_while_paused_is_sent_by_hand() {
    let (_server, api) = setup().await;
    let receiver = Receiver::start().await;
    let (endpoint_id, _) = endpoint_to(&api, &receiver, json!({})).await;
    let endpoint_path = format!("/api/v1/endpoints/{endpoint_id}");
    api.expect(Method::POST, &format!("{endpoint_path}/pause"), Some(json!({})), 200).await;
    let (event_id, deliveries) = publish(&api, "invoice.paid", json!({ "invoice": 15 })).await;
    assert_eq!(deliveries, 0, "a paused endpoint gets no delivery");
    api.expect(Method::POST, &format!("{endpoint_path}/activate"), Some(json!({})), 200).await;

    let send = format!("/api/v1/events/{event_id}/deliveries");
    let created = api.expect(Method::POST, &send, Some(json!({ "endpoint_id": endpoint_id })), 201).await;
    let delivery = api.wait_status(str_field(&created, "id"), "succeeded", WAIT).await;
    assert_eq!(attempts(&delivery), 1, "{delivery:#}");
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_webhook_ids(&requests, &event_id);
    assert_eq!(requests[0].json()["data"], json!({ "invoice": 15 }));

    let again = api.expect(Method::POST, &send, Some(json!({ "endpoint_id": endpoint_id })), 409).await;
    assert!(str_field(&again["error"], "message").contains(str_field(&created, "id")), "{again}");
    let log = api.get("/api/v1/audit-log?action=delivery.created").await;
    assert_eq!(log["data"][0]["details"], json!({ "event_id": event_id, "endpoint_id": endpoint_id }));
}

/// 16. A receiver moving from another system keeps its secret: an endpoint created with a Svix-style secret and
/// one rotated to a Stripe-style secret sign with them, as the reference libraries check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_keeps_the_secret_it_brings() {
    const SVIX_STYLE: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const STRIPE_STYLE: &str = "whsec_5b2ZkQ8pX1rN7tL3vC9mJ4hG6fD0sA2e";
    let (_server, api) = setup().await;
    let standard = Receiver::start().await;
    let stripe = Receiver::start().await;
    let (_, secret) = endpoint_to(&api, &standard, json!({ "secret": SVIX_STYLE })).await;
    assert_eq!(secret, SVIX_STYLE, "the create response shows the secret it was given");
    let (stripe_id, _) = endpoint_to(&api, &stripe, json!({ "signature_scheme": "stripe" })).await;
    let rotate = json!({ "secret": STRIPE_STYLE, "grace_period": "0s" });
    let rotated =
        api.expect(Method::POST, &format!("/api/v1/endpoints/{stripe_id}/rotate-secret"), Some(rotate), 200).await;
    assert_eq!(rotated["secret"], STRIPE_STYLE);

    let (_, deliveries) = publish(&api, "customer.moved", json!({ "from": "elsewhere" })).await;
    assert_eq!(deliveries, 2);
    let standard_request = &standard.wait_for_requests(1, WAIT).await[0];
    assert_verifies("standard", SVIX_STYLE, standard_request, "a provided standard secret").await;
    let stripe_request = &stripe.wait_for_requests(1, WAIT).await[0];
    assert_verifies("stripe", STRIPE_STYLE, stripe_request, "a provided stripe secret").await;
    assert_eq!(stripe_request.header("switchyard-signature").map(|h| h.matches("v1=").count()), Some(1));
}

/// 17. A receiver whose certificate comes from a private CA: refused without `ca_file` (a connection error that
/// names the certificate, no request reaches it), delivered once the CA is configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_trusted_only_when_configured() {
    let receiver = tls_receiver::TlsReceiver::start().await;
    let endpoint = json!({ "url": receiver.url, "retry": { "schedule": ["1s"], "max_attempts": 1 } });

    let untrusting = Server::start().await;
    let api = Api::new_tenant(&untrusting.base_url, "private-ca").await;
    let endpoint_id = str_field(&api.create_endpoint(endpoint.clone()).await, "id").to_string();
    let (_, delivery_id) = publish_to(&api, &endpoint_id, "invoice.paid", json!({ "n": 17 })).await;
    let refused = api.wait_final(&delivery_id, WAIT).await;
    assert_eq!(refused["status"], "dead", "{refused:#}");
    let error = str_field(&refused, "last_error").to_lowercase();
    assert!(error.contains("certificate"), "the error says why: {error}");
    assert_eq!(receiver.count(), 0);

    let roots = reqwest::Certificate::from_pem_bundle(tls_receiver::CA_PEM).expect("the test CA");
    let dir = tempfile::tempdir().expect("data dir");
    let trusting = Server::start_configured(dir, |config| config.extra_root_certificates = roots).await;
    let api = Api::new_tenant(&trusting.base_url, "private-ca").await;
    let endpoint_id = str_field(&api.create_endpoint(endpoint).await, "id").to_string();
    let (_, delivery_id) = publish_to(&api, &endpoint_id, "invoice.paid", json!({ "n": 17 })).await;
    api.wait_status(&delivery_id, "succeeded", WAIT).await;
    assert_eq!(receiver.count(), 1);
}

/// 18. An endpoint's rate limit spaces its requests out. Sixty events published at once reach an endpoint limited
/// to 20 per second over three seconds, no second seeing much more than the limit and its burst (2), each in
/// one attempt: waiting for a turn is not an attempt. An endpoint without a limit is not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_spaces_requests_and_counts_no_attempt() {
    const EVENTS: usize = 60;
    let (_server, api) = setup().await;
    let limited = Receiver::start().await;
    let unlimited = Receiver::start().await;
    let (limited_id, _) = endpoint_to(&api, &limited, json!({ "rate_limit": 20 })).await;
    endpoint_to(&api, &unlimited, json!({})).await;
    let events: Vec<Value> = (0..EVENTS).map(|n| json!({ "type": "order.created", "data": { "n": n } })).collect();
    api.expect(Method::POST, "/api/v1/events/batch", Some(json!({ "events": events })), 202).await;

    let requests = limited.wait_for_requests(EVENTS, WAIT).await;
    let ids: BTreeSet<_> = requests.iter().filter_map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), EVENTS, "each event once");
    let mut times: Vec<Instant> = requests.iter().map(|r| r.received_at).collect();
    times.sort();
    let span = times[EVENTS - 1] - times[0];
    // Two at once, then one every 50 ms: 2.9 s. A little less may show, as requests travel for different times.
    assert!(span >= Duration::from_millis(2_700), "{EVENTS} requests within {span:?}");
    let busiest_second = times
        .iter()
        .map(|&start| times.iter().filter(|&&t| t >= start && t < start + Duration::from_secs(1)).count())
        .max();
    // 21 turns fit in a second; the receiver shares this test's two threads, so a stall can bunch a few arrivals.
    assert!(busiest_second <= Some(26), "{busiest_second:?} requests within one second");

    let unlimited_requests = unlimited.wait_for_requests(EVENTS, WAIT).await;
    let last_unlimited = unlimited_requests.iter().map(|r| r.received_at).max().expect("requests");
    assert!(last_unlimited < times[EVENTS / 2], "the endpoint without a limit waited for the limited one");

    let listed = api.get(&format!("/api/v1/deliveries?endpoint_id={limited_id}&limit=100")).await;
    let deliveries = listed["data"].as_array().expect("a page of deliveries");
    assert_eq!(deliveries.len(), EVENTS);
    for delivery in deliveries {
        // The last requests may have arrived before their attempts were recorded.
        let delivery = api.wait_final(str_field(delivery, "id"), WAIT).await;
        assert_eq!((delivery["status"].as_str(), attempts(&delivery)), (Some("succeeded"), 1), "{delivery:#}");
    }
}

/// 19. What an endpoint missed while paused is replayed in one request: the events published meanwhile that its
/// subscriptions select (type and JSONPath filter), each once; not the others, and not twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_missed_while_paused_are_replayed_once() {
    let (_server, api) = setup().await;
    let receiver = Receiver::start().await;
    let subscriptions = json!({ "subscriptions": [{ "event_type": "order.*", "filter": "$[?@.data.total > 10]" }] });
    let (endpoint_id, _) = endpoint_to(&api, &receiver, subscriptions).await;
    let endpoint_path = format!("/api/v1/endpoints/{endpoint_id}");
    let (delivered, _) = publish(&api, "order.created", json!({ "total": 11 })).await;
    receiver.wait_for_requests(1, WAIT).await;

    api.expect(Method::POST, &format!("{endpoint_path}/pause"), Some(json!({})), 200).await;
    let mut missed = Vec::new();
    for (event_type, total) in
        [("order.created", 20), ("order.created", 5), ("invoice.paid", 50), ("order.shipped", 30)]
    {
        let (event_id, deliveries) = publish(&api, event_type, json!({ "total": total })).await;
        assert_eq!(deliveries, 0, "a paused endpoint gets no delivery");
        missed.push(event_id);
    }
    api.expect(Method::POST, &format!("{endpoint_path}/activate"), Some(json!({})), 200).await;

    let replay = format!("{endpoint_path}/replay-missing");
    for (body, field) in [
        (json!({}), "since"),
        (json!({ "since": "yesterday" }), "since"),
        (json!({ "since": "2030-01-01T00:00:00Z", "until": "2029-01-01T00:00:00Z" }), "until"),
        (json!({ "since": "2000-01-01T00:00:00Z", "event_type": "Order Created" }), "event_type"),
        (json!({ "since": "2000-01-01T00:00:00Z", "colour": "red" }), "colour"),
    ] {
        let refused = api.expect(Method::POST, &replay, Some(body), 400).await;
        assert_eq!(refused["error"]["field"], field, "{refused}");
    }
    let everything = json!({ "since": "2000-01-01T00:00:00Z" });
    api.expect(Method::POST, "/api/v1/endpoints/ep_unknown/replay-missing", Some(everything.clone()), 404).await;

    let replayed = api.expect(Method::POST, &replay, Some(everything.clone()), 200).await;
    assert_eq!(replayed, json!({ "created": 2 }));
    let requests = receiver.wait_for_requests(3, WAIT).await;
    let ids: BTreeSet<&str> = requests.iter().filter_map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids, BTreeSet::from([delivered.as_str(), missed[0].as_str(), missed[3].as_str()]));
    assert_eq!(api.expect(Method::POST, &replay, Some(everything), 200).await, json!({ "created": 0 }));

    let log = api.get("/api/v1/audit-log?action=endpoint.missed_replayed").await;
    let created: Vec<&Value> =
        log["data"].as_array().expect("audit entries").iter().map(|e| &e["details"]["created"]).collect();
    assert_eq!(created, [&json!(0), &json!(2)], "newest first: {log:#}");
    assert_eq!(receiver.count(), 3);
}

/// 20. After a clean stop the SQLite database file alone is a whole backup: the WAL has been copied into it, so a
/// copy of `switchyard.db` without its `-wal` file, started elsewhere, holds every accepted event and its
/// delivery's outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_clean_stop_the_database_file_alone_is_a_backup() {
    let (server, api) = setup().await;
    let receiver = Receiver::start().await;
    let (endpoint_id, _) = endpoint_to(&api, &receiver, json!({})).await;
    let (event_id, delivery_id) = publish_to(&api, &endpoint_id, "backup.taken", json!({ "n": 20 })).await;
    api.wait_status(&delivery_id, "succeeded", WAIT).await;

    let (_, data_dir) = server.stop(Duration::from_secs(10)).await;
    let wal = data_dir.path().join("switchyard.db-wal");
    let wal_bytes = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(wal_bytes, 0, "{} holds {wal_bytes} bytes after a clean stop", wal.display());

    let copy = tempfile::tempdir().expect("backup dir");
    std::fs::copy(data_dir.path().join("switchyard.db"), copy.path().join("switchyard.db")).expect("copy the file");
    drop(data_dir);
    let restored = Server::start_in(copy).await;
    let api = api.at(&restored.base_url);
    let event = api.get(&format!("/api/v1/events/{event_id}")).await;
    assert_eq!(event["data"], json!({ "n": 20 }), "{event:#}");
    let delivery = api.get(&format!("/api/v1/deliveries/{delivery_id}")).await;
    assert_eq!(delivery["status"], "succeeded", "{delivery:#}");
    assert_eq!(receiver.count(), 1);
}

/// 21. `GET /metrics` shows what was published and delivered in Prometheus' text format, to the admin key only,
/// and names no tenant, endpoint or event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_publishes_attempts_and_requests() {
    let (server, api) = setup().await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(204));
    let (endpoint_id, _) = endpoint_to(&api, &receiver, json!({})).await;
    let mut event_ids = Vec::new();
    for n in 0..3 {
        event_ids.push(publish_to(&api, &endpoint_id, "metrics.counted", json!({ "n": n })).await);
    }
    for (_, delivery_id) in &event_ids {
        api.wait_status(delivery_id, "succeeded", WAIT).await;
    }

    let url = format!("{}/metrics", server.base_url);
    let http = reqwest::Client::new();
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(api.send(Method::GET, "/api/v1/no-such-route", None).await.0, 404);
    for method in [Method::DELETE, Method::PUT] {
        assert_eq!(api.send(method, "/api/v1/events", None).await.0, 405);
    }
    let (status, refused) = api.send(Method::GET, "/metrics", None).await;
    assert_eq!(status, 403, "a tenant key: {refused}");
    let text = harness::scrape_metrics(&server.base_url).await;
    for line in [
        "switchyard_events_published_total 3",
        "switchyard_deliveries_created_total 3",
        r#"switchyard_delivery_attempts_total{outcome="succeeded"} 3"#,
        "switchyard_delivery_latency_seconds_count 3",
        "switchyard_delivery_attempts_in_flight 0",
        r#"switchyard_http_request_duration_seconds_count{method="POST",route="/api/v1/events",status="202"} 3"#,
        r#"switchyard_http_request_duration_seconds_count{method="GET",route="/metrics",status="403"} 1"#,
        r#"switchyard_http_request_duration_seconds_count{method="GET",route="unmatched",status="404"} 1"#,
        r#"switchyard_http_request_duration_seconds_count{method="other",route="/api/v1/events",status="405"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    assert!(text.lines().any(|l| l.starts_with("switchyard_group_commit_duration_seconds_count ")), "{text}");
    for id in [api.tenant_id(), endpoint_id.as_str(), event_ids[0].0.as_str()] {
        assert!(!text.contains(id), "{id} in the metrics:\n{text}");
    }
}

/// 22. `switchyard_due_delivery_lag_seconds` shows a backlog: with one attempt at a time and a slow receiver,
/// the deliveries behind the first wait past their due time, and the lag says for how long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_how_long_due_deliveries_have_waited() {
    let server = Server::start_configured(tempfile::tempdir().unwrap(), |config| config.dispatch_concurrency = 1).await;
    let api = Api::new_tenant(&server.base_url, "lagging").await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(204).delay(Duration::from_secs(3)));
    endpoint_to(&api, &receiver, json!({})).await;
    let lag = || async {
        let text = harness::scrape_metrics(&server.base_url).await;
        let line = text.lines().find(|l| l.starts_with("switchyard_due_delivery_lag_seconds ")).expect("the lag");
        line.rsplit(' ').next().unwrap().parse::<f64>().unwrap()
    };
    assert_eq!(lag().await, 0.0, "nothing due");
    for n in 0..3 {
        publish(&api, "lag.measured", json!({ "n": n })).await;
    }
    receiver.wait_for_requests(1, WAIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waited = lag().await;
    assert!((0.9..30.0).contains(&waited), "two deliveries wait behind the first: lag {waited}");
    // The backlog counted, and the endpoints by status, read from the database like the lag.
    let text = harness::scrape_metrics(&server.base_url).await;
    let value = |name: &str| {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {text}"));
        line.rsplit(' ').next().unwrap().parse::<f64>().unwrap()
    };
    assert_eq!(value("switchyard_deliveries_waiting "), 2.0, "two wait behind the first");
    assert_eq!(value("switchyard_endpoints{status=\"active\"} "), 1.0);
    assert_eq!(value("switchyard_endpoints{status=\"disabled\"} "), 0.0);
}

/// 23. An endpoint whose every attempt fails for `disable_failing_after` (and at least ten times) is disabled, as
/// a `410` would disable it; its deliveries wait instead of dying, and go out once it is activated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_every_attempt_is_disabled_and_its_deliveries_wait() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_configured(dir, |c| c.disable_failing_after = Some(Duration::from_secs(2))).await;
    let api = Api::new_tenant(&server.base_url, "e2e").await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(503));
    let (endpoint_id, _) =
        endpoint_to(&api, &receiver, json!({ "retry": { "schedule": ["1s"], "max_attempts": 50 } })).await;
    let mut deliveries = Vec::new();
    for n in 0..10 {
        deliveries.push(publish_to(&api, &endpoint_id, "order.created", json!({ "n": n })).await.1);
    }

    let endpoint = wait_until_disabled(&api, &endpoint_id).await;
    let reason = endpoint["status_reason"].as_str().unwrap_or_default();
    // "every attempt failed for 2s: 17 attempts since 2026-…Z": not sooner than two seconds nor ten attempts.
    let (failures, since) = reason
        .strip_prefix("every attempt failed for 2s: ")
        .and_then(|rest| rest.split_once(" attempts since "))
        .unwrap_or_else(|| panic!("reason: {endpoint:#}"));
    assert!(failures.parse::<u64>().unwrap() >= 10, "{endpoint:#}");
    let since = humantime::parse_rfc3339(since).unwrap();
    let disabled_at = humantime::parse_rfc3339(str_field(&endpoint, "updated_at")).unwrap();
    assert!(disabled_at.duration_since(since).unwrap() >= Duration::from_secs(2), "{endpoint:#}");

    let disabled = disabled_audit(&api, &endpoint_id).await;
    let entry = &disabled["data"][0];
    assert_eq!((&entry["actor"], &entry["details"]["reason"]), (&json!("switchyard"), &json!(reason)), "{disabled:#}");
    assert_eq!(entry["details"]["status_code"], 503, "{disabled:#}");

    // Held, not dead: nothing is sent while the endpoint is disabled, and nothing reached the dead-letter queue.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held = receiver.count();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.count(), held, "attempts went on after the endpoint was disabled");
    for id in &deliveries {
        let delivery = api.delivery(id).await;
        assert_eq!(delivery["status"], "failed", "{delivery:#}");
    }
    let dead = api.get(&format!("/api/v1/dead-letters?endpoint_id={endpoint_id}")).await;
    assert_eq!(dead["data"], json!([]), "{dead:#}");

    receiver.set_default(Reply::status(204));
    api.expect(Method::POST, &format!("/api/v1/endpoints/{endpoint_id}/activate"), Some(json!({})), 200).await;
    for id in &deliveries {
        api.wait_status(id, "succeeded", WAIT).await;
    }
}

/// 24. A test event reaches the one endpoint it was sent to, signed and recorded like any delivery, even though
/// another endpoint subscribes to everything and this one to nothing of its type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_event_goes_to_one_endpoint_only() {
    let (_server, api) = setup().await;
    let receiver = Receiver::start().await;
    let body = json!({ "url": receiver.url("/tested"), "subscriptions": [{ "event_type": "order.created" }] });
    let tested = api.create_endpoint(body).await;
    let (tested_id, secret) = (str_field(&tested, "id").to_string(), str_field(&tested, "secret").to_string());
    let (bystander_id, _) = endpoint_to(&api, &receiver, json!({})).await;

    let sent = api.expect(Method::POST, &format!("/api/v1/endpoints/{tested_id}/test"), None, 202).await;
    let delivery = api.wait_status(str_field(&sent, "delivery_id"), "succeeded", WAIT).await;
    assert_eq!((&delivery["endpoint_id"], &delivery["event_type"]), (&json!(tested_id), &json!("switchyard.test")));
    let requests = receiver.wait_for_requests(1, WAIT).await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].path, "/tested");
    assert_eq!(requests[0].json()["data"], json!({ "message": "A test event sent from Switchyard" }));
    let event_id = str_field(&sent, "event_id");
    assert_eq!(requests[0].header("webhook-id"), Some(event_id));
    if let Some(verifier) = python::verifier() {
        let verified = verifier.verify("standard", &secret, &requests[0].headers, &requests[0].body).await;
        verified.expect("a test event is signed like any other");
    }
    let to_bystander = api.get(&format!("/api/v1/deliveries?endpoint_id={bystander_id}")).await;
    assert_eq!(to_bystander["data"], json!([]), "the `*` subscriber got nothing: {to_bystander:#}");

    // A chosen payload; the audit log names the event.
    let custom = json!({ "data": { "amount": 42 } });
    let sent = api.expect(Method::POST, &format!("/api/v1/endpoints/{tested_id}/test"), Some(custom), 202).await;
    api.wait_status(str_field(&sent, "delivery_id"), "succeeded", WAIT).await;
    assert_eq!(receiver.requests()[1].json()["data"], json!({ "amount": 42 }));
    assert_eq!(receiver.requests()[1].json()["type"], "switchyard.test");
    let audit = api.get(&format!("/api/v1/audit-log?action=endpoint.tested&resource_id={tested_id}")).await;
    assert_eq!(audit["data"][0]["details"], json!({ "event_id": sent["event_id"] }));

    // Replaying what the `*` subscriber missed does not send it the test events, and nobody may publish one.
    let replay = json!({ "since": "2000-01-01T00:00:00Z" });
    let replayed =
        api.expect(Method::POST, &format!("/api/v1/endpoints/{bystander_id}/replay-missing"), Some(replay), 200).await;
    assert_eq!(replayed["created"], 0, "{replayed:#}");
    let forged = api.send(Method::POST, "/api/v1/events", Some(json!({ "type": "switchyard.test", "data": {} }))).await;
    assert_eq!((forged.0.as_u16(), &forged.1["error"]["field"]), (400, &json!("type")), "{forged:?}");

    let path = format!("/api/v1/endpoints/{tested_id}/test");
    let bad = api.send(Method::POST, &path, Some(json!({ "data": [1] }))).await;
    assert_eq!((bad.0.as_u16(), &bad.1["error"]["field"]), (400, &json!("data")), "{bad:?}");
    let bad = api.send(Method::POST, &path, Some(json!({ "type": "invoice.paid" }))).await;
    assert_eq!(bad.0.as_u16(), 400, "{bad:?}");
    let not_json = api.send_bytes(Method::POST, &path, br#"{"data": {}}"#.to_vec()).await;
    assert_eq!(not_json.0.as_u16(), 415, "{not_json:?}");
    let stranger = Api::new_tenant(&api.base_url, "stranger").await;
    assert_eq!(stranger.send(Method::POST, &path, None).await.0.as_u16(), 404, "another tenant's endpoint");
    api.expect(Method::POST, &format!("/api/v1/endpoints/{tested_id}/pause"), Some(json!({})), 200).await;
    let paused = api.send(Method::POST, &path, None).await;
    assert_eq!(paused.0.as_u16(), 409, "{paused:?}");
    let unknown = api.send(Method::POST, "/api/v1/endpoints/ep_unknown/test", None).await;
    assert_eq!(unknown.0.as_u16(), 404, "{unknown:?}");
    assert_eq!(receiver.count(), 2);
}

/// 25. A slow receiver holds only its endpoint's share of the attempts in flight (`endpoint_concurrency`): another
/// tenant's events published behind its backlog go out at once instead of waiting for its answers, and the slow
/// one still gets every delivery, never more than its share at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_does_not_hold_up_other_endpoints() {
    const SLOW_EVENTS: usize = 8;
    let server = Server::start_configured(tempfile::tempdir().unwrap(), |config| {
        config.dispatch_concurrency = 8;
        config.endpoint_concurrency = 2;
    })
    .await;
    let (slow_api, fast_api) =
        (Api::new_tenant(&server.base_url, "slow").await, Api::new_tenant(&server.base_url, "fast").await);
    let (slow, fast) = (Receiver::start().await, Receiver::start().await);
    slow.set_default(Reply::status(204).delay(Duration::from_millis(1500)));
    endpoint_to(&slow_api, &slow, json!({})).await;
    endpoint_to(&fast_api, &fast, json!({})).await;
    for n in 0..SLOW_EVENTS {
        publish(&slow_api, "report.generated", json!({ "n": n })).await;
    }
    slow.wait_for_requests(2, WAIT).await;

    let published = Instant::now();
    for n in 0..3 {
        publish(&fast_api, "payment.succeeded", json!({ "n": n })).await;
    }
    fast.wait_for_requests(3, WAIT).await;
    let took = published.elapsed();
    println!("another tenant's 3 events were delivered {took:?} after their publishes began");
    assert!(took < Duration::from_millis(1000), "the fast endpoint waited {took:?} behind the slow one");

    let requests = slow.wait_for_requests(SLOW_EVENTS, Duration::from_secs(60)).await;
    let most_at_once = requests
        .iter()
        .map(|r| {
            requests
                .iter()
                .filter(|o| o.received_at <= r.received_at && o.answered_at.is_none_or(|a| a > r.received_at))
                .count()
        })
        .max();
    assert_eq!(most_at_once, Some(2));
    assert_eq!(slow.count(), SLOW_EVENTS, "each delivered once");
}

/// 26. Deliveries go to public addresses only, unless the operator allows a network (dev mode allows loopback),
/// and in clear text only in dev mode. Endpoints saved in dev mode on loopback are refused once the server runs
/// without it: each attempt says why and nothing reaches a receiver. The API refuses such a URL outright. Once
/// `allowed_private_networks` includes loopback, the https endpoint is delivered to; the http ones stay refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_destinations_are_refused_unless_their_network_is_allowed() {
    let receiver = Receiver::start().await;
    let tls = tls_receiver::TlsReceiver::start().await;
    let by_address = receiver.url("/hook");
    let by_name = by_address.replacen("127.0.0.1", "localhost", 1);
    assert_ne!(by_address, by_name);
    let trusting = |config: &mut switchyard::config::Config| {
        config.extra_root_certificates =
            reqwest::Certificate::from_pem_bundle(tls_receiver::CA_PEM).expect("the test CA");
    };

    let dev = Server::start_configured(tempfile::tempdir().expect("data dir"), trusting).await;
    let api = Api::new_tenant(&dev.base_url, "destinations").await;
    let mut endpoint_ids = Vec::new();
    for url in [&by_address, &by_name, &tls.url] {
        let endpoint =
            api.create_endpoint(json!({ "url": url, "retry": { "schedule": ["1s"], "max_attempts": 1 } })).await;
        endpoint_ids.push(str_field(&endpoint, "id").to_string());
    }
    let (event_id, deliveries) = publish(&api, "order.placed", json!({ "n": 26 })).await;
    assert_eq!(deliveries, 3);
    let mut delivery_ids = Vec::new();
    for endpoint_id in &endpoint_ids {
        delivery_ids.push(str_field(&api.delivery_of(&event_id, endpoint_id).await, "id").to_string());
    }
    for id in &delivery_ids {
        api.wait_status(id, "succeeded", WAIT).await;
    }
    assert_eq!((receiver.count(), tls.count()), (2, 1));
    let (_, dir) = dev.stop(WAIT).await;

    let production = Server::start_configured(dir, |config| {
        trusting(config);
        config.dev_mode = false;
    })
    .await;
    let api = api.at(&production.base_url);
    let retry_all = |api: Api, ids: Vec<String>| async move {
        for id in &ids {
            api.expect(Method::POST, &format!("/api/v1/deliveries/{id}/retry"), None, 202).await;
        }
    };
    retry_all(api.at(&production.base_url), delivery_ids.clone()).await;
    let reasons =
        ["127.0.0.1 is a loopback address", "http:// is sent only in dev mode", "127.0.0.1 is a loopback address"];
    for (id, reason) in delivery_ids.iter().zip(reasons) {
        let refused = api
            .wait_delivery(id, "a second, refused attempt", WAIT, |d| d["attempts"] == 2 && d["status"] == "dead")
            .await;
        let error = str_field(&refused, "last_error");
        assert!(error.starts_with("connection refused by Switchyard: ") && error.contains(reason), "{error}");
        assert!(!error.contains("/hook"), "{error}");
    }
    assert_eq!((receiver.count(), tls.count()), (2, 1), "nothing reached a receiver");
    for url in ["https://169.254.169.254/latest/meta-data", "https://10.0.0.7/hook", "https://localhost/hook"] {
        let answer = api.expect(Method::POST, "/api/v1/endpoints", Some(json!({ "url": url })), 400).await;
        assert_eq!(answer["error"]["field"], "url", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("does not deliver to") && message.contains(" address"), "{message}");
    }
    let (_, dir) = production.stop(WAIT).await;

    let allowing = Server::start_configured(dir, |config| {
        trusting(config);
        config.dev_mode = false;
        config.allowed_private_networks = vec!["127.0.0.0/8".parse().expect("a network")];
    })
    .await;
    retry_all(api.at(&allowing.base_url), delivery_ids.clone()).await;
    let api = api.at(&allowing.base_url);
    api.wait_delivery(&delivery_ids[2], "delivered over https", WAIT, |d| {
        d["attempts"] == 3 && d["status"] == "succeeded"
    })
    .await;
    for id in &delivery_ids[..2] {
        let refused = api.wait_delivery(id, "a third, refused attempt", WAIT, |d| d["attempts"] == 3).await;
        assert!(str_field(&refused, "last_error").contains("http:// is sent only in dev mode"), "{refused:#}");
    }
    assert_eq!((receiver.count(), tls.count()), (2, 2));
}

/// The HMAC-SHA256 of the body, in hex: what a receiver of the `hmac` scheme computes, done here with the `hmac`
/// crate rather than Switchyard's signer.
fn body_hmac(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// 27. The `hmac` scheme signs as home-grown receivers verify: the hex HMAC-SHA256 of the body keyed by the secret
/// they already hold, in the header they read (GitHub's here, `sha256=` first) or `X-Webhook-Signature`. A custom
/// header of that name cannot replace it; a rotation signs with the new secret from then on; another scheme
/// takes neither a header setting nor a secret that is not `whsec_`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hmac_scheme_signs_the_body_where_the_receiver_reads_it() {
    let (_server, api) = setup().await;
    let github_style = Receiver::start().await;
    let plain = Receiver::start().await;
    let github_secret = "It's a Secret to Everybody";
    let created = api
        .expect(
            Method::POST,
            "/api/v1/endpoints",
            Some(json!({
                "url": github_style.url("/hook"),
                "signature_scheme": "hmac",
                "signature_header": { "name": "X-Hub-Signature-256", "prefix": "sha256=" },
                "secret": github_secret,
                "headers": { "x-team": "billing" },
            })),
            201,
        )
        .await;
    let (github_id, shown) = (str_field(&created, "id").to_string(), str_field(&created, "secret"));
    assert_eq!(shown, github_secret, "the secret it brought is the one it keys with");
    let (_, plain_secret) = endpoint_to(&api, &plain, json!({ "signature_scheme": "hmac" })).await;
    let shown = api.endpoint(&github_id).await;
    assert_eq!(shown["signature_header"], json!({ "name": "X-Hub-Signature-256", "prefix": "sha256=" }), "{shown}");

    // A custom header by the signature's name would never be sent: refused, on create and on change.
    let clash = json!({
        "url": github_style.url("/other"),
        "signature_scheme": "hmac",
        "signature_header": { "name": "X-Hub-Signature-256", "prefix": "sha256=" },
        "headers": { "x-hub-signature-256": "sha256=forged" },
    });
    let refused = api.expect(Method::POST, "/api/v1/endpoints", Some(clash), 400).await;
    assert_eq!(refused["error"]["field"], "headers.x-hub-signature-256", "{refused}");
    let forged = json!({ "headers": { "X-Hub-Signature-256": "sha256=forged" } });
    let refused = api.expect(Method::PATCH, &format!("/api/v1/endpoints/{github_id}"), Some(forged), 400).await;
    assert_eq!(refused["error"]["field"], "headers.X-Hub-Signature-256", "{refused}");
    let plain_clash =
        json!({ "url": plain.url("/x"), "signature_scheme": "hmac", "headers": { "X-Webhook-Signature": "x" } });
    api.expect(Method::POST, "/api/v1/endpoints", Some(plain_clash), 400).await;

    publish(&api, "invoice.paid", json!({ "amount": 27 })).await;
    let request = &github_style.wait_for_requests(1, WAIT).await[0];
    assert_eq!(request.header("x-team"), Some("billing"));
    let expected = format!("sha256={}", body_hmac(github_secret, &request.body));
    assert_eq!(request.header("x-hub-signature-256"), Some(expected.as_str()));
    assert_eq!(request.header("webhook-signature"), None, "no Standard Webhooks signature beside it");
    let request = &plain.wait_for_requests(1, WAIT).await[0];
    assert_eq!(request.header("x-webhook-signature"), Some(body_hmac(&plain_secret, &request.body).as_str()));

    // After a rotation the one header carries the new secret's signature.
    let rotate = format!("/api/v1/endpoints/{github_id}/rotate-secret");
    let new_secret = "the next shared secret";
    let rotated = api.expect(Method::POST, &rotate, Some(json!({ "secret": new_secret })), 200).await;
    assert_eq!(rotated["secret"], new_secret);
    publish(&api, "invoice.paid", json!({ "amount": 28 })).await;
    let request = &github_style.wait_for_requests(2, WAIT).await[1];
    let expected = format!("sha256={}", body_hmac(new_secret, &request.body));
    assert_eq!(request.header("x-hub-signature-256"), Some(expected.as_str()));

    // A simulation shows the signature a delivery would carry, in its header, not redacted like a credential.
    let simulate = format!("/api/v1/endpoints/{github_id}/simulate");
    let simulated = api.expect(Method::POST, &simulate, Some(json!({ "type": "invoice.paid", "data": {} })), 200).await;
    let body = simulated["request"]["body"].as_str().expect("a text body");
    let expected = format!("sha256={}", body_hmac(new_secret, body.as_bytes()));
    assert_eq!(simulated["request"]["headers"]["x-hub-signature-256"], expected.as_str(), "{simulated}");

    // Leaving the scheme needs a `whsec_` secret first, and drops its header setting.
    let path = format!("/api/v1/endpoints/{github_id}");
    let to_standard = json!({ "signature_scheme": "standard" });
    let refused = api.expect(Method::PATCH, &path, Some(to_standard.clone()), 400).await;
    assert_eq!(refused["error"]["field"], "signature_scheme", "{refused}");
    assert!(!refused.to_string().contains(new_secret), "the secret is not repeated: {refused}");
    let rotated = api.expect(Method::POST, &rotate, Some(json!({ "grace_period": "0s" })), 200).await;
    assert!(str_field(&rotated, "secret").starts_with("whsec_"));
    let standard = api.expect(Method::PATCH, &path, Some(to_standard), 200).await;
    assert!(standard.get("signature_header").is_none(), "{standard}");
    let refused = [
        json!({ "url": "https://example.com/a", "signature_scheme": "stripe", "signature_header": { "name": "x-sig", "prefix": "sha256=" } }),
        json!({ "url": "https://example.com/a", "signature_scheme": "hmac", "signature_header": { "name": "x-sig", "timestamp": "seconds" } }),
        json!({ "url": "https://example.com/a", "signature_header": { "name": "x-sig" } }),
        json!({ "url": "https://example.com/a", "signature_scheme": "hmac", "signature_header": { "name": "Authorization" } }),
        json!({ "url": "https://example.com/a", "secret": github_secret }),
        json!({ "url": "https://example.com/a", "signature_scheme": "hmac", "secret": "short" }),
        json!({ "url": "https://example.com/a", "signature_scheme": "hmac", "signature_header": { "name": "webhook-id" } }),
    ];
    for body in refused {
        let answer = api.expect(Method::POST, "/api/v1/endpoints", Some(body.clone()), 400).await;
        let field = answer["error"]["field"].as_str().unwrap_or_default();
        assert!(field.starts_with("signature_header") || field == "secret", "{body}: {answer}");
    }
    api.expect(Method::PATCH, &path, Some(json!({ "signature_header": { "name": "x-sig" } })), 400).await;
}

/// 28. An endpoint without a schedule of its own follows the server's `retry_schedule`: here one retry after about
/// a second, then the dead-letter queue, where the built-in schedule would wait a minute and try six more times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_without_a_schedule_follow_the_servers() {
    let server = Server::start_configured(tempfile::tempdir().expect("data dir"), |config| {
        config.retry_schedule_ms = vec![1_000];
    })
    .await;
    let api = Api::new_tenant(&server.base_url, "server-schedule").await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(503));
    let (endpoint_id, _) = endpoint_to(&api, &receiver, json!({})).await;
    assert_eq!(api.endpoint(&endpoint_id).await["retry"], Value::Null, "no schedule of its own");
    let (_, delivery_id) = publish_to(&api, &endpoint_id, "invoice.paid", json!({ "n": 28 })).await;
    let dead = api.wait_status(&delivery_id, "dead", WAIT).await;
    assert_eq!(outcomes(&dead), ["retry", "dead"], "{dead:#}");
    let requests = receiver.wait_for_requests(2, WAIT).await;
    let gap = requests[1].received_at - requests[0].received_at;
    assert!(gap >= Duration::from_millis(750) && gap < Duration::from_secs(5), "retried after {gap:?}");
}

/// 29. The `stripe` scheme signs as home-grown "Stripe-compatible" receivers verify: `t=<milliseconds>,v1=<hex>`
/// over `"{t}.{body}"` in a header of their own (brique 45's `Molam-Signature`, the wallet's `X-Webhook-Signature`),
/// checked here with the `hmac` crate and a five-minute window as their verifiers do. While a rotated-out secret
/// is in its grace period the active one signs first, which receivers reading only the first `v1` need.
#[tokio::test]
async fn the_stripe_scheme_signs_milliseconds_in_the_receivers_header() {
    let (_server, api) = setup().await;
    let receiver = Receiver::start().await;
    let header = json!({ "name": "Molam-Signature", "timestamp": "milliseconds" });
    let extra = json!({ "signature_scheme": "stripe", "signature_header": header });
    let (endpoint_id, secret) = endpoint_to(&api, &receiver, extra).await;
    assert_eq!(
        api.endpoint(&endpoint_id).await["signature_header"],
        json!({ "name": "Molam-Signature", "prefix": "", "timestamp": "milliseconds" })
    );

    let verify = |request: &Recorded, secret: &str| -> Vec<bool> {
        let value = request.header("molam-signature").unwrap_or_else(|| panic!("no signature: {request:?}"));
        let mut parts = value.split(',');
        let t = parts.next().and_then(|t| t.strip_prefix("t=")).expect("t= first");
        let sent_at_ms: i64 = t.parse().expect("a number");
        let now_ms = chrono::Utc::now().timestamp_millis();
        assert!((now_ms - sent_at_ms).abs() < 5 * 60 * 1000, "{t} is milliseconds near {now_ms}");
        let message = [t.as_bytes(), b".", &request.body].concat();
        parts.map(|v1| v1.strip_prefix("v1=").expect("v1=") == body_hmac(secret, &message)).collect()
    };
    publish(&api, "invoice.paid", json!({ "amount": 29 })).await;
    let request = &receiver.wait_for_requests(1, WAIT).await[0];
    assert_eq!(verify(request, &secret), [true]);
    assert_eq!(request.header("switchyard-signature"), None, "only the header it names");

    let rotate = format!("/api/v1/endpoints/{endpoint_id}/rotate-secret");
    let rotated = api.expect(Method::POST, &rotate, Some(json!({ "grace_period": "1h" })), 200).await;
    let new_secret = str_field(&rotated, "secret").to_string();
    publish(&api, "invoice.paid", json!({ "amount": 30 })).await;
    let request = &receiver.wait_for_requests(2, WAIT).await[1];
    assert_eq!(verify(request, &new_secret), [true, false], "the active secret signs first");
    assert_eq!(verify(request, &secret), [false, true], "the retiring one after it");

    // With `key_id`, each signature is followed by its secret's version, as brique 45's `kid=`.
    let path = format!("/api/v1/endpoints/{endpoint_id}");
    let naming = json!({ "name": "Molam-Signature", "timestamp": "milliseconds", "key_id": true });
    let changed = api.expect(Method::PATCH, &path, Some(json!({ "signature_header": naming })), 200).await;
    assert_eq!(changed["signature_header"]["key_id"], true, "{changed:#}");
    publish(&api, "invoice.paid", json!({ "amount": 32 })).await;
    let request = &receiver.wait_for_requests(3, WAIT).await[2];
    let value = request.header("molam-signature").expect("the signature");
    let (t, pairs) = value.split_once(',').expect("t= and signatures");
    let t = t.strip_prefix("t=").expect("t= first");
    let message = [t.as_bytes(), b".", &request.body].concat();
    let expected = format!("v1={},kid=2,v1={},kid=1", body_hmac(&new_secret, &message), body_hmac(&secret, &message));
    assert_eq!(pairs, expected, "each signature, then its secret's version");

    // Back to the scheme's defaults: seconds in `Switchyard-Signature`, as Stripe's libraries read them.
    let reset = api.expect(Method::PATCH, &path, Some(json!({ "signature_header": null })), 200).await;
    assert_eq!(
        reset["signature_header"],
        json!({ "name": "switchyard-signature", "prefix": "", "timestamp": "seconds" })
    );
    publish(&api, "invoice.paid", json!({ "amount": 31 })).await;
    let request = &receiver.wait_for_requests(4, WAIT).await[3];
    let value = request.header("switchyard-signature").expect("the default header");
    let t: i64 = value.split(',').next().and_then(|t| t.strip_prefix("t=")).and_then(|t| t.parse().ok()).expect("t=");
    assert!((chrono::Utc::now().timestamp() - t).abs() < 5 * 60, "{t} is seconds");
}

/// 30. With `disable_failing_attempts`, an endpoint is disabled once that many attempts in a row have failed,
/// however quickly (a circuit breaker), and its delivery waits rather than dying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_is_disabled_after_failures_in_a_row() {
    let server = Server::start_configured(tempfile::tempdir().expect("data dir"), |config| {
        config.disable_failing_after = None;
        config.disable_failing_attempts = Some(3);
    })
    .await;
    let api = Api::new_tenant(&server.base_url, "breaker").await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(503));
    let retry = json!({ "retry": { "schedule": ["1s"], "max_attempts": 50 } });
    let (endpoint_id, _) = endpoint_to(&api, &receiver, retry).await;
    let (_, delivery_id) = publish_to(&api, &endpoint_id, "order.created", json!({ "n": 30 })).await;

    let endpoint = wait_until_disabled(&api, &endpoint_id).await;
    let reason = str_field(&endpoint, "status_reason");
    assert!(reason.starts_with("3 attempts in a row failed, since "), "{endpoint:#}");
    let entry = &disabled_audit(&api, &endpoint_id).await["data"][0];
    assert_eq!(entry["details"]["reason"], reason, "{entry:#}");
    let held = receiver.count();
    assert!(held >= 3, "disabled after {held} attempts");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.count(), held, "attempts went on after the endpoint was disabled");
    assert_eq!(api.delivery(&delivery_id).await["status"], "failed", "held, not dead");
}

/// 31. Standard Webhooks' asymmetric signatures: an endpoint rotates from its shared secret to an Ed25519 key.
/// During the grace period both sign, each checked by its own kind of verifier (`standardwebhooks` for `v1`,
/// `cryptography` for `v1a`); after the next rotation the new key alone.
#[tokio::test]
async fn an_endpoint_moves_from_a_shared_secret_to_an_ed25519_key() {
    let (_server, api) = setup().await;
    let receiver = Receiver::start().await;
    let (endpoint_id, secret) = endpoint_to(&api, &receiver, json!({})).await;
    let rotate = format!("/api/v1/endpoints/{endpoint_id}/rotate-secret");
    let to_key = json!({ "asymmetric": true, "grace_period": "1h" });
    let rotated = api.expect(Method::POST, &rotate, Some(to_key), 200).await;
    let public_key = str_field(&rotated, "public_key").to_string();

    publish(&api, "invoice.paid", json!({ "amount": 1 })).await;
    let request = &receiver.wait_for_requests(1, WAIT).await[0];
    let header = request.header("webhook-signature").expect("signed");
    let kinds: Vec<&str> = header.split(' ').filter_map(|entry| entry.split(',').next()).collect();
    assert_eq!(kinds, ["v1a", "v1"], "the active key first, then the retiring secret: {header}");
    assert_verifies("standard-asymmetric", &public_key, request, "the new key").await;
    assert_verifies("standard", &secret, request, "the shared secret in its grace period").await;
    let id = request.header("webhook-id").expect("webhook-id");
    let timestamp: i64 = request.header("webhook-timestamp").and_then(|t| t.parse().ok()).expect("a timestamp");
    assert!(switchyard::signing::verify_standard_asymmetric(&public_key, id, timestamp, &request.body, header));
    assert_rejected("standard-asymmetric", &public_key, &with_body(request, "{}"), "another body").await;

    // The next rotation, with no grace period, keeps the kind: the new key alone signs.
    let again = api.expect(Method::POST, &rotate, Some(json!({ "grace_period": "0s" })), 200).await;
    let newer = str_field(&again, "public_key").to_string();
    assert_ne!(newer, public_key);
    publish(&api, "invoice.paid", json!({ "amount": 2 })).await;
    let request = &receiver.wait_for_requests(2, WAIT).await[1];
    let header = request.header("webhook-signature").expect("signed");
    assert!(header.starts_with("v1a,") && !header.contains(' '), "{header}");
    assert_verifies("standard-asymmetric", &newer, request, "the newer key").await;
    assert_rejected("standard-asymmetric", &public_key, request, "the key rotated out").await;
    assert_rejected("standard", &secret, request, "the shared secret rotated out").await;
}
